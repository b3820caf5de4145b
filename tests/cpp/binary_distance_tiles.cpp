// The CUDA distance maps' algorithm run on the CPU: the same core functions
// (csrc/core/binary_distance_tiles.h) in the same order as the kernels of
// csrc/cuda/distance_cuda.cu, one tile after another where the GPU runs
// them side by side (a tile's lines are its own, so the order does not
// matter). Built and run by tests/test_distance_tiles.py, which compares the
// maps with the CPU driver's and with SciPy.
//
//   binary_distance_tiles MAP STATE TARGET MAX_BYTES IMAGES NDIM SIZE... SPACING... IN OUT
//
// MAP: signed or boundary; STATE: float or double; TARGET, MAX_BYTES: the
// tiles' size (line_tiles; small values cut small images into every form);
// IN: IMAGES x SIZE... uint8 mask (C order); OUT: the float32 maps. Prints
// each pass's form: slabs, groups (of lines of one slab) or global.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "../../csrc/core/binary_distance.h"
#include "../../csrc/core/binary_distance_tiles.h"

using namespace segloss::core;

namespace {

template <typename State>
void distance_maps(const std::vector<unsigned char>& mask, int64_t images, const Grid& image,
                   DistanceMap map, int64_t target, int64_t max_bytes, std::vector<float>& out) {
  const int64_t pixels = image.numel(), total = images * pixels;
  // The initial states and each image's foreground count (binary_init_kernel).
  std::vector<State> state(total), other;
  std::vector<int64_t> foreground(images, 0);
  for (int64_t i = 0; i < total; ++i) {
    state[i] = initial_binary_state<State>(mask[i] != 0);
    foreground[i / pixels] += mask[i] != 0;
  }
  const auto write_map = [&](int64_t offset, State s) {
    out[offset] = has_both_classes(foreground[offset / pixels], pixels)
                      ? distance_map_value<float>(map, double(s))
                      : 0.0f;
  };
  for (int axis = 0; axis < image.ndim; ++axis) {
    const int64_t n = image.size[axis], inner = image.inner(axis);
    const bool last = axis == image.ndim - 1;
    const LineTiles tiles =
        line_tiles(n, inner, total / (n * inner), int64_t(sizeof(State)), target, max_bytes);
    std::printf("%s\n", tiles.tiles == 0 ? "global" : tiles.width == inner ? "slabs" : "groups");
    if (tiles.tiles == 0) {
      // binary_global_pass_kernel: from one buffer into the other.
      other.resize(total);
      for (int64_t i = 0; i < total; ++i) {
        const State next =
            nearest_on_line(state.data() + i, inner, (i / inner) % n, n, image.spacing[axis]);
        if (last) {
          write_map(i, next);
        } else {
          other[i] = next;
        }
      }
      std::swap(state, other);
      continue;
    }
    // binary_tile_pass_kernel: load the tile and its lines' flags (shared
    // memory), then every pixel's new state, in place.
    std::vector<State> tile(tiles.elements);
    std::vector<unsigned> flags(line_flag_words(tiles.lines));
    for (int64_t t = 0; t < tiles.tiles; ++t) {
      std::fill(flags.begin(), flags.end(), 0u);
      for (int64_t e = 0; e < tiles.elements; ++e) {
        const TileElement el = tiles.element(t, e);
        if (!el.valid) continue;
        tile[e] = state[el.offset];
        flags[el.line / 8] |= line_flags(tile[e]) << line_flag_shift(el.line);
      }
      for (int64_t e = 0; e < tiles.elements; ++e) {
        const TileElement el = tiles.element(t, e);
        if (!el.valid) continue;
        const unsigned line = flags[el.line / 8] >> line_flag_shift(el.line);
        const State next = line_needs_search(line)
                               ? nearest_on_line(tile.data() + e, tiles.width, el.q, n,
                                                 image.spacing[axis])
                               : tile[e];
        if (last) {
          write_map(el.offset, next);
        } else {
          state[el.offset] = next;
        }
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 9) {
    std::fprintf(stderr, "usage: %s MAP STATE TARGET MAX_BYTES IMAGES NDIM SIZE... SPACING... IN OUT\n",
                 argv[0]);
    return 2;
  }
  const DistanceMap map = std::string(argv[1]) == "signed" ? DistanceMap::kSigned
                                                           : DistanceMap::kBoundary;
  const bool use_float = std::string(argv[2]) == "float";
  const int64_t target = std::atoll(argv[3]), max_bytes = std::atoll(argv[4]);
  const int64_t images = std::atoll(argv[5]);
  Grid image;
  image.ndim = std::atoi(argv[6]);
  if (argc != 9 + 2 * image.ndim) return 2;
  for (int d = 0; d < image.ndim; ++d) {
    image.size[d] = std::atoll(argv[7 + d]);
    image.spacing[d] = std::atof(argv[7 + image.ndim + d]);
  }
  const int64_t total = images * image.numel();
  std::vector<unsigned char> mask(total);
  FILE* in = std::fopen(argv[7 + 2 * image.ndim], "rb");
  if (in == nullptr || std::fread(mask.data(), 1, total, in) != size_t(total)) return 3;
  std::fclose(in);
  std::vector<float> out(total);
  if (use_float) {
    distance_maps<float>(mask, images, image, map, target, max_bytes, out);
  } else {
    distance_maps<double>(mask, images, image, map, target, max_bytes, out);
  }
  FILE* result = std::fopen(argv[8 + 2 * image.ndim], "wb");
  if (result == nullptr || std::fwrite(out.data(), sizeof(float), total, result) != size_t(total)) {
    return 3;
  }
  std::fclose(result);
  return 0;
}
