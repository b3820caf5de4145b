// The CPU two-nearest transform (csrc/core/distance_transform.h) cut into
// bands of every size and its work split in every way. Built and run by
// tests/test_distance_numpy.py:
//
//   two_nearest_bands fuzz COUNT SEED
//
// COUNT random label images (1 to 4 dims, scattered pixels, boxes or none, a
// few ids or many, unit or random spacing) through two_nearest_squared with
// the library's band size and with random small ones (down to one row per
// band), each under a random partition of the parallel_for ranges run in a
// random order. Every run must give the same bits, and the distances must
// equal a brute-force minimum over every pair of pixels (exactly at unit
// spacing, to 1e-12 relative otherwise), with distinct ids at their reported
// distances. Each trial also sweeps one random line of integer squared
// distances (up to 2^40, lines of up to 3000 positions) with and without
// integer_keys (crossing() without its checks): the pairs must be the same
// bits. Prints the first mismatch and exits 1, else "ok".
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "../../csrc/core/distance_transform.h"
#include "fuzz_support.h"

using namespace segloss::core;

namespace {

using fuzz_images::same_bits;

// A parallel_for that cuts [0, count) at random points and runs the pieces in
// a random order, on the calling thread.
struct RandomPartition {
  std::mt19937_64* rng;
  template <typename Body>
  void operator()(int64_t count, Body&& body) const {
    std::vector<int64_t> cuts{0, count};
    const int pieces = int((*rng)() % 4);
    for (int k = 0; k < pieces && count > 1; ++k) cuts.push_back(int64_t((*rng)() % count));
    std::sort(cuts.begin(), cuts.end());
    cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
    std::vector<std::pair<int64_t, int64_t>> ranges;
    for (size_t k = 0; k + 1 < cuts.size(); ++k) ranges.emplace_back(cuts[k], cuts[k + 1]);
    std::shuffle(ranges.begin(), ranges.end(), *rng);
    for (const auto& range : ranges) body(range.first, range.second);
  }
};

std::vector<NearestPair> transform(const std::vector<int64_t>& labels, const Grid& grid,
                                   const BandSize& bands, std::mt19937_64& rng) {
  StridedLabels<int64_t, LabelIsId> strided{labels.data(), {}, LabelIsId{}};
  for (int d = 0; d < grid.ndim; ++d) strided.stride[d] = grid.inner(d);
  std::vector<NearestPair> out(labels.size(), no_instances());
  std::vector<int> written(labels.size(), 0);
  two_nearest_squared(strided, grid, RandomPartition{&rng},
                      [&](int64_t i, const NearestPair& pair) {
                        out[i] = pair;
                        ++written[i];
                      },
                      bands);
  for (int count : written) {
    if (count != 1) {
      std::printf("a pixel handed to the sink %d times\n", count);
      std::exit(1);
    }
  }
  return out;
}

// Each pixel's squared distance to every instance, by brute force.
std::vector<std::vector<double>> per_instance(const std::vector<int64_t>& labels,
                                              const Grid& grid, int64_t ids) {
  const int64_t pixels = grid.numel();
  std::vector<std::vector<double>> squared(ids + 1,
                                           std::vector<double>(pixels, infinite_distance()));
  std::vector<int64_t> at(grid.ndim), from(grid.ndim);
  for (int64_t y = 0; y < pixels; ++y) {
    if (labels[y] == 0) continue;
    for (int d = 0; d < grid.ndim; ++d) from[d] = (y / grid.inner(d)) % grid.size[d];
    for (int64_t x = 0; x < pixels; ++x) {
      double sum = 0;
      for (int d = 0; d < grid.ndim; ++d) {
        const double offset = grid.spacing[d] * double((x / grid.inner(d)) % grid.size[d] - from[d]);
        sum += offset * offset;
      }
      squared[labels[y]][x] = std::min(squared[labels[y]][x], sum);
    }
  }
  return squared;
}

bool close(double actual, double expected, bool exact) {
  if (std::isinf(expected) || exact) return actual == expected;
  return std::fabs(actual - expected) <= 1e-12 * expected;
}

// One line's pairs swept with integer_keys on and off: the same bits?
bool integer_keys_agree(std::mt19937_64& rng) {
  const std::vector<NearestPair> pairs = fuzz_images::random_pair_line(rng, 3000);
  const int64_t n = int64_t(pairs.size());
  std::vector<double> base(2 * n), key(2 * n);
  std::vector<InstanceId> id(2 * n);
  const LineCandidates candidates{base.data(), key.data(), id.data()};
  gather_line(pairs.data(), 1, n, 1.0, candidates);
  std::vector<EnvelopePiece> scratch(envelope_scratch_pieces(n));
  std::vector<NearestPair> exact(n), checked(n);
  envelope_line(candidates, n, 1.0, true, scratch.data(), StridedPairs{exact.data(), 1});
  envelope_line(candidates, n, 1.0, false, scratch.data(), StridedPairs{checked.data(), 1});
  for (int64_t x = 0; x < n; ++x) {
    if (!same_bits(exact[x], checked[x])) {
      std::printf("line of %lld: position %lld differs with integer keys\n", (long long)n,
                  (long long)x);
      return false;
    }
  }
  return true;
}

int fuzz(int64_t count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const fuzz_images::Uniform uniform{rng};
  for (int64_t trial = 0; trial < count; ++trial) {
    if (!integer_keys_agree(rng)) return 1;
    const bool unit = uniform(0, 2) > 0;
    const Grid grid = fuzz_images::random_grid(uniform, {60, 24, 9, 5}, unit);
    const int64_t pixels = grid.numel();
    const int64_t ids = uniform(1, uniform(0, 1) ? 3 : 12);
    std::vector<int64_t> labels(pixels, 0);
    fuzz_images::random_labels(uniform, grid, ids, labels.data());
    const std::vector<NearestPair> reference = transform(labels, grid, BandSize{}, rng);
    for (int run = 0; run < 4; ++run) {
      const BandSize bands{uniform(1, 64), uniform(1, 3)};
      const std::vector<NearestPair> got = transform(labels, grid, bands, rng);
      for (int64_t x = 0; x < pixels; ++x) {
        if (!same_bits(got[x], reference[x])) {
          std::printf("trial %lld: pixel %lld differs with bands of %lld pairs, %lld rows\n",
                      (long long)trial, (long long)x, (long long)bands.pairs,
                      (long long)bands.min_rows);
          return 1;
        }
      }
    }
    const auto squared = per_instance(labels, grid, ids);
    for (int64_t x = 0; x < pixels; ++x) {
      double best[2] = {infinite_distance(), infinite_distance()};
      for (int64_t id = 1; id <= ids; ++id) {
        const double d = squared[id][x];
        if (d < best[0]) {
          best[1] = best[0];
          best[0] = d;
        } else if (d < best[1]) {
          best[1] = d;
        }
      }
      const NearestPair& pair = reference[x];
      bool ok = close(pair.d[0], best[0], unit) && close(pair.d[1], best[1], unit);
      for (int k = 0; k < 2 && ok; ++k) {
        ok = pair.id[k] == kNoInstance ? std::isinf(pair.d[k])
                                       : close(pair.d[k], squared[pair.id[k]][x], unit);
      }
      ok = ok && (pair.id[0] != pair.id[1] || pair.id[0] == kNoInstance);
      if (!ok) {
        std::printf("trial %lld (%dD): pixel %lld: got %.17g (id %llu), %.17g (id %llu); "
                    "expected %.17g, %.17g\n",
                    (long long)trial, grid.ndim, (long long)x, pair.d[0],
                    (unsigned long long)pair.id[0], pair.d[1], (unsigned long long)pair.id[1],
                    best[0], best[1]);
        return 1;
      }
    }
  }
  std::printf("ok\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return fuzz_images::fuzz_main(argc, argv, fuzz); }
