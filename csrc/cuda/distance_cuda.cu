// CUDA kernels of the distance-transform ops, over every image of the batch
// at once, every pixel in parallel, each from its line held in a tile
// (core/line_tiles.h): in shared memory where the lines fit one, else (lines
// across more than about 6,800 pixels) in global memory, in the same layout. The
// two-nearest state (two_nearest_distances, unet_weight_map):
// two_nearest_on_line, at any spacing. The distance maps: nearest_on_line
// (core/binary_distance_tiles.h). A pass's steps over a tile are
// core/tile_passes.h's, with atomic updates of the summaries. Both give the
// CPU's values bit for bit (the same arithmetic, never fused:
// core/rounding.h, and the same exact order of candidates), as
// tests/cpp/two_nearest_tiles.cpp and binary_distance_tiles.cpp check on the
// CPU, running the same steps over the same tile memory.
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
#include <type_traits>

#include "../core/binary_distance.h"
#include "../core/binary_distance_tiles.h"
#include "../core/distance_transform.h"
#include "../core/line_tiles.h"
#include "../core/tile_passes.h"
#include "../core/two_nearest.h"
#include "../core/unet_weight.h"
#include "../ops/checks.h"
#include "../ops/distance_operands.h"
#include "cuda_utils.cuh"

namespace segloss::ops {
namespace {

using core::InstanceId;
using core::NearestPair;
using cuda::grid_size;
using cuda::kThreads;

constexpr int64_t kMaxBlocks = 65535;
// The global-memory tiles of a pass whose lines fit no shared-memory tile,
// at most (core::global_line_tiles: more where one group of lines needs it).
constexpr int64_t kScratchBytes = int64_t(256) << 20;

// Every pixel's state before any pass, initial(id) of its label's id, and
// with `counts`, each image's count of pixels whose id is not 0 (instance or
// foreground pixels): one integer atomic per block and image
// (deterministic). The two-nearest transform's and the distance maps'.
template <typename Label, typename ToId, typename State, typename Initial>
__global__ void initial_states_kernel(core::StridedLabels<Label, ToId> labels, core::Grid image,
                                      int64_t images, int64_t batch_stride, Initial initial,
                                      State* state, unsigned long long* counts) {
  const int64_t pixels = image.numel();
  for (int64_t i = blockIdx.y; i < images; i += gridDim.y) {
    unsigned long long count = 0;
    SEGLOSS_GRID_STRIDE_LOOP(p, pixels) {
      const auto id = core::batch_pixel_id(labels, image, batch_stride, i, p);
      state[i * pixels + p] = initial(id);
      count += id != 0;
    }
    if (counts != nullptr) {  // (the same for the whole block)
      count = cuda::block_sum(count);
      if (threadIdx.x == 0 && count != 0) atomicAdd(counts + i, count);
    }
  }
}

template <typename Label, typename ToId, typename State, typename Initial>
void launch_initial_states(const core::StridedLabels<Label, ToId>& labels, const core::Grid& image,
                           int64_t images, int64_t batch_stride, Initial initial, State* state,
                           unsigned long long* counts, cudaStream_t stream) {
  const dim3 blocks(unsigned(grid_size(image.numel(), kMaxBlocks)),
                    unsigned(std::min<int64_t>(images, kMaxBlocks)));
  initial_states_kernel<<<blocks, kThreads, 0, stream>>>(labels, image, images, batch_stride,
                                                         initial, state, counts);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

struct InitialPair {
  __device__ NearestPair operator()(InstanceId id) const { return core::initial_pair(id); }
};

template <typename State>
struct InitialBinaryState {
  __device__ State operator()(bool foreground) const {
    return core::initial_binary_state<State>(foreground);
  }
};

// The tile summaries' updates (core/tile_passes.h): atomic minima, maxima
// and or-s, in shared or global memory, each made only where it changes the
// value read first (a stale read only makes one more atomic): a line's
// pixels mostly leave its summaries as they are, and in global memory a
// warp's pixels may share one line. Floors are non-negative floats or
// doubles, whose bit patterns order as they do.
static_assert(sizeof(InstanceId) == sizeof(unsigned long long), "64-bit atomics on ids");
struct AtomicUpdates {
  static __device__ void floor_min(float* at, float value) {
    if (value < *at) atomicMin(reinterpret_cast<unsigned*>(at), __float_as_uint(value));
  }
  static __device__ void floor_min(double* at, double value) {
    if (value < *at) {
      atomicMin(reinterpret_cast<unsigned long long*>(at),
                (unsigned long long)__double_as_longlong(value));
    }
  }
  static __device__ void id_min(InstanceId* at, InstanceId id) {
    if (id < *at) atomicMin(reinterpret_cast<unsigned long long*>(at), (unsigned long long)id);
  }
  static __device__ void id_max(InstanceId* at, InstanceId id) {
    if (id > *at) atomicMax(reinterpret_cast<unsigned long long*>(at), (unsigned long long)id);
  }
  static __device__ void flags_or(unsigned* at, unsigned bits) {
    if ((*at & bits) != bits) atomicOr(at, bits);
  }
};
using TwoNearestTile = core::TwoNearestTile<AtomicUpdates>;
template <typename State>
using BinaryTile = core::BinaryTile<State, AtomicUpdates>;

// The summaries of a global-memory tile are reset by every thread of the
// grid, those of a shared-memory tile by every thread of its block.
__device__ int64_t grid_thread() { return int64_t(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ int64_t grid_threads() { return int64_t(blockDim.x) * gridDim.x; }

// A pass in shared-memory tiles: a block loads a tile, then gives each of
// its pixels its new pair, in place (the tile's lines are its own).
__global__ void two_nearest_tile_pass_kernel(NearestPair* state, core::LineTiles tiles,
                                             double spacing) {
  extern __shared__ __align__(16) unsigned char tile_memory[];
  const TwoNearestTile tile(tile_memory, tiles);
  const double inverse_square = core::key_scale(spacing);
  for (int64_t t = blockIdx.x; t < tiles.tiles; t += gridDim.x) {
    tile.reset(tiles, threadIdx.x, blockDim.x);
    __syncthreads();
    for (int64_t e = threadIdx.x; e < tiles.elements; e += blockDim.x) {
      tile.load(state, tiles, t, e, inverse_square);
    }
    __syncthreads();
    for (int64_t e = threadIdx.x; e < tiles.elements; e += blockDim.x) {
      tile.search(state, tiles, t, e, spacing);
    }
    __syncthreads();  // the next tile overwrites shared memory
  }
}

// The same three steps for tile t in global memory, one launch each.
__global__ void two_nearest_global_reset_kernel(unsigned char* memory, core::LineTiles tiles) {
  TwoNearestTile(memory, tiles).reset(tiles, grid_thread(), grid_threads());
}
__global__ void two_nearest_global_load_kernel(const NearestPair* state, core::LineTiles tiles,
                                               int64_t t, unsigned char* memory, double spacing) {
  const TwoNearestTile tile(memory, tiles);
  const double inverse_square = core::key_scale(spacing);
  SEGLOSS_GRID_STRIDE_LOOP(e, tiles.elements) tile.load(state, tiles, t, e, inverse_square);
}
__global__ void two_nearest_global_search_kernel(NearestPair* state, core::LineTiles tiles,
                                                 int64_t t, unsigned char* memory,
                                                 double spacing) {
  const TwoNearestTile tile(memory, tiles);
  SEGLOSS_GRID_STRIDE_LOOP(e, tiles.elements) tile.search(state, tiles, t, e, spacing);
}

// The tiles of a line pass on the current device (core::pass_tiles): in
// shared memory where a line fits 40 KiB, else the device's opt-in shared
// memory per block (227 KiB on an H100 or H200: lines of up to 7,097
// two-nearest pairs, or across lines up to 6,835 distance-map states), which
// `kernel` is then allowed, else in global memory.
template <typename Kernel>
core::PassTiles device_pass_tiles(Kernel* kernel, int64_t n, int64_t inner, int64_t outer,
                                  int64_t state_bytes, int64_t summary_bits) {
  int optin = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                                        c10::cuda::current_device()));
  const core::PassTiles pass =
      core::pass_tiles(n, inner, outer, state_bytes, summary_bits, optin, kScratchBytes);
  if (pass.memory == core::TileMemory::kOptIn) {
    // The kernel's limit is set to the device's whole opt-in, the same on
    // every call: a limit set to this tile's size could fall, between another
    // host thread's setting and its launch, below that thread's tile.
    C10_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, optin));
  }
  return pass;
}

// A two-nearest pass along an axis of lines of n pairs (outer slabs of n x
// inner), in tiles in shared memory where a line fits one, else in global
// memory.
void two_nearest_pass(NearestPair* pairs, int64_t n, int64_t inner, int64_t outer, double spacing,
                      const at::TensorOptions& options, cudaStream_t stream) {
  const int64_t pair_bytes = int64_t(sizeof(NearestPair));
  const int64_t summary_bits = core::two_nearest_summary_bits(n);
  const core::PassTiles pass = device_pass_tiles(two_nearest_tile_pass_kernel, n, inner, outer,
                                                 pair_bytes, summary_bits);
  const core::LineTiles& tiles = pass.tiles;
  if (pass.memory != core::TileMemory::kGlobal) {
    two_nearest_tile_pass_kernel<<<std::min(tiles.tiles, kMaxBlocks), kThreads,
                                   size_t(tiles.shared_bytes()), stream>>>(pairs, tiles, spacing);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  at::Tensor scratch = at::empty({tiles.shared_bytes()}, options.dtype(at::kByte));
  unsigned char* memory = scratch.data_ptr<uint8_t>();
  const int64_t summaries = tiles.lines * core::search_blocks(n);
  for (int64_t t = 0; t < tiles.tiles; ++t) {
    two_nearest_global_reset_kernel<<<grid_size(summaries, kMaxBlocks), kThreads, 0, stream>>>(
        memory, tiles);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    two_nearest_global_load_kernel<<<grid_size(tiles.elements, kMaxBlocks), kThreads, 0,
                                     stream>>>(pairs, tiles, t, memory, spacing);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    two_nearest_global_search_kernel<<<grid_size(tiles.elements, kMaxBlocks), kThreads, 0,
                                       stream>>>(pairs, tiles, t, memory, spacing);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

template <typename Label>
__global__ void two_nearest_outputs_kernel(const NearestPair* state, int64_t total, double* d1,
                                           double* d2, Label* l1, Label* l2) {
  SEGLOSS_GRID_STRIDE_LOOP(i, total) {
    const NearestPair pair = state[i];
    const core::TwoDistances d = core::two_distances(pair);
    d1[i] = d.d1;
    d2[i] = d.d2;
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
  // The initial pairs, then one pass per axis (pass 0's search, all bases
  // being 0, gives scan_line's pairs at any spacing).
  AT_DISPATCH_V2(
      labels.scalar_type(), "segloss_two_nearest_initial_pairs_cuda", AT_WRAP([&] {
        core::StridedLabels<scalar_t, core::LabelIsId> strided{
            labels.const_data_ptr<scalar_t>(), {}, core::LabelIsId{}};
        for (int d = 0; d < image.ndim; ++d) strided.stride[d] = labels.stride(d + 1);
        launch_initial_states(strided, image, images, labels.stride(0), InitialPair{}, pairs,
                              instance_pixels, stream);
      }),
      AT_EXPAND(AT_INTEGRAL_TYPES_V2));
  for (int axis = 0; axis < image.ndim; ++axis) {
    const int64_t n = image.size[axis], inner = image.inner(axis);
    two_nearest_pass(pairs, n, inner, images * pixels / (n * inner), image.spacing[axis],
                     labels.options(), stream);
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
// The distance maps (segloss::distance_map): the pixel-parallel form of the
// binary sweep (core/binary_distance_tiles.h). The states start at +-inf,
// then one line pass per axis gives every pixel its new state from its line
// in shared memory, the last pass the maps. tests/cpp/binary_distance_tiles.cpp
// runs these steps on the CPU.

template <typename State>
using BinaryPassOutput = core::BinaryPassOutput<State, unsigned long long>;

// A line pass in shared-memory tiles: a block loads a tile, then gives each
// of its pixels its new state in place (the tile's lines are its own), or
// with `out` (the last pass) its map.
template <typename State>
__global__ void binary_tile_pass_kernel(State* state, core::LineTiles tiles, double spacing,
                                        core::DistanceMap map,
                                        const unsigned long long* foreground, int64_t pixels,
                                        float* out) {
  extern __shared__ __align__(16) unsigned char tile_memory[];
  const BinaryTile<State> tile(tile_memory, tiles);
  const BinaryPassOutput<State> output{state, out, map, foreground, pixels};
  for (int64_t t = blockIdx.x; t < tiles.tiles; t += gridDim.x) {
    tile.reset(tiles, threadIdx.x, blockDim.x);
    __syncthreads();
    for (int64_t e = threadIdx.x; e < tiles.elements; e += blockDim.x) {
      tile.load(state, tiles, t, e);
    }
    __syncthreads();
    for (int64_t e = threadIdx.x; e < tiles.elements; e += blockDim.x) {
      tile.search(tiles, t, e, spacing, output);
    }
    __syncthreads();  // the next tile overwrites shared memory
  }
}

// The same three steps for tile t in global memory, one launch each.
template <typename State>
__global__ void binary_global_reset_kernel(unsigned char* memory, core::LineTiles tiles) {
  BinaryTile<State>(memory, tiles).reset(tiles, grid_thread(), grid_threads());
}
template <typename State>
__global__ void binary_global_load_kernel(const State* state, core::LineTiles tiles, int64_t t,
                                          unsigned char* memory) {
  const BinaryTile<State> tile(memory, tiles);
  SEGLOSS_GRID_STRIDE_LOOP(e, tiles.elements) tile.load(state, tiles, t, e);
}
template <typename State>
__global__ void binary_global_search_kernel(State* state, core::LineTiles tiles, int64_t t,
                                            unsigned char* memory, double spacing,
                                            core::DistanceMap map,
                                            const unsigned long long* foreground, int64_t pixels,
                                            float* out) {
  const BinaryTile<State> tile(memory, tiles);
  const BinaryPassOutput<State> output{state, out, map, foreground, pixels};
  SEGLOSS_GRID_STRIDE_LOOP(e, tiles.elements) tile.search(tiles, t, e, spacing, output);
}

// The maps of `mask`'s images (images x spatial, read in place) into `out`,
// with states of type State: float where they fit (binary_state_fits_float:
// the same values, half the memory), else double.
template <typename State>
void binary_distance_maps(const at::Tensor& mask, const core::Grid& image, core::DistanceMap map,
                          at::Tensor& out) {
  const int64_t images = mask.size(0), pixels = image.numel(), total = images * pixels;
  const auto state_type = std::is_same_v<State, float> ? at::kFloat : at::kDouble;
  at::Tensor state = at::empty({total}, mask.options().dtype(state_type));
  at::Tensor counts = at::zeros({images}, mask.options().dtype(at::kLong));
  auto* foreground = reinterpret_cast<unsigned long long*>(counts.data_ptr<int64_t>());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_V2(
      mask.scalar_type(), "segloss_distance_map_init_cuda", AT_WRAP([&] {
        core::StridedMask<scalar_t> strided{mask.const_data_ptr<scalar_t>(), {}, {}};
        for (int d = 0; d < image.ndim; ++d) strided.stride[d] = mask.stride(d + 1);
        launch_initial_states(strided, image, images, mask.stride(0), InitialBinaryState<State>{},
                              state.data_ptr<State>(), foreground, stream);
      }),
      AT_EXPAND(AT_INTEGRAL_TYPES_V2), at::kBool);
  for (int axis = 0; axis < image.ndim; ++axis) {
    const int64_t n = image.size[axis], inner = image.inner(axis), outer = total / (n * inner);
    const double spacing = image.spacing[axis];
    float* maps = axis == image.ndim - 1 ? out.data_ptr<float>() : nullptr;
    const int64_t state_bytes = int64_t(sizeof(State));
    const int64_t summary_bits = core::binary_summary_bits<State>(n);
    const core::PassTiles pass = device_pass_tiles(binary_tile_pass_kernel<State>, n, inner,
                                                   outer, state_bytes, summary_bits);
    const core::LineTiles& tiles = pass.tiles;
    if (pass.memory != core::TileMemory::kGlobal) {
      binary_tile_pass_kernel<State>
          <<<std::min(tiles.tiles, kMaxBlocks), kThreads, size_t(tiles.shared_bytes()),
             stream>>>(state.data_ptr<State>(), tiles, spacing, map, foreground, pixels, maps);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      continue;
    }
    // Lines that fit no tile in shared memory: tiles in global memory.
    at::Tensor scratch = at::empty({tiles.shared_bytes()}, mask.options().dtype(at::kByte));
    unsigned char* memory = scratch.data_ptr<uint8_t>();
    const int64_t summaries = tiles.lines * 2 * core::search_blocks(n);
    for (int64_t t = 0; t < tiles.tiles; ++t) {
      binary_global_reset_kernel<State>
          <<<grid_size(summaries, kMaxBlocks), kThreads, 0, stream>>>(memory, tiles);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      binary_global_load_kernel<State>
          <<<grid_size(tiles.elements, kMaxBlocks), kThreads, 0, stream>>>(
              state.const_data_ptr<State>(), tiles, t, memory);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      binary_global_search_kernel<State>
          <<<grid_size(tiles.elements, kMaxBlocks), kThreads, 0, stream>>>(
              state.data_ptr<State>(), tiles, t, memory, spacing, map, foreground, pixels, maps);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  }
}

at::Tensor distance_map_cuda(const at::Tensor& mask_in, std::string_view kind,
                             int64_t spatial_dims, std::optional<at::ArrayRef<double>> sampling) {
  const DistanceMapOperands ops =
      check_distance_map_arguments(mask_in, kind, spatial_dims, sampling);
  at::Tensor out = empty_distance_map(mask_in);
  if (out.numel() == 0) return out;
  const c10::cuda::CUDAGuard device_guard(mask_in.device());
  const MaskImages images = mask_images(mask_in, ops);  // read in place, by strides
  if (core::binary_state_fits_float(images.grid)) {
    binary_distance_maps<float>(images.mask, images.grid, ops.map, out);
  } else {
    binary_distance_maps<double>(images.mask, images.grid, ops.map, out);
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
