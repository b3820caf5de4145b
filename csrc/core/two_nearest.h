// Exact two-nearest-instance Euclidean distance transform: the per-line
// passes of the CPU driver (distance_transform.h) and of the CUDA kernels.
//
// Every pixel carries the squared distance and the id of its two nearest
// *distinct* instances found so far (NearestPair). The transform is separable:
// on the CPU, pass 0 scans each line along the first axis (LineScan, row by
// row over many lines); every later axis runs a lower-envelope sweep
// (envelope_line) on each line, whose candidates are the two entries of
// every position on it. The CUDA kernels give every pixel of every pass its
// pair from its line instead (two_nearest_on_line, below), the same bits.
//
// Keeping only the best two distinct ids per pixel between passes is exact: if
// the true second-nearest instance B of a pixel x were dropped at some position
// y of x's line, two other distinct instances would beat B at y, hence (same
// offset from y to x) at x, and one of them differs from x's nearest instance:
// a contradiction. By induction over the axes, the last pass sees both.
//
// At unit spacing every squared distance is an integer, computed exactly in
// double (up to 2^53), so d1 and d2 equal a brute-force computation exactly.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "line_tiles.h"
#include "platform.h"
#include "rounding.h"

namespace segloss::core {

// Instance ids are compared for equality only; any signed or unsigned integer
// id is stored as its bit pattern. 0 is the background ("no instance").
using InstanceId = uint64_t;
constexpr InstanceId kNoInstance = 0;

SEGLOSS_INLINE double infinite_distance() { return std::numeric_limits<double>::infinity(); }

// The two nearest distinct instances of a pixel: squared distances d[0] <=
// d[1] (+inf where not found) and ids id[0] != id[1] (kNoInstance where not
// found). Arrays, so that a candidate's entry is picked without a branch.
struct NearestPair {
  double d[2];
  InstanceId id[2];
};

SEGLOSS_INLINE NearestPair no_instances() {
  return NearestPair{{infinite_distance(), infinite_distance()}, {kNoInstance, kNoInstance}};
}

// The distances d1 <= d2 the ops return for a pixel's pair: the square roots,
// d2 raised to d1 where it came out below. (With sampling the two are ranked
// by their exact keys, then each is rounded on its own: at a near-tie the
// second's can round an ulp below the first's.)
struct TwoDistances {
  double d1, d2;
};

SEGLOSS_INLINE TwoDistances two_distances(const NearestPair& pair) {
  const double d1 = sqrt(pair.d[0]), d2 = sqrt(pair.d[1]);
  return TwoDistances{d1, d2 < d1 ? d1 : d2};
}

// A pixel's pair before any pass: an instance pixel is its own nearest, at 0.
SEGLOSS_INLINE NearestPair initial_pair(InstanceId id) {
  NearestPair pair = no_instances();
  if (id != kNoInstance) {
    pair.d[0] = 0.0;
    pair.id[0] = id;
  }
  return pair;
}

// Offers instance `id` at squared distance `d` to `pair`, keeping the best two
// distinct ids.
SEGLOSS_INLINE void offer(NearestPair& pair, double d, InstanceId id) {
  if (id == pair.id[0]) {
    if (d < pair.d[0]) pair.d[0] = d;
  } else if (d < pair.d[0]) {
    // The old first becomes second (an old second with this id drops out).
    pair.d[1] = pair.d[0];
    pair.id[1] = pair.id[0];
    pair.d[0] = d;
    pair.id[0] = id;
  } else if (id == pair.id[1]) {
    if (d < pair.d[1]) pair.d[1] = d;
  } else if (d < pair.d[1]) {
    pair.d[1] = d;
    pair.id[1] = id;
  }
}

// A parabola's rise (spacing t)^2 at t pixels from its apex (t of either
// sign), rounded then converted to T, and its value base + rise, rounded
// once: in double unfused (rounding.h), so CPU and GPU give the same bits; in
// float (the binary sweep's states, binary_distance.h), where every such sum
// is an integer below 2^24 (binary_state_fits_float), exact. Every distance
// sweep and search rounds its parabolas so.
template <typename T = double>
SEGLOSS_INLINE T parabola_rise(double spacing, int64_t t) {
  const double offset = spacing * double(t);
  return T(mul_rn(offset, offset));
}
SEGLOSS_INLINE double parabola_value(double base, double rise) { return add_rn(base, rise); }
SEGLOSS_INLINE float parabola_value(float base, float rise) { return base + rise; }

// Pass 0 scans each line along the first axis twice, forward and backward.
// The best two distinct instances over a union are among the best two of each
// part, so each pixel merges the best two on one side (the last instance seen
// and the last one with another id) with the best two on the other.
struct LineScan {
  InstanceId last_id = kNoInstance, other_id = kNoInstance;
  int64_t last_at = 0, other_at = 0;

  // Sees instance `id` (kNoInstance: background) at line position i.
  SEGLOSS_INLINE void see(int64_t i, InstanceId id) {
    if (id == kNoInstance) return;
    if (id != last_id) {
      other_id = last_id;
      other_at = last_at;
      last_id = id;
    }
    last_at = i;
  }

  // The pair at position i from this side alone (the forward scan).
  SEGLOSS_INLINE NearestPair pair(int64_t i, double spacing) const {
    NearestPair result = no_instances();
    if (last_id != kNoInstance) {
      result.d[0] = parabola_rise(spacing, i - last_at);
      result.id[0] = last_id;
    }
    if (other_id != kNoInstance) {
      result.d[1] = parabola_rise(spacing, i - other_at);
      result.id[1] = other_id;
    }
    return result;
  }

  // Merges this side's two into position i's pair (the backward scan). Where
  // the pair's squared distances are stored plus `offset` (as envelope keys,
  // distance_transform.h), the offers are too: the same decisions, exactly,
  // where all are integers below 2^53.
  SEGLOSS_INLINE void offer_to(NearestPair& result, int64_t i, double spacing,
                               double offset = 0.0) const {
    if (last_id == kNoInstance) return;
    offer(result, parabola_rise(spacing, last_at - i) + offset, last_id);
    if (other_id != kNoInstance) {
      offer(result, parabola_rise(spacing, other_at - i) + offset, other_id);
    }
  }
};

// Pass 0 along one line of `n` pixels: `ids(i)` is the instance id of the
// line's i-th pixel (kNoInstance for background); writes each pixel's two
// nearest distinct instances on the line to out[i * out_stride]. (The
// tests' reference for pass 0: the CPU driver runs LineScan row by row, the
// CUDA kernels search from the initial pairs.)
template <typename Ids>
SEGLOSS_INLINE void scan_line(const Ids& ids, int64_t n, double spacing, NearestPair* out,
                              int64_t out_stride) {
  LineScan forward;
  for (int64_t i = 0; i < n; ++i) {
    forward.see(i, ids(i));
    out[i * out_stride] = forward.pair(i, spacing);
  }
  LineScan backward;
  for (int64_t i = n - 1; i >= 0; --i) {
    backward.see(i, ids(i));
    backward.offer_to(out[i * out_stride], i, spacing);
  }
}

// A piece of a piecewise description of one line, from `begin` to the next
// piece's begin (or the line's end): a candidate (-1: none), and for the
// second-nearest pieces also the id of the nearest candidate over the piece.
// Candidate c is entry c % 2 of the line's position c / 2.
struct EnvelopePiece {
  int64_t begin;
  InstanceId first_id;
  int32_t candidate;
};

// The sweep along one line of n positions (n <= kMaxEnvelopeLine) holds
// envelope_scratch_pieces(n) pieces of scratch: the nearest and second-nearest
// envelopes (at most one piece per position each), and copies of the parts an
// insertion rebuilds or sets aside.
constexpr int64_t kMaxEnvelopeLine = int64_t(1) << 30;

SEGLOSS_INLINE int64_t envelope_scratch_pieces(int64_t n) { return 5 * (n + 2); }

// Spacing bounds that keep every squared distance of a line of up to
// kMaxEnvelopeLine pixels a normal, finite double (and 0 only at an instance).
constexpr double kMinSpacing = 1e-100;
constexpr double kMaxSpacing = 1e100;

// A candidate's key (LineCandidates) from its base (squared distance) at
// position q: base / spacing^2 + q^2, as base * key_scale(spacing) + q^2,
// each operation rounded on its own (rounding.h): the keys decide near-ties,
// so the ids too are the same on CPU and GPU. A key is never below q^2 (q^2
// is exact, rounding monotone), which bounds the search of
// two_nearest_on_line.
SEGLOSS_INLINE double key_scale(double spacing) { return 1.0 / (spacing * spacing); }
SEGLOSS_INLINE double envelope_key(double base, int64_t q, double inverse_square) {
  return add_rn(mul_rn(base, inverse_square), double(q) * double(q));
}

// One line's candidates, gathered by gather_line into flat arrays: candidate c
// is entry c % 2 of position q = c / 2, and its squared distance from position
// x is base[c] + (spacing (x - q))^2. Comparisons use the keys
// key[c] = base[c] / spacing^2 + q^2: p is nearer than t at x exactly when
// key[p] - key[t] < 2 x (q_p - q_t), integer arithmetic at unit spacing (exact
// in double while keys stay below 2^53) and monotone in x at any spacing,
// where it is decided exactly (EnvelopeLine::below). `base` may be null where
// the keys are integers (integer_envelope_keys): then base[c] = key[c] - q^2
// exactly, and the sweep computes it rather than gather_line storing it (the
// stores were 2% of the time at 512^2).
struct LineCandidates {
  double* base;
  double* key;
  InstanceId* id;
};

// kIntegerKeys: every key is an integer below 2^52 (unit spacing on every
// axis and small enough images: integer_envelope_keys in
// distance_transform.h), which makes below() exact as it stands and crossing()
// exact without its checks. (A template parameter: the common case's
// comparisons stay as small as they were.) With integer keys the bases are
// not read (LineCandidates).
template <bool kIntegerKeys>
class EnvelopeLine {
 public:
  SEGLOSS_INLINE EnvelopeLine(const LineCandidates& line, double spacing)
      : base_(line.base), key_(line.key), ids_(line.id), spacing_(spacing) {}

  SEGLOSS_INLINE int64_t position(int32_t c) const { return c >> 1; }
  SEGLOSS_INLINE InstanceId id(int32_t c) const { return ids_[c]; }

  SEGLOSS_INLINE double value(int32_t c, int64_t x) const {
    const double q = double(position(c));
    const double base = kIntegerKeys ? key_[c] - q * q : base_[c];
    return parabola_value(base, parabola_rise(spacing_, x - position(c)));
  }

  // Whether candidate p, inserted after t (position(p) >= position(t)), is
  // strictly nearer than t (-1: none) at x: key[p] - key[t] < 2 x (q_p - q_t),
  // decided exactly, so that near-ties are settled by the keys themselves, as
  // the pixel-parallel search settles them (two_nearest_on_line). The rounded
  // difference decides unless it equals the bound (an integer, exact):
  // rounding is monotone. Then its rounding error does (exact_sum); with
  // integer keys there is none. (Computed whether needed or not: a branch
  // here cost 7% more than the error's five additions.)
  SEGLOSS_INLINE bool below(int32_t p, int32_t t, int64_t x) const {
    if (t < 0) return true;
    const double bound = 2.0 * double(x) * double(position(p) - position(t));
    if (kIntegerKeys) return key_[p] - key_[t] < bound;
    const ExactSum difference = exact_sum(key_[p], -key_[t]);
    return difference.hi < bound || (difference.hi == bound && difference.lo < 0.0);
  }

  // The first x in [lo, hi) (lo < hi) at which p is below t (-1: none), or
  // hi; the set where p is below t is a suffix (all or nothing when the
  // positions are equal).
  SEGLOSS_INLINE int64_t first_below(int32_t p, int32_t t, int64_t lo, int64_t hi) const {
    if (t < 0 || below(p, t, lo)) return lo;
    if (!below(p, t, hi - 1)) return hi;
    return crossing(p, t, lo, hi);
  }

  // first_below when p is known not to be below t at lo and to be below it at
  // hi - 1: p is below t for x > (key[p] - key[t]) / (2 (q_p - q_t)); the
  // rounding of that quotient is settled by the exact test.
  SEGLOSS_INLINE int64_t crossing(int32_t p, int32_t t, int64_t lo, int64_t hi) const {
    const double z =
        (key_[p] - key_[t]) / (2.0 * double(position(p) - position(t)));
    // With integer keys the floor is already exact: a quotient of integers
    // that is not an integer lies at least 1 / (2 (q_p - q_t)) from the next
    // one, and the division's rounding error, below |key[p] - key[t]| 2^-53 /
    // (2 (q_p - q_t)), is smaller while the keys stay below 2^52. Then z fits
    // an int64_t, and floor(z) + 1 is clamped to [lo + 1, hi - 1] as integers,
    // by selects (truncation toward 0 is the floor wherever it is not clamped
    // to lo >= 0): the clamp's branches were 5% of the sweep's mispredictions.
    if (kIntegerKeys) {
      const int64_t truncated = int64_t(z);
      const int64_t above = truncated > lo ? truncated : lo;
      return (above < hi - 2 ? above : hi - 2) + 1;
    }
    // (z >= lo + 1 > 0 where it is converted: truncation is the floor.)
    int64_t x = z < double(lo + 1) ? lo + 1 : (z < double(hi - 1) ? int64_t(z) + 1 : hi - 1);
    while (x > lo + 1 && below(p, t, x - 1)) --x;
    while (x < hi - 1 && !below(p, t, x)) ++x;
    return x;
  }

 private:
  const double* base_;
  const double* key_;
  const InstanceId* ids_;
  double spacing_;
};

// Incremental construction of the two envelopes of a line: candidates are
// inserted in order of position. `first` is the lower envelope of all
// candidates (Felzenszwalb and Huttenlocher's sweep). `second` holds, per
// piece, the id of the first over the piece and the best candidate with
// another id.
//
// A new candidate p of id L changes the pair (first F, second S) at x where it
// lies below F (then p is first, and S becomes F if F's id is not L), or else
// where F's id is not L and p lies below S (then p is second). Each id's
// envelope rises faster to the left than p does (p is the rightmost candidate
// yet), so both conditions hold on a suffix of the line.
//
// Keeping the second apart from the first is what makes the sweep cheap: along
// a line, consecutive candidates mostly share the first's id (the same
// instance is nearest), and then only the first changes; the second is rebuilt
// only where the first's id changes or p becomes second.
template <bool kIntegerKeys>
class EnvelopeBuilder {
 public:
  SEGLOSS_INLINE EnvelopeBuilder(const EnvelopeLine<kIntegerKeys>& line, int64_t n,
                                 EnvelopePiece* scratch)
      : line_(line),
        n_(n),
        first_(scratch),
        second_(scratch + (n + 2)),
        old_first_(scratch + 2 * (n + 2)),
        old_second_(scratch + 3 * (n + 2)),
        kept_second_(scratch + 4 * (n + 2)),
        first_count_(1),
        second_count_(1) {
    first_[0] = EnvelopePiece{0, kNoInstance, -1};
    second_[0] = EnvelopePiece{0, kNoInstance, -1};
  }

  SEGLOSS_INLINE void insert(int32_t p) {
    const InstanceId id = line_.id(p);
    if (kIntegerKeys && (p & 1)) {
      // A position's second entry, inserted right after its first (a pair's
      // second has an id only where its first has one): with integer keys
      // its key is at least the first's (its squared distance is; with
      // sampling, rounding may put a pair's two values an ulp out of their
      // keys' order), so it is nearer than the first nowhere. It can only
      // become second, on a suffix where the first's id is not its own; the
      // last piece of the second says whether it does at n - 1.
      const EnvelopePiece& s = second_[second_count_ - 1];
      if (s.first_id != id && line_.below(p, s.candidate, n_ - 1)) become_second(p, id, n_);
      return;
    }
    // Nothing changes if the last position does not (the changes are a suffix).
    bool changes_first;
    {
      const int32_t f = first_[first_count_ - 1].candidate;
      const EnvelopePiece& s = second_[second_count_ - 1];
      changes_first = f < 0 || line_.below(p, f, n_ - 1);
      if (!changes_first && (s.first_id == id || !line_.below(p, s.candidate, n_ - 1))) return;
    }
    // The first: pop the pieces p lies below from their begin, split the one
    // it lies below from inside it. old_first_ gets the replaced pieces, right
    // to left; p is first from `split` on.
    int64_t replaced = 0;
    while (first_count_ > 0) {
      const EnvelopePiece& top = first_[first_count_ - 1];
      if (top.candidate >= 0 && !line_.below(p, top.candidate, top.begin)) break;
      old_first_[replaced++] = top;
      --first_count_;
    }
    int64_t split = 0;
    if (first_count_ > 0) {
      // first_below without its tests already made: p is not below the top
      // at its begin (the loop stopped there), and with nothing replaced the
      // top is the last piece, whose test at n - 1 is changes_first.
      const EnvelopePiece& top = first_[first_count_ - 1];
      const int64_t end = replaced > 0 ? old_first_[replaced - 1].begin : n_;
      const bool below_at_end =
          replaced > 0 ? line_.below(p, top.candidate, end - 1) : changes_first;
      split = below_at_end ? line_.crossing(p, top.candidate, top.begin, end) : end;
      if (split < end) old_first_[replaced++] = EnvelopePiece{split, kNoInstance, top.candidate};
    }
    if (split < n_) first_[first_count_++] = EnvelopePiece{split, id, p};
    // Where p became first, the second changes only if the old first's id was
    // not p's; left of `split`, only if the first's id there is not p's.
    // change_end: the end of the rightmost replaced piece whose id was not p's,
    // old_first_[other] (split and `replaced` if none); right of it the second
    // keeps its pieces. `mixed`: whether a replaced piece left of it had p's id.
    int64_t change_end = split, other = replaced;
    for (int64_t k = 0; k < replaced; ++k) {
      if (!first_has_id(old_first_[k], id)) {
        change_end = k > 0 ? old_first_[k - 1].begin : n_;
        other = k;
        break;
      }
    }
    bool mixed = false;
    for (int64_t k = other + 1; k < replaced; ++k) mixed |= first_has_id(old_first_[k], id);
    const bool first_id_changes = change_end > split;
    bool second_changes_left = false;
    if (split > 0) {
      // The first at split - 1: the piece under p's (or the top, if p is not first).
      second_changes_left = !first_has_id(first_[first_count_ - (split < n_ ? 2 : 1)], id);
    }
    if (first_id_changes || second_changes_left) {
      update_second(p, id, split, replaced, change_end, other, mixed);
    }
  }

  // Hands each position's pair to write(x, pair), over the runs where both
  // envelopes keep their candidates.
  template <typename Writer>
  SEGLOSS_INLINE void write(const Writer& write) const {
    int64_t i = 0, j = 0;
    for (int64_t x = 0; x < n_;) {
      const int64_t first_end = i + 1 < first_count_ ? first_[i + 1].begin : n_;
      const int64_t second_end = j + 1 < second_count_ ? second_[j + 1].begin : n_;
      const int64_t end = first_end < second_end ? first_end : second_end;
      const int32_t f = first_[i].candidate, s = second_[j].candidate;
      NearestPair pair = no_instances();
      pair.id[0] = f >= 0 ? line_.id(f) : kNoInstance;
      pair.id[1] = s >= 0 ? line_.id(s) : kNoInstance;
      for (; x < end; ++x) {
        if (f >= 0) pair.d[0] = line_.value(f, x);
        if (s >= 0) pair.d[1] = line_.value(s, x);
        write(x, pair);
      }
      i += first_end == end;
      j += second_end == end;
    }
  }

 private:
  // Rebuilds the second where p changes it: p became first on [split, n)
  // over the old firsts old_first_[0, replaced) (right to left), whose ids
  // were p's from change_end on.
  SEGLOSS_INLINE void update_second(int32_t p, InstanceId id, int64_t split,
                                    int64_t replaced, int64_t change_end, int64_t other,
                                    bool mixed) {
    if (split == n_) {
      become_second(p, id, n_);
      return;
    }
    // Set the pieces over [change_end, n) aside: there the old first and p
    // both have p's id, so the second stays. (A piece of the second lies
    // where the first has one id: one begins at change_end, where the old
    // first's id changed to p's.)
    int64_t tail = 0;
    while (second_count_ > 0 && second_[second_count_ - 1].begin >= change_end) {
      kept_second_[tail++] = second_[--second_count_];
    }
    if (!mixed) {
      // The common case: over [split, change_end) no old first had p's id, so
      // they become the second there, old_first_[replaced - 1] (which begins
      // at split) to old_first_[other]; left of split p becomes second in place.
      while (second_count_ > 0 && second_[second_count_ - 1].begin >= split) --second_count_;
      become_second(p, id, split);
      for (int64_t k = replaced; k-- > other;) {
        append_second(old_first_[k].begin, id, old_first_[k].candidate);
      }
      put_back(tail);
      return;
    }
    // Take the second's pieces over [split, change_end) out, right to left.
    int64_t taken = 0;
    int64_t end = change_end;
    while (second_count_ > 0 && second_[second_count_ - 1].begin >= split) {
      end = second_[second_count_ - 1].begin;
      old_second_[taken++] = second_[--second_count_];
    }
    if (split < end && second_count_ > 0) {
      // The piece that straddles `split`: its right part is rebuilt.
      EnvelopePiece right = second_[second_count_ - 1];
      right.begin = split;
      old_second_[taken++] = right;
    }
    // Left of split: p becomes second over a suffix [from, split) where the
    // first's id is not p's and p is below the second.
    const int64_t right_pieces = taken;
    int64_t from = split;
    while (second_count_ > 0) {
      const EnvelopePiece& piece = second_[second_count_ - 1];
      if (piece.first_id == id) break;
      const int64_t start = piece.candidate < 0
                                ? piece.begin
                                : line_.first_below(p, piece.candidate, piece.begin, from);
      if (start > piece.begin) {  // p is second on the piece's tail only
        if (start < from) old_second_[taken++] = EnvelopePiece{start, piece.first_id, piece.candidate};
        from = start;
        break;
      }
      old_second_[taken++] = piece;
      from = piece.begin;
      --second_count_;
    }
    // Rebuild left to right: [from, split) gets p as second, each piece with
    // its first's id; [split, change_end) follows the old firsts.
    for (int64_t k = taken; k-- > right_pieces;) {
      append_second(old_second_[k].begin, old_second_[k].first_id, p);
    }
    int64_t f = replaced;  // old firsts, walked left to right
    for (int64_t k = right_pieces; k-- > 0;) {
      const EnvelopePiece& old = old_second_[k];
      const int64_t piece_end = k > 0 ? old_second_[k - 1].begin : change_end;
      int64_t x = old.begin;
      while (x < piece_end) {
        while (f > 1 && old_first_[f - 2].begin <= x) --f;
        const int32_t old_first = old_first_[f - 1].candidate;
        const int64_t next = f > 1 ? old_first_[f - 2].begin : n_;
        const bool other_id = old_first >= 0 && line_.id(old_first) != id;
        append_second(x, id, other_id ? old_first : old.candidate);
        x = next < piece_end ? next : piece_end;
      }
    }
    put_back(tail);
  }

  // Appends the `tail` pieces update_second set aside (right to left in
  // kept_second_).
  SEGLOSS_INLINE void put_back(int64_t tail) {
    if (tail == 0) return;
    const EnvelopePiece& first_kept = kept_second_[tail - 1];
    append_second(first_kept.begin, first_kept.first_id, first_kept.candidate);
    for (int64_t k = tail - 1; k-- > 0;) second_[second_count_++] = kept_second_[k];
  }

  // Whether a piece of the first has instance `id` (not so where it has none).
  SEGLOSS_INLINE bool first_has_id(const EnvelopePiece& piece, InstanceId id) const {
    return piece.candidate >= 0 && line_.id(piece.candidate) == id;
  }

  // p becomes second, in place, over a suffix of the second's pieces, which
  // end at `end`: over the pieces of another first id that it lies below from
  // their begin, and the tail of the next one. With end = n for a candidate
  // that is first nowhere (every second entry, and first entries that only
  // change the second); with end = split left of where one became first.
  SEGLOSS_INLINE void become_second(int32_t p, InstanceId id, int64_t end) {
    int64_t k = second_count_;  // p is second over all of second_[k, count)
    int64_t start = end;        // and over [start, end)
    while (k > 0) {
      const EnvelopePiece& piece = second_[k - 1];
      if (piece.first_id == id) break;
      if (piece.candidate >= 0 && !line_.below(p, piece.candidate, piece.begin)) {
        // p is second on the piece's tail only, if anywhere.
        start = line_.first_below(p, piece.candidate, piece.begin, start);
        break;
      }
      start = piece.begin;
      --k;
    }
    // Rewrite second_[k, count) left to right, each piece with p as second,
    // pieces of one first id merged; a tail of piece k - 1 comes first.
    int64_t w = k;
    EnvelopePiece pending{0, kNoInstance, -1};
    bool has_pending = false;
    if (k > 0 && start < (k < second_count_ ? second_[k].begin : end)) {
      pending = EnvelopePiece{start, second_[k - 1].first_id, p};
      has_pending = true;
    }
    for (int64_t r = k; r < second_count_; ++r) {
      const EnvelopePiece piece{second_[r].begin, second_[r].first_id, p};
      if (has_pending) {
        if (pending.first_id == piece.first_id) continue;
        second_[w++] = pending;
      }
      pending = piece;
      has_pending = true;
    }
    if (has_pending) second_[w++] = pending;
    second_count_ = w;
  }

  // Appends a piece unless the previous one has the same first id and second
  // (then that one extends over it).
  SEGLOSS_INLINE void append_second(int64_t begin, InstanceId first_id, int32_t candidate) {
    if (second_count_ > 0) {
      const EnvelopePiece& last = second_[second_count_ - 1];
      if (last.first_id == first_id && last.candidate == candidate) return;
    }
    second_[second_count_++] = EnvelopePiece{begin, first_id, candidate};
  }

  EnvelopeLine<kIntegerKeys> line_;
  int64_t n_;
  EnvelopePiece* first_;       // the nearest: first_[0, first_count_)
  EnvelopePiece* second_;      // the second-nearest: second_[0, second_count_)
  EnvelopePiece* old_first_;   // pieces of the first an insertion replaced
  EnvelopePiece* old_second_;  // pieces of the second being rebuilt
  EnvelopePiece* kept_second_;  // pieces of the second set aside meanwhile
  int64_t first_count_, second_count_;
};

// Copies a line's pairs, in[q * in_stride] for q < n, into the flat arrays of
// LineCandidates (2n entries each; no bases where line.base is null).
SEGLOSS_INLINE void gather_line(const NearestPair* in, int64_t in_stride, int64_t n,
                                double spacing, const LineCandidates& line) {
  const double inverse_square = key_scale(spacing);
  for (int64_t q = 0; q < n; ++q) {
    const NearestPair& pair = in[q * in_stride];
    for (int k = 0; k < 2; ++k) {
      if (line.base != nullptr) line.base[2 * q + k] = pair.d[k];
      line.key[2 * q + k] = envelope_key(pair.d[k], q, inverse_square);
      line.id[2 * q + k] = pair.id[k];
    }
  }
}

// Writes a line's pairs to out[x * stride].
struct StridedPairs {
  NearestPair* out;
  int64_t stride;
  SEGLOSS_INLINE void operator()(int64_t x, const NearestPair& pair) const {
    out[x * stride] = pair;
  }
};

// A later pass along one line of n positions, gathered by gather_line from the
// previous passes' pairs; hands the new pairs to write(x, pair) (e.g.
// StridedPairs over where they were gathered from). `scratch` holds
// envelope_scratch_pieces(n) pieces; integer_keys as for EnvelopeLine.
template <typename Writer>
SEGLOSS_INLINE void envelope_line(const LineCandidates& candidates, int64_t n, double spacing,
                                  bool integer_keys, EnvelopePiece* scratch,
                                  const Writer& write) {
  if (n <= 0) return;
  auto sweep = [&](auto integer) {
    constexpr bool kIntegerKeys = decltype(integer)::value;
    const EnvelopeLine<kIntegerKeys> line(candidates, spacing);
    EnvelopeBuilder<kIntegerKeys> envelope(line, n, scratch);
    if (kIntegerKeys) {
      // Each position's two entries in turn, as two calls, each compiled for
      // its entry (a second entry's insertion is short with integer keys).
      for (int64_t q = 0; q < n; ++q) {
        const int32_t c = int32_t(2 * q);
        if (candidates.id[c] != kNoInstance) envelope.insert(c);
        if (candidates.id[c + 1] != kNoInstance) envelope.insert(c + 1);
      }
    } else {
      for (int64_t c = 0; c < 2 * n; ++c) {
        if (candidates.id[c] != kNoInstance) envelope.insert(int32_t(c));
      }
    }
    envelope.write(write);
  };
  if (integer_keys) {
    sweep(std::true_type{});
  } else {
    sweep(std::false_type{});
  }
}

// ---------------------------------------------------------------------------
// The pixel-parallel form of a later pass, as the CUDA tile passes run it
// (core/line_tiles.h): every pixel x of a line computes its own pair from the
// line's pairs, with no envelope.
//
// Each candidate (entry k of position q, index c = 2q + k, as in
// LineCandidates) is ranked at x by its key's line key - 2 x q, exactly, then
// by c: the order in which envelope_line's exact comparisons (below()) put
// the candidates at x, whose strict comparisons keep the candidate inserted
// first at equal keys. The pair is the first candidate in that order and the
// first with another id, at the distances envelope_line writes for them
// (EnvelopeLine::value). So both give the same pairs bit for bit, ids
// included, at any spacing; tests/cpp/two_nearest_tiles.cpp checks it. In
// pass 0 (every base 0, keys q^2) the order is by distance, then c, which is
// scan_line's.

// A candidate's place in the order at x: key - 2 x q as the exact sum hi +
// lo, then its index c.
struct CandidateRank {
  double hi, lo;
  int64_t c;
};

SEGLOSS_INLINE CandidateRank unranked() {
  return CandidateRank{infinite_distance(), 0.0, std::numeric_limits<int64_t>::max()};
}

SEGLOSS_INLINE CandidateRank candidate_rank(double key, int64_t x, int64_t c) {
  const ExactSum line = exact_sum(key, -2.0 * double(x) * double(c >> 1));
  // An infinite key (a squared distance past DBL_MAX / key_scale, from
  // extreme sampling ratios) has no finite error: such keys tie, as in
  // below(), where their difference is NaN, and rank by c.
  const bool finite = line.hi - line.hi == 0.0;
  return CandidateRank{line.hi, finite ? line.lo : 0.0, c};
}

SEGLOSS_INLINE bool ranks_before(const CandidateRank& a, const CandidateRank& b) {
  if (a.hi != b.hi) return a.hi < b.hi;
  if (a.lo != b.lo) return a.lo < b.lo;
  return a.c < b.c;
}

// Whether every candidate at t positions from x (whose line is at least t^2
// - x^2, its key being at least q^2) ranks after `rank`: t^2 - x^2 > hi + lo,
// exactly. (t^2 - x^2 and candidate_rank's 2 x q are integers, exact in
// double on lines of up to 2^26 positions; on longer ones, which only the
// CUDA passes search this way, the order of near-ties may be off by a
// rounding of values past 2^52, where squared distances are no longer exact
// anyway.)
SEGLOSS_INLINE bool beyond(int64_t t, int64_t x, const CandidateRank& rank) {
  const double floor = double(t * t - x * x);
  return floor > rank.hi || (floor == rank.hi && rank.lo < 0.0);
}

// The best two under that order: the first, and the first of another id.
struct RankedPair {
  CandidateRank rank[2];
  InstanceId id[2];
};

SEGLOSS_INLINE RankedPair no_ranked_instances() {
  return RankedPair{{unranked(), unranked()}, {kNoInstance, kNoInstance}};
}

// offer() under that order.
SEGLOSS_INLINE void offer_ranked(RankedPair& best, const CandidateRank& rank, InstanceId id) {
  if (id == best.id[0]) {
    if (ranks_before(rank, best.rank[0])) best.rank[0] = rank;
  } else if (ranks_before(rank, best.rank[0])) {
    best.rank[1] = best.rank[0];
    best.id[1] = best.id[0];
    best.rank[0] = rank;
    best.id[0] = id;
  } else if (ranks_before(rank, best.rank[1])) {
    // Before the second: a better one of its id, or another id's.
    best.rank[1] = rank;
    best.id[1] = id;
  }
}

// Offers the two entries of position q's pair `at` to pixel x.
SEGLOSS_INLINE void offer_position(RankedPair& best, const NearestPair& at, int64_t x, int64_t q,
                                   double inverse_square) {
  for (int k = 0; k < 2; ++k) {
    if (at.id[k] != kNoInstance) {
      const double key = envelope_key(at.d[k], q, inverse_square);
      offer_ranked(best, candidate_rank(key, x, 2 * q + k), at.id[k]);
    }
  }
}

// The lowest and highest id of a tile line's candidates, or of a search
// block's. A line with none needs no search (its pairs stay empty); a line
// of one id searches for the first only.
struct LineIdRange {
  InstanceId low, high;
};

SEGLOSS_INLINE LineIdRange empty_id_range() { return {~InstanceId(0), kNoInstance}; }
SEGLOSS_INLINE bool range_has_ids(const LineIdRange& range) { return range.high != kNoInstance; }
SEGLOSS_INLINE bool range_has_one_id(const LineIdRange& range) {
  return range.low == range.high;
}

// Blocks of kSearchBlock positions (line_tiles.h) that the search skips
// whole: each block of a line has a floor, at most key - q^2 of every
// candidate in it (+inf: none). A candidate t or more positions from x has
// its line key - 2 x q at least floor + t^2 - x^2, so where that passes the
// search's bound the block is skipped, and an empty block always is. So the
// search crosses a line's empty stretches and its far blocks 32 positions at
// a time, where its cost per pixel grew with its distance to the cells (on a
// 2048^2 image of two cells, a serial run of the later pass's searches took
// 6.5x less time with the skips, and pass 0 of 300 cells 14x less). Each
// block also has its candidates' id range: a block all of whose candidates
// have the first's id cannot give the second, so it is skipped where it
// passes the first's rank already (on a 2048^2 image of two large cells,
// 1.47x less time in a serial run of pass 1: 772 steps per pixel, then 446).

// Position q's share of its block's floor: the least key - q^2 of its
// entries, rounded, then lowered by 2^-50 of itself, so that it is at most
// the exact difference; at most DBL_MAX (an infinite key is a candidate
// still); +inf for an empty position. The floors are non-negative, so their
// bit patterns order as they do (the GPU takes their minimum as integers).
SEGLOSS_INLINE double position_floor(const NearestPair& pair, int64_t q, double inverse_square) {
  double floor = infinite_distance();
  for (int k = 0; k < 2; ++k) {
    if (pair.id[k] == kNoInstance) continue;
    const double rest = sub_rn(envelope_key(pair.d[k], q, inverse_square), double(q) * double(q));
    const double lowered = mul_rn(rest, 1.0 - 0x1p-50);
    const double capped = lowered < std::numeric_limits<double>::max()
                              ? lowered
                              : std::numeric_limits<double>::max();
    floor = capped < floor ? capped : floor;
  }
  return floor;
}

// Whether every candidate of a block with floor `floor`, all t or more
// positions from x, ranks after `rank`: floor + t^2 - x^2 > hi + lo, with a
// margin of 2^-40 of the magnitudes (and 2^-1000) that covers the roundings
// of this test (a few of 2^-53 each) and lo (at most 2^-53 hi). Skipping
// less than possible costs steps only.
SEGLOSS_INLINE bool block_beyond(double floor, int64_t t, int64_t x, const CandidateRank& rank) {
  if (floor == infinite_distance()) return true;  // no candidates
  const double rise = double(t * t - x * x);
  const double lowest = add_rn(floor, rise);
  const double scale = add_rn(add_rn(floor, fabs(rise)), fabs(rank.hi));
  return lowest > add_rn(rank.hi, add_rn(mul_rn(scale, 0x1p-40), 0x1p-1000));
}

// Whether a block whose candidates are all t or more positions from x can
// change nothing in `best`: all rank after `bound` (block_beyond), or all
// have the first's id (`ids`, the block's id range) and rank after the
// first, so that they can be neither first nor second, now or later (a
// later first of another id makes the first the second, which they rank
// after too).
SEGLOSS_INLINE bool block_changes_nothing(double floor, const LineIdRange& ids, int64_t t,
                                          int64_t x, const RankedPair& best,
                                          const CandidateRank& bound) {
  if (block_beyond(floor, t, x, bound)) return true;
  return ids.low == best.id[0] && ids.high == best.id[0] &&
         block_beyond(floor, t, x, best.rank[0]);
}

// The new pair of position x of a line of n pairs lying `stride` apart (own:
// x's pair). Searched outward from x, the nearer side first; a side ends
// where every farther candidate ranks after the second found (beyond();
// with `one_id`, all of the line's candidates of one id: after the first),
// or at the line's end. With `floors` and `block_ids` (the line's blocks'
// floors and id ranges), a side entering a block skips it where
// block_changes_nothing() allows. The offers' order
// does not change the result (the order of candidates is total). Then the
// two found are valued as EnvelopeLine::value does.
SEGLOSS_INLINE NearestPair two_nearest_on_line(const NearestPair* own, int64_t stride, int64_t x,
                                               int64_t n, double spacing, bool one_id,
                                               const double* floors = nullptr,
                                               const LineIdRange* block_ids = nullptr) {
  const double inverse_square = key_scale(spacing);
  RankedPair best = no_ranked_instances();
  offer_position(best, own[0], x, x, inverse_square);
  OutwardWalk walk(x, n);
  while (walk.more()) {
    const int64_t t = walk.next_distance(), p = walk.position(t);
    // (Selects, not an index: the ranks stay in registers on the GPU.)
    const CandidateRank bound = one_id ? best.rank[0] : best.rank[1];
    if (beyond(t, x, bound)) {
      walk.stop();
    } else if (floors != nullptr && walk.entering_block(t, p) &&
               block_changes_nothing(floors[p / kSearchBlock], block_ids[p / kSearchBlock], t,
                                     x, best, bound)) {
      walk.skip_block(p);
    } else {
      offer_position(best, own[(p - x) * stride], x, p, inverse_square);
      walk.step(t);
    }
  }
  NearestPair pair = no_instances();
  for (int k = 0; k < 2; ++k) {
    if (best.id[k] == kNoInstance) continue;
    const int64_t c = best.rank[k].c, q = c >> 1;
    pair.d[k] = parabola_value(own[(q - x) * stride].d[c & 1], parabola_rise(spacing, x - q));
    pair.id[k] = best.id[k];
  }
  return pair;
}

// A tile line's summary for its search, in bits: its id range, then its
// blocks' floors (search_blocks(n) doubles) and id ranges.
SEGLOSS_INLINE int64_t two_nearest_summary_bits(int64_t n) {
  const int64_t range_bits = 8 * int64_t(sizeof(LineIdRange));
  return range_bits + (64 + range_bits) * search_blocks(n);
}

}  // namespace segloss::core
