// The Dice sums' CUDA kernels and launches (_dice_sums and its backward),
// over the per-pixel math shared with the CPU (csrc/core/dice.h). Included by
// one file per input dtype (dice_cuda_<dtype>.cu), which instantiates
// dice_launch.h's two functions for it: the four compile side by side
// (one file took 115 s on two cores).
//
// Forward: blocks of one image accumulate a chunk of channels' columns in
// registers, reduce them in a fixed tree and write per-block partials; a
// second kernel adds the partials in block order (deterministic, no float
// atomics). The softmax statistics of a pixel are computed on the fly when
// one chunk holds every channel, else once by a pre-pass into a buffer that
// each chunk reads. Class indices are read in place in their own dtype.
// Backward: one thread per pixel, all channels. A class index out of range
// is a device-side assert in the forward (the CPU raises): no host
// synchronisation, so CUDA graphs can capture the op.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <type_traits>

#include "../core/dice.h"
#include "../ops/dice_operands.h"
#include "cuda_utils.cuh"
#include "dice_launch.h"

namespace segloss::ops::dice_cuda {

using cuda::grid_size;
using cuda::kThreads;

// Channels per forward pass over the pixels: each thread keeps chunk x
// columns running sums in registers (24 for Dice, 32 with soft labels, 32
// for Dice + CE, 24 for Dice + focal: 7 columns of 8 channels needed 168
// registers a thread).
constexpr int chunk_channels(int columns) {
  return columns == core::kDiceCeColumns || columns == core::kDiceFocalColumns ? 4 : 8;
}
// Blocks of kThreads per SM that the forward must fit (the registers it may
// use: 65536 / (kThreads x blocks)). ptxas -v (sm_90, CUDA 13.0): float Dice
// fits 64 registers with no spills (unbounded it took 128: two blocks, 25%
// occupancy); the soft-label and Dice + CE sums take 90 to 115 under the
// bound of 128, no spills; float64 takes 140 to 154 unbounded (a bound of 64
// spills hundreds of bytes).
template <int kColumns, typename acc_t>
constexpr int min_blocks_per_sm() {
  if constexpr (std::is_same_v<acc_t, double>) {
    return 1;
  } else {
    return kColumns == core::kDiceColumns ? 4 : 2;
  }
}
constexpr int64_t kMaxBlocksPerImage = 256;  // fixed: the partials' order never changes
constexpr int64_t kMaxPixelBlocks = 65535;
constexpr int64_t kMaxGridY = 65535;
// Per pixel in the softmax pre-pass's buffer: the maximum and sum exp(x - max).
constexpr int kStats = 2;

// The operands as raw pointers, and the per-pixel reads. label_t: the class
// indices' dtype (uint8 for a dense target, which has none).
template <typename scalar_t, typename label_t, typename acc_t>
struct DiceDevice {
  const scalar_t* input;
  const scalar_t* dense_target;  // or nullptr
  const label_t* labels;         // or nullptr
  const scalar_t* mask;          // or nullptr
  const acc_t* softmax_stats_buffer = nullptr;  // (N, S, kStats), or computed per pixel
  core::BroadcastIndexer mask_index;
  int64_t channels, pixels;
  int64_t ignore_index;
  bool has_ignore;
  core::Activation activation;
  acc_t gamma;
  bool cross_entropy, soft_label;
  bool focal, softmax_focal;  // the focal columns, by a sigmoid or a softmax
  acc_t focal_gamma;
  int64_t columns;

  explicit DiceDevice(const DiceOperands& ops)
      : input(ops.input.const_data_ptr<scalar_t>()),
        dense_target(ops.dense_target.defined() ? ops.dense_target.const_data_ptr<scalar_t>()
                                                : nullptr),
        labels(ops.labels.defined() ? ops.labels.const_data_ptr<label_t>() : nullptr),
        mask(ops.mask.defined() ? ops.mask.const_data_ptr<scalar_t>() : nullptr),
        mask_index(ops.mask_index),
        channels(ops.channels),
        pixels(ops.pixels),
        ignore_index(ops.ignore_index.value_or(0)),
        has_ignore(ops.ignore_index.has_value()),
        activation(ops.activation),
        gamma(acc_t(ops.gamma)),
        cross_entropy(ops.cross_entropy()),
        soft_label(ops.soft_label()),
        focal(ops.focal()),
        softmax_focal(ops.softmax_focal()),
        focal_gamma(acc_t(ops.focal_gamma)),
        columns(ops.columns()) {}

  __device__ int64_t label_at(int64_t n, int64_t s) const {
    return labels == nullptr ? 0 : int64_t(labels[n * pixels + s]);
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
  // Steps 1 and 2 of core/softmax.h at a pixel: the maximum and
  // sum(exp(x - max)) over its channels.
  __device__ void softmax_max_and_sum(int64_t n, int64_t s, acc_t* max_x, acc_t* sum) const {
    acc_t m = input_at(n, 0, s);
    for (int64_t c = 1; c < channels; ++c) m = core::larger_of(m, input_at(n, c, s));
    acc_t total = 0;
    for (int64_t c = 0; c < channels; ++c) total += core::shifted_exp(input_at(n, c, s), m);
    *max_x = m;
    *sum = total;
  }
  // Softmax normaliser at a pixel: the maximum, 1 / sum(exp(x - max)) and
  // the log-softmax normaliser; from the pre-pass's buffer when there is one.
  __device__ void softmax_stats(int64_t n, int64_t s, acc_t* max_x, acc_t* inverse_sum,
                                core::LogNormalizer<acc_t>* normalizer) const {
    acc_t m, sum;
    if (softmax_stats_buffer != nullptr) {
      const acc_t* stats = softmax_stats_buffer + (n * pixels + s) * kStats;
      m = stats[0];
      sum = stats[1];
    } else {
      softmax_max_and_sum(n, s, &m, &sum);
    }
    *max_x = m;
    *inverse_sum = acc_t(1) / sum;
    *normalizer = core::log_normalizer(m, sum);
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

// One thread per pixel: the softmax pre-pass, (max, sum exp(x - max)).
template <typename scalar_t, typename label_t, typename acc_t>
__global__ void softmax_stats_kernel(DiceDevice<scalar_t, label_t, acc_t> d, int64_t batch,
                                     acc_t* stats) {
  SEGLOSS_GRID_STRIDE_LOOP(i, batch * d.pixels) {
    d.softmax_max_and_sum(i / d.pixels, i % d.pixels, stats + i * kStats,
                          stats + i * kStats + 1);
  }
}

// grid (blocks_per_image, images from n0); partials[n][block][j][k] for
// channels c0 + j and the kColumns columns of core::DiceColumn.
template <core::GammaKind K, int kColumns, typename scalar_t, typename label_t, typename acc_t>
__global__ void __launch_bounds__(kThreads, (min_blocks_per_sm<kColumns, acc_t>()))
    dice_partial_sums_kernel(DiceDevice<scalar_t, label_t, acc_t> d, int64_t n0,
                                         int64_t c0, acc_t* partials) {
  constexpr int kChunk = chunk_channels(kColumns);
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
    acc_t max_x = 0, inverse_sum = 1;
    core::LogNormalizer<acc_t> normalizer{0, 0};
    if (d.activation == core::Activation::Softmax) {
      d.softmax_stats(n, s, &max_x, &inverse_sum, &normalizer);
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
                           ? core::softmax_dice_ce_terms<K>(m, p, y, x, normalizer, d.gamma)
                           : core::sigmoid_dice_ce_terms<K>(m, p, y, x, d.gamma));
        } else if constexpr (kColumns == core::kDiceFocalColumns) {
          const acc_t x = d.input_at(n, c, s);
          core::add_terms<kColumns>(
              sums[j], d.softmax_focal
                           ? core::softmax_dice_focal_terms<K>(m, p, y, x, normalizer, d.gamma,
                                                               d.focal_gamma)
                           : core::sigmoid_dice_focal_terms<K>(m, p, y, x, d.gamma,
                                                               d.focal_gamma));
        } else if constexpr (kColumns == core::kSoftDiceColumns) {
          core::add_terms<kColumns>(sums[j], core::soft_dice_terms<K>(m, p, y, d.gamma));
        } else {
          core::add_terms<kColumns>(sums[j], core::dice_terms<K>(m, p, y, d.gamma));
        }
      }
    }
  }
  // The chunk's running sums in one block reduction (two barriers); the
  // slots of channels beyond the chunk hold zeros and are never read.
  acc_t flat[kChunk * kColumns];
#pragma unroll
  for (int j = 0; j < kChunk; ++j) {
#pragma unroll
    for (int k = 0; k < kColumns; ++k) flat[j * kColumns + k] = sums[j][k];
  }
  cuda::block_sums_to(flat, partials + (n * gridDim.x + blockIdx.x) * kChunk * kColumns);
}

// One thread per (n, j, k): adds the image's block partials in block order.
template <typename acc_t>
__global__ void dice_finish_sums_kernel(const acc_t* partials, int64_t batch, int64_t blocks,
                                        int64_t channels, int64_t columns, int64_t c0,
                                        acc_t* sums) {
  const int64_t chunk = chunk_channels(int(columns));
  SEGLOSS_GRID_STRIDE_LOOP(i, batch * chunk * columns) {
    const int64_t n = i / (chunk * columns);
    const int64_t jk = i % (chunk * columns);
    const int64_t c = c0 + jk / columns;
    if (c >= channels) continue;
    double total = 0;
    for (int64_t b = 0; b < blocks; ++b) {
      total += double(partials[(n * blocks + b) * chunk * columns + jk]);
    }
    sums[(n * channels + c) * columns + jk % columns] = acc_t(total);
  }
}

// One thread per pixel (n, s), all channels.
template <core::GammaKind K, typename scalar_t, typename label_t, typename acc_t>
__global__ void dice_sums_backward_kernel(DiceDevice<scalar_t, label_t, acc_t> d, int64_t batch,
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
      const acc_t y = d.target_at(n, c, s, label);
      const acc_t dI = d_column(c, core::kIntersection), dP = d_column(c, core::kPrediction);
      return d.soft_label ? core::soft_dice_grad_wrt_probability<K>(
                                m, p, y, dI, dP, d_column(c, core::kDifference), d.gamma)
                          : core::dice_grad_wrt_probability<K>(m, p, y, dI, dP, d.gamma);
    };
    if (d.activation == core::Activation::Softmax) {
      acc_t max_x, inverse_sum;
      core::LogNormalizer<acc_t> normalizer;
      d.softmax_stats(n, s, &max_x, &inverse_sum, &normalizer);
      // The CE columns' coefficient a_c of channel c (core::softmax_ce_coefficient).
      auto ce_coefficient = [&](int64_t c) {
        return core::softmax_ce_coefficient(d_column(c, core::kPositiveNll),
                                            d.target_at(n, c, s, label),
                                            d_column(c, core::kSmoothingNll));
      };
      // The softmax focal columns' coefficient (core::softmax_focal_coefficient).
      auto focal_coefficient = [&](int64_t c, acc_t p) {
        return core::softmax_focal_coefficient(d_column(c, core::kFocalPositive),
                                               d.target_at(n, c, s, label),
                                               -normalizer.negative_log_p(d.input_at(n, c, s)),
                                               p,
                                               d.focal_gamma);
      };
      acc_t dot = 0;       // sum_k p_k dL/dp_k
      acc_t ce_total = 0;  // sum_c a_c (the CE's or the softmax focal's)
      for (int64_t c = 0; c < d.channels; ++c) {
        const acc_t p = d.probability(n, c, s, max_x, inverse_sum);
        dot += p * grad_p(c, p);
        if (d.cross_entropy) ce_total += ce_coefficient(c);
        if (d.softmax_focal) ce_total += focal_coefficient(c, p);
      }
      for (int64_t c = 0; c < d.channels; ++c) {
        const acc_t p = d.probability(n, c, s, max_x, inverse_sum);
        acc_t g = core::softmax_jvp(p, grad_p(c, p), dot);
        if (d.cross_entropy) g += core::softmax_ce_grad(m, p, ce_total, ce_coefficient(c));
        if (d.softmax_focal) {
          g += core::softmax_ce_grad(m, p, ce_total, focal_coefficient(c, p));
        } else if (d.focal) {
          g += core::sigmoid_focal_grad(m, d.target_at(n, c, s, label), d.input_at(n, c, s),
                                        d_column(c, core::kFocalPositive),
                                        d_column(c, core::kFocalNegative), d.focal_gamma);
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
        if (d.focal) {
          g += core::sigmoid_focal_grad(m, d.target_at(n, c, s, label), d.input_at(n, c, s),
                                        d_column(c, core::kFocalPositive),
                                        d_column(c, core::kFocalNegative), d.focal_gamma);
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

// The class indices' dtype for dispatch_labels (a dense target reads none).
inline at::ScalarType label_dtype(const DiceOperands& ops) {
  return ops.labels.defined() ? ops.labels.scalar_type() : at::kByte;
}

// Calls body(std::integral_constant<int, columns>{}) for the operands' layout.
template <typename Body>
void dispatch_columns(core::SumsLayout layout, const Body& body) {
  switch (layout) {
    case core::SumsLayout::DiceCe:
      return body(std::integral_constant<int, core::kDiceCeColumns>{});
    case core::SumsLayout::SoftDice:
      return body(std::integral_constant<int, core::kSoftDiceColumns>{});
    case core::SumsLayout::DiceFocal:
      return body(std::integral_constant<int, core::kDiceFocalColumns>{});
    default:
      return body(std::integral_constant<int, core::kDiceColumns>{});
  }
}

template <typename scalar_t, typename label_t>
void dice_sums_launch(const DiceOperands& ops, at::Tensor& sums) {
  using acc_t = at::opmath_type<scalar_t>;
  DiceDevice<scalar_t, label_t, acc_t> d(ops);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (ops.batch == 0 || ops.channels == 0) return;
  const int64_t blocks = grid_size(ops.pixels, kMaxBlocksPerImage);
  const int64_t columns = ops.columns();
  const int64_t chunk = chunk_channels(int(columns));
  const auto acc_options = ops.input.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
  const at::Tensor partials = at::empty({ops.batch, blocks, chunk, columns}, acc_options);
  // More channels than one chunk: the softmax statistics once per pixel, not
  // once per chunk (which read every channel of the pixel again).
  at::Tensor stats;
  if (ops.activation == core::Activation::Softmax && ops.channels > chunk &&
      ops.pixels > 0) {
    stats = at::empty({ops.batch, ops.pixels, kStats}, acc_options);
    softmax_stats_kernel<scalar_t, label_t, acc_t>
        <<<grid_size(ops.batch * ops.pixels, kMaxPixelBlocks), kThreads, 0, stream>>>(
            d, ops.batch, stats.mutable_data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    d.softmax_stats_buffer = stats.const_data_ptr<acc_t>();
  }
  for (int64_t c0 = 0; c0 < ops.channels; c0 += chunk) {
    // gridDim.y is at most 65535: launch the images in groups.
    for (int64_t n0 = 0; n0 < ops.batch; n0 += kMaxGridY) {
      const int64_t images = ops.batch - n0 < kMaxGridY ? ops.batch - n0 : kMaxGridY;
      dispatch_gamma(ops.gamma_kind, [&](auto kind) {
        dispatch_columns(ops.layout, [&](auto layout_columns) {
          const dim3 grid{unsigned(blocks), unsigned(images)};
          dice_partial_sums_kernel<decltype(kind)::value, decltype(layout_columns)::value,
                                   scalar_t, label_t, acc_t>
              <<<grid, kThreads, 0, stream>>>(d, n0, c0, partials.mutable_data_ptr<acc_t>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
      });
    }
    dice_finish_sums_kernel<acc_t><<<grid_size(ops.batch * chunk * columns, 1024), kThreads, 0,
                                     stream>>>(partials.const_data_ptr<acc_t>(), ops.batch,
                                               blocks, ops.channels, columns, c0,
                                               sums.mutable_data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

template <typename scalar_t, typename label_t>
void dice_sums_backward_launch(const DiceOperands& ops, const at::Tensor& grad_sums,
                               at::Tensor& grad_input) {
  using acc_t = at::opmath_type<scalar_t>;
  const DiceDevice<scalar_t, label_t, acc_t> d(ops);
  const int64_t work = ops.batch * ops.pixels;
  if (work == 0 || ops.channels == 0) return;
  dispatch_gamma(ops.gamma_kind, [&](auto kind) {
    dice_sums_backward_kernel<decltype(kind)::value, scalar_t, label_t, acc_t>
        <<<grid_size(work, kMaxPixelBlocks), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            d, ops.batch, grad_sums.const_data_ptr<acc_t>(),
            grad_input.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

template <typename scalar_t>
void dice_sums_launch_for(const DiceOperands& ops, at::Tensor& sums) {
  cuda::dispatch_labels(label_dtype(ops), [&](auto label) {
    dice_sums_launch<scalar_t, decltype(label)>(ops, sums);
  });
}

template <typename scalar_t>
void dice_sums_backward_launch_for(const DiceOperands& ops, const at::Tensor& grad_sums,
                                   at::Tensor& grad_input) {
  cuda::dispatch_labels(label_dtype(ops), [&](auto label) {
    dice_sums_backward_launch<scalar_t, decltype(label)>(ops, grad_sums, grad_input);
  });
}

}  // namespace segloss::ops::dice_cuda
