// shape_aware_loss, binary form: the article's shape-aware (U-Net) loss, BCE
// weighted per pixel by the U-Net weight map. The map is given (weight_map,
// e.g. from segloss.numpy in a DataLoader) or computed on the input's device
// from instance labels (instances) by unet_weight_map; the loss is then the
// fused BCE op with the map as its per-element weight (one pass forward, one
// backward, nothing input-sized saved). The map is a constant: no gradient
// flows to it.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "checks.h"

namespace segloss::ops {
namespace {

constexpr const char* kOp = "segloss.shape_aware_loss";

using BceSignature = at::Tensor(const at::Tensor&, const at::Tensor&,
                                const std::optional<at::Tensor>&,
                                const std::optional<at::Tensor>&, std::string_view);

at::Tensor bce(bool from_logits, const at::Tensor& input, const at::Tensor& target,
               const at::Tensor& weight, std::string_view reduction) {
  static auto with_logits = c10::Dispatcher::singleton()
                                .findSchemaOrThrow("segloss::binary_cross_entropy_with_logits", "")
                                .typed<BceSignature>();
  static auto probabilities = c10::Dispatcher::singleton()
                                  .findSchemaOrThrow("segloss::binary_cross_entropy", "")
                                  .typed<BceSignature>();
  return (from_logits ? with_logits : probabilities)
      .call(input, target, weight, std::nullopt, reduction);
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
                    input.sym_sizes());
  return channel;
}

// A per-pixel tensor (weight_map or instances) of input's shape or of its
// per-pixel shape (N, *spatial), as (N, *spatial).
at::Tensor per_pixel(const at::Tensor& tensor, std::string_view name, const at::Tensor& input,
                     bool channel) {
  check_same_device(kOp, name, tensor, input);
  std::vector<c10::SymInt> pixels(input.sym_sizes().begin(), input.sym_sizes().end());
  if (channel) pixels.erase(pixels.begin() + 1);
  if (tensor.sym_sizes() == c10::SymIntArrayRef(pixels)) return tensor;
  TORCH_CHECK_VALUE(channel && tensor.sym_sizes() == input.sym_sizes(), kOp, ": ", name,
                    " must have the input's shape ", input.sym_sizes(), " or its per-pixel shape ",
                    c10::SymIntArrayRef(pixels), ", got ", tensor.sym_sizes());
  return tensor.squeeze(1);
}

at::Tensor shape_aware_loss(const at::Tensor& input, const at::Tensor& target,
                            const std::optional<at::Tensor>& weight_map,
                            const std::optional<at::Tensor>& instances, double w0, double sigma,
                            std::optional<at::ArrayRef<double>> sampling,
                            std::optional<at::ArrayRef<double>> class_weights, bool balanced,
                            bool from_logits, std::string_view reduction) {
  TORCH_CHECK_VALUE(is_given(weight_map) != is_given(instances), kOp,
                    ": give exactly one of weight_map (a precomputed U-Net weight map) and "
                    "instances (instance labels to compute it from), got ",
                    is_given(weight_map) ? "both" : "neither");
  TORCH_CHECK_VALUE(reduction == "none" || reduction == "mean" || reduction == "sum" ||
                        reduction == "weighted_mean",
                    kOp, ": reduction must be 'none', 'mean', 'sum' or 'weighted_mean', got '",
                    reduction, "'");
  const bool channel = has_channel_dim(input);
  at::Tensor weights;
  if (is_given(weight_map)) {
    TORCH_CHECK_VALUE(!sampling.has_value() && !class_weights.has_value() && !balanced, kOp,
                      ": sampling, class_weights and balanced apply to instances; a given "
                      "weight_map is used as it is");
    check_floating(kOp, "weight_map", *weight_map);
    weights = per_pixel(weight_map->detach(), "weight_map", input, channel);
  } else {
    TORCH_CHECK_TYPE(at::isIntegralType(instances->scalar_type(), /*includeBool=*/false), kOp,
                     ": instances must be a tensor of integer instance ids (0 is background), "
                     "got ",
                     instances->scalar_type());
    weights = unet_weight_map(per_pixel(*instances, "instances", input, channel), w0, sigma,
                              sampling, class_weights, balanced);
  }
  if (channel) weights = weights.unsqueeze(1);
  if (reduction != "weighted_mean") return bce(from_logits, input, target, weights, reduction);
  // Normalised by the sum of the weights: sum(w l) / sum(w) = mean(w l) /
  // mean(w), in float32 (float64 for float64 input) so that half-precision
  // sums cannot overflow; 0 when every weight is 0.
  const at::ScalarType accumulate =
      input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor mean = bce(from_logits, input, target, weights, "mean").to(accumulate);
  const at::Tensor norm = weights.to(accumulate).mean();
  const at::Tensor nonzero = norm != 0;
  return at::where(nonzero, mean / at::where(nonzero, norm, at::ones_like(norm)),
                   at::zeros_like(mean))
      .to(input.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(segloss, CompositeImplicitAutograd, m) {
  m.impl("shape_aware_loss", &shape_aware_loss);
}

}  // namespace segloss::ops
