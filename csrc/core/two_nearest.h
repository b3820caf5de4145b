// Exact two-nearest-instance Euclidean distance transform: the per-line
// passes, shared by the CPU driver (distance_transform.h) and the CUDA kernels.
//
// Every pixel carries the squared distance and the id of its two nearest
// *distinct* instances found so far (NearestPair). The transform is separable:
// pass 0 scans each line along the first axis (scan_line); every later axis
// runs a lower-envelope sweep (envelope_line) on each line, whose candidates
// are the two entries of every position on it.
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

#include "platform.h"

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

// Pass 0 along one line of `n` pixels: `ids(i)` is the instance id of the
// line's i-th pixel (kNoInstance for background); writes each pixel's two
// nearest distinct instances on the line to out[i * out_stride].
//
// The best two distinct instances over a union are among the best two of each
// part, so each pixel merges the best two to its left (the last instance seen
// and the last one with another id) with the best two to its right.
template <typename Ids>
SEGLOSS_INLINE void scan_line(const Ids& ids, int64_t n, double spacing, NearestPair* out,
                              int64_t out_stride) {
  const InstanceId none = kNoInstance;
  InstanceId last_id = none, other_id = none;
  int64_t last_at = 0, other_at = 0;
  for (int64_t i = 0; i < n; ++i) {
    const InstanceId id = ids(i);
    if (id != none) {
      if (id != last_id) {
        other_id = last_id;
        other_at = last_at;
        last_id = id;
      }
      last_at = i;
    }
    NearestPair pair = no_instances();
    if (last_id != none) {
      const double a = spacing * double(i - last_at);
      pair.d[0] = a * a;
      pair.id[0] = last_id;
    }
    if (other_id != none) {
      const double b = spacing * double(i - other_at);
      pair.d[1] = b * b;
      pair.id[1] = other_id;
    }
    out[i * out_stride] = pair;
  }
  last_id = other_id = none;
  for (int64_t i = n - 1; i >= 0; --i) {
    const InstanceId id = ids(i);
    if (id != none) {
      if (id != last_id) {
        other_id = last_id;
        other_at = last_at;
        last_id = id;
      }
      last_at = i;
    }
    if (last_id == none) continue;
    NearestPair& pair = out[i * out_stride];
    const double a = spacing * double(last_at - i);
    offer(pair, a * a, last_id);
    if (other_id != none) {
      const double b = spacing * double(other_at - i);
      offer(pair, b * b, other_id);
    }
  }
}

// A piece of the two-distinct-instance lower envelope of one line: from
// `begin` to the next piece's begin (or the line's end), `first` and `second`
// are the candidates with the smallest value and the smallest value among
// other ids (-1: none). Candidate c is entry c % 2 of the line's position c / 2.
struct EnvelopePiece {
  int64_t begin;
  int32_t first, second;
};

// The sweep along one line of n positions (n <= kMaxEnvelopeLine) holds
// 2 * n + 2 pieces of scratch: the live envelope (at most one piece per
// position, and one spare slot), and a copy of the part an insertion rebuilds
// (and an end marker).
constexpr int64_t kMaxEnvelopeLine = int64_t(1) << 30;

SEGLOSS_INLINE int64_t envelope_scratch_pieces(int64_t n) { return 2 * n + 2; }

// Spacing bounds that keep every squared distance of a line of up to
// kMaxEnvelopeLine pixels a normal, finite double (and 0 only at an instance).
constexpr double kMinSpacing = 1e-100;
constexpr double kMaxSpacing = 1e100;

// One line's candidates, gathered by gather_line into flat arrays: candidate c
// is entry c % 2 of position q = c / 2, and its squared distance from position
// x is base[c] + (spacing (x - q))^2. Comparisons use the keys
// key[c] = base[c] / spacing^2 + q^2: p is nearer than t at x exactly when
// key[p] - key[t] < 2 x (q_p - q_t), integer arithmetic at unit spacing (exact
// in double while keys stay below 2^53) and monotone in x at any spacing.
struct LineCandidates {
  double* base;
  double* key;
  InstanceId* id;
};

class EnvelopeLine {
 public:
  SEGLOSS_INLINE EnvelopeLine(const LineCandidates& line, double spacing)
      : base_(line.base), key_(line.key), ids_(line.id), spacing_(spacing) {}

  SEGLOSS_INLINE int64_t position(int32_t c) const { return c >> 1; }
  SEGLOSS_INLINE InstanceId id(int32_t c) const { return ids_[c]; }

  SEGLOSS_INLINE double value(int32_t c, int64_t x) const {
    const double offset = spacing_ * double(x - position(c));
    return base_[c] + offset * offset;
  }

  // Whether candidate p, inserted after t (position(p) >= position(t)), is
  // strictly nearer than t (-1: none) at x.
  SEGLOSS_INLINE bool below(int32_t p, int32_t t, int64_t x) const {
    return t < 0 || key_[p] - key_[t] < 2.0 * double(x) * double(position(p) - position(t));
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
    int64_t x = z < double(lo + 1) ? lo + 1 : (z < double(hi - 1) ? int64_t(floor(z)) + 1 : hi - 1);
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

// Incremental construction of the envelope: candidates are inserted in order of
// position. A new candidate p of id L changes a position's pair exactly where
// it lies below L's own envelope and fewer than two other ids lie at or below
// it. Each id's envelope rises faster to the left than p does (p is the
// rightmost candidate yet), so both sets, and the positions p changes, form a
// suffix of the line: an insertion rebuilds only the pieces of that suffix.
// Every piece it walks over changes; in practice that is a few pieces at the
// line's end, O(1) per candidate, as in Felzenszwalb and Huttenlocher's
// one-label sweep (which this is when every candidate has the same id).
class EnvelopeBuilder {
 public:
  SEGLOSS_INLINE EnvelopeBuilder(const EnvelopeLine& line, int64_t n, EnvelopePiece* scratch)
      : line_(line), n_(n), pieces_(scratch), spare_(scratch + n + 1), count_(1) {
    pieces_[0] = EnvelopePiece{0, -1, -1};
  }

  SEGLOSS_INLINE void insert(int32_t p) {
    const InstanceId id = line_.id(p);
    // The changed suffix is empty if it misses the last position.
    if (!changes(p, id, pieces_[count_ - 1], n_ - 1)) return;
    // Pieces [i, count_) lie wholly in the suffix p changes.
    int64_t i = count_;
    while (i > 0 && changes(p, id, pieces_[i - 1], pieces_[i - 1].begin)) --i;
    if (i == count_) {
      // The common case: p changes only the tail of the last piece.
      const EnvelopePiece kept = pieces_[count_ - 1];
      if (line_.id(kept.first) == id) {
        append(line_.crossing(p, kept.first, kept.begin, n_), p, kept.second);
      } else {
        const int64_t from = line_.crossing(p, kept.second, kept.begin, n_);
        const int64_t first_from = line_.first_below(p, kept.first, from, n_);
        if (first_from > from) append(from, kept.first, p);
        if (first_from < n_) append(first_from, p, kept.first);
      }
      return;
    }
    // Copy the changed part, including the tail of piece i - 1 from where p
    // starts to change it (not at its begin; by its end if it is the last).
    int64_t changed = 0;
    if (i > 0) {
      const EnvelopePiece& kept = pieces_[i - 1];
      const int32_t rival = line_.id(kept.first) == id ? kept.first : kept.second;
      const bool last = i == count_;
      const int64_t end = last ? n_ : pieces_[i].begin;
      if (last || line_.below(p, rival, end - 1)) {
        const int64_t from = line_.crossing(p, rival, kept.begin, end);
        spare_[changed++] = EnvelopePiece{from, kept.first, kept.second};
      }
    }
    for (int64_t k = i; k < count_; ++k) spare_[changed++] = pieces_[k];
    spare_[changed].begin = n_;  // the end of the last changed piece
    count_ = i;
    for (int64_t k = 0; k < changed; ++k) {
      const EnvelopePiece old = spare_[k];
      const int64_t end = spare_[k + 1].begin;
      if (old.first < 0) {
        append(old.begin, p, -1);
        continue;
      }
      const bool other_id = line_.id(old.first) != id;
      // Where p is not below the first: p becomes second if its id differs.
      // (A first with p's id changes only where p is below it: everywhere here.)
      const int64_t first_from =
          other_id ? line_.first_below(p, old.first, old.begin, end) : old.begin;
      if (first_from > old.begin) append(old.begin, old.first, other_id ? p : old.second);
      // Where p is below the first: p is first, the best other id second.
      if (first_from < end) append(first_from, p, other_id ? old.first : old.second);
    }
  }

  // Writes each position's pair to out[x * out_stride].
  SEGLOSS_INLINE void write(NearestPair* out, int64_t out_stride) const {
    for (int64_t k = 0; k < count_; ++k) {
      const EnvelopePiece piece = pieces_[k];
      const int64_t end = k + 1 < count_ ? pieces_[k + 1].begin : n_;
      for (int64_t x = piece.begin; x < end; ++x) {
        NearestPair pair = no_instances();
        if (piece.first >= 0) {
          pair.d[0] = line_.value(piece.first, x);
          pair.id[0] = line_.id(piece.first);
        }
        if (piece.second >= 0) {
          pair.d[1] = line_.value(piece.second, x);
          pair.id[1] = line_.id(piece.second);
        }
        out[x * out_stride] = pair;
      }
    }
  }

 private:
  // Whether inserting p (of id `id`) changes the pair of `piece` at x: p must
  // beat the first if that has p's id, else the second.
  SEGLOSS_INLINE bool changes(int32_t p, InstanceId id, const EnvelopePiece& piece,
                              int64_t x) const {
    if (piece.first < 0) return true;
    return line_.below(p, line_.id(piece.first) == id ? piece.first : piece.second, x);
  }

  // Appends a piece unless the previous one has the same pair (then that one
  // extends over it); without a branch, which would be unpredictable.
  SEGLOSS_INLINE void append(int64_t begin, int32_t first, int32_t second) {
    const EnvelopePiece& last = pieces_[count_ > 0 ? count_ - 1 : 0];
    const bool same = (count_ > 0) & (last.first == first) & (last.second == second);
    pieces_[count_] = EnvelopePiece{begin, first, second};
    count_ += same ? 0 : 1;
  }

  EnvelopeLine line_;
  int64_t n_;
  EnvelopePiece* pieces_;  // the live envelope: pieces_[0, count_)
  EnvelopePiece* spare_;   // the part being rebuilt
  int64_t count_;
};

// Copies a line's pairs, in[q * in_stride] for q < n, into the flat arrays of
// LineCandidates (2n entries each).
SEGLOSS_INLINE void gather_line(const NearestPair* in, int64_t in_stride, int64_t n,
                                double spacing, const LineCandidates& line) {
  const double inverse_square = 1.0 / (spacing * spacing);
  for (int64_t q = 0; q < n; ++q) {
    const NearestPair& pair = in[q * in_stride];
    const double q_squared = double(q) * double(q);
    for (int k = 0; k < 2; ++k) {
      line.base[2 * q + k] = pair.d[k];
      line.key[2 * q + k] = pair.d[k] * inverse_square + q_squared;
      line.id[2 * q + k] = pair.id[k];
    }
  }
}

// A later pass along one line of n positions, gathered by gather_line from the
// previous passes' pairs; writes the new pairs to out[x * out_stride] (which
// may be where they were gathered from). `scratch` holds
// envelope_scratch_pieces(n) pieces.
SEGLOSS_INLINE void envelope_line(const LineCandidates& candidates, int64_t n, double spacing,
                                  NearestPair* out, int64_t out_stride, EnvelopePiece* scratch) {
  if (n <= 0) return;
  const EnvelopeLine line(candidates, spacing);
  EnvelopeBuilder envelope(line, n, scratch);
  for (int64_t c = 0; c < 2 * n; ++c) {
    if (candidates.id[c] != kNoInstance) envelope.insert(int32_t(c));
  }
  envelope.write(out, out_stride);
}

}  // namespace segloss::core
