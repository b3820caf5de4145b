// CUDA kernels of the Dice sums (_dice_sums and its backward), over the
// per-pixel math shared with the CPU (csrc/core/dice.h).
//
// Forward: blocks of one image accumulate up to kChunk channels' (I, P, T) in
// registers, reduce them in a fixed tree and write per-block partials; a
// second kernel adds the partials in block order (deterministic, no float
// atomics). Softmax is computed on the fly per pixel. Backward: one thread
// per pixel, all channels. A class index out of range is a device-side
// assert in the forward (the CPU raises): no host synchronisation, so CUDA
// graphs can capture the op.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <type_traits>

#include "../core/dice.h"
#include "../ops/dice_operands.h"
#include "cuda_utils.cuh"

namespace segloss::ops {
namespace {

using cuda::block_sum;
using cuda::grid_size;
using cuda::kThreads;

constexpr int kChunk = 8;                    // channels per forward pass over the pixels
constexpr int64_t kMaxBlocksPerImage = 256;  // fixed: the partials' order never changes
constexpr int64_t kMaxPixelBlocks = 65535;
constexpr int64_t kMaxGridY = 65535;

// The CUDA kernels read class indices as int64.
DiceOperands with_int64_labels(DiceOperands ops) {
  if (ops.labels.defined()) ops.labels = ops.labels.to(at::kLong);
  return ops;
}

// The operands as raw pointers, and the per-pixel reads.
template <typename scalar_t, typename acc_t>
struct DiceDevice {
  const scalar_t* input;
  const scalar_t* dense_target;  // or nullptr
  const int64_t* labels;         // or nullptr
  const scalar_t* mask;          // or nullptr
  core::BroadcastIndexer mask_index;
  int64_t channels, pixels;
  int64_t ignore_index;
  bool has_ignore;
  core::Activation activation;
  acc_t gamma;
  bool cross_entropy;
  int64_t columns;

  explicit DiceDevice(const DiceOperands& ops)
      : input(ops.input.const_data_ptr<scalar_t>()),
        dense_target(ops.dense_target.defined() ? ops.dense_target.const_data_ptr<scalar_t>()
                                                : nullptr),
        labels(ops.labels.defined() ? ops.labels.const_data_ptr<int64_t>() : nullptr),
        mask(ops.mask.defined() ? ops.mask.const_data_ptr<scalar_t>() : nullptr),
        mask_index(ops.mask_index),
        channels(ops.channels),
        pixels(ops.pixels),
        ignore_index(ops.ignore_index.value_or(0)),
        has_ignore(ops.ignore_index.has_value()),
        activation(ops.activation),
        gamma(acc_t(ops.gamma)),
        cross_entropy(ops.cross_entropy),
        columns(ops.columns()) {}

  __device__ int64_t label_at(int64_t n, int64_t s) const {
    return labels == nullptr ? 0 : labels[n * pixels + s];
  }
  // The label rule the CPU kernels use (core/labels.h).
  __device__ bool label_is_valid(int64_t label) const {
    return core::is_valid_label(label, has_ignore, ignore_index,
                                core::number_of_labels(channels));
  }
  __device__ acc_t mask_at(int64_t n, int64_t s, int64_t label) const {
    if (labels != nullptr && core::is_ignored_label(label, has_ignore, ignore_index)) {
      return acc_t(0);
    }
    return mask == nullptr ? acc_t(1) : acc_t(mask[mask_index.offset(n * pixels + s)]);
  }
  __device__ acc_t input_at(int64_t n, int64_t c, int64_t s) const {
    return acc_t(input[(n * channels + c) * pixels + s]);
  }
  __device__ acc_t target_at(int64_t n, int64_t c, int64_t s, int64_t label) const {
    if (labels != nullptr) return label == core::label_of_channel(channels, c) ? acc_t(1) : acc_t(0);
    return acc_t(dense_target[(n * channels + c) * pixels + s]);
  }
  // Softmax normaliser at a pixel: the maximum, 1 / sum(exp(x - max)) and
  // log(sum(exp(x))).
  __device__ void softmax_stats(int64_t n, int64_t s, acc_t* max_x, acc_t* inverse_sum,
                                acc_t* log_sum_exp) const {
    acc_t m = input_at(n, 0, s);
    for (int64_t c = 1; c < channels; ++c) m = core::larger_of(m, input_at(n, c, s));
    acc_t sum = 0;
    for (int64_t c = 0; c < channels; ++c) sum += core::shifted_exp(input_at(n, c, s), m);
    *max_x = m;
    *inverse_sum = acc_t(1) / sum;
    *log_sum_exp = core::log_sum_exp(m, sum);
  }
  // The activated input at (n, c, s), given the pixel's softmax statistics.
  __device__ acc_t probability(int64_t n, int64_t c, int64_t s, acc_t max_x,
                               acc_t inverse_sum) const {
    const acc_t x = input_at(n, c, s);
    switch (activation) {
      case core::Activation::Sigmoid:
        return core::sigmoid(x);
      case core::Activation::Softmax:
        return core::shifted_exp(x, max_x) * inverse_sum;
      default:
        return x;
    }
  }
};

// grid (blocks_per_image, images from n0); partials[n][block][j][k] for
// channels c0 + j and the kColumns columns of core::DiceColumn.
template <core::GammaKind K, int kColumns, typename scalar_t, typename acc_t>
__global__ void dice_partial_sums_kernel(DiceDevice<scalar_t, acc_t> d, int64_t n0, int64_t c0,
                                         acc_t* partials) {
  const int64_t n = n0 + blockIdx.y;
  const int64_t chunk = d.channels - c0 < kChunk ? d.channels - c0 : kChunk;
  acc_t sums[kChunk][kColumns];
#pragma unroll
  for (int j = 0; j < kChunk; ++j) {
#pragma unroll
    for (int k = 0; k < kColumns; ++k) sums[j][k] = acc_t(0);
  }
  SEGLOSS_GRID_STRIDE_LOOP(s, d.pixels) {
    const int64_t label = d.label_at(n, s);
    SEGLOSS_KERNEL_ASSERT(d.labels == nullptr || d.label_is_valid(label),
                          "segloss._dice_sums: class index %lld in target; class indices in "
                          "target must lie in [0, %lld) (or equal ignore_index)",
                          (long long)label, (long long)core::number_of_labels(d.channels));
    const acc_t m = d.mask_at(n, s, label);
    acc_t max_x = 0, inverse_sum = 1, log_sum_exp = 0;
    if (d.activation == core::Activation::Softmax) {
      d.softmax_stats(n, s, &max_x, &inverse_sum, &log_sum_exp);
    }
#pragma unroll
    for (int j = 0; j < kChunk; ++j) {
      if (j < chunk) {
        const int64_t c = c0 + j;
        const acc_t p = d.probability(n, c, s, max_x, inverse_sum);
        const acc_t y = d.target_at(n, c, s, label);
        if constexpr (kColumns == core::kDiceCeColumns) {
          const acc_t x = d.input_at(n, c, s);
          core::add_terms<kColumns>(
              sums[j], d.activation == core::Activation::Softmax
                           ? core::softmax_dice_ce_terms<K>(m, p, y, x, log_sum_exp, d.gamma)
                           : core::sigmoid_dice_ce_terms<K>(m, p, y, x, d.gamma));
        } else {
          core::add_terms<kColumns>(sums[j], core::dice_terms<K>(m, p, y, d.gamma));
        }
      }
    }
  }
  acc_t* out = partials + (n * gridDim.x + blockIdx.x) * kChunk * kColumns;  // gridDim.x == blocks
  // Only the chunk's channels: the block sums (each with its barriers) are the
  // kernel's tail, and `chunk` is the same for the whole block.
#pragma unroll
  for (int j = 0; j < kChunk; ++j) {
    if (j < chunk) {
#pragma unroll
      for (int k = 0; k < kColumns; ++k) {
        const acc_t total = block_sum(sums[j][k]);
        if (threadIdx.x == 0) out[j * kColumns + k] = total;
      }
    }
  }
}

// One thread per (n, j, k): adds the image's block partials in block order.
template <typename acc_t>
__global__ void dice_finish_sums_kernel(const acc_t* partials, int64_t batch, int64_t blocks,
                                        int64_t channels, int64_t columns, int64_t c0,
                                        acc_t* sums) {
  SEGLOSS_GRID_STRIDE_LOOP(i, batch * kChunk * columns) {
    const int64_t n = i / (kChunk * columns);
    const int64_t jk = i % (kChunk * columns);
    const int64_t c = c0 + jk / columns;
    if (c >= channels) continue;
    double total = 0;
    for (int64_t b = 0; b < blocks; ++b) {
      total += double(partials[(n * blocks + b) * kChunk * columns + jk]);
    }
    sums[(n * channels + c) * columns + jk % columns] = acc_t(total);
  }
}

// One thread per pixel (n, s), all channels.
template <core::GammaKind K, typename scalar_t, typename acc_t>
__global__ void dice_sums_backward_kernel(DiceDevice<scalar_t, acc_t> d, int64_t batch,
                                          const acc_t* grad_sums, scalar_t* grad_input) {
  SEGLOSS_GRID_STRIDE_LOOP(i, batch * d.pixels) {
    const int64_t n = i / d.pixels;
    const int64_t s = i % d.pixels;
    const int64_t label = d.label_at(n, s);
    const acc_t m = d.mask_at(n, s, label);
    const acc_t* ds = grad_sums + n * d.channels * d.columns;  // dL/d(column), per channel
    auto d_column = [&](int64_t c, int k) { return ds[c * d.columns + k]; };
    // dL/dp of the Dice terms for channel c at this pixel.
    auto grad_p = [&](int64_t c, acc_t p) {
      return core::dice_grad_wrt_probability<K>(m, p, d.target_at(n, c, s, label),
                                                d_column(c, core::kIntersection),
                                                d_column(c, core::kPrediction), d.gamma);
    };
    if (d.activation == core::Activation::Softmax) {
      acc_t max_x, inverse_sum, log_sum_exp;
      d.softmax_stats(n, s, &max_x, &inverse_sum, &log_sum_exp);
      acc_t dot = 0;       // sum_k p_k dL/dp_k
      acc_t ce_total = 0;  // sum_c dL/d(positive NLL_c) y_c
      for (int64_t c = 0; c < d.channels; ++c) {
        const acc_t p = d.probability(n, c, s, max_x, inverse_sum);
        dot += p * grad_p(c, p);
        if (d.cross_entropy) {
          ce_total += d_column(c, core::kPositiveNll) * d.target_at(n, c, s, label);
        }
      }
      for (int64_t c = 0; c < d.channels; ++c) {
        const acc_t p = d.probability(n, c, s, max_x, inverse_sum);
        acc_t g = core::softmax_jvp(p, grad_p(c, p), dot);
        if (d.cross_entropy) {
          g += core::softmax_ce_grad(m, p, ce_total, d_column(c, core::kPositiveNll),
                                     d.target_at(n, c, s, label));
        }
        grad_input[(n * d.channels + c) * d.pixels + s] = scalar_t(g);
      }
    } else {
      for (int64_t c = 0; c < d.channels; ++c) {
        const acc_t p = d.probability(n, c, s, 0, 1);
        acc_t g = grad_p(c, p);
        if (d.activation == core::Activation::Sigmoid) g *= core::sigmoid_derivative_from_output(p);
        if (d.cross_entropy) {
          g += core::sigmoid_ce_grad(m, d.target_at(n, c, s, label), p,
                                     d_column(c, core::kNegativeNll),
                                     d_column(c, core::kPositiveNll));
        }
        grad_input[(n * d.channels + c) * d.pixels + s] = scalar_t(g);
      }
    }
  }
}

// Calls body(std::integral_constant<GammaKind, K>{}) for the operands' gamma.
template <typename Body>
void dispatch_gamma(core::GammaKind kind, const Body& body) {
  switch (kind) {
    case core::GammaKind::One:
      return body(std::integral_constant<core::GammaKind, core::GammaKind::One>{});
    case core::GammaKind::Two:
      return body(std::integral_constant<core::GammaKind, core::GammaKind::Two>{});
    default:
      return body(std::integral_constant<core::GammaKind, core::GammaKind::General>{});
  }
}

template <typename scalar_t>
void dice_sums_launch(const DiceOperands& ops, at::Tensor& sums) {
  using acc_t = at::opmath_type<scalar_t>;
  const DiceDevice<scalar_t, acc_t> d(ops);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (ops.batch == 0 || ops.channels == 0) return;
  const int64_t blocks = grid_size(ops.pixels, kMaxBlocksPerImage);
  const int64_t columns = ops.columns();
  const at::Tensor partials =
      at::empty({ops.batch, blocks, kChunk, columns},
                ops.input.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
  for (int64_t c0 = 0; c0 < ops.channels; c0 += kChunk) {
    // gridDim.y is at most 65535: launch the images in groups.
    for (int64_t n0 = 0; n0 < ops.batch; n0 += kMaxGridY) {
      const int64_t images = ops.batch - n0 < kMaxGridY ? ops.batch - n0 : kMaxGridY;
      dispatch_gamma(ops.gamma_kind, [&](auto kind) {
        const dim3 grid{unsigned(blocks), unsigned(images)};
        if (ops.cross_entropy) {
          dice_partial_sums_kernel<decltype(kind)::value, core::kDiceCeColumns, scalar_t, acc_t>
              <<<grid, kThreads, 0, stream>>>(d, n0, c0, partials.mutable_data_ptr<acc_t>());
        } else {
          dice_partial_sums_kernel<decltype(kind)::value, core::kDiceColumns, scalar_t, acc_t>
              <<<grid, kThreads, 0, stream>>>(d, n0, c0, partials.mutable_data_ptr<acc_t>());
        }
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    }
    dice_finish_sums_kernel<acc_t><<<grid_size(ops.batch * kChunk * columns, 1024), kThreads, 0,
                                     stream>>>(partials.const_data_ptr<acc_t>(), ops.batch,
                                               blocks, ops.channels, columns, c0,
                                               sums.mutable_data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

template <typename scalar_t>
void dice_sums_backward_launch(const DiceOperands& ops, const at::Tensor& grad_sums,
                               at::Tensor& grad_input) {
  using acc_t = at::opmath_type<scalar_t>;
  const DiceDevice<scalar_t, acc_t> d(ops);
  const int64_t work = ops.batch * ops.pixels;
  if (work == 0 || ops.channels == 0) return;
  dispatch_gamma(ops.gamma_kind, [&](auto kind) {
    dice_sums_backward_kernel<decltype(kind)::value, scalar_t, acc_t>
        <<<grid_size(work, kMaxPixelBlocks), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            d, ops.batch, grad_sums.const_data_ptr<acc_t>(),
            grad_input.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

at::Tensor dice_sums_cuda(const at::Tensor& input, const at::Tensor& target,
                          std::string_view activation, double gamma,
                          std::optional<int64_t> ignore_index,
                          const std::optional<at::Tensor>& mask, bool cross_entropy,
                          std::string_view caller) {
  const c10::cuda::CUDAGuard guard(input.device());
  const DiceOperands ops = with_int64_labels(prepare_dice_operands(
      caller, input, target, activation, gamma, ignore_index, mask, cross_entropy));
  at::Tensor sums = empty_dice_sums(ops.input, cross_entropy);
  sums.zero_();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ops.input.scalar_type(),
                                  "segloss_dice_sums_cuda",
                                  [&] { dice_sums_launch<scalar_t>(ops, sums); });
  return sums;
}

at::Tensor dice_sums_backward_cuda(const at::Tensor& grad_sums, const at::Tensor& input,
                                   const at::Tensor& target, std::string_view activation,
                                   double gamma, std::optional<int64_t> ignore_index,
                                   const std::optional<at::Tensor>& mask, bool cross_entropy,
                                   std::string_view caller) {
  const c10::cuda::CUDAGuard guard(input.device());
  const DiceOperands ops = with_int64_labels(prepare_dice_operands(
      caller, input, target, activation, gamma, ignore_index, mask, cross_entropy));
  const at::Tensor dsums = prepare_dice_grad_sums(caller, grad_sums, ops.input, cross_entropy);
  at::Tensor grad_input = at::empty(ops.input.sizes(), ops.input.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, ops.input.scalar_type(), "segloss_dice_sums_backward_cuda",
      [&] { dice_sums_backward_launch<scalar_t>(ops, dsums, grad_input); });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(segloss, CUDA, m) {
  m.impl("_dice_sums", &dice_sums_cuda);
  m.impl("_dice_sums_backward", &dice_sums_backward_cuda);
}

}  // namespace segloss::ops
