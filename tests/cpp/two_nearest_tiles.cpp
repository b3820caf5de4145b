// The CUDA two-nearest transform's algorithm run on the CPU: the kernels'
// own steps over a tile (csrc/core/tile_passes.h, with plain updates where
// the kernels of csrc/cuda/distance_cuda.cu use atomics) over the same tile
// memory, in the same order, one tile after another where the GPU runs them
// side by side. Built and run by tests/test_distance_tiles.py:
//
//   two_nearest_tiles fuzz COUNT SEED
//
// Each of COUNT trials checks:
// * one random line of pairs (integer squared distances up to 2^40, a few
//   ids or many, many ties): two_nearest_on_line at every position, with
//   and without skipping blocks, gives envelope_line's pairs bit for bit,
//   ids included (unit spacing);
// * one random line of small integer squared distances times spacing^2, some
//   a few ulps off, at a random spacing (many keys tie or nearly tie):
//   two_nearest_on_line gives envelope_line's pairs, where the near-ties are
//   settled exactly;
// * one random line of pass 0's initial states (an id at distance 0, or
//   none) at a random spacing: two_nearest_on_line gives scan_line's pairs;
// * a random batch of label images (1 to 4 dims, scattered pixels or boxes,
//   unit or random spacing; read by strides from a random layout: the axes
//   in any memory order, steps of 1 or 2, or one image expanded to the
//   batch) through initial_states_kernel's reads and counts and the
//   kernels' passes with random tile sizes (pass_tiles: whole slabs or
//   groups of lines in shared memory, in the opt-in shared memory where they
//   fit no smaller tile, or tiles in global memory of a random scratch size,
//   where the lines fit neither): the pairs equal the CPU driver's
//   (two_nearest_squared) bit for bit, and each image's count of instance
//   pixels equals count_instance_pixels'.
// Prints the first mismatch and exits 1, else "ok" and how many passes took
// each form.
//
//   two_nearest_tiles kernel-sizes SEED SIZE...
//
// One image of SIZE... (scattered labels of 12 ids) through the passes at the
// kernels' sizes on an H100 or H200 (40 KiB tiles, kOptInBytes of opt-in
// shared memory, 256 MiB of global tiles), against the CPU driver; prints
// "ok" and the forms taken.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../../csrc/core/distance_transform.h"
#include "../../csrc/core/line_tiles.h"
#include "../../csrc/core/tile_passes.h"
#include "../../csrc/core/two_nearest.h"
#include "fuzz_support.h"

using namespace segloss::core;

namespace {

using fuzz_images::same_bits;

// The opt-in shared memory per block of an H100 or H200 (227 KiB).
constexpr int64_t kOptInBytes = int64_t(227) << 10;

void print_pair(const char* name, const NearestPair& p) {
  std::printf("  %s: %.17g (id %llu), %.17g (id %llu)\n", name, p.d[0],
              (unsigned long long)p.id[0], p.d[1], (unsigned long long)p.id[1]);
}

bool lines_agree(const std::vector<NearestPair>& got, const std::vector<NearestPair>& want,
                 const char* what) {
  for (size_t x = 0; x < got.size(); ++x) {
    if (!same_bits(got[x], want[x])) {
      std::printf("%s: line of %zu, position %zu differs\n", what, got.size(), x);
      print_pair("search", got[x]);
      print_pair("reference", want[x]);
      return false;
    }
  }
  return true;
}

// A later pass along one line as the tile kernel gives it (in place: every
// new pair from the old line): the line as one tile, loaded as the kernels
// load it, then searched skipping blocks (`skip`) or not.
std::vector<NearestPair> searched(const std::vector<NearestPair>& line, double spacing,
                                  bool skip) {
  const int64_t n = int64_t(line.size());
  const LineTiles tiles = line_tiles(n, 1, 1, int64_t(sizeof(NearestPair)),
                                     two_nearest_summary_bits(n), n, INT64_MAX);
  std::vector<unsigned char> memory(tiles.shared_bytes());
  const TwoNearestTile<SerialUpdates> tile(memory.data(), tiles);
  tile.reset(tiles, 0, 1);
  for (int64_t e = 0; e < n; ++e) tile.load(line.data(), tiles, 0, e, key_scale(spacing));
  std::vector<NearestPair> out(line);
  if (skip) {
    for (int64_t e = 0; e < n; ++e) tile.search(out.data(), tiles, 0, e, spacing);
    return out;
  }
  const LineIdRange range = tile.ranges[0];
  if (!range_has_ids(range)) return out;
  for (int64_t x = 0; x < n; ++x) {
    out[x] = two_nearest_on_line(tile.pairs + x, 1, x, n, spacing, range_has_one_id(range),
                                 nullptr, nullptr);
  }
  return out;
}

// The search with and without skipping blocks against `want`.
bool searches_agree(const std::vector<NearestPair>& line, double spacing,
                    const std::vector<NearestPair>& want, const char* what) {
  for (const bool skip : {false, true}) {
    if (!lines_agree(searched(line, spacing, skip), want, what)) {
      std::printf("  spacing %.17g, %s\n", spacing, skip ? "skipping blocks" : "every position");
      return false;
    }
  }
  return true;
}

std::vector<NearestPair> enveloped(const std::vector<NearestPair>& line, double spacing,
                                   bool integer_keys) {
  const int64_t n = int64_t(line.size());
  std::vector<double> values(4 * n);
  std::vector<InstanceId> ids(2 * n);
  const LineCandidates candidates{values.data(), values.data() + 2 * n, ids.data()};
  gather_line(line.data(), 1, n, spacing, candidates);
  std::vector<EnvelopePiece> scratch(envelope_scratch_pieces(n));
  std::vector<NearestPair> out(n, no_instances());
  envelope_line(candidates, n, spacing, integer_keys, scratch.data(),
                StridedPairs{out.data(), 1});
  return out;
}


// `line` at spacing s: every squared distance times s^2 (rounded), some
// moved 1 or 2 ulps either way, so that many keys tie or nearly tie.
std::vector<NearestPair> scaled(std::vector<NearestPair> line, double spacing,
                                std::mt19937_64& rng) {
  const double square = spacing * spacing;
  for (auto& pair : line) {
    for (int k = 0; k < 2; ++k) {
      if (pair.id[k] == kNoInstance) continue;
      double d = pair.d[k] * square;
      const int nudge = int(rng() % 5) - 2;
      for (int i = 0; i < (nudge < 0 ? -nudge : nudge); ++i) {
        d = std::nextafter(d, nudge < 0 ? 0.0 : infinite_distance());
      }
      pair.d[k] = d;
    }
    if (pair.d[1] < pair.d[0]) pair.d[1] = pair.d[0];  // (a pass keeps d[0] <= d[1])
  }
  return line;
}

// A random spacing of the kinds that make near-ties: binary fractions, short
// decimals, random doubles.
double random_spacing(std::mt19937_64& rng) {
  static const double kSpacings[] = {0.5, 2.0, 0.1, 0.3, 1.1, 1.0 / 3.0, 2.5, 0.7};
  if (rng() % 2) return kSpacings[rng() % 8];
  return 0.01 + double(rng() % 1000000) / 100000.0;
}

// Pass 0 from a line of labels: scan_line, and the search from the initial
// states (an instance at distance 0).
bool first_pass_agrees(std::mt19937_64& rng) {
  const int64_t n = 1 + int64_t(rng() % 300);
  const uint64_t ids = 1 + rng() % 6;
  const int64_t density = int64_t(rng() % 101);
  const double spacing = rng() % 2 ? 1.0 : 0.01 + double(rng() % 100000) / 1000.0;
  std::vector<InstanceId> labels(n);
  std::vector<NearestPair> initial(n, no_instances());
  for (int64_t i = 0; i < n; ++i) {
    labels[i] = int64_t(rng() % 100) < density ? 1 + rng() % ids : kNoInstance;
    if (labels[i] != kNoInstance) initial[i] = NearestPair{{0.0, infinite_distance()},
                                                           {labels[i], kNoInstance}};
  }
  std::vector<NearestPair> scanned(n);
  scan_line([&](int64_t i) { return labels[i]; }, n, spacing, scanned.data(), 1);
  return searches_agree(initial, spacing, scanned, "pass 0");
}

struct Forms {
  int64_t slabs = 0, groups = 0, global = 0, optin = 0;

  int print_ok() const {
    std::printf("ok\n%lld slabs, %lld groups, %lld global, %lld opt-in passes\n",
                (long long)slabs, (long long)groups, (long long)global, (long long)optin);
    return 0;
  }
};

// Whether the kernels' pairs equal the driver's bit for bit; else prints
// where (where(x) for pixel x) and both pairs.
template <typename Where>
bool same_pairs(const NearestPair* got, const std::vector<NearestPair>& want, const Where& where) {
  for (int64_t x = 0; x < int64_t(want.size()); ++x) {
    if (!same_bits(got[x], want[x])) {
      where(x);
      print_pair("kernels", got[x]);
      print_pair("driver", want[x]);
      return false;
    }
  }
  return true;
}

using Labels = StridedLabels<int64_t, LabelIsId>;

// Labels in C order, as read by strides.
Labels c_order(const std::vector<int64_t>& labels, const Grid& image) {
  Labels strided{labels.data(), {}, LabelIsId{}};
  for (int d = 0; d < image.ndim; ++d) strided.stride[d] = image.inner(d);
  return strided;
}

// The CUDA kernels' passes over a batch of `images` label images whose
// first labels are `batch_stride` apart; with `counts`, each image's count
// of instance pixels.
std::vector<NearestPair> cuda_passes(const Labels& labels, int64_t batch_stride, int64_t images,
                                     const Grid& image, int64_t target, int64_t max_bytes,
                                     int64_t optin_bytes, int64_t scratch_bytes, Forms& forms,
                                     std::vector<int64_t>* counts = nullptr) {
  const int64_t pixels = image.numel(), total = images * pixels;
  // initial_states_kernel with InitialPair (one thread per pixel).
  std::vector<NearestPair> state(total);
  if (counts != nullptr) counts->assign(images, 0);
  for (int64_t i = 0; i < images; ++i) {
    for (int64_t p = 0; p < pixels; ++p) {
      const InstanceId id = batch_pixel_id(labels, image, batch_stride, i, p);
      state[i * pixels + p] = initial_pair(id);
      if (counts != nullptr) (*counts)[i] += id != 0;
    }
  }
  for (int axis = 0; axis < image.ndim; ++axis) {
    const int64_t n = image.size[axis], inner = image.inner(axis), outer = total / (n * inner);
    const int64_t pair_bytes = int64_t(sizeof(NearestPair));
    const PassTiles pass = pass_tiles(n, inner, outer, pair_bytes, two_nearest_summary_bits(n),
                                      optin_bytes, scratch_bytes, target, max_bytes);
    const LineTiles& tiles = pass.tiles;
    switch (pass.memory) {
      case TileMemory::kShared: ++(tiles.width == inner ? forms.slabs : forms.groups); break;
      case TileMemory::kOptIn: ++forms.optin; break;
      default: ++forms.global;
    }
    // two_nearest_tile_pass_kernel, or the global kernels' three launches
    // per tile, over one tile's memory of exactly LineTiles::shared_bytes
    // (as the kernels have it: under the sanitizers, a step past it is
    // caught).
    std::vector<unsigned char> memory(tiles.shared_bytes());
    const TwoNearestTile<SerialUpdates> tile(memory.data(), tiles);
    const double spacing = image.spacing[axis], inverse_square = key_scale(spacing);
    for (int64_t t = 0; t < tiles.tiles; ++t) {
      tile.reset(tiles, 0, 1);
      for (int64_t e = 0; e < tiles.elements; ++e) {
        tile.load(state.data(), tiles, t, e, inverse_square);
      }
      for (int64_t e = 0; e < tiles.elements; ++e) tile.search(state.data(), tiles, t, e, spacing);
    }
  }
  return state;
}

std::vector<NearestPair> cpu_driver(const std::vector<int64_t>& labels, const Grid& image) {
  std::vector<NearestPair> out(image.numel(), no_instances());
  two_nearest_squared(
      c_order(labels, image), image,
      [](int64_t count, auto&& body) {
        if (count > 0) body(int64_t(0), count);
      },
      [&](int64_t i, const NearestPair& pair) { out[i] = pair; });
  return out;
}

int fuzz(int64_t count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const fuzz_images::Uniform uniform{rng};
  Forms forms;
  for (int64_t trial = 0; trial < count; ++trial) {
    const std::vector<NearestPair> line =
        fuzz_images::random_pair_line(rng, rng() % 2 ? 40 : 1500);
    if (!searches_agree(line, 1.0, enveloped(line, 1.0, true), "later pass")) return 1;
    // (Small squared distances: near-ties where a key's rounding error is
    // lost in the difference of two keys of unlike sizes.)
    const double spacing = random_spacing(rng);
    const std::vector<NearestPair> near_ties =
        scaled(fuzz_images::random_pair_line(rng, rng() % 2 ? 40 : 300, 8), spacing, rng);
    if (!searches_agree(near_ties, spacing, enveloped(near_ties, spacing, false),
                        "later pass, sampling")) {
      return 1;
    }
    if (!first_pass_agrees(rng)) return 1;

    const Grid image = fuzz_images::random_grid(uniform, {60, 30, 10, 5}, uniform(0, 3) > 0);
    const bool unit = integer_envelope_keys(image);
    const int64_t images = uniform(1, 3), pixels = image.numel();
    const int64_t ids = uniform(1, uniform(0, 1) ? 3 : 12);
    const bool expanded = images > 1 && uniform(0, 4) == 0;
    std::vector<int64_t> labels(images * pixels, 0);
    for (int64_t i = 0; i < images; ++i) {
      if (expanded && i > 0) {
        std::copy(labels.begin(), labels.begin() + pixels, labels.begin() + i * pixels);
      } else {
        fuzz_images::random_labels(uniform, image, ids, labels.data() + i * pixels);
      }
    }
    const fuzz_images::StridedBatch<int64_t> batch = fuzz_images::random_layout(
        uniform, labels, images, image, expanded, [&] { return uniform(0, ids + 1); });
    Labels strided{batch.buffer.data(), {}, LabelIsId{}};
    std::copy(batch.stride, batch.stride + image.ndim, strided.stride);
    // Tiles of 1 to 64 target pixels and room for 1 to 64 pairs (many small
    // tiles, both forms, and lines that fit none), or the library's sizes.
    const bool library_sizes = uniform(0, 3) == 0;
    const int64_t target = library_sizes ? kTileTarget : uniform(1, 64);
    const int64_t max_bytes = library_sizes ? kMaxTileBytes
                                            : uniform(1, 64) * int64_t(sizeof(NearestPair)) +
                                                  uniform(0, 4) * 16;
    // The device's opt-in shared memory (an H100's or H200's, or up to 4x
    // the tiles' size).
    const int64_t optin_bytes = library_sizes ? kOptInBytes : max_bytes * uniform(1, 4);
    // Global tiles of at least one line (global_line_tiles) up to many.
    const int64_t scratch_bytes = uniform(0, 200) * int64_t(sizeof(NearestPair));
    std::vector<int64_t> counts;
    const std::vector<NearestPair> got =
        cuda_passes(strided, batch.batch_stride, images, image, target, max_bytes, optin_bytes,
                    scratch_bytes, forms, &counts);
    for (int64_t i = 0; i < images; ++i) {
      const std::vector<int64_t> own(labels.begin() + i * pixels,
                                     labels.begin() + (i + 1) * pixels);
      const int64_t want_count = count_instance_pixels(c_order(own, image), image);
      if (counts[i] != want_count) {
        std::printf("trial %lld (%dD): image %lld counts %lld instance pixels, not %lld\n",
                    (long long)trial, image.ndim, (long long)i, (long long)counts[i],
                    (long long)want_count);
        return 1;
      }
      const bool same = same_pairs(got.data() + i * pixels, cpu_driver(own, image),
                                   [&](int64_t x) {
        std::printf("trial %lld (%dD, %s spacing, tiles %lld/%lld): image %lld pixel %lld\n",
                    (long long)trial, image.ndim, unit ? "unit" : "random", (long long)target,
                    (long long)max_bytes, (long long)i, (long long)x);
      });
      if (!same) return 1;
    }
  }
  return forms.print_ok();
}

// One image of random scattered labels through the passes at the kernels'
// sizes on an H100 or H200, against the CPU driver: long lines take the
// opt-in shared memory or global memory, as there.
int kernel_sizes(uint64_t seed, const Grid& image) {
  std::mt19937_64 rng(seed);
  const fuzz_images::Uniform uniform{rng};
  std::vector<int64_t> labels(image.numel());
  for (int64_t& label : labels) label = uniform(1, 100) <= 5 ? uniform(1, 12) : 0;
  Forms forms;
  const std::vector<NearestPair> got =
      cuda_passes(c_order(labels, image), 0, 1, image, kTileTarget, kMaxTileBytes, kOptInBytes,
                  int64_t(256) << 20, forms);
  const bool same = same_pairs(got.data(), cpu_driver(labels, image),
                               [](int64_t x) { std::printf("pixel %lld\n", (long long)x); });
  return same ? forms.print_ok() : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 4 && argc - 3 <= kMaxDistanceDims && std::string(argv[1]) == "kernel-sizes") {
    Grid image;
    image.ndim = argc - 3;
    for (int d = 0; d < image.ndim; ++d) {
      image.size[d] = std::atoll(argv[3 + d]);
      image.spacing[d] = 1.0;
    }
    return kernel_sizes(uint64_t(std::atoll(argv[2])), image);
  }
  return fuzz_images::fuzz_main(argc, argv, fuzz);
}
