// CUDA kernels of the weighted softmax cross-entropy (the multi-class
// shape-aware loss): one thread per pixel walks its C logits (consecutive
// threads read consecutive pixels of a class row: coalesced) with the
// per-pixel math shared with the CPU (csrc/core/cross_entropy.h). Reductions
// are deterministic: a fixed number of blocks each writes its partial sums,
// then one block adds them in a fixed order. A class index outside [0, C)
// that is not ignore_index is a device-side assert (as in ATen's nll_loss),
// forward and backward: no host synchronisation, so CUDA graphs can capture
// the op (the CPU kernels raise IndexError instead).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "../core/cross_entropy.h"
#include "../ops/cross_entropy_operands.h"
#include "cuda_utils.cuh"

namespace segloss::ops {
namespace {

using cuda::block_sum;
using cuda::dispatch_labels;
using cuda::grid_size;
using cuda::kThreads;

using cuda::kMaxElementwiseBlocks;
using cuda::kMaxReduceBlocks;

// Partial sums per block: the loss, the counted pixels and their weight.
enum PartialColumn : int { kLossSum = 0, kCounted = 1, kWeightSum = 2, kPartialColumns = 3 };

template <typename scalar_t, typename label_t, typename acc_t>
struct DeviceOperands {
  const scalar_t* input;
  const label_t* labels;
  const acc_t* weight_map;  // or nullptr: 1
  const acc_t* weight;      // or nullptr: 1
  int64_t classes, pixels, total_pixels, ignore_index;
  acc_t gamma, label_smoothing;  // the focal exponent, the smoothing (not both > 0)

  explicit DeviceOperands(const CrossEntropyOperands& ops)
      : input(ops.input.const_data_ptr<scalar_t>()),
        labels(ops.labels.const_data_ptr<label_t>()),
        weight_map(ops.weight_map.defined() ? ops.weight_map.const_data_ptr<acc_t>() : nullptr),
        weight(ops.weight.defined() ? ops.weight.const_data_ptr<acc_t>() : nullptr),
        classes(ops.classes),
        pixels(ops.pixels),
        total_pixels(ops.batch * ops.pixels),
        ignore_index(ops.ignore_index),
        gamma(acc_t(ops.gamma)),
        label_smoothing(acc_t(ops.label_smoothing)) {}

  // Pixel p = n * S + s: its class (-1 if ignored; an invalid one asserts),
  // coefficient and map value, the max and sum of exp(x - max) over its
  // logits, and (for the focal form) the sum over the other classes and the
  // target's exp(x_t - max).
  struct Pixel {
    int64_t target;
    acc_t coefficient, pixel_weight, max_x, sum_exp, other_exp, target_exp;
    const scalar_t* x;  // its class-0 logit; class c is c * pixels further
  };

  __device__ Pixel pixel(int64_t p) const {
    Pixel px;
    const int64_t label = int64_t(labels[p]);
    const bool ignored = core::is_ignored_label(label, true, ignore_index);
    const bool valid = core::is_class_label(label, classes);
    SEGLOSS_KERNEL_ASSERT(ignored || valid,
                          "segloss.shape_aware_loss: class index %lld in target; class indices "
                          "in target must lie in [0, %lld) or equal ignore_index (%lld)",
                          (long long)label, (long long)classes, (long long)ignore_index);
    px.target = ignored || !valid ? -1 : label;
    const bool counted = px.target >= 0;
    px.pixel_weight = weight_map == nullptr ? acc_t(1) : weight_map[p];
    px.coefficient =
        !counted ? acc_t(0) : px.pixel_weight * (weight == nullptr ? acc_t(1) : weight[label]);
    const int64_t n = p / pixels;
    px.x = input + n * classes * pixels + (p - n * pixels);
    acc_t max_x = acc_t(px.x[0]);
    for (int64_t c = 1; c < classes; ++c) max_x = core::larger_of(max_x, acc_t(px.x[c * pixels]));
    acc_t sum = 0, other = 0, target_exp = 0;
    for (int64_t c = 0; c < classes; ++c) {
      const acc_t e = core::shifted_exp(acc_t(px.x[c * pixels]), max_x);
      sum += e;
      other += c == px.target ? acc_t(0) : e;
      target_exp = c == px.target ? e : target_exp;
    }
    px.max_x = max_x;
    px.sum_exp = sum;
    px.other_exp = other;
    px.target_exp = target_exp;
    return px;
  }

  __device__ acc_t x_target(const Pixel& px) const {
    return px.target >= 0 ? acc_t(px.x[px.target * pixels]) : acc_t(0);
  }

  // sum_k c_k (-log p_k), label smoothing's term, and sum_k c_k.
  __device__ void smoothing_sums(const Pixel& px, const core::LogNormalizer<acc_t>& normalizer,
                                 acc_t& smoothing, acc_t& weight_sum) const {
    smoothing = 0;
    weight_sum = 0;
    for (int64_t c = 0; c < classes; ++c) {
      const acc_t w = weight == nullptr ? acc_t(1) : weight[c];
      smoothing += core::smoothing_nll(w, normalizer, acc_t(px.x[c * pixels]));
      weight_sum += w;
    }
  }

  __device__ acc_t loss(const Pixel& px) const {
    const bool ignored = px.target < 0;
    const acc_t x_t = x_target(px);
    if (gamma > acc_t(0)) {
      const acc_t nll = core::target_nll(px.max_x, px.sum_exp, px.other_exp, x_t);
      return core::focal_nll(ignored, px.coefficient, px.other_exp / px.sum_exp, nll, gamma);
    }
    const core::LogNormalizer<acc_t> normalizer = core::log_normalizer(px.max_x, px.sum_exp);
    const acc_t plain = core::weighted_nll(ignored, px.coefficient, normalizer, x_t);
    if (!(label_smoothing > acc_t(0))) return plain;
    acc_t smoothing, weight_sum;
    smoothing_sums(px, normalizer, smoothing, weight_sum);
    return core::smoothed_nll(ignored, plain, px.pixel_weight, smoothing, label_smoothing,
                              acc_t(classes));
  }
};

template <typename scalar_t, typename label_t, typename acc_t>
__global__ void loss_kernel(DeviceOperands<scalar_t, label_t, acc_t> d, scalar_t* loss) {
  SEGLOSS_GRID_STRIDE_LOOP(p, d.total_pixels) {
    const auto px = d.pixel(p);
    loss[p] = scalar_t(d.loss(px));
  }
}

template <typename scalar_t, typename label_t, typename acc_t>
__global__ void partial_sums_kernel(DeviceOperands<scalar_t, label_t, acc_t> d, acc_t* partials) {
  acc_t loss = 0, counted = 0, weight = 0;
  SEGLOSS_GRID_STRIDE_LOOP(p, d.total_pixels) {
    const auto px = d.pixel(p);
    loss += d.loss(px);
    counted += px.target >= 0 ? acc_t(1) : acc_t(0);
    weight += px.coefficient;
  }
  acc_t values[kPartialColumns];
  values[kLossSum] = loss;
  values[kCounted] = counted;
  values[kWeightSum] = weight;
  cuda::block_sums_to(values, partials + blockIdx.x * kPartialColumns);
}

// One block: adds the partials in double in a fixed order.
template <typename scalar_t, typename acc_t>
__global__ void finish_kernel(const acc_t* partials, int64_t blocks, Reduction reduction,
                              scalar_t* loss, acc_t* total_weight) {
  double sums[kPartialColumns] = {0, 0, 0};
  for (int64_t b = threadIdx.x; b < blocks; b += blockDim.x) {
    for (int k = 0; k < kPartialColumns; ++k) sums[k] += double(partials[b * kPartialColumns + k]);
  }
  for (int k = 0; k < kPartialColumns; ++k) sums[k] = block_sum(sums[k]);
  if (threadIdx.x == 0) {
    const double divide_by = cross_entropy_divisor(reduction, sums[kCounted], sums[kWeightSum]);
    *total_weight = acc_t(divide_by);
    *loss = scalar_t(cross_entropy_reduced(reduction, sums[kLossSum], divide_by));
  }
}

// grad_output is per pixel for reduction 'none', else one value that the
// reduction's divisor (total_weight) scales.
template <typename scalar_t, typename label_t, typename acc_t>
__global__ void grad_kernel(DeviceOperands<scalar_t, label_t, acc_t> d,
                            const scalar_t* grad_output, Reduction reduction,
                            const acc_t* total_weight, scalar_t* grad_input) {
  const bool per_pixel = reduction == Reduction::None;
  const acc_t reduced_scale =
      per_pixel ? acc_t(0)
                : acc_t(cross_entropy_reduced(reduction, double(grad_output[0]), double(*total_weight)));
  SEGLOSS_GRID_STRIDE_LOOP(p, d.total_pixels) {
    const auto px = d.pixel(p);
    const acc_t g = per_pixel ? acc_t(grad_output[p]) : reduced_scale;
    const acc_t scale = px.target < 0 ? acc_t(0) : px.coefficient * g;
    const acc_t inverse_sum = acc_t(1) / px.sum_exp;
    scalar_t* out = grad_input + (px.x - d.input);
    if (d.gamma > acc_t(0)) {
      const acc_t nll = core::target_nll(px.max_x, px.sum_exp, px.other_exp, d.x_target(px));
      const acc_t q = px.other_exp * inverse_sum;
      const acc_t focal_scale =
          scale * core::focal_grad_factor(q, px.target_exp * inverse_sum, nll, d.gamma);
      for (int64_t c = 0; c < d.classes; ++c) {
        const acc_t e = core::shifted_exp(acc_t(px.x[c * d.pixels]), px.max_x);
        out[c * d.pixels] =
            scalar_t(core::focal_nll_grad(focal_scale, e, inverse_sum, px.target == c, q));
      }
    } else if (d.label_smoothing > acc_t(0)) {
      acc_t smoothing, weight_sum;
      d.smoothing_sums(px, core::log_normalizer(px.max_x, px.sum_exp), smoothing, weight_sum);
      const acc_t positive = (acc_t(1) - d.label_smoothing) * scale;
      const acc_t per_class = px.target < 0 ? acc_t(0)
                                            : d.label_smoothing / acc_t(d.classes) *
                                                  px.pixel_weight * g;
      const acc_t sum_a = positive + per_class * weight_sum;
      for (int64_t c = 0; c < d.classes; ++c) {
        const acc_t e = core::shifted_exp(acc_t(px.x[c * d.pixels]), px.max_x);
        const acc_t w = d.weight == nullptr ? acc_t(1) : d.weight[c];
        const acc_t a = core::softmax_ce_coefficient(
            positive, px.target == c ? acc_t(1) : acc_t(0), per_class * w);
        out[c * d.pixels] = scalar_t(core::softmax_ce_grad(acc_t(1), e * inverse_sum, sum_a, a));
      }
    } else {
      for (int64_t c = 0; c < d.classes; ++c) {
        const acc_t e = core::shifted_exp(acc_t(px.x[c * d.pixels]), px.max_x);
        out[c * d.pixels] =
            scalar_t(core::weighted_nll_grad(scale, e, inverse_sum, px.target == c));
      }
    }
  }
}

// Class indices are checked on the device (SEGLOSS_KERNEL_ASSERT in
// DeviceOperands::pixel): no synchronisation, so the op can be captured in a
// CUDA graph.
template <typename scalar_t>
void forward_launch(const CrossEntropyOperands& ops, at::Tensor& loss, at::Tensor& total_weight) {
  using acc_t = at::opmath_type<scalar_t>;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t total_pixels = ops.batch * ops.pixels;
  if (ops.reduction == Reduction::None) {
    // Per-pixel losses; the divisor is 1 (no partial sums needed for it).
    total_weight.fill_(cross_entropy_divisor(ops.reduction, 0, 0));
    if (total_pixels == 0) return;
    dispatch_labels(ops.labels.scalar_type(), [&](auto label) {
      using label_t = decltype(label);
      loss_kernel<scalar_t, label_t, acc_t>
          <<<grid_size(total_pixels, kMaxElementwiseBlocks), kThreads, 0, stream>>>(
              DeviceOperands<scalar_t, label_t, acc_t>(ops), loss.mutable_data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return;
  }
  const int64_t blocks = total_pixels == 0 ? 0 : grid_size(total_pixels, kMaxReduceBlocks);
  const at::Tensor partials =
      at::empty({blocks, kPartialColumns},
                ops.input.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
  if (blocks > 0) {
    dispatch_labels(ops.labels.scalar_type(), [&](auto label) {
      using label_t = decltype(label);
      partial_sums_kernel<scalar_t, label_t, acc_t><<<blocks, kThreads, 0, stream>>>(
          DeviceOperands<scalar_t, label_t, acc_t>(ops), partials.mutable_data_ptr<acc_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  finish_kernel<scalar_t, acc_t><<<1, kThreads, 0, stream>>>(
      partials.const_data_ptr<acc_t>(), blocks, ops.reduction, loss.mutable_data_ptr<scalar_t>(),
      total_weight.mutable_data_ptr<acc_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
void backward_launch(const CrossEntropyOperands& ops, const at::Tensor& grad_output,
                     const at::Tensor& total_weight, at::Tensor& grad_input) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t total_pixels = ops.batch * ops.pixels;
  if (total_pixels == 0) return;
  const at::Tensor divisor_value = total_weight.to(c10::CppTypeToScalarType<acc_t>::value);
  dispatch_labels(ops.labels.scalar_type(), [&](auto label) {
    using label_t = decltype(label);
    grad_kernel<scalar_t, label_t, acc_t>
        <<<grid_size(total_pixels, kMaxElementwiseBlocks), kThreads, 0,
           c10::cuda::getCurrentCUDAStream()>>>(
            DeviceOperands<scalar_t, label_t, acc_t>(ops), grad_output.const_data_ptr<scalar_t>(),
            ops.reduction, divisor_value.const_data_ptr<acc_t>(),
            grad_input.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

std::tuple<at::Tensor, at::Tensor> weighted_cross_entropy_cuda(
    const at::Tensor& input, const at::Tensor& target,
    const std::optional<at::Tensor>& weight_map, const std::optional<at::Tensor>& weight,
    int64_t ignore_index, std::string_view reduction, double gamma, double label_smoothing,
    std::string_view caller) {
  const c10::cuda::CUDAGuard guard(input.device());
  const CrossEntropyOperands ops = prepare_cross_entropy_operands(
      input, target, weight_map, weight, ignore_index, reduction, gamma, label_smoothing, caller);
  at::Tensor loss = empty_cross_entropy_loss(ops.input, ops.reduction);
  at::Tensor total_weight = empty_cross_entropy_total_weight(ops.input);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ops.input.scalar_type(),
                                  "segloss_weighted_cross_entropy_cuda",
                                  [&] { forward_launch<scalar_t>(ops, loss, total_weight); });
  return {loss, total_weight};
}

at::Tensor weighted_cross_entropy_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& target,
    const std::optional<at::Tensor>& weight_map, const std::optional<at::Tensor>& weight,
    int64_t ignore_index, std::string_view reduction, const at::Tensor& total_weight,
    double gamma, double label_smoothing, std::string_view caller) {
  const c10::cuda::CUDAGuard guard(input.device());
  const CrossEntropyOperands ops = prepare_cross_entropy_operands(
      input, target, weight_map, weight, ignore_index, reduction, gamma, label_smoothing, caller);
  const at::Tensor grad_out = prepare_cross_entropy_grad_output(grad_output, ops);
  check_cross_entropy_total_weight(caller, total_weight, ops.input);
  at::Tensor grad_input = at::empty_like(ops.input, at::MemoryFormat::Contiguous);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, ops.input.scalar_type(), "segloss_weighted_cross_entropy_backward_cuda",
      [&] { backward_launch<scalar_t>(ops, grad_out, total_weight, grad_input); });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(segloss, CUDA, m) {
  m.impl("_weighted_cross_entropy", &weighted_cross_entropy_cuda);
  m.impl("_weighted_cross_entropy_backward", &weighted_cross_entropy_backward_cuda);
}

}  // namespace segloss::ops
