// What the fuzz programs of tests/cpp share (two_nearest_bands.cpp,
// two_nearest_tiles.cpp, binary_distance_tiles.cpp): random grids, label
// images, strided layouts and lines of pairs, the bitwise comparison of
// pairs, and the command line. Each program is still built from its one
// source file (this header is found next to it).
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "../../csrc/core/distance_transform.h"

namespace fuzz_images {

// A uniform integer in [lo, hi].
struct Uniform {
  std::mt19937_64& rng;
  int64_t operator()(int64_t lo, int64_t hi) const {
    return lo + int64_t(rng() % uint64_t(hi - lo + 1));
  }
};

// A grid of 1 to 4 dims, each axis up to max_size[ndim - 1] pixels, at unit
// spacing or a random one per axis (0.25 to 4.25).
inline segloss::core::Grid random_grid(const Uniform& uniform, const int64_t (&max_size)[4],
                                       bool unit) {
  segloss::core::Grid grid;
  grid.ndim = int(uniform(1, 4));
  for (int d = 0; d < grid.ndim; ++d) {
    grid.size[d] = uniform(1, max_size[grid.ndim - 1]);
    grid.spacing[d] = unit ? 1.0 : 0.25 + double(uniform(0, 1000)) / 250.0;
  }
  return grid;
}

// Fills one image's labels (C order, zeros on entry) with ids 1 to `ids`:
// scattered pixels of any density, up to 4 boxes, or no instance at all.
inline void random_labels(const Uniform& uniform, const segloss::core::Grid& grid, int64_t ids,
                          int64_t* labels) {
  const int64_t pixels = grid.numel();
  const int kind = int(uniform(0, 2));
  if (kind == 0) {  // scattered pixels of any density
    const int64_t density = uniform(0, 100);
    for (int64_t x = 0; x < pixels; ++x) labels[x] = uniform(1, 100) <= density ? uniform(1, ids) : 0;
  } else if (kind == 1) {  // boxes
    for (int64_t box = uniform(0, 4); box > 0; --box) {
      int64_t lo[segloss::core::kMaxDistanceDims], hi[segloss::core::kMaxDistanceDims];
      for (int d = 0; d < grid.ndim; ++d) {
        lo[d] = uniform(0, grid.size[d] - 1);
        hi[d] = uniform(lo[d], grid.size[d] - 1);
      }
      const int64_t id = uniform(1, ids);
      for (int64_t x = 0; x < pixels; ++x) {
        bool inside = true;
        for (int d = 0; d < grid.ndim; ++d) {
          const int64_t at = (x / grid.inner(d)) % grid.size[d];
          inside &= at >= lo[d] && at <= hi[d];
        }
        if (inside) labels[x] = id;
      }
    }
  }  // kind 2: no instance at all
}

// A batch of images as a strided tensor view may hold it: `buffer` with the
// batch axis's stride and each grid axis's, in elements.
template <typename T>
struct StridedBatch {
  std::vector<T> buffer;
  int64_t batch_stride = 0;
  int64_t stride[segloss::core::kMaxDistanceDims] = {};
};

// `values` (images x grid, C order) laid out with the axes in a random
// memory order, each with a step of 1 or 2 (a slice's) and the gaps filled
// with filler() (values a wrong read would take); with `expanded`, one image
// at batch stride 0 (an expanded batch: the caller's images are all equal).
template <typename T, typename Filler>
StridedBatch<T> random_layout(const Uniform& uniform, const std::vector<T>& values,
                              int64_t images, const segloss::core::Grid& grid, bool expanded,
                              Filler filler) {
  const int axes = grid.ndim + 1;  // the batch axis first
  int64_t size[segloss::core::kMaxDistanceDims + 1], stride[segloss::core::kMaxDistanceDims + 1];
  int order[segloss::core::kMaxDistanceDims + 1];
  size[0] = expanded ? 1 : images;
  for (int d = 0; d < grid.ndim; ++d) size[d + 1] = grid.size[d];
  for (int a = 0; a < axes; ++a) order[a] = a;
  for (int a = axes - 1; a > 0; --a) std::swap(order[a], order[uniform(0, a)]);
  int64_t extent = 1;
  for (int k = axes - 1; k >= 0; --k) {  // order[axes - 1]: the innermost axis
    const int64_t step = uniform(1, 2);
    stride[order[k]] = extent * step;
    extent *= size[order[k]] * step;
  }
  StridedBatch<T> batch;
  batch.buffer.resize(size_t(extent));
  for (T& value : batch.buffer) value = filler();
  const int64_t pixels = grid.numel();
  for (int64_t x = 0; x < size[0] * pixels; ++x) {
    int64_t offset = (x / pixels) * stride[0];
    for (int d = 0; d < grid.ndim; ++d) {
      offset += (x / grid.inner(d)) % grid.size[d] * stride[d + 1];
    }
    batch.buffer[size_t(offset)] = values[size_t(x)];
  }
  batch.batch_stride = expanded ? 0 : stride[0];
  for (int d = 0; d < grid.ndim; ++d) batch.stride[d] = stride[d + 1];
  return batch;
}

// A random line of 1 to max_n pairs as a later pass gets them (d[0] <=
// d[1], distinct ids; integer squared distances below 2^0 to 2^max_shift, a
// few ids or many, any share of empty positions, many ties).
inline std::vector<segloss::core::NearestPair> random_pair_line(std::mt19937_64& rng,
                                                                int64_t max_n,
                                                                int max_shift = 40) {
  using namespace segloss::core;
  const int64_t n = 1 + int64_t(rng() % uint64_t(max_n));
  const uint64_t ids = 1 + rng() % (rng() % 2 ? 3 : 20);
  const int shift = int(rng() % uint64_t(max_shift + 1));  // squared distances below 2^shift
  const int empty_in_8 = int(rng() % 8);
  std::vector<NearestPair> pairs(n, no_instances());
  for (auto& pair : pairs) {
    if (int(rng() % 8) < empty_in_8) continue;
    pair.id[0] = 1 + rng() % ids;
    pair.d[0] = double(rng() % (uint64_t(1) << shift));
    if (rng() % 3 == 0) continue;
    pair.id[1] = 1 + rng() % ids;
    if (pair.id[1] == pair.id[0]) pair.id[1] = pair.id[0] % ids + 1;
    if (pair.id[1] == pair.id[0]) {  // one id only
      pair.id[1] = kNoInstance;
      continue;
    }
    pair.d[1] = pair.d[0] + double(rng() % 3 == 0 ? 0 : rng() % (uint64_t(1) << shift));
  }
  return pairs;
}

// Whether two pairs are the same bits, ids included.
inline bool same_bits(const segloss::core::NearestPair& a, const segloss::core::NearestPair& b) {
  for (int k = 0; k < 2; ++k) {
    if (std::memcmp(&a.d[k], &b.d[k], sizeof(double)) != 0 || a.id[k] != b.id[k]) return false;
  }
  return true;
}

// The programs' command line: `PROGRAM fuzz COUNT SEED` runs fuzz(COUNT, SEED).
inline int fuzz_main(int argc, char** argv, int (*fuzz)(int64_t, uint64_t)) {
  if (argc == 4 && std::string(argv[1]) == "fuzz") {
    return fuzz(std::atoll(argv[2]), uint64_t(std::atoll(argv[3])));
  }
  std::fprintf(stderr, "usage: %s fuzz COUNT SEED\n", argv[0]);
  return 2;
}

}  // namespace fuzz_images
