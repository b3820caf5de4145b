// The CUDA distance maps' algorithm run on the CPU: the kernels' own steps
// over a tile (csrc/core/tile_passes.h, with plain updates where the kernels
// of csrc/cuda/distance_cuda.cu use atomics) over the same tile memory, in
// the same order, one tile after another where the GPU runs them side by
// side (a tile's lines are its own, so the order does not matter). Built and
// run by tests/test_distance_tiles.py, which compares the maps with the CPU
// driver's and with SciPy.
//
//   binary_distance_tiles MAP STATE TARGET MAX_BYTES OPTIN SCRATCH IMAGES NDIM SIZE... SPACING...
//                         IN OUT
//
// MAP: signed or boundary; STATE: float or double; TARGET, MAX_BYTES, OPTIN,
// SCRATCH: the tiles' sizes (pass_tiles: the shared-memory tiles', the
// device's opt-in shared memory, the global-memory tiles'; small values cut
// small images into every form); IN: IMAGES x SIZE... uint8 mask (C order);
// OUT: the float32 maps. Prints each pass's form: slabs, groups (of lines of
// one slab), optin-slabs, optin-groups or global.
//
//   binary_distance_tiles fuzz COUNT SEED
//
// COUNT random stacks (1 to 4 dims, noise or boxes of every density, random
// tile sizes, float and double states; read by strides, as
// initial_states_kernel reads them, from a random layout: the axes in any
// memory order, steps of 1 or 2, or one mask expanded to the batch, and
// nonzero values of 1 to 240) compared with the CPU driver
// (binary_distance, bit for bit at unit spacing) and, on small images, with
// a brute-force minimum; and COUNT random lines of states at random
// spacings, whose search skipping blocks must give the same bits as without;
// prints the first mismatch and exits 1, else "ok".
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "../../csrc/core/binary_distance.h"
#include "../../csrc/core/binary_distance_tiles.h"
#include "../../csrc/core/tile_passes.h"
#include "fuzz_support.h"

using namespace segloss::core;

namespace {

// A pass's form, as the program reports it.
const char* form_name(const PassTiles& pass) {
  const bool slabs = pass.tiles.width == pass.tiles.inner;
  switch (pass.memory) {
    case TileMemory::kShared: return slabs ? "slabs" : "groups";
    case TileMemory::kOptIn: return slabs ? "optin-slabs" : "optin-groups";
    default: return "global";
  }
}

using Mask = StridedMask<unsigned char>;

// A mask in C order, as read by strides.
Mask c_order(const unsigned char* mask, const Grid& image) {
  Mask strided{mask, {}, {}};
  for (int d = 0; d < image.ndim; ++d) strided.stride[d] = image.inner(d);
  return strided;
}

// The maps of a batch of `images` masks whose first pixels are
// `batch_stride` apart, into `out` (C order).
template <typename State>
void distance_maps(const Mask& mask, int64_t batch_stride, int64_t images, const Grid& image,
                   DistanceMap map, int64_t target, int64_t max_bytes, int64_t optin_bytes,
                   int64_t scratch_bytes, std::vector<float>& out, bool report_forms = true) {
  const int64_t pixels = image.numel(), total = images * pixels;
  // The initial states and each image's foreground count (initial_states_kernel,
  // one thread per pixel).
  std::vector<State> state(total);
  std::vector<int64_t> foreground(images, 0);
  for (int64_t i = 0; i < images; ++i) {
    for (int64_t p = 0; p < pixels; ++p) {
      const bool in_mask = batch_pixel_id(mask, image, batch_stride, i, p);
      state[i * pixels + p] = initial_binary_state<State>(in_mask);
      foreground[i] += in_mask;
    }
  }
  for (int axis = 0; axis < image.ndim; ++axis) {
    const int64_t n = image.size[axis], inner = image.inner(axis);
    const bool last = axis == image.ndim - 1;
    const int64_t outer = total / (n * inner), state_bytes = int64_t(sizeof(State));
    const PassTiles pass = pass_tiles(n, inner, outer, state_bytes, binary_summary_bits<State>(n),
                                      optin_bytes, scratch_bytes, target, max_bytes);
    const LineTiles& tiles = pass.tiles;
    if (report_forms) std::printf("%s\n", form_name(pass));
    // binary_tile_pass_kernel, or the global kernels' three launches per
    // tile, over one tile's memory of exactly LineTiles::shared_bytes (as
    // the kernels have it: under the sanitizers, a step past it is caught).
    std::vector<unsigned char> memory(tiles.shared_bytes());
    const BinaryTile<State, SerialUpdates> tile(memory.data(), tiles);
    const BinaryPassOutput<State, int64_t> output{state.data(), last ? out.data() : nullptr, map,
                                                  foreground.data(), pixels};
    for (int64_t t = 0; t < tiles.tiles; ++t) {
      tile.reset(tiles, 0, 1);
      for (int64_t e = 0; e < tiles.elements; ++e) tile.load(state.data(), tiles, t, e);
      for (int64_t e = 0; e < tiles.elements; ++e) {
        tile.search(tiles, t, e, image.spacing[axis], output);
      }
    }
  }
}

struct Serial {
  template <typename Body>
  void operator()(int64_t count, const Body& body) const {
    body(0, count);
  }
};

// The map of one image by the CPU driver (the reference).
std::vector<float> cpu_map(const unsigned char* mask, const Grid& image, DistanceMap map) {
  const int64_t pixels = image.numel();
  std::vector<float> out(pixels);
  const int64_t foreground = binary_distance(
      c_order(mask, image), image, DistanceTarget::kOtherClass, Serial{},
      [&](int64_t i, double s) { out[i] = distance_map_value<float>(map, s); });
  if (!has_both_classes(foreground, pixels)) std::fill(out.begin(), out.end(), 0.0f);
  return out;
}

// The boundary map of one image by brute force (small images).
std::vector<float> brute_force_map(const unsigned char* mask, const Grid& image) {
  const int64_t pixels = image.numel();
  std::vector<float> out(pixels, 0.0f);
  std::vector<int64_t> coords(pixels * image.ndim);
  int64_t foreground = 0;
  for (int64_t i = 0; i < pixels; ++i) {
    int64_t rest = i;
    for (int d = image.ndim - 1; d >= 0; --d) {
      coords[i * image.ndim + d] = rest % image.size[d];
      rest /= image.size[d];
    }
    foreground += mask[i] != 0;
  }
  if (!has_both_classes(foreground, pixels)) return out;
  for (int64_t i = 0; i < pixels; ++i) {
    int64_t best = -1;
    for (int64_t j = 0; j < pixels; ++j) {
      if ((mask[i] != 0) == (mask[j] != 0)) continue;
      int64_t squared = 0;
      for (int d = 0; d < image.ndim; ++d) {
        const int64_t t = coords[i * image.ndim + d] - coords[j * image.ndim + d];
        squared += t * t;
      }
      if (best < 0 || squared < best) best = squared;
    }
    out[i] = float(std::sqrt(double(best)));
  }
  return out;
}

// One random line of states (runs of either class, magnitudes from 1 to
// 2^24 or infinite, long infinite runs) at a random spacing: nearest_on_line
// with its blocks' floors gives the same bits as without, at every position.
template <typename State>
bool skipping_agrees(std::mt19937_64& rng) {
  const auto uniform = [&](int64_t lo, int64_t hi) {
    return lo + int64_t(rng() % uint64_t(hi - lo + 1));
  };
  const int64_t n = uniform(1, uniform(0, 1) ? 100 : 2000);
  const int64_t mean_run = int64_t(1) << uniform(0, 10);
  const int64_t infinite_in_8 = uniform(0, 8);
  const double spacing = uniform(0, 1) ? 1.0 : 0.05 + double(uniform(0, 100000)) / 20000.0;
  std::vector<State> line(n);
  bool foreground = uniform(0, 1) == 1;
  for (int64_t q = 0; q < n; ++q) {
    if (uniform(1, mean_run) == 1) foreground = !foreground;
    const State magnitude = uniform(1, 8) <= infinite_in_8
                                ? State(infinite_distance())
                                : State(uniform(1, int64_t(1) << uniform(0, 24))) *
                                      State(spacing * spacing);
    line[q] = foreground ? magnitude : -magnitude;
  }
  std::vector<State> floors(2 * search_blocks(n), State(infinite_distance()));
  for (int64_t q = 0; q < n; ++q) {
    for (int k = 0; k < 2; ++k) {
      State& floor = floors[2 * (q / kSearchBlock) + k];
      const State share = binary_floor_share(line[q], k == 0);
      floor = share < floor ? share : floor;
    }
  }
  for (int64_t q = 0; q < n; ++q) {
    const State plain = nearest_on_line(line.data() + q, 1, q, n, spacing);
    const State skipping = nearest_on_line(line.data() + q, 1, q, n, spacing, floors.data());
    if (std::memcmp(&plain, &skipping, sizeof(State)) != 0) {
      std::printf("skipping blocks: line of %lld (spacing %.17g), position %lld: %.17g, "
                  "without skipping %.17g\n",
                  (long long)n, spacing, (long long)q, double(skipping), double(plain));
      return false;
    }
  }
  return true;
}

int fuzz(int64_t count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const auto uniform = [&](int64_t lo, int64_t hi) {  // [lo, hi]
    return lo + int64_t(rng() % uint64_t(hi - lo + 1));
  };
  const double densities[] = {0.0, 0.02, 0.3, 0.5, 0.9, 1.0};
  for (int64_t k = 0; k < count; ++k) {
    if (!skipping_agrees<float>(rng) || !skipping_agrees<double>(rng)) return 1;
    Grid image;
    image.ndim = int(uniform(1, 4));
    const int64_t largest = image.ndim == 1 ? 300 : image.ndim == 2 ? 60 : image.ndim == 3 ? 16 : 8;
    for (int d = 0; d < image.ndim; ++d) {
      image.size[d] = uniform(1, largest);
      image.spacing[d] = 1.0;
    }
    const int64_t images = uniform(1, 3), pixels = image.numel();
    const bool expanded = images > 1 && uniform(0, 4) == 0;
    std::vector<unsigned char> mask(images * pixels);
    for (int64_t i = 0; i < images; ++i) {
      unsigned char* m = mask.data() + i * pixels;
      if (expanded && i > 0) {
        std::copy(mask.data(), mask.data() + pixels, m);
        continue;
      }
      const double density = densities[uniform(0, 5)];
      if (uniform(0, 1) == 0) {  // noise
        for (int64_t p = 0; p < pixels; ++p) m[p] = (rng() % 1000) < density * 1000;
      } else {  // boxes: long runs of both classes
        std::fill(m, m + pixels, density > 0.5);
        for (int64_t b = uniform(0, 4); b > 0; --b) {
          int64_t lo[kMaxDistanceDims], hi[kMaxDistanceDims];
          for (int d = 0; d < image.ndim; ++d) {
            lo[d] = uniform(0, image.size[d] - 1);
            hi[d] = uniform(lo[d], image.size[d] - 1);
          }
          for (int64_t p = 0; p < pixels; ++p) {
            int64_t rest = p;
            bool inside = true;
            for (int d = image.ndim - 1; d >= 0; --d) {
              const int64_t c = rest % image.size[d];
              rest /= image.size[d];
              inside &= c >= lo[d] && c <= hi[d];
            }
            if (inside) m[p] = !m[p];
          }
        }
      }
    }
    const DistanceMap map = uniform(0, 1) ? DistanceMap::kSigned : DistanceMap::kBoundary;
    const int64_t target = int64_t(1) << uniform(0, 12), max_bytes = int64_t(16) << uniform(0, 12);
    const int64_t optin_bytes = max_bytes * uniform(1, 4), scratch_bytes = uniform(0, 64) * 16;
    const bool use_float = uniform(0, 1) == 0;
    // The masks read by strides from a random layout (any nonzero value is
    // foreground).
    const fuzz_images::StridedBatch<unsigned char> batch =
        fuzz_images::random_layout(fuzz_images::Uniform{rng}, mask, images, image, expanded,
                                   [&] { return (unsigned char)uniform(0, 3); });
    std::vector<unsigned char> values = batch.buffer;
    for (unsigned char& value : values) value *= (unsigned char)uniform(1, 80);
    Mask strided{values.data(), {}, {}};
    std::copy(batch.stride, batch.stride + image.ndim, strided.stride);
    std::vector<float> out(mask.size());
    if (use_float) {
      distance_maps<float>(strided, batch.batch_stride, images, image, map, target, max_bytes,
                           optin_bytes, scratch_bytes, out, false);
    } else {
      distance_maps<double>(strided, batch.batch_stride, images, image, map, target, max_bytes,
                            optin_bytes, scratch_bytes, out, false);
    }
    for (int64_t i = 0; i < images; ++i) {
      const unsigned char* m = mask.data() + i * pixels;
      const std::vector<float> expected = cpu_map(m, image, map);
      std::vector<float> brute;
      if (map == DistanceMap::kBoundary && pixels <= 400) brute = brute_force_map(m, image);
      for (int64_t p = 0; p < pixels; ++p) {
        const float got = out[i * pixels + p];
        if (got != expected[p] || (!brute.empty() && got != brute[p])) {
          std::printf("mismatch: case %lld image %lld pixel %lld: %.9g, the CPU's %.9g%s "
                      "(ndim %d, %s, target %lld, max_bytes %lld)\n",
                      (long long)k, (long long)i, (long long)p, got, expected[p],
                      brute.empty() ? "" : " (brute force)", image.ndim,
                      use_float ? "float" : "double", (long long)target, (long long)max_bytes);
          return 1;
        }
      }
    }
  }
  std::printf("ok %lld\n", (long long)count);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 4 && std::string(argv[1]) == "fuzz") {
    return fuzz(std::atoll(argv[2]), uint64_t(std::atoll(argv[3])));
  }
  if (argc < 11) {
    std::fprintf(stderr,
                 "usage: %s MAP STATE TARGET MAX_BYTES OPTIN SCRATCH IMAGES NDIM SIZE... "
                 "SPACING... IN OUT\n",
                 argv[0]);
    return 2;
  }
  const DistanceMap map = std::string(argv[1]) == "signed" ? DistanceMap::kSigned
                                                           : DistanceMap::kBoundary;
  const bool use_float = std::string(argv[2]) == "float";
  const int64_t target = std::atoll(argv[3]), max_bytes = std::atoll(argv[4]);
  const int64_t optin_bytes = std::atoll(argv[5]), scratch_bytes = std::atoll(argv[6]);
  const int64_t images = std::atoll(argv[7]);
  Grid image;
  image.ndim = std::atoi(argv[8]);
  if (argc != 11 + 2 * image.ndim) return 2;
  for (int d = 0; d < image.ndim; ++d) {
    image.size[d] = std::atoll(argv[9 + d]);
    image.spacing[d] = std::atof(argv[9 + image.ndim + d]);
  }
  const int64_t total = images * image.numel();
  std::vector<unsigned char> mask(total);
  FILE* in = std::fopen(argv[9 + 2 * image.ndim], "rb");
  if (in == nullptr || std::fread(mask.data(), 1, total, in) != size_t(total)) return 3;
  std::fclose(in);
  std::vector<float> out(total);
  const Mask strided = c_order(mask.data(), image);
  if (use_float) {
    distance_maps<float>(strided, image.numel(), images, image, map, target, max_bytes,
                         optin_bytes, scratch_bytes, out);
  } else {
    distance_maps<double>(strided, image.numel(), images, image, map, target, max_bytes,
                          optin_bytes, scratch_bytes, out);
  }
  FILE* result = std::fopen(argv[10 + 2 * image.ndim], "wb");
  if (result == nullptr || std::fwrite(out.data(), sizeof(float), total, result) != size_t(total)) {
    return 3;
  }
  std::fclose(result);
  return 0;
}
