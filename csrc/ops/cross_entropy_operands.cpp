#include "cross_entropy_operands.h"

#include <ATen/ATen.h>

#include <cmath>
#include <vector>

#include "checks.h"

namespace segloss::ops {
namespace {

// (N, *spatial) of the input: its shape without the class dimension.
std::vector<c10::SymInt> pixel_shape(const at::Tensor& input) {
  std::vector<c10::SymInt> shape(input.sym_sizes().begin(), input.sym_sizes().end());
  shape.erase(shape.begin() + 1);
  return shape;
}

// A per-pixel operand: (N, *spatial), or (N, 1, *spatial) as a DataLoader
// collates per-image maps with a channel dim.
void check_per_pixel_shape(std::string_view caller, std::string_view name, const at::Tensor& tensor,
                           const at::Tensor& input) {
  std::vector<c10::SymInt> pixels = pixel_shape(input);
  std::vector<c10::SymInt> with_channel = pixels;
  with_channel.insert(with_channel.begin() + 1, c10::SymInt(1));
  TORCH_CHECK_VALUE(tensor.sym_sizes() == c10::SymIntArrayRef(pixels) ||
                        tensor.sym_sizes() == c10::SymIntArrayRef(with_channel),
                    caller, ": ", name, " must have shape ", c10::SymIntArrayRef(pixels), " or ",
                    c10::SymIntArrayRef(with_channel), " for input of shape ", input.sym_sizes(),
                    ", got ", tensor.sym_sizes());
}

at::ScalarType compute_type(const at::Tensor& input) {
  return input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace

Reduction check_cross_entropy_arguments(std::string_view caller, const at::Tensor& input, const at::Tensor& target,
                                        const std::optional<at::Tensor>& weight_map,
                                        const std::optional<at::Tensor>& weight,
                                        std::string_view reduction, double gamma,
                                        double label_smoothing) {
  const Reduction parsed = parse_reduction(caller, reduction, /*offers_weighted_mean=*/true);
  TORCH_CHECK_VALUE(std::isfinite(gamma) && gamma >= 0, caller,
                    ": gamma (the focal exponent) must be finite and >= 0, got ", gamma);
  TORCH_CHECK_VALUE(label_smoothing >= 0 && label_smoothing <= 1, caller,
                    ": label_smoothing must lie in [0, 1], got ", label_smoothing);
  TORCH_CHECK_VALUE(gamma == 0 || label_smoothing == 0, caller,
                    ": gamma (the focal loss) and label_smoothing cannot be combined, got gamma=",
                    gamma, " and label_smoothing=", label_smoothing);
  check_floating(caller, "input", input);
  TORCH_CHECK_VALUE(input.dim() >= 2, caller,
                    ": with a class-index target, input must hold logits of shape "
                    "(N, C, *spatial), got shape ",
                    input.sym_sizes());
  TORCH_CHECK_VALUE(input.sym_size(1) >= 1, caller,
                    ": input must have at least one class (dim 1), got shape ",
                    input.sym_sizes());
  check_same_device(caller, "target", target, input);
  TORCH_CHECK_TYPE(at::isIntegralType(target.scalar_type(), /*includeBool=*/true), caller,
                   ": target must hold integer class indices, got ", target.scalar_type());
  check_per_pixel_shape(caller, "target", target, input);
  if (is_given(weight_map)) {
    check_same_device(caller, "weight_map", *weight_map, input);
    check_floating(caller, "weight_map", *weight_map);
    check_per_pixel_shape(caller, "weight_map", *weight_map, input);
  }
  if (is_given(weight)) {
    check_same_device(caller, "weight", *weight, input);
    check_floating(caller, "weight", *weight);
    TORCH_CHECK_VALUE(weight->dim() == 1 && weight->sym_size(0) == input.sym_size(1), caller,
                      ": weight (per-class weights) must have shape [", input.sym_size(1),
                      "], one per class of input of shape ", input.sym_sizes(), ", got ",
                      weight->sym_sizes());
  }
  return parsed;
}

void check_cross_entropy_grad_output(std::string_view caller, const at::Tensor& grad_output, const at::Tensor& input,
                                     Reduction reduction) {
  check_same_device(caller, "grad_output", grad_output, input);
  check_floating(caller, "grad_output", grad_output);
  if (reduction == Reduction::None) {
    TORCH_CHECK(grad_output.sym_sizes() == c10::SymIntArrayRef(pixel_shape(input)), caller,
                ": grad_output of shape ", grad_output.sym_sizes(), " must have shape ",
                c10::SymIntArrayRef(pixel_shape(input)), " for reduction 'none'");
  } else {
    TORCH_CHECK(grad_output.dim() == 0, caller, ": grad_output must be a 0-dim tensor for a ",
                "reduced loss, got shape ", grad_output.sym_sizes());
  }
}

void check_class_indices(bool valid, const CrossEntropyOperands& ops) {
  TORCH_CHECK_INDEX(valid, ops.caller, ": class indices in target must lie in [0, ", ops.classes,
                    ") or equal ignore_index (", ops.ignore_index, ") for input with ",
                    ops.classes, " classes");
}

at::Tensor empty_cross_entropy_loss(const at::Tensor& input, Reduction reduction) {
  if (reduction == Reduction::None) return at::empty_symint(pixel_shape(input), input.options());
  return at::empty({}, input.options());
}

at::Tensor empty_cross_entropy_total_weight(const at::Tensor& input) {
  return at::empty({}, input.options().dtype(compute_type(input)));
}

void check_cross_entropy_total_weight(std::string_view caller, const at::Tensor& total_weight,
                                      const at::Tensor& input) {
  check_same_device(caller, "total_weight", total_weight, input);
  check_floating(caller, "total_weight", total_weight);
  TORCH_CHECK(total_weight.dim() == 0, caller, ": total_weight must be a 0-dim tensor, got shape ",
              total_weight.sym_sizes());
}

CrossEntropyOperands prepare_cross_entropy_operands(const at::Tensor& input,
                                                    const at::Tensor& target,
                                                    const std::optional<at::Tensor>& weight_map,
                                                    const std::optional<at::Tensor>& weight,
                                                    int64_t ignore_index,
                                                    std::string_view reduction, double gamma,
                                                    double label_smoothing,
                                                    std::string_view caller) {
  CrossEntropyOperands ops;
  ops.reduction = check_cross_entropy_arguments(caller, input, target, weight_map, weight,
                                                reduction, gamma, label_smoothing);
  ops.caller = caller;
  ops.gamma = gamma;
  ops.label_smoothing = label_smoothing;
  ops.input = kernel_layout(input);
  ops.batch = input.size(0);
  ops.classes = input.size(1);
  ops.pixels = 1;
  for (int64_t d = 2; d < input.dim(); ++d) ops.pixels *= input.size(d);
  ops.ignore_index = ignore_index;
  ops.labels = kernel_layout(readable_labels(target).reshape({ops.batch, ops.pixels}));
  if (is_given(weight_map)) {
    ops.weight_map =
        kernel_layout(weight_map->to(compute_type(input)).reshape({ops.batch, ops.pixels}));
  }
  if (is_given(weight)) ops.weight = kernel_layout(weight->to(compute_type(input)));
  return ops;
}

at::Tensor prepare_cross_entropy_grad_output(const at::Tensor& grad_output,
                                             const CrossEntropyOperands& operands) {
  check_cross_entropy_grad_output(operands.caller, grad_output, operands.input, operands.reduction);
  return kernel_layout(grad_output.to(operands.input.scalar_type()));
}

}  // namespace segloss::ops
