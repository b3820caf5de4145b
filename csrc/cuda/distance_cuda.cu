// CUDA kernels of the distance-transform ops: the same per-line passes as the
// CPU (csrc/core/two_nearest.h; for the distance maps csrc/core/
// binary_distance.h), one thread per line, over every image of the batch at
// once; the results are identical to the CPU's, bit for bit (the same double
// arithmetic in the same order, never fused: core/rounding.h).
#include <ATen/Dispatch_v2.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "../core/binary_distance.h"
#include "../core/distance_transform.h"
#include "../core/two_nearest.h"
#include "../core/unet_weight.h"
#include "../ops/checks.h"
#include "../ops/distance_operands.h"
#include "cuda_utils.cuh"

namespace segloss::ops {
namespace {

using core::EnvelopePiece;
using core::InstanceId;
using core::NearestPair;
using cuda::grid_size;
using cuda::kThreads;

constexpr int64_t kMaxBlocks = 65535;
// Scratch of the envelope passes (the lines being swept at once), at most.
constexpr int64_t kScratchBytes = int64_t(256) << 20;

// One line along the first spatial axis, read through the labels' ToId
// (an instance id, or a mask's class).
template <typename Label, typename ToId>
struct Column {
  const Label* first;
  int64_t stride;
  ToId to_id;
  __device__ auto operator()(int64_t i) const { return to_id(first[i * stride]); }
};

// The batch's layout: one image's grid, and the labels (an image's strides
// in `labels`, `batch_stride` between images): instance maps (LabelIsId) or
// masks (NonzeroIsForeground).
template <typename Label, typename ToId = core::LabelIsId>
struct BatchGrid {
  core::Grid image;
  int64_t images, pixels;
  core::StridedLabels<Label, ToId> labels;
  int64_t batch_stride;

  // The line along the first spatial axis at `column` of image `image`.
  __device__ Column<Label, ToId> column(int64_t image_index, int64_t column_index) const {
    return {labels.data + image_index * batch_stride +
                core::column_offset(labels, image, column_index),
            labels.stride[0], labels.to_id};
  }
};

// Pass 0: one thread per (image, line along the first spatial axis). With
// `instance_pixels`, also counts each image's instance pixels (balanced class
// weights): one integer atomic per line, not per pixel (deterministic).
template <typename Label>
__global__ void scan_kernel(BatchGrid<Label> grid, NearestPair* state,
                            unsigned long long* instance_pixels) {
  const int64_t columns = grid.image.inner(0);
  const int64_t n = grid.image.size[0];
  SEGLOSS_GRID_STRIDE_LOOP(work, grid.images * columns) {
    const int64_t image = work / columns, column = work % columns;
    const auto ids = grid.column(image, column);
    core::scan_line(ids, n, grid.image.spacing[0], state + image * grid.pixels + column, columns);
    if (instance_pixels != nullptr) {
      unsigned long long count = 0;
      for (int64_t i = 0; i < n; ++i) count += ids(i) != core::kNoInstance;
      if (count != 0) atomicAdd(instance_pixels + image, count);
    }
  }
}

// A later pass along `axis`: one thread per line of lines [first, first +
// count) of the batch, each with its own slice of scratch (4n doubles: base
// and key values; 2n ids; the envelope's pieces).
__global__ void envelope_kernel(NearestPair* state, core::Grid image, int64_t pixels, int axis,
                                int64_t first, int64_t count, double* base_scratch,
                                InstanceId* id_scratch, EnvelopePiece* piece_scratch) {
  const int64_t n = image.size[axis];
  const int64_t inner = image.inner(axis);
  const int64_t lines_per_image = pixels / n;
  SEGLOSS_GRID_STRIDE_LOOP(k, count) {
    const int64_t line_index = first + k;
    const int64_t i = line_index / lines_per_image, index = line_index % lines_per_image;
    NearestPair* line = state + i * pixels + (index / inner) * n * inner + index % inner;
    const core::LineCandidates candidates{base_scratch + k * 4 * n,
                                          base_scratch + k * 4 * n + 2 * n,
                                          id_scratch + k * 2 * n};
    core::gather_line(line, inner, n, image.spacing[axis], candidates);
    core::envelope_line(candidates, n, image.spacing[axis],
                        piece_scratch + k * core::envelope_scratch_pieces(n),
                        core::StridedPairs{line, inner});
  }
}

template <typename Label>
__global__ void two_nearest_outputs_kernel(const NearestPair* state, int64_t total, double* d1,
                                           double* d2, Label* l1, Label* l2) {
  SEGLOSS_GRID_STRIDE_LOOP(i, total) {
    const NearestPair pair = state[i];
    d1[i] = sqrt(pair.d[0]);
    d2[i] = sqrt(pair.d[1]);
    if (l1 != nullptr) {
      l1[i] = Label(pair.id[0]);
      l2[i] = Label(pair.id[1]);
    }
  }
}

__global__ void weight_map_kernel(const NearestPair* state, int64_t pixels, int64_t total,
                                  core::UnetWeightParams params, core::ClassWeights fixed,
                                  const unsigned long long* instance_pixels,
                                  const float* pixel_weights, float* out) {
  SEGLOSS_GRID_STRIDE_LOOP(i, total) {
    const core::ClassWeights weights =
        instance_pixels != nullptr
            ? core::balanced_class_weights(pixels, int64_t(instance_pixels[i / pixels]))
            : fixed;
    out[i] = core::unet_weight(state[i], pixel_weights ? pixel_weights + i : nullptr, weights,
                               params);
  }
}

// The squared-distance state of every pixel of the batch (uint8 storage);
// with `instance_pixels`, each image's count of instance pixels too.
at::Tensor nearest_state(const at::Tensor& labels_in, const core::Grid& image,
                         unsigned long long* instance_pixels = nullptr) {
  const at::Tensor labels = aligned(labels_in);  // read in place, by strides
  const int64_t images = labels.size(0), pixels = image.numel();
  at::Tensor state = at::empty({images * pixels * int64_t(sizeof(NearestPair))},
                               labels.options().dtype(at::kByte));
  auto* pairs = reinterpret_cast<NearestPair*>(state.data_ptr<uint8_t>());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_V2(
      labels.scalar_type(), "segloss_two_nearest_scan_cuda", AT_WRAP([&] {
        BatchGrid<scalar_t> grid{image, images, pixels,
                                 {labels.const_data_ptr<scalar_t>(), {}, core::LabelIsId{}},
                                 labels.stride(0)};
        for (int d = 0; d < image.ndim; ++d) grid.labels.stride[d] = labels.stride(d + 1);
        const int64_t work = images * image.inner(0);
        scan_kernel<scalar_t><<<grid_size(work, kMaxBlocks), kThreads, 0, stream>>>(
            grid, pairs, instance_pixels);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }),
      AT_EXPAND(AT_INTEGRAL_TYPES_V2));
  for (int axis = 1; axis < image.ndim; ++axis) {
    const int64_t n = image.size[axis];
    const int64_t lines = images * (pixels / n);
    // Per line: the candidates' base and key values, ids, and envelope pieces.
    const int64_t line_bytes = 2 * n * int64_t(2 * sizeof(double) + sizeof(InstanceId)) +
                               core::envelope_scratch_pieces(n) * int64_t(sizeof(EnvelopePiece));
    const int64_t chunk = std::max<int64_t>(1, std::min(lines, kScratchBytes / line_bytes));
    at::Tensor scratch = at::empty({chunk * line_bytes}, labels.options().dtype(at::kByte));
    auto* base = reinterpret_cast<double*>(scratch.data_ptr<uint8_t>());
    auto* ids = reinterpret_cast<InstanceId*>(base + chunk * 4 * n);
    auto* pieces = reinterpret_cast<EnvelopePiece*>(ids + chunk * 2 * n);
    for (int64_t first = 0; first < lines; first += chunk) {
      const int64_t count = std::min(chunk, lines - first);
      envelope_kernel<<<grid_size(count, kMaxBlocks), kThreads, 0, stream>>>(
          pairs, image, pixels, axis, first, count, base, ids, pieces);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  }
  return state;
}

const NearestPair* pairs_of(const at::Tensor& state) {
  return reinterpret_cast<const NearestPair*>(state.const_data_ptr<uint8_t>());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> two_nearest_distances_cuda(
    const at::Tensor& labels, std::optional<at::ArrayRef<double>> sampling, bool return_labels) {
  const std::vector<double> spacing = check_instance_labels(kTwoNearestOp, labels, sampling);
  std::vector<at::Tensor> out = empty_two_nearest_outputs(labels, return_labels);
  const core::Grid image = image_grid(labels, spacing);
  const int64_t pixels = image.numel(), total = labels.size(0) * pixels;
  if (total == 0) return {out[0], out[1], out[2], out[3]};
  const c10::cuda::CUDAGuard device_guard(labels.device());
  const at::Tensor state = nearest_state(labels, image);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_V2(
      labels.scalar_type(), "segloss_two_nearest_outputs_cuda", AT_WRAP([&] {
        two_nearest_outputs_kernel<scalar_t><<<grid_size(total, kMaxBlocks), kThreads, 0, stream>>>(
            pairs_of(state), total, out[0].data_ptr<double>(), out[1].data_ptr<double>(),
            return_labels ? out[2].data_ptr<scalar_t>() : nullptr,
            return_labels ? out[3].data_ptr<scalar_t>() : nullptr);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }),
      AT_EXPAND(AT_INTEGRAL_TYPES_V2));
  return {out[0], out[1], out[2], out[3]};
}

at::Tensor unet_weight_map_cuda(const at::Tensor& labels, double w0, double sigma,
                                std::optional<at::ArrayRef<double>> sampling,
                                std::optional<at::ArrayRef<double>> class_weights, bool balanced,
                                const std::optional<at::Tensor>& pixel_weights,
                                bool border_everywhere) {
  const WeightMapOperands ops = prepare_weight_map_operands(
      labels, w0, sigma, sampling, class_weights, balanced, pixel_weights, border_everywhere);
  at::Tensor out = empty_weight_map(labels);
  const core::Grid image = image_grid(labels, ops.spacing);
  const int64_t pixels = image.numel(), total = labels.size(0) * pixels;
  if (total == 0) return out;
  const c10::cuda::CUDAGuard device_guard(labels.device());
  at::Tensor counts;
  if (balanced) counts = at::zeros({labels.size(0)}, labels.options().dtype(at::kLong));
  const at::Tensor state = nearest_state(
      labels, image,
      balanced ? reinterpret_cast<unsigned long long*>(counts.data_ptr<int64_t>()) : nullptr);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  weight_map_kernel<<<grid_size(total, kMaxBlocks), kThreads, 0, stream>>>(
      pairs_of(state), pixels, total, ops.params, ops.fixed,
      balanced ? reinterpret_cast<const unsigned long long*>(counts.const_data_ptr<int64_t>())
               : nullptr,
      ops.pixel_weights.defined() ? ops.pixel_weights.const_data_ptr<float>() : nullptr,
      out.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

// ---------------------------------------------------------------------------
// The distance maps (segloss::distance_map).

// Pass 0: one thread per (image, line along the first spatial axis); counts
// each image's foreground pixels (one integer atomic per line: deterministic).
template <typename Value>
__global__ void binary_scan_kernel(BatchGrid<Value, core::NonzeroIsForeground> batch,
                                   double* state, unsigned long long* foreground) {
  const int64_t columns = batch.image.inner(0);
  const int64_t n = batch.image.size[0];
  SEGLOSS_GRID_STRIDE_LOOP(work, batch.images * columns) {
    const int64_t image = work / columns, column = work % columns;
    const auto line = batch.column(image, column);
    core::scan_binary_line(line, n, batch.image.spacing[0], state + image * batch.pixels + column,
                           columns);
    unsigned long long count = 0;
    for (int64_t i = 0; i < n; ++i) count += line(i);
    if (count != 0) atomicAdd(foreground + image, count);
  }
}

// The map's value, or 0 in an image without both classes.
__device__ float map_output(core::DistanceMap map, double state, unsigned long long foreground,
                            int64_t pixels) {
  return core::has_both_classes(int64_t(foreground), pixels)
             ? core::distance_map_value<float>(map, state)
             : 0.0f;
}

// A later pass along `axis`: one thread per line of lines [first, first +
// count) of the batch, each with 6n doubles of scratch (the gathered line and
// the envelope). The last pass writes the maps. Short: the type of the short
// runs' minimum, float where the states fit it (core::binary_state_fits_float,
// as on the CPU: the same values, and half the local arrays).
template <typename Short>
__global__ void binary_envelope_kernel(double* state, core::Grid image, int64_t pixels, int axis,
                                       int64_t first, int64_t count, double* scratch,
                                       core::DistanceMap map,
                                       const unsigned long long* foreground, float* out) {
  const int64_t n = image.size[axis];
  const int64_t inner = image.inner(axis);
  const int64_t lines_per_image = pixels / n;
  const double spacing = image.spacing[axis];
  const bool last = axis == image.ndim - 1;
  SEGLOSS_GRID_STRIDE_LOOP(k, count) {
    const int64_t line_index = first + k;
    const int64_t i = line_index / lines_per_image, index = line_index % lines_per_image;
    const int64_t offset = i * pixels + (index / inner) * n * inner + index % inner;
    double* line = scratch + k * 6 * n;
    for (int64_t q = 0; q < n; ++q) line[q] = state[offset + q * inner];
    const core::ParabolaScratch envelope{line + n, line + 2 * n, line + 3 * n, line + 4 * n,
                                         line + 5 * n};
    if (last) {
      const unsigned long long image_foreground = foreground[i];
      core::binary_distance_line<Short>(line, n, spacing, core::DistanceTarget::kOtherClass,
                                        /*every_pixel=*/true, envelope,
                                        [&](int64_t x, double d) {
                                          out[offset + x * inner] =
                                              map_output(map, d, image_foreground, pixels);
                                        });
    } else {
      core::binary_distance_line<Short>(line, n, spacing, core::DistanceTarget::kOtherClass,
                                        /*every_pixel=*/false, envelope,
                                        [&](int64_t x, double d) {
                                          state[offset + x * inner] = d;
                                        });
    }
  }
}

// One spatial dim: the maps straight from pass 0.
__global__ void binary_output_kernel(const double* state, int64_t pixels, int64_t total,
                                     core::DistanceMap map,
                                     const unsigned long long* foreground, float* out) {
  SEGLOSS_GRID_STRIDE_LOOP(i, total) {
    out[i] = map_output(map, state[i], foreground[i / pixels], pixels);
  }
}

at::Tensor distance_map_cuda(const at::Tensor& mask_in, std::string_view kind,
                             int64_t spatial_dims, std::optional<at::ArrayRef<double>> sampling) {
  const DistanceMapOperands ops =
      check_distance_map_arguments(mask_in, kind, spatial_dims, sampling);
  at::Tensor out = empty_distance_map(mask_in);
  if (out.numel() == 0) return out;
  const c10::cuda::CUDAGuard device_guard(mask_in.device());
  const MaskImages images_of_mask = mask_images(mask_in, ops);  // read in place, by strides
  const at::Tensor& mask = images_of_mask.mask;
  const core::Grid& image = images_of_mask.grid;
  const int64_t images = mask.size(0), pixels = image.numel(), total = images * pixels;
  at::Tensor state = at::empty({total}, mask.options().dtype(at::kDouble));
  at::Tensor counts = at::zeros({images}, mask.options().dtype(at::kLong));
  auto* foreground = reinterpret_cast<unsigned long long*>(counts.data_ptr<int64_t>());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_V2(
      mask.scalar_type(), "segloss_distance_map_scan_cuda", AT_WRAP([&] {
        BatchGrid<scalar_t, core::NonzeroIsForeground> batch{
            image, images, pixels, {mask.const_data_ptr<scalar_t>(), {}, {}}, mask.stride(0)};
        for (int d = 0; d < image.ndim; ++d) batch.labels.stride[d] = mask.stride(d + 1);
        const int64_t work = images * image.inner(0);
        binary_scan_kernel<scalar_t><<<grid_size(work, kMaxBlocks), kThreads, 0, stream>>>(
            batch, state.data_ptr<double>(), foreground);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }),
      AT_EXPAND(AT_INTEGRAL_TYPES_V2), at::kBool);
  if (image.ndim == 1) {
    binary_output_kernel<<<grid_size(total, kMaxBlocks), kThreads, 0, stream>>>(
        state.const_data_ptr<double>(), pixels, total, ops.map, foreground,
        out.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return out;
  }
  for (int axis = 1; axis < image.ndim; ++axis) {
    const int64_t n = image.size[axis];
    const int64_t lines = images * (pixels / n);
    const int64_t line_bytes = 6 * n * int64_t(sizeof(double));
    const int64_t chunk = std::max<int64_t>(1, std::min(lines, kScratchBytes / line_bytes));
    at::Tensor scratch = at::empty({chunk * 6 * n}, mask.options().dtype(at::kDouble));
    const bool fits_float = core::binary_state_fits_float(image);
    for (int64_t first = 0; first < lines; first += chunk) {
      const int64_t count = std::min(chunk, lines - first);
      const auto kernel =
          fits_float ? binary_envelope_kernel<float> : binary_envelope_kernel<double>;
      kernel<<<grid_size(count, kMaxBlocks), kThreads, 0, stream>>>(
          state.data_ptr<double>(), image, pixels, axis, first, count,
          scratch.data_ptr<double>(), ops.map, foreground, out.data_ptr<float>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(segloss, CUDA, m) {
  m.impl("distance_map", &distance_map_cuda);
  m.impl("two_nearest_distances", &two_nearest_distances_cuda);
  m.impl("unet_weight_map", &unet_weight_map_cuda);
}

}  // namespace segloss::ops
