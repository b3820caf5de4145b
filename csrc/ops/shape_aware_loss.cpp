// shape_aware_loss: the article's shape-aware (U-Net) loss, a loss weighted
// per pixel by the U-Net weight map. The map is given (weight_map, e.g. from
// segloss.numpy in a DataLoader) or computed on the input's device from
// instance labels (instances) by unet_weight_map. With a float target it is
// the article's binary form, the fused BCE op with the map as its
// per-element weight; with a class-index target it is the U-Net paper's
// multi-class form, the fused weighted softmax cross-entropy. Either way one
// pass forward, one backward, nothing input-sized saved; the map is a
// constant (no gradient flows to it).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <string_view>
#include <tuple>

#include "checks.h"
#include "cross_entropy_operands.h"
#include "distance_operands.h"
#include "pointwise_operands.h"

namespace segloss::ops {
namespace {

constexpr const char* kOp = "segloss.shape_aware_loss";

// The binary form's BCE: the pointwise op, its errors naming this op.
at::Tensor bce(bool from_logits, const at::Tensor& input, const at::Tensor& target,
               const at::Tensor& weight, std::string_view reduction) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("segloss::_pointwise_loss", "")
                       .typed<PointwiseLossSignature>();
  const core::PointwiseLoss loss =
      from_logits ? core::PointwiseLoss::BceWithLogits : core::PointwiseLoss::Bce;
  return op.call(input, target, weight, std::nullopt, reduction, core::pointwise_loss_name(loss),
                 {}, kOp);
}

at::Tensor unet_weight_map(const at::Tensor& labels, double w0, double sigma,
                           std::optional<at::ArrayRef<double>> sampling,
                           std::optional<at::ArrayRef<double>> class_weights, bool balanced) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("segloss::unet_weight_map", "")
                       .typed<at::Tensor(const at::Tensor&, double, double,
                                         std::optional<at::ArrayRef<double>>,
                                         std::optional<at::ArrayRef<double>>, bool,
                                         const std::optional<at::Tensor>&, bool)>();
  return op.call(labels, w0, sigma, sampling, class_weights, balanced, std::nullopt,
                 /*border_everywhere=*/false);
}

// Whether input is (N, 1, *spatial) (else (N, *spatial)), with 2 or 3 spatial
// dims. A 4-D input with size 1 in dim 1 is a batch of 2-D images with a
// channel dim (the same weight map as a depth-1 volume).
bool has_channel_dim(const at::Tensor& input) {
  const int64_t dim = input.dim();
  TORCH_CHECK_VALUE(dim >= 3 && dim <= 5, kOp,
                    ": input must be [N, 1, *spatial] or [N, *spatial] with 2 or 3 spatial dims, "
                    "got shape ",
                    input.sym_sizes());
  const bool channel = dim == 5 || (dim == 4 && input.sym_size(1) == 1);
  TORCH_CHECK_VALUE(!(dim == 5 && input.sym_size(1) != 1), kOp,
                    ": the binary shape-aware loss takes one channel, got input of shape ",
                    input.sym_sizes(),
                    "; for C classes give a class-index target (the multi-class form)");
  return channel;
}

// A per-pixel tensor (weight_map or instances) of the per-pixel shape
// (N, *spatial) or, when input has a channel dim, (N, 1, *spatial) (the
// binary input's own shape); as (N, *spatial).
at::Tensor per_pixel(const at::Tensor& tensor, std::string_view name, const at::Tensor& input,
                     bool channel) {
  check_same_device(kOp, name, tensor, input);
  std::vector<c10::SymInt> pixels(input.sym_sizes().begin(), input.sym_sizes().end());
  if (channel) pixels.erase(pixels.begin() + 1);
  if (tensor.sym_sizes() == c10::SymIntArrayRef(pixels)) return tensor;
  TORCH_CHECK_VALUE(channel, kOp, ": ", name, " must have shape ", c10::SymIntArrayRef(pixels),
                    " for input of shape ", input.sym_sizes(), ", got ", tensor.sym_sizes());
  std::vector<c10::SymInt> with_channel = pixels;
  with_channel.insert(with_channel.begin() + 1, c10::SymInt(1));
  TORCH_CHECK_VALUE(tensor.sym_sizes() == c10::SymIntArrayRef(with_channel), kOp, ": ", name,
                    " must have shape ", c10::SymIntArrayRef(pixels), " or ",
                    c10::SymIntArrayRef(with_channel), " for input of shape ", input.sym_sizes(),
                    ", got ", tensor.sym_sizes());
  return tensor.squeeze(1);
}

// The weight map as (N, *spatial), given or computed from the instances;
// `channel`: whether input has a class/channel dim that the map lacks.
at::Tensor weight_map_of(const at::Tensor& input, const std::optional<at::Tensor>& weight_map,
                         const std::optional<at::Tensor>& instances, double w0, double sigma,
                         std::optional<at::ArrayRef<double>> sampling,
                         std::optional<at::ArrayRef<double>> class_weights, bool balanced,
                         bool channel) {
  TORCH_CHECK_VALUE(is_given(weight_map) != is_given(instances), kOp,
                    ": give exactly one of weight_map (a precomputed U-Net weight map) and "
                    "instances (instance labels to compute it from), got ",
                    is_given(weight_map) ? "both" : "neither");
  if (is_given(weight_map)) {
    TORCH_CHECK_VALUE(!sampling.has_value() && !class_weights.has_value() && !balanced, kOp,
                      ": sampling, class_weights and balanced apply to instances; a given "
                      "weight_map is used as it is");
    check_floating(kOp, "weight_map", *weight_map);
    return per_pixel(weight_map->detach(), "weight_map", input, channel);
  }
  TORCH_CHECK_TYPE(at::isIntegralType(instances->scalar_type(), /*includeBool=*/false), kOp,
                   ": instances must be a tensor of integer instance ids (0 is background), "
                   "got ",
                   instances->scalar_type());
  const at::Tensor labels = per_pixel(*instances, "instances", input, channel);
  // unet_weight_map's own checks, naming this op and `instances`.
  check_instance_labels(kOp, labels, sampling, "instances");
  check_weight_map_arguments(kOp, labels, w0, sigma, class_weights, balanced, std::nullopt,
                             /*border_everywhere=*/false);
  return unet_weight_map(labels, w0, sigma, sampling, class_weights, balanced);
}

// The multi-class form: softmax cross-entropy over the C classes of input
// (N, C, *spatial) with a class-index target, weighted per pixel by the map
// and per class by `weight`, pixels labelled ignore_index left out; with
// label smoothing as F.cross_entropy(label_smoothing=).
at::Tensor multi_class_loss(const at::Tensor& input, const at::Tensor& target,
                            const at::Tensor& weights, const std::optional<at::Tensor>& weight,
                            int64_t ignore_index, std::string_view reduction,
                            double label_smoothing) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("segloss::_weighted_cross_entropy", "")
                       .typed<WeightedCrossEntropySignature>();
  return std::get<0>(op.call(input, target, weights, weight, ignore_index, reduction,
                             /*gamma=*/0.0, label_smoothing, kOp));
}

// Checks the multi-class layout: input (N, C, *spatial) with C >= 2 classes
// and 2 or 3 spatial dims, the target a class-index map without the C dim.
void check_multi_class_layout(const at::Tensor& input, const at::Tensor& target,
                              bool from_logits) {
  TORCH_CHECK_VALUE(from_logits, kOp,
                    ": with a class-index target the loss is the softmax cross-entropy of "
                    "logits; from_logits=False applies to the binary form (a float target)");
  TORCH_CHECK_VALUE(input.dim() == 4 || input.dim() == 5, kOp,
                    ": with a class-index target, input must hold logits of shape "
                    "[N, C, *spatial] with 2 or 3 spatial dims, got shape ",
                    input.sym_sizes());
  TORCH_CHECK_VALUE(target.sym_sizes() != input.sym_sizes(), kOp,
                    ": target has the input's shape ", input.sym_sizes(), " but holds ",
                    target.scalar_type(),
                    " values: the binary form takes a float target (0 or 1), the multi-class "
                    "form class indices of shape [N, *spatial]");
  TORCH_CHECK_VALUE(input.sym_size(1) >= 2, kOp,
                    ": the multi-class form needs at least 2 classes in dim 1 of input, got "
                    "shape ",
                    input.sym_sizes(),
                    "; for one logit channel use the binary form with a float target");
}

// The sum of a tensor's elements in an order fixed by its size alone: rows
// of kRow elements, each summed by one thread, then the row sums likewise.
// ATen's full reduction splits the work by the thread count, so its last
// bits would depend on it (the fused ops' own sums are fixed-order too).
at::Tensor fixed_order_sum(const at::Tensor& tensor, at::ScalarType dtype) {
  constexpr int64_t kRow = 2048;  // whole rows stay below ATen's parallel grain
  at::Tensor values = tensor.to(dtype).flatten();
  while (values.sym_numel() > kRow) {
    const c10::SymInt pad = (kRow - values.sym_numel() % kRow) % kRow;
    values = at::constant_pad_nd_symint(values, {c10::SymInt(0), pad}, 0)
                 .view_symint({c10::SymInt(-1), c10::SymInt(kRow)})
                 .sum(1);
  }
  return values.sum();
}

at::Tensor shape_aware_loss(const at::Tensor& input, const at::Tensor& target,
                            const std::optional<at::Tensor>& weight_map,
                            const std::optional<at::Tensor>& instances, double w0, double sigma,
                            std::optional<at::ArrayRef<double>> sampling,
                            std::optional<at::ArrayRef<double>> class_weights, bool balanced,
                            bool from_logits, const std::optional<at::Tensor>& weight,
                            int64_t ignore_index, std::string_view reduction,
                            double label_smoothing) {
  TORCH_CHECK_VALUE(reduction == "none" || reduction == "mean" || reduction == "sum" ||
                        reduction == "weighted_mean",
                    kOp, ": reduction must be 'none', 'mean', 'sum' or 'weighted_mean', got '",
                    reduction, "'");
  TORCH_CHECK_VALUE(label_smoothing >= 0 && label_smoothing <= 1, kOp,
                    ": label_smoothing must lie in [0, 1], got ", label_smoothing);
  if (at::isIntegralType(target.scalar_type(), /*includeBool=*/true)) {
    check_multi_class_layout(input, target, from_logits);
    const at::Tensor weights = weight_map_of(input, weight_map, instances, w0, sigma, sampling,
                                             class_weights, balanced, /*channel=*/true);
    return multi_class_loss(input, target, weights, weight, ignore_index, reduction,
                            label_smoothing);
  }
  TORCH_CHECK_VALUE(label_smoothing == 0, kOp,
                    ": label_smoothing applies to the multi-class form, whose target holds "
                    "class indices; the binary form's target is a float tensor (smooth it "
                    "there: y (1 - e) + e / 2), got label_smoothing=",
                    label_smoothing);
  TORCH_CHECK_VALUE(!is_given(weight) && ignore_index == -100, kOp,
                    ": weight (per-class weights) and ignore_index apply to the multi-class "
                    "form, whose target holds class indices; the binary form's target is a "
                    "float tensor (use class_weights or weight_map to weight it)");
  const bool channel = has_channel_dim(input);
  // The BCE op's checks of input and target, naming this op, before the map.
  check_pointwise_arguments(kOp, input, target, std::nullopt, std::nullopt, "none",
                            core::pointwise_loss_name(core::PointwiseLoss::BceWithLogits), {});
  TORCH_CHECK(!target.requires_grad(), kOp,
              ": the gradient with respect to target is not implemented; pass target.detach()");
  at::Tensor weights = weight_map_of(input, weight_map, instances, w0, sigma, sampling,
                                     class_weights, balanced, channel);
  if (channel) weights = weights.unsqueeze(1);
  if (reduction != "weighted_mean") return bce(from_logits, input, target, weights, reduction);
  // Normalised by the sum of the weights: sum(w l) / sum(w) as the op's mean
  // of w' l, with w' = w count / sum(w) in float32 (float64 for float64
  // input), whose mean is 1: the op's mean (accumulated in float32) is then
  // the result itself, which a half-precision output rounds once (the mean
  // of w l itself would round into half's subnormals for small weights). 0
  // when the weights sum to 0 (also for an empty input, as in the
  // multi-class form).
  const at::ScalarType accumulate =
      input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor total = fixed_order_sum(weights, accumulate);
  const at::Tensor nonzero = total != 0;
  const at::Tensor scale = at::where(
      nonzero, at::where(nonzero, total, at::ones_like(total)).reciprocal() * weights.sym_numel(),
      at::zeros_like(total));
  const at::Tensor loss = bce(from_logits, input, target, weights.to(accumulate) * scale, "mean");
  return at::where(nonzero, loss, at::zeros_like(loss));
}

}  // namespace

TORCH_LIBRARY_IMPL(segloss, CompositeImplicitAutograd, m) {
  m.impl("shape_aware_loss", &shape_aware_loss);
}

}  // namespace segloss::ops
