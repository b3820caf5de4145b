// Validation and preparation of the weighted softmax cross-entropy op's
// arguments (the multi-class shape-aware loss), shared by the CPU, CUDA and
// Meta kernels so that every backend accepts and rejects the same inputs with
// the same messages.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string_view>
#include <tuple>

#include "../core/platform.h"
#include "reduction.h"

namespace segloss::ops {

// The messages name `caller`, the public function the private op computes:
// shape_aware_loss by default, focal_loss for the softmax focal loss.

// segloss::_weighted_cross_entropy's C++ signature: the loss and the
// reduction's divisor. gamma > 0 makes it the focal loss, label_smoothing > 0
// the smoothed one (not both; core/cross_entropy.h).
using WeightedCrossEntropySignature = std::tuple<at::Tensor, at::Tensor>(
    const at::Tensor& input, const at::Tensor& target,
    const std::optional<at::Tensor>& weight_map, const std::optional<at::Tensor>& weight,
    int64_t ignore_index, std::string_view reduction, double gamma, double label_smoothing,
    std::string_view caller);

// segloss::_weighted_cross_entropy_backward's: the gradient of the input.
using WeightedCrossEntropyBackwardSignature = at::Tensor(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& target,
    const std::optional<at::Tensor>& weight_map, const std::optional<at::Tensor>& weight,
    int64_t ignore_index, std::string_view reduction, const at::Tensor& total_weight,
    double gamma, double label_smoothing, std::string_view caller);

// The arguments as the kernels read them. The input is viewed as (N, C, S),
// S the number of pixels (voxels) per image.
struct CrossEntropyOperands {
  at::Tensor input;       // contiguous, floating point
  at::Tensor labels;      // contiguous (N, S) class indices: uint8, int32 or int64
  at::Tensor weight_map;  // undefined, or contiguous (N, S) in the compute type
  at::Tensor weight;      // undefined, or contiguous (C,) per-class weights, compute type
  int64_t ignore_index = -100;
  Reduction reduction = Reduction::Mean;
  double gamma = 0, label_smoothing = 0;
  std::string_view caller;  // the public function, for messages
  int64_t batch = 0, classes = 0, pixels = 0;
};

// The reduction's divisor from the counted (not ignored) pixels and their
// total weight, and the reduced value sum / divisor: a weighted mean with no
// weight is 0 (no pixel carries any; F.cross_entropy's is NaN), a mean over
// no pixels NaN, as in PyTorch. Shared by the CPU and CUDA kernels (host and
// device).
SEGLOSS_INLINE double cross_entropy_divisor(Reduction reduction, double counted,
                                            double total_weight) {
  return reduction == Reduction::Mean           ? counted
         : reduction == Reduction::WeightedMean ? total_weight
                                                : 1.0;
}

SEGLOSS_INLINE double cross_entropy_reduced(Reduction reduction, double sum, double divisor) {
  return reduction == Reduction::WeightedMean && divisor == 0 ? 0.0 : sum / divisor;
}

// Checks every argument without touching data (works on Meta tensors with
// symbolic shapes): gamma finite and >= 0, label_smoothing in [0, 1], not
// both nonzero. Returns the reduction.
Reduction check_cross_entropy_arguments(std::string_view caller, const at::Tensor& input, const at::Tensor& target,
                                        const std::optional<at::Tensor>& weight_map,
                                        const std::optional<at::Tensor>& weight,
                                        std::string_view reduction, double gamma,
                                        double label_smoothing);

// grad_output checked against the forward's loss: (N, *spatial) for 'none',
// else 0-dim.
void check_cross_entropy_grad_output(std::string_view caller, const at::Tensor& grad_output, const at::Tensor& input,
                                     Reduction reduction);

// Raises the error for class indices outside [0, C) that are not ignore_index
// unless `valid` (the kernels' own finding).
void check_class_indices(bool valid, const CrossEntropyOperands& ops);

// The loss, input's dtype: (N, *spatial) for 'none', else 0-dim.
at::Tensor empty_cross_entropy_loss(const at::Tensor& input, Reduction reduction);

// The reduction's divisor: 0-dim, float32 (float64 for float64 input).
at::Tensor empty_cross_entropy_total_weight(const at::Tensor& input);

// The backward's total_weight: the forward's, 0-dim, on the input's device.
void check_cross_entropy_total_weight(std::string_view caller, const at::Tensor& total_weight,
                                      const at::Tensor& input);

CrossEntropyOperands prepare_cross_entropy_operands(const at::Tensor& input,
                                                    const at::Tensor& target,
                                                    const std::optional<at::Tensor>& weight_map,
                                                    const std::optional<at::Tensor>& weight,
                                                    int64_t ignore_index,
                                                    std::string_view reduction, double gamma,
                                                    double label_smoothing,
                                                    std::string_view caller);

// check_cross_entropy_grad_output, then grad_output contiguous in the input's
// dtype.
at::Tensor prepare_cross_entropy_grad_output(const at::Tensor& grad_output,
                                             const CrossEntropyOperands& operands);

}  // namespace segloss::ops
