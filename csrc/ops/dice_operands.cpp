#include "dice_operands.h"

#include <ATen/ATen.h>

#include <cmath>
#include <vector>

#include "checks.h"

namespace segloss::ops {
namespace {

bool is_label_dtype(at::ScalarType dtype) {
  return at::isIntegralType(dtype, /*includeBool=*/true);
}

// (N, *spatial) of the input, with or without the channel dimension as 1.
std::vector<c10::SymInt> label_shape(const at::Tensor& input, bool with_channel) {
  std::vector<c10::SymInt> shape(input.sym_sizes().begin(), input.sym_sizes().end());
  if (with_channel) {
    shape[1] = 1;
  } else {
    shape.erase(shape.begin() + 1);
  }
  return shape;
}

bool has_shape(const at::Tensor& tensor, const std::vector<c10::SymInt>& shape) {
  return tensor.sym_sizes() == c10::SymIntArrayRef(shape);
}

// A float class-index map (MONAI's loaded label maps are float) as int64,
// after checking that it holds whole numbers: a fractional label (a label
// map resampled with interpolation) would otherwise be truncated silently.
at::Tensor float_class_indices(std::string_view op, const at::Tensor& target) {
  const at::Tensor indices = target.to(at::kLong);
  TORCH_CHECK_VALUE(at::equal(indices.to(target.scalar_type()), target), op,
                    ": a float class-index target must hold whole numbers (class indices), got "
                    "other values (a label map resampled with interpolation? use nearest "
                    "neighbour)");
  return indices;
}

}  // namespace

bool is_class_index_target(const at::Tensor& input, const at::Tensor& target) {
  if (is_label_dtype(target.scalar_type())) {
    // An integer or bool target of the input's shape with more than one
    // channel is one-hot (dense), as MONAI reads it.
    return !(input.dim() >= 2 && target.sym_sizes() == input.sym_sizes() &&
             input.sym_size(1) != 1);
  }
  // A float target of a label map's shape (N, *spatial), or (N, 1, *spatial)
  // with C > 1, where it cannot be a dense target.
  return input.dim() >= 2 && target.sym_sizes() != input.sym_sizes() &&
         (has_shape(target, label_shape(input, false)) ||
          has_shape(target, label_shape(input, true)));
}

core::Activation parse_activation(std::string_view op, std::string_view activation) {
  if (activation == "sigmoid") return core::Activation::Sigmoid;
  if (activation == "softmax") return core::Activation::Softmax;
  if (activation == "none") return core::Activation::None;
  TORCH_CHECK_VALUE(false, op, ": activation must be 'sigmoid', 'softmax' or 'none', got '",
                    activation, "'");
}

core::SumsLayout sums_layout(std::string_view op, bool cross_entropy, bool soft_label,
                             const std::optional<std::string_view>& focal_activation) {
  const bool focal = focal_activation.has_value();
  TORCH_CHECK_VALUE(!(cross_entropy && soft_label), op,
                    ": the sums have either the soft-label column or the cross-entropy "
                    "columns, not both");
  TORCH_CHECK_VALUE(!(focal && (cross_entropy || soft_label)), op,
                    ": the sums have at most one of the soft-label column, the cross-entropy "
                    "columns and the focal columns (focal_activation)");
  return cross_entropy ? core::SumsLayout::DiceCe
         : soft_label  ? core::SumsLayout::SoftDice
         : focal       ? core::SumsLayout::DiceFocal
                       : core::SumsLayout::Dice;
}

void check_focal_arguments(std::string_view op, std::string_view activation,
                           const std::optional<std::string_view>& focal_activation,
                           double focal_gamma) {
  if (!focal_activation.has_value()) return;
  TORCH_CHECK_VALUE(*focal_activation == "sigmoid" || *focal_activation == "softmax", op,
                    ": focal_activation must be 'sigmoid' or 'softmax', got '",
                    *focal_activation, "'");
  TORCH_CHECK_VALUE(activation != "none", op,
                    ": the focal loss needs logits: activation must be 'sigmoid' or "
                    "'softmax', got '",
                    activation, "'");
  TORCH_CHECK_VALUE(*focal_activation != "softmax" || activation == "softmax", op,
                    ": focal_activation='softmax' needs activation='softmax', got activation='",
                    activation, "'");
  TORCH_CHECK_VALUE(std::isfinite(focal_gamma) && focal_gamma >= 0, op,
                    ": focal_gamma must be a finite number >= 0, got ", focal_gamma);
}

core::GammaKind gamma_kind(std::string_view op, double gamma) {
  TORCH_CHECK_VALUE(std::isfinite(gamma) && gamma >= 1, op,
                    ": gamma must be a finite number >= 1, got ", gamma);
  if (gamma == 1) return core::GammaKind::One;
  if (gamma == 2) return core::GammaKind::Two;
  return core::GammaKind::General;
}

void check_dice_arguments(std::string_view op, const at::Tensor& input, const at::Tensor& target,
                          std::string_view activation, double gamma,
                          const std::optional<int64_t>& ignore_index,
                          const std::optional<at::Tensor>& mask, core::SumsLayout layout) {
  const core::Activation parsed = parse_activation(op, activation);
  TORCH_CHECK_VALUE(layout != core::SumsLayout::DiceCe || parsed != core::Activation::None, op,
                    ": the cross-entropy needs logits: activation must be 'sigmoid' or "
                    "'softmax', got '",
                    activation, "'");
  gamma_kind(op, gamma);
  check_floating(op, "input", input);
  TORCH_CHECK(input.dim() >= 3 && input.dim() <= 5, op,
              ": input must have shape (N, C, *spatial) with 1 to 3 spatial dimensions, got "
              "shape ",
              input.sym_sizes());
  // A softmax over one channel is 1 everywhere: a constant loss, no gradient.
  TORCH_CHECK_VALUE(parsed != core::Activation::Softmax || input.sym_size(1) != 1, op,
                    ": activation='softmax' needs at least 2 channels, got input of shape ",
                    input.sym_sizes(),
                    " (a softmax over one channel is 1 everywhere); use activation='sigmoid' "
                    "for a binary mask");
  check_same_device(op, "target", target, input);
  if (is_class_index_target(input, target)) {
    if (!is_label_dtype(target.scalar_type())) check_floating(op, "target", target);
    TORCH_CHECK(has_shape(target, label_shape(input, false)) ||
                    has_shape(target, label_shape(input, true)),
                op, ": a class-index target must have shape ",
                c10::SymIntArrayRef(label_shape(input, false)), " or ",
                c10::SymIntArrayRef(label_shape(input, true)), " for input of shape ",
                input.sym_sizes(),
                ", got ", target.sym_sizes());
    // With no channel no class index is valid (as torch's cross_entropy).
    TORCH_CHECK_VALUE(input.sym_size(1) != 0 || target.sym_numel() == 0, op,
                      ": a class-index target needs an input with at least one channel, got "
                      "input of shape ",
                      input.sym_sizes(), " and a target of ", target.sym_numel(),
                      " class indices");
  } else {
    if (!is_label_dtype(target.scalar_type())) check_floating(op, "target", target);
    TORCH_CHECK(target.sym_sizes() == input.sym_sizes(), op,
                ": a floating-point target must have the input's shape ", input.sym_sizes(),
                ", got ", target.sym_sizes(),
                " (or be a class-index map, integer or float, of shape (N, *spatial) or (N, 1, "
                "*spatial))");
    TORCH_CHECK_VALUE(!ignore_index.has_value(), op,
                      ": ignore_index applies to class-index targets only; the target is ",
                      target.scalar_type(), " (use mask for floating-point targets)");
  }
  if (is_given(mask)) {
    check_same_device(op, "mask", *mask, input);
    const auto mask_target = label_shape(input, true);
    TORCH_CHECK(broadcasts_to(mask->sym_sizes(), mask_target), op, ": mask of shape ",
                mask->sym_sizes(), " is not broadcastable to ",
                c10::SymIntArrayRef(mask_target));
  }
}

DiceOperands prepare_dice_operands(std::string_view op, const at::Tensor& input,
                                   const at::Tensor& target, std::string_view activation,
                                   double gamma, const std::optional<int64_t>& ignore_index,
                                   const std::optional<at::Tensor>& mask, core::SumsLayout layout) {
  check_dice_arguments(op, input, target, activation, gamma, ignore_index, mask, layout);
  DiceOperands ops;
  ops.op = op;
  ops.layout = layout;
  ops.activation = parse_activation(op, activation);
  ops.gamma_kind = gamma_kind(op, gamma);
  ops.gamma = gamma;
  ops.ignore_index = ignore_index;
  ops.input = kernel_layout(input);
  ops.batch = input.size(0);
  ops.channels = input.size(1);
  ops.pixels = ops.batch * ops.channels == 0 ? 0 : input.numel() / (ops.batch * ops.channels);
  if (is_class_index_target(input, target)) {
    const at::Tensor labels = is_label_dtype(target.scalar_type())
                                  ? readable_labels(target)
                                  : float_class_indices(op, target);
    ops.labels = kernel_layout(labels.reshape({ops.batch, ops.pixels}));
  } else {
    ops.dense_target = kernel_layout(target.to(input.scalar_type()));
  }
  if (is_given(mask)) {
    std::vector<int64_t> shape(input.sizes().begin(), input.sizes().end());
    shape[1] = 1;
    // 0 excludes a pixel, anything else includes it.
    at::Tensor binary = mask->ne(0).to(input.scalar_type()).expand(shape);
    if (!core::make_broadcast_indexer(int(binary.dim()), binary.sizes().data(),
                                      binary.strides().data(), &ops.mask_index)) {
      binary = binary.contiguous();
      core::make_broadcast_indexer(int(binary.dim()), binary.sizes().data(),
                                   binary.strides().data(), &ops.mask_index);
    }
    ops.mask = binary;
  }
  return ops;
}

DiceOperands prepare_dice_operands(std::string_view op, const at::Tensor& input,
                                   const at::Tensor& target, std::string_view activation,
                                   double gamma, const std::optional<int64_t>& ignore_index,
                                   const std::optional<at::Tensor>& mask, bool cross_entropy,
                                   bool soft_label,
                                   const std::optional<std::string_view>& focal_activation,
                                   double focal_gamma) {
  check_focal_arguments(op, activation, focal_activation, focal_gamma);
  DiceOperands ops = prepare_dice_operands(
      op, input, target, activation, gamma, ignore_index, mask,
      sums_layout(op, cross_entropy, soft_label, focal_activation));
  if (focal_activation.has_value()) {
    ops.focal_activation = parse_activation(op, *focal_activation);
    ops.focal_gamma = focal_gamma;
  }
  return ops;
}

at::Tensor empty_dice_sums(const at::Tensor& input, core::SumsLayout layout) {
  const auto dtype = input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const int64_t columns = core::column_count(layout);
  return at::empty_symint({input.sym_size(0), input.sym_size(1), columns},
                          input.options().dtype(dtype));
}

void check_dice_grad_sums(std::string_view op, const at::Tensor& grad_sums,
                          const at::Tensor& input, core::SumsLayout layout) {
  check_same_device(op, "grad_sums", grad_sums, input);
  check_floating(op, "grad_sums", grad_sums);
  const int64_t columns = core::column_count(layout);
  const std::vector<c10::SymInt> shape = {input.sym_size(0), input.sym_size(1), columns};
  TORCH_CHECK(grad_sums.sym_sizes() == c10::SymIntArrayRef(shape), op,
              ": grad_sums must have shape ", c10::SymIntArrayRef(shape), ", got ",
              grad_sums.sym_sizes());
}

at::Tensor prepare_dice_grad_sums(std::string_view op, const at::Tensor& grad_sums,
                                  const at::Tensor& input, core::SumsLayout layout) {
  check_dice_grad_sums(op, grad_sums, input, layout);
  const auto dtype = input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  return kernel_layout(grad_sums.to(dtype));
}

}  // namespace segloss::ops
