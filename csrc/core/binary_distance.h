// Exact Euclidean distance transforms of a binary mask (nonzero: foreground):
// the plain transform (scipy.ndimage.distance_transform_edt) and the distance
// maps of the boundary losses, shared by the CPU driver below and the NumPy
// module; the CUDA kernels share the maps' values and their pixel-parallel
// form of the sweep (binary_distance_tiles.h).
//
// A pixel's distance to its own class is 0, so one sweep carries both classes
// with one value per pixel: its squared distance d to the nearest pixel of
// the other class seen so far, stored as +d on the foreground and -d on the
// background (d > 0: the other class is at least one spacing away; +-inf
// where none was seen yet). Pass 0 scans each line along axis 0 forward and
// backward. Every later axis takes, per line and per run of one class, the
// lower envelope of the parabolas d(q) + (spacing (x - q))^2 (Felzenszwalb
// and Huttenlocher) over the run's pixels and its two neighbours of the other
// class (binary_distance_line). The plain transform sweeps the foreground's
// runs only; the two-sided maps both classes'.
//
// Exactness at unit spacing: every d is an integer, and so is everything
// the envelope computes (parabola_envelope), exact in double (and in the
// float working memory where binary_state_fits_float); each output is the
// exact minimum, as a brute-force computation gives.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <vector>

#include "distance_transform.h"
#include "platform.h"
#include "rounding.h"
#include "two_nearest.h"

namespace segloss::core {

// What a transform measures to.
enum class DistanceTarget {
  kZeros,       // foreground pixels: to the nearest background pixel; background: 0
  kOtherClass,  // every pixel: to the nearest pixel of the other class
};

// The distance maps of the boundary losses, from a pixel's signed state.
enum class DistanceMap {
  kSigned,    // Kervadec's: outside the mask d, inside -(d - 1) (MONAI BoundaryLoss)
  kBoundary,  // d on both sides (MONAI HausdorffDTLoss: edt(fg) + edt(bg))
};

// Whether an image of `pixels` pixels, `foreground` of them foreground, has
// both classes: one without has no border, and its maps are 0 (MONAI's rule).
SEGLOSS_INLINE bool has_both_classes(int64_t foreground, int64_t pixels) {
  return foreground != 0 && foreground != pixels;
}

// A map's value from a pixel's signed state, in the output type T: the
// distance rounded to T first, then -(d - 1) in T, as MONAI computes it in
// float32 from SciPy's float64 distances. (An image without both classes
// has no map: its callers write 0, see has_both_classes.)
template <typename T>
SEGLOSS_INLINE T distance_map_value(DistanceMap map, double state) {
  const T d = T(::sqrt(state < 0 ? -state : state));
  return map == DistanceMap::kSigned && state > 0 ? -(d - T(1)) : d;
}

// The CPU callers' sink of a map: distance_map_value<T>(kMap, state) into
// out[i]. The kind a constant, so that the loops writing it vectorise; one
// type for every mask type, so that the later passes are compiled once for it.
template <typename T, DistanceMap kMap>
struct DistanceMapOutput {
  T* out;
  SEGLOSS_INLINE void operator()(int64_t i, double state) const {
    out[i] = distance_map_value<T>(kMap, state);
  }
};

// transform(sink) with the DistanceMapOutput of `map` into `out` (the kind a
// template constant): its result.
template <typename T, typename Transform>
auto with_map_output(DistanceMap map, T* out, Transform&& transform) {
  return map == DistanceMap::kSigned
             ? transform(DistanceMapOutput<T, DistanceMap::kSigned>{out})
             : transform(DistanceMapOutput<T, DistanceMap::kBoundary>{out});
}

// Masks: any nonzero value is foreground.
struct NonzeroIsForeground {
  template <typename Value>
  SEGLOSS_INLINE bool operator()(Value value) const {
    return value != Value(0);
  }
};

template <typename Value>
using StridedMask = StridedLabels<Value, NonzeroIsForeground>;

// Pass 0's step at position x of a line, scanning in either direction,
// for a pixel of class `klass` (1: foreground, 0: background): returns the
// squared distance to the last pixel of the other class seen (+inf: none
// yet). That pixel is the previous one (at x_previous) where the class
// changes, else the previous pixel's; so a scan keeps per line the previous
// class (kNoClass before the first pixel, whose x_previous is -+inf) and
// that position. Values of the state's type T, so that the CPU loops over
// rows of lines vectorise (two selects, no branch): double, or float where
// the states fit it (binary_state_fits_float: integer positions and squares
// below 2^24, exact, and twice the lanes).
template <typename T>
SEGLOSS_INLINE T scan_step(T klass, T x, T x_previous, T spacing, T& previous_class,
                           T& last_other) {
  const T other = klass != previous_class ? x_previous : last_other;
  previous_class = klass;
  last_other = other;
  const T a = spacing * (x - other);
  return a * a;
}

// The previous class before a line's first pixel: neither 0 nor 1.
template <typename T>
constexpr T kNoClass = T(2);

// Working memory of one line's envelope of up to n parabolas.
struct ParabolaScratch {
  double* position;
  double* base;
  double* key;
  double* key_step;       // key - the previous parabola's key
  double* position_step;  // position - the previous parabola's position
};

// The lower envelope of base(q) + (spacing (x - q))^2 over the positions
// q in [lo, hi) whose base(q) is finite; write(x, value) for every x in
// [from, to) (+inf where no base is finite).
//
// With keys base / spacing^2 + q^2, parabola r is at or below p (p < r) from
// x = (key[r] - key[p]) / (2 (r - p)) on. The sweep compares such crossings
// cross-multiplied, without a division: integer arithmetic at unit spacing,
// exact in double (keys below 2^53 / n), so the envelope is exact.
template <typename Base, typename Write>
SEGLOSS_INLINE void parabola_envelope(int64_t lo, int64_t hi, int64_t from, int64_t to,
                                      double spacing, const Base& base,
                                      const ParabolaScratch& s, const Write& write) {
  // The two-nearest envelope's keys (envelope_key): the same bits on CPU and GPU.
  const double inverse_square = key_scale(spacing);
  int64_t k = -1;
  for (int64_t q = lo; q < hi; ++q) {
    const double b = base(q);
    if (!(b < infinite_distance())) continue;
    const double x = double(q);
    const double key = envelope_key(b, q, inverse_square);
    // Drop the top while q is at or below it where it starts being lowest
    // (the first is never dropped: it is the lowest far to the left).
    while (k > 0 && (key - s.key[k]) * s.position_step[k] <=
                        s.key_step[k] * (x - s.position[k])) {
      --k;
    }
    ++k;
    s.position[k] = x;
    s.base[k] = b;
    s.key[k] = key;
    if (k > 0) {
      s.key_step[k] = key - s.key[k - 1];
      s.position_step[k] = x - s.position[k - 1];
    }
  }
  if (k < 0) {
    for (int64_t x = from; x < to; ++x) write(x, infinite_distance());
    return;
  }
  int64_t j = 0;
  for (int64_t x = from; x < to; ++x) {
    // The next parabola takes over at x when key_step <= 2 x position_step.
    while (j < k && s.key_step[j + 1] <= 2.0 * double(x) * s.position_step[j + 1]) ++j;
    const double offset = spacing * (double(x) - s.position[j]);
    write(x, add_rn(s.base[j], mul_rn(offset, offset)));
  }
}

// A later pass along one line of n pixels whose signed states are line[q]:
// hands each pixel's new signed state to write(x, state), the background's
// with kZeros only if `every_pixel` (unchanged there). write may store into
// line[x]: a run's pixels are written after its envelope is built, and a
// write keeps the sign, which is all the later runs read of them.
//
// Run by run: for a pixel of a run of one class, a pixel of the other class
// beyond the run's neighbours (which are at distance 0 from the other class)
// can never be nearer than the neighbour between them. So each run's
// envelope holds its own pixels and its two neighbours, and with kZeros the
// background's runs are never swept.
//
// A run of at most kShortRun pixels takes the minimum over those parabolas
// directly instead: every pixel against every parabola, in loops with no
// data-dependent branch, which beats the envelope's sequential sweep on
// short runs (noise, thin shapes, boundaries): 1.2-1.5x on a whole 2D map.
// The values are the envelope's, the exact minimum, at unit spacing.
constexpr int64_t kShortRun = 32;

// The parabolas' rounding (parabola_rise, parabola_value) is two_nearest.h's:
// the short runs here and the CUDA maps' search (binary_distance_tiles.h)
// round as the envelopes do.

// rise[kShortRun + t]: parabola_rise(spacing, t) for |t| <= kShortRun.
template <typename T>
struct ParabolaRise {
  T rise[2 * kShortRun + 1];

  SEGLOSS_INLINE explicit ParabolaRise(double spacing) {
    for (int64_t t = -kShortRun; t <= kShortRun; ++t) {
      rise[kShortRun + t] = parabola_rise<T>(spacing, t);
    }
  }

  // at(q)[i]: parabola q's rise at pixel i, for |i - q| <= kShortRun.
  SEGLOSS_INLINE const T* at(int64_t q) const { return rise + kShortRun - q; }
};

// The squared distances of the `length` <= kShortRun pixels of a run whose
// bases are base[0..length): the minimum over their parabolas and those of
// the other-class neighbours (base 0) at -1 if `left` and at length if
// `right`. In T: double, or float where the states fit it (every sum is
// then an integer below 2^24, exact: twice the lanes).
template <typename T>
SEGLOSS_INLINE void short_run_distances(const T* base, int64_t length, bool left, bool right,
                                        const ParabolaRise<T>& rise, T* nearest) {
  for (int64_t i = 0; i < length; ++i) nearest[i] = T(infinite_distance());
  for (int64_t q = left ? -1 : 0; q < (right ? length + 1 : length); ++q) {
    const T b = q < 0 || q == length ? T(0) : base[q];
    const T* from_q = rise.at(q);
#pragma omp simd
    for (int64_t i = 0; i < length; ++i) {
      const T value = parabola_value(b, from_q[i]);
      nearest[i] = value < nearest[i] ? value : nearest[i];
    }
  }
}

// Short: the type of the short runs' minimum (the state's type; see
// short_run_distances).
template <typename Short = double, typename Write>
SEGLOSS_INLINE void binary_distance_line(double* line, int64_t n, double spacing,
                                         DistanceTarget target, bool every_pixel,
                                         const ParabolaScratch& scratch, const Write& write) {
  const ParabolaRise<Short> rise(spacing);
  for (int64_t from = 0; from < n;) {
    const bool foreground = line[from] > 0;
    int64_t to = from + 1;
    while (to < n && (line[to] > 0) == foreground) ++to;
    const bool sweep = foreground || target == DistanceTarget::kOtherClass;
    if (sweep && to - from <= kShortRun) {
      const int64_t length = to - from;
      Short base[kShortRun], nearest[kShortRun];
      for (int64_t i = 0; i < length; ++i) {
        base[i] = Short(foreground ? line[from + i] : -line[from + i]);
      }
      short_run_distances(base, length, from > 0, to < n, rise, nearest);
      for (int64_t i = 0; i < length; ++i) {
        write(from + i, foreground ? double(nearest[i]) : -double(nearest[i]));
      }
    } else if (sweep) {
      const int64_t lo = from > 0 ? from - 1 : 0, hi = to < n ? to + 1 : n;
      parabola_envelope(
          lo, hi, from, to, spacing,
          [&](int64_t q) {
            return q < from || q >= to ? 0.0 : (foreground ? line[q] : -line[q]);
          },
          scratch, [&](int64_t x, double d) { write(x, foreground ? d : -d); });
    } else if (every_pixel) {
      for (int64_t x = from; x < to; ++x) write(x, line[x]);
    }
    from = to;
  }
}

// Pass 0's backward scan over rows of `width` lines (row i at
// rows + i * row_stride), whose states hold the forward scan's: each takes
// the nearer side. Its own function: inlined into binary_distance_squared,
// g++ 12 runs a scalar copy of the loop, with branches on the classes (3x
// slower on noise); on its own, the loop vectorises.
template <typename State>
SEGLOSS_NOINLINE void backward_scan_rows(State* rows, int64_t row_stride, int64_t width, int64_t n,
                                         State spacing, State* previous_class,
                                         State* last_other) {
  const State infinity = State(infinite_distance());
  std::fill(previous_class, previous_class + width, kNoClass<State>);
  for (int64_t i = n - 1; i >= 0; --i) {
    State* row = rows + i * row_stride;
    const State x = State(i), x_previous = i == n - 1 ? infinity : State(i + 1);
#pragma omp simd
    for (int64_t j = 0; j < width; ++j) {
      // The forward scan's sign is the class; the nearer side's distance
      // takes it (copysign: no select on the class).
      const State forward = row[j];
      const State klass = forward > 0 ? State(1) : State(0);
      const State backward =
          scan_step(klass, x, x_previous, spacing, previous_class[j], last_other[j]);
      const State magnitude = std::fabs(forward);
      row[j] = std::copysign(magnitude < backward ? magnitude : backward, forward);
    }
  }
}

// Pass 0 of binary_distance_squared: lines along axis 0, swept row by row
// over blocks of columns (contiguous reads and writes in C order). Returns
// the number of foreground pixels.
template <typename State, typename Value, typename ParallelFor>
int64_t binary_first_pass(const StridedMask<Value>& mask, const Grid& grid, State* state,
                          ParallelFor&& parallel_for) {
  const int64_t n0 = grid.size[0];
  const int64_t columns = grid.inner(0);
  const double spacing0 = grid.spacing[0];
  std::atomic<int64_t> foreground{0};
  parallel_for(columns, [&](int64_t begin, int64_t end) {
    constexpr int64_t kBlock = 256;
    int64_t offsets[kBlock];
    State previous_class[kBlock], last_other[kBlock];
    State classes[kBlock];
    int64_t count = 0;
    for (int64_t block = begin; block < end; block += kBlock) {
      const int64_t width = std::min(kBlock, end - block);
      bool dense = true;  // the block's columns adjacent in memory
      for (int64_t j = 0; j < width; ++j) {
        offsets[j] = column_offset(mask, grid, block + j);
        dense &= offsets[j] == offsets[0] + j;
      }
      // Row i of the block's columns, as 0 / 1 states (loops over one type
      // vectorise).
      const auto row_classes = [&](int64_t i) {
        const Value* first = mask.data + i * mask.stride[0];
        if (dense) {
          // bool read as its bytes: g++ does not vectorise bool to float.
          using Byte = std::conditional_t<std::is_same_v<Value, bool>, unsigned char, Value>;
          const Byte* v = reinterpret_cast<const Byte*>(first + offsets[0]);
#pragma omp simd
          for (int64_t j = 0; j < width; ++j) classes[j] = v[j] != Byte(0) ? State(1) : State(0);
        } else {
          for (int64_t j = 0; j < width; ++j) {
            classes[j] = first[offsets[j]] != Value(0) ? State(1) : State(0);
          }
        }
      };
      const State spacing = State(spacing0), infinity = State(infinite_distance());
      std::fill(previous_class, previous_class + width, kNoClass<State>);
      std::fill(last_other, last_other + width, -infinity);  // set at the first pixel
      for (int64_t i = 0; i < n0; ++i) {
        row_classes(i);
        State* row = state + i * columns + block;
        const State x = State(i), x_previous = i == 0 ? -infinity : State(i - 1);
        State row_count = 0;  // at most kBlock: exact in float
#pragma omp simd reduction(+ : row_count)
        for (int64_t j = 0; j < width; ++j) {
          const State klass = classes[j];
          row_count += klass;
          const State d = scan_step(klass, x, x_previous, spacing, previous_class[j],
                                    last_other[j]);
          row[j] = klass != 0 ? d : -d;
        }
        count += int64_t(row_count);
      }
      backward_scan_rows(state + block, columns, width, n0, spacing, previous_class, last_other);
    }
    foreground += count;
  });
  return foreground.load();
}

// The passes of binary_distance_squared after pass 0 (binary_first_pass),
// over its states in `state`; the last hands every state to the sink.
template <typename State, typename ParallelFor, typename Sink>
void binary_later_passes(const Grid& grid, DistanceTarget target, State* state,
                         ParallelFor&& parallel_for, const Sink& sink) {
  const int64_t n0 = grid.size[0];
  if (grid.ndim == 1) {
    parallel_for(n0, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) sink(i, double(state[i]));
    });
    return;
  }
  // Lines along an inner axis are gathered and written back in groups of up
  // to kGroup neighbours (contiguous in memory), the last pass (inner size 1)
  // hands its states to the sink.
  constexpr int64_t kGroup = 16;
  for (int axis = 1; axis < grid.ndim; ++axis) {
    const int64_t n = grid.size[axis];
    const int64_t inner = grid.inner(axis);
    const int64_t outer = grid.numel() / (n * inner);
    const int64_t group = std::min(kGroup, inner);
    const int64_t groups_per_outer = (inner + group - 1) / group;
    const double spacing = grid.spacing[axis];
    const bool last = axis == grid.ndim - 1;
    parallel_for(outer * groups_per_outer, [&](int64_t begin, int64_t end) {
      std::vector<double> lines(group * n), envelope(5 * n);
      const ParabolaScratch scratch{envelope.data(), envelope.data() + n, envelope.data() + 2 * n,
                                    envelope.data() + 3 * n, envelope.data() + 4 * n};
      for (int64_t g = begin; g < end; ++g) {
        const int64_t first_inner = (g % groups_per_outer) * group;
        const int64_t width = std::min(group, inner - first_inner);
        const int64_t first = (g / groups_per_outer) * n * inner + first_inner;
        // With kZeros, a line without foreground keeps its states (only the
        // foreground's change) and is skipped: found by the group's largest
        // states, a scan of contiguous rows, before any line is gathered.
        // (The last pass hands every state to the sink: all its lines are swept.)
        bool swept[kGroup];
        if (target == DistanceTarget::kZeros && !last) {
          State largest[kGroup];
          std::fill(largest, largest + width, -State(infinite_distance()));
          for (int64_t q = 0; q < n; ++q) {
            const State* row = state + first + q * inner;
#pragma omp simd
            for (int64_t b = 0; b < width; ++b) {
              largest[b] = row[b] > largest[b] ? row[b] : largest[b];
            }
          }
          for (int64_t b = 0; b < width; ++b) swept[b] = largest[b] > 0;
        } else {
          std::fill(swept, swept + width, true);
        }
        // Line by line: the group's kGroup * n values stay in the L1 cache.
        for (int64_t b = 0; b < width; ++b) {
          if (!swept[b]) continue;
          const State* in = state + first + b;
          double* line = lines.data() + b * n;
          for (int64_t q = 0; q < n; ++q) line[q] = double(in[q * inner]);
          if (last) {
            binary_distance_line<State>(line, n, spacing, target, /*every_pixel=*/true, scratch,
                                        // The last axis: inner == 1, b == 0.
                                        [&](int64_t x, double d) { sink(first + x, d); });
          } else {
            binary_distance_line<State>(line, n, spacing, target, /*every_pixel=*/false, scratch,
                                 [&](int64_t x, double d) { line[x] = d; });
          }
        }
        if (last) continue;
        for (int64_t b = 0; b < width; ++b) {
          if (!swept[b]) continue;
          State* out = state + first + b;
          const double* line = lines.data() + b * n;
          if (target == DistanceTarget::kZeros) {
            for (int64_t q = 0; q < n; ++q) {
              if (line[q] > 0) out[q * inner] = State(line[q]);
            }
          } else {
            for (int64_t q = 0; q < n; ++q) out[q * inner] = State(line[q]);
          }
        }
      }
    });
  }
}

// The squared distances of one image on the CPU. sink(index, state) gets
// every pixel's signed state (C order index; +d foreground, -d background,
// d the squared distance to the other class, +-inf where the image has
// none), once, possibly from several threads; with kZeros the background's
// states are negative but otherwise meaningless. `state` holds numel values
// between the passes: double, or float where binary_state_fits_float (the
// values are integers below 2^24 there, exact in float, and half the memory
// traffic). Returns the number of foreground pixels.
//
// Pass 0, the only part that reads the mask, is a function of its own
// (binary_first_pass), as are the later passes (binary_later_passes): these,
// most of the code, are then compiled once per state type and sink, not once
// per mask type too.
template <typename State, typename Value, typename ParallelFor, typename Sink>
int64_t binary_distance_squared(const StridedMask<Value>& mask, const Grid& grid,
                                DistanceTarget target, State* state,
                                ParallelFor&& parallel_for, const Sink& sink) {
  if (grid.ndim == 0 || grid.numel() == 0) return 0;
  const int64_t foreground = binary_first_pass(mask, grid, state, parallel_for);
  binary_later_passes(grid, target, state, parallel_for, sink);
  return foreground;
}

// Whether every squared distance on the grid is an integer below 2^24 (unit
// spacing), so that float holds the states exactly.
inline bool binary_state_fits_float(const Grid& grid) {
  double largest = 0;
  for (int d = 0; d < grid.ndim; ++d) {
    if (grid.spacing[d] != 1.0) return false;
    largest += double(grid.size[d]) * double(grid.size[d]);
  }
  return largest < double(1 << 24);
}

// binary_distance_squared with working memory of its own, float where it
// fits.
template <typename Value, typename ParallelFor, typename Sink>
int64_t binary_distance(const StridedMask<Value>& mask, const Grid& grid, DistanceTarget target,
                        ParallelFor&& parallel_for, const Sink& sink) {
  // Not zeroed: pass 0 writes every pixel.
  if (binary_state_fits_float(grid)) {
    std::unique_ptr<float[]> state(new float[grid.numel()]);
    return binary_distance_squared(mask, grid, target, state.get(), parallel_for, sink);
  }
  std::unique_ptr<double[]> state(new double[grid.numel()]);
  return binary_distance_squared(mask, grid, target, state.get(), parallel_for, sink);
}

}  // namespace segloss::core
