// CUDA kernels of the distance-transform ops, over every image of the batch
// at once. The two-nearest state (two_nearest_distances, unet_weight_map):
// every pixel in parallel, lines in shared memory (two_nearest_on_line in
// tiles, core/line_tiles.h), at any spacing; one thread per line (scan_line,
// envelope_line) for lines too long for a tile. The distance maps: every
// pixel in parallel, lines in shared memory
// (csrc/core/binary_distance_tiles.h). Both give the
// CPU's values bit for bit (the same arithmetic, never fused:
// core/rounding.h, and the same exact order of candidates), as
// tests/cpp/two_nearest_tiles.cpp and binary_distance_tiles.cpp check on the
// CPU.
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
#include <utility>

#include "../core/binary_distance.h"
#include "../core/binary_distance_tiles.h"
#include "../core/distance_transform.h"
#include "../core/line_tiles.h"
#include "../core/two_nearest.h"
#include "../core/unet_weight.h"
#include "../ops/checks.h"
#include "../ops/distance_operands.h"
#include "cuda_utils.cuh"

namespace segloss::ops {
namespace {

using core::EnvelopePiece;
using core::InstanceId;
using core::kNoInstance;
using core::NearestPair;
using cuda::grid_size;
using cuda::kThreads;

constexpr int64_t kMaxBlocks = 65535;
// Scratch of the per-line envelope passes (the lines being swept at once),
// at most.
constexpr int64_t kScratchBytes = int64_t(256) << 20;
// Threads per block of the two-nearest kernels that run one thread per line
// (scan_kernel, envelope_kernel): one warp, so that an image's few hundred
// lines spread over as many SMs as there are warps (with 256-thread blocks,
// a 512² image's 512 lines ran on 2 SMs).
constexpr int kLineThreads = 32;

// One line along the first spatial axis, read through the labels' ToId
// (an instance id, or a mask's class).
template <typename Label, typename ToId>
struct Column {
  const Label* first;
  int64_t stride;
  ToId to_id;
  __device__ auto operator()(int64_t i) const { return to_id(first[i * stride]); }
};

// The batch's layout: one image's grid, and the instance maps (an image's
// strides in `labels`, `batch_stride` between images).
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

// Every pixel's state before any pass, initial(id) of its label's id, and
// with `counts`, each image's count of pixels whose id is not 0 (instance or
// foreground pixels): one integer atomic per block and image
// (deterministic). The two-nearest transform's and the distance maps'.
template <typename Label, typename ToId, typename State, typename Initial>
__global__ void initial_states_kernel(core::StridedLabels<Label, ToId> labels, core::Grid image,
                                      int64_t images, int64_t batch_stride, Initial initial,
                                      State* state, unsigned long long* counts) {
  const int64_t pixels = image.numel(), columns = image.inner(0);
  for (int64_t i = blockIdx.y; i < images; i += gridDim.y) {
    unsigned long long count = 0;
    SEGLOSS_GRID_STRIDE_LOOP(p, pixels) {
      const int64_t offset = i * batch_stride + (p / columns) * labels.stride[0] +
                             core::column_offset(labels, image, p % columns);
      const auto id = labels.to_id(labels.data[offset]);
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

// Pass 0 where its lines fit no tile: one thread per (image, line along the
// first spatial axis), scanning the labels.
template <typename Label>
__global__ void scan_kernel(BatchGrid<Label> grid, NearestPair* state) {
  const int64_t columns = grid.image.inner(0);
  const int64_t n = grid.image.size[0];
  SEGLOSS_GRID_STRIDE_LOOP(work, grid.images * columns) {
    const int64_t image = work / columns, column = work % columns;
    core::scan_line(grid.column(image, column), n, grid.image.spacing[0],
                    state + image * grid.pixels + column, columns);
  }
}

// A later pass along `axis`: one thread per line of lines [first, first +
// count) of the batch, each with its own slice of scratch (4n doubles: base
// and key values; 2n ids; the envelope's pieces).
__global__ void envelope_kernel(NearestPair* state, core::Grid image, int64_t pixels, int axis,
                                bool integer_keys, int64_t first, int64_t count,
                                double* base_scratch,
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
    core::envelope_line(candidates, n, image.spacing[axis], integer_keys,
                        piece_scratch + k * core::envelope_scratch_pieces(n),
                        core::StridedPairs{line, inner});
  }
}

// The minimum of non-negative floats or doubles in shared memory (the search blocks'
// floors), as integers (their bit patterns order as they do).
__device__ void floor_min(float* at, float value) {
  atomicMin(reinterpret_cast<unsigned*>(at), __float_as_uint(value));
}
__device__ void floor_min(double* at, double value) {
  atomicMin(reinterpret_cast<unsigned long long*>(at),
            (unsigned long long)__double_as_longlong(value));
}

// A pass in tiles: a block loads a tile of pairs, its lines' id ranges and
// their blocks' floors into shared memory, then gives each pixel its new
// pair from its line there (two_nearest_on_line, skipping blocks), in place
// (the tile's lines are its own). A line without ids keeps its empty pairs.
__global__ void two_nearest_tile_pass_kernel(NearestPair* state, core::LineTiles tiles,
                                             double spacing) {
  extern __shared__ __align__(16) unsigned char tile_memory[];
  NearestPair* tile = reinterpret_cast<NearestPair*>(tile_memory);
  auto* ranges = reinterpret_cast<core::LineIdRange*>(tile + tiles.elements);
  auto* floors = reinterpret_cast<double*>(ranges + tiles.lines);
  const int64_t blocks = core::search_blocks(tiles.n);
  const double inverse_square = core::key_scale(spacing);
  static_assert(sizeof(InstanceId) == sizeof(unsigned long long), "64-bit atomics on ids");
  for (int64_t t = blockIdx.x; t < tiles.tiles; t += gridDim.x) {
    for (int64_t l = threadIdx.x; l < tiles.lines; l += blockDim.x) {
      ranges[l] = core::empty_id_range();
    }
    for (int64_t b = threadIdx.x; b < tiles.lines * blocks; b += blockDim.x) {
      floors[b] = core::infinite_distance();
    }
    __syncthreads();
    for (int64_t e = threadIdx.x; e < tiles.elements; e += blockDim.x) {
      const core::TileElement el = tiles.element(t, e);
      if (!el.valid) continue;
      const NearestPair pair = state[el.offset];
      tile[e] = pair;
      for (int k = 0; k < 2; ++k) {
        if (pair.id[k] == kNoInstance) continue;
        atomicMin(reinterpret_cast<unsigned long long*>(&ranges[el.line].low),
                  (unsigned long long)pair.id[k]);
        atomicMax(reinterpret_cast<unsigned long long*>(&ranges[el.line].high),
                  (unsigned long long)pair.id[k]);
      }
      const double floor = core::position_floor(pair, el.q, inverse_square);
      if (floor != core::infinite_distance()) {
        floor_min(floors + el.line * blocks + el.q / core::kSearchBlock, floor);
      }
    }
    __syncthreads();
    for (int64_t e = threadIdx.x; e < tiles.elements; e += blockDim.x) {
      const core::TileElement el = tiles.element(t, e);
      if (!el.valid) continue;
      const core::LineIdRange range = ranges[el.line];
      if (!core::range_has_ids(range)) continue;
      state[el.offset] = core::two_nearest_on_line(tile + e, tiles.width, el.q, tiles.n, spacing,
                                                   core::range_has_one_id(range),
                                                   floors + el.line * blocks);
    }
    __syncthreads();  // the next tile overwrites shared memory
  }
}

// The tiles of a two-nearest pass: within the 48 KiB any block gets, where
// they fit (several blocks per SM); else within the device's opt-in shared
// memory per block (227 KiB on an H100 or H200: lines of up to about 7,200
// pixels), which the tile kernel is then allowed; no tiles past that.
core::LineTiles two_nearest_tiles(int64_t n, int64_t inner, int64_t outer) {
  const int64_t pair_bytes = int64_t(sizeof(NearestPair));
  const int64_t summary_bits = core::two_nearest_summary_bits(n);
  core::LineTiles tiles = core::line_tiles(n, inner, outer, pair_bytes, summary_bits);
  if (tiles.tiles > 0) return tiles;
  int optin = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                                        c10::cuda::current_device()));
  tiles = core::line_tiles(n, inner, outer, pair_bytes, summary_bits, core::kTileTarget,
                           int64_t(optin));
  if (tiles.tiles > 0) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(two_nearest_tile_pass_kernel,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        int(tiles.shared_bytes())));
  }
  return tiles;
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
  // Pass 0's lines fit a tile: the initial pairs, then the search (which, all
  // bases being 0, gives scan_line's pairs at any spacing); else the scan.
  const core::LineTiles first_tiles = two_nearest_tiles(image.size[0], image.inner(0), images);
  AT_DISPATCH_V2(
      labels.scalar_type(), "segloss_two_nearest_first_pass_cuda", AT_WRAP([&] {
        BatchGrid<scalar_t> grid{image, images, pixels,
                                 {labels.const_data_ptr<scalar_t>(), {}, core::LabelIsId{}},
                                 labels.stride(0)};
        for (int d = 0; d < image.ndim; ++d) grid.labels.stride[d] = labels.stride(d + 1);
        launch_initial_states(grid.labels, image, images, grid.batch_stride, InitialPair{}, pairs,
                              instance_pixels, stream);
        if (first_tiles.tiles == 0) {
          const int64_t work = images * image.inner(0);
          scan_kernel<scalar_t>
              <<<grid_size(work, kMaxBlocks, kLineThreads), kLineThreads, 0, stream>>>(grid,
                                                                                      pairs);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
      }),
      AT_EXPAND(AT_INTEGRAL_TYPES_V2));
  // Every pass in tiles where its lines fit one (the search gives the
  // envelope's pairs: two_nearest_on_line); else each line is swept by one
  // thread.
  const bool integer_keys = core::integer_envelope_keys(image);
  for (int axis = 0; axis < image.ndim; ++axis) {
    const int64_t n = image.size[axis];
    const int64_t lines = images * (pixels / n);
    const core::LineTiles tiles =
        axis == 0 ? first_tiles : two_nearest_tiles(n, image.inner(axis), lines / image.inner(axis));
    if (tiles.tiles > 0) {
      two_nearest_tile_pass_kernel<<<std::min(tiles.tiles, kMaxBlocks), kThreads,
                                     size_t(tiles.shared_bytes()), stream>>>(
          pairs, tiles, image.spacing[axis]);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      continue;
    }
    if (axis == 0) continue;  // scanned above
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
      envelope_kernel<<<grid_size(count, kMaxBlocks, kLineThreads), kLineThreads, 0, stream>>>(
          pairs, image, pixels, axis, integer_keys, first, count, base, ids, pieces);
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
// The distance maps (segloss::distance_map): the pixel-parallel form of the
// binary sweep (core/binary_distance_tiles.h). The states start at +-inf,
// then one line pass per axis gives every pixel its new state from its line
// in shared memory, the last pass the maps. tests/cpp/binary_distance_tiles.cpp
// runs these steps on the CPU.

// The map's value, or 0 in an image without both classes.
__device__ float map_output(core::DistanceMap map, double state, unsigned long long foreground,
                            int64_t pixels) {
  return core::has_both_classes(int64_t(foreground), pixels)
             ? core::distance_map_value<float>(map, state)
             : 0.0f;
}

// A line pass in tiles: a block loads a tile, its lines' blocks' floors and
// its lines' flags into shared memory, then gives each of its pixels the new
// state (nearest_on_line, skipping blocks), in place (the tile's lines are
// its own), or with `out` (the last pass) the map.
template <typename State>
__global__ void binary_tile_pass_kernel(State* state, core::LineTiles tiles, double spacing,
                                        core::DistanceMap map,
                                        const unsigned long long* foreground, int64_t pixels,
                                        float* out) {
  extern __shared__ __align__(16) unsigned char tile_memory[];
  State* tile = reinterpret_cast<State*>(tile_memory);
  const int64_t floors_per_line = 2 * core::search_blocks(tiles.n);
  State* floors = tile + tiles.elements;
  unsigned* flags = reinterpret_cast<unsigned*>(floors + tiles.lines * floors_per_line);
  const int64_t words = core::line_flag_words(tiles.lines);
  for (int64_t t = blockIdx.x; t < tiles.tiles; t += gridDim.x) {
    for (int64_t w = threadIdx.x; w < words; w += blockDim.x) flags[w] = 0;
    for (int64_t f = threadIdx.x; f < tiles.lines * floors_per_line; f += blockDim.x) {
      floors[f] = State(core::infinite_distance());
    }
    __syncthreads();
    for (int64_t e = threadIdx.x; e < tiles.elements; e += blockDim.x) {
      const core::TileElement el = tiles.element(t, e);
      if (!el.valid) continue;
      const State own = state[el.offset];
      tile[e] = own;
      atomicOr(flags + el.line / 8, core::line_flags(own) << core::line_flag_shift(el.line));
      State* block = floors + el.line * floors_per_line + 2 * (el.q / core::kSearchBlock);
      floor_min(block, core::binary_floor_share(own, true));
      floor_min(block + 1, core::binary_floor_share(own, false));
    }
    __syncthreads();
    for (int64_t e = threadIdx.x; e < tiles.elements; e += blockDim.x) {
      const core::TileElement el = tiles.element(t, e);
      if (!el.valid) continue;
      const unsigned line = flags[el.line / 8] >> core::line_flag_shift(el.line);
      const State next = core::line_needs_search(line)
                             ? core::nearest_on_line(tile + e, tiles.width, el.q, tiles.n, spacing,
                                                     floors + el.line * floors_per_line)
                             : tile[e];
      if (out != nullptr) {
        out[el.offset] = map_output(map, double(next), foreground[el.offset / pixels], pixels);
      } else {
        state[el.offset] = next;
      }
    }
    __syncthreads();  // the next tile overwrites shared memory
  }
}

// A line pass whose lines fit no tile: from `state` into `next` (or with
// `out`, the map), every pixel searching its line in global memory.
template <typename State>
__global__ void binary_global_pass_kernel(const State* state, State* next, int64_t total,
                                          int64_t n, int64_t inner, double spacing,
                                          core::DistanceMap map,
                                          const unsigned long long* foreground, int64_t pixels,
                                          float* out) {
  SEGLOSS_GRID_STRIDE_LOOP(i, total) {
    const State value = core::nearest_on_line(state + i, inner, (i / inner) % n, n, spacing);
    if (out != nullptr) {
      out[i] = map_output(map, double(value), foreground[i / pixels], pixels);
    } else {
      next[i] = value;
    }
  }
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
  at::Tensor other;  // the second buffer of passes from global memory
  for (int axis = 0; axis < image.ndim; ++axis) {
    const int64_t n = image.size[axis], inner = image.inner(axis);
    float* maps = axis == image.ndim - 1 ? out.data_ptr<float>() : nullptr;
    const core::LineTiles tiles =
        core::line_tiles(n, inner, total / (n * inner), int64_t(sizeof(State)),
                         core::binary_summary_bits<State>(n));
    if (tiles.tiles > 0) {
      binary_tile_pass_kernel<State>
          <<<std::min(tiles.tiles, kMaxBlocks), kThreads,
             size_t(tiles.shared_bytes()), stream>>>(
              state.data_ptr<State>(), tiles, image.spacing[axis], map, foreground, pixels,
              maps);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    } else {
      if (!other.defined()) other = at::empty({total}, state.options());
      binary_global_pass_kernel<State><<<grid_size(total, kMaxBlocks), kThreads, 0, stream>>>(
          state.const_data_ptr<State>(), other.data_ptr<State>(), total, n, inner,
          image.spacing[axis], map, foreground, pixels, maps);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      std::swap(state, other);
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
