// Line passes in tiles, as the CUDA distance kernels run them: a block
// loads whole lines of one axis into shared memory (a tile), then every
// pixel of the tile computes its new state from its line there. Used by the
// distance maps' passes (binary_distance_tiles.h) and the two-nearest
// transform's passes (two_nearest.h's two_nearest_on_line).
#pragma once

#include <cstdint>

#include "platform.h"

namespace segloss::core {

// The 32-bit words of shared memory that `lines` lines' summaries of
// `summary_bits` each take (a tile's summary of each of its lines, after
// its states).
SEGLOSS_INLINE int64_t summary_words(int64_t lines, int64_t summary_bits) {
  return (lines * summary_bits + 31) / 32;
}

// One pixel of a tile: its offset in the states, its line within the tile
// and its position q on that line; invalid past the edges of the states.
struct TileElement {
  int64_t offset;
  int64_t line;
  int64_t q;
  bool valid;
};

// How a pass along one axis is cut into tiles. The states are `outer` slabs
// of n x inner (C order); the pass's lines run along n, `inner` apart. A
// tile is `slabs` whole slabs (width == inner: the tile is contiguous), or
// `width` adjacent lines of one slab (`groups` such tiles per slab). In
// either, element e of a tile is line e % width's pixel (e / width) % n of
// slab e / (n width), and a line's pixels lie `width` apart in the tile.
struct LineTiles {
  int64_t n = 0, inner = 0, outer = 0;
  int64_t width = 0, groups = 0, slabs = 0;
  int64_t tiles = 0;     // 0: no tile fits; the pass runs from global memory
  int64_t elements = 0;  // per tile (the last ones may be partly invalid)
  int64_t lines = 0;     // per tile
  int64_t state_bytes = 0, summary_bits = 0;

  SEGLOSS_INLINE TileElement element(int64_t tile, int64_t e) const {
    const int64_t slab_in_tile = e / (n * width);
    const int64_t slab = (tile / groups) * slabs + slab_in_tile;
    const int64_t column = (tile % groups) * width + e % width;
    const int64_t q = (e / width) % n;
    return {(slab * n + q) * inner + column, slab_in_tile * width + e % width, q,
            slab < outer && column < inner};
  }

  // The shared memory of a tile: its states, then its lines' summaries.
  int64_t shared_bytes() const {
    return elements * state_bytes + summary_words(lines, summary_bits) * int64_t(sizeof(unsigned));
  }
};

// Tiles aim at kTileTarget pixels (several blocks per SM on a 512^2 image)
// and take at most kMaxTileBytes of shared memory (under the 48 KiB a block
// gets without opting in), a state of `state_bytes` per pixel and a summary
// of `summary_bits` per line. The last two arguments exist for the tests,
// which cut small images into every form.
constexpr int64_t kTileTarget = 2048;
constexpr int64_t kMaxTileBytes = 40 << 10;

inline LineTiles line_tiles(int64_t n, int64_t inner, int64_t outer, int64_t state_bytes,
                            int64_t summary_bits, int64_t target = kTileTarget,
                            int64_t max_bytes = kMaxTileBytes) {
  LineTiles t;
  t.n = n;
  t.inner = inner;
  t.outer = outer;
  t.state_bytes = state_bytes;
  t.summary_bits = summary_bits;
  const auto fits = [&](int64_t elements, int64_t lines) {
    return elements * state_bytes + summary_words(lines, summary_bits) * int64_t(sizeof(unsigned)) <=
           max_bytes;
  };
  const int64_t slab = n * inner;
  if (fits(slab, inner)) {
    t.width = inner;
    t.groups = 1;
    t.slabs = target / slab > 1 ? target / slab : 1;
    if (t.slabs > outer) t.slabs = outer;
    while (t.slabs > 1 && !fits(t.slabs * slab, t.slabs * inner)) --t.slabs;
  } else {
    // Groups of whole 32-byte sectors of adjacent lines: coalesced.
    const int64_t sector = 32 / state_bytes > 1 ? 32 / state_bytes : 1;
    if (!fits(n * sector, sector)) return t;
    t.width = (target / n) / sector * sector;
    if (t.width < sector) t.width = sector;
    while (t.width > sector && !fits(n * t.width, t.width)) t.width -= sector;
    t.groups = (inner + t.width - 1) / t.width;
    t.slabs = 1;
  }
  t.tiles = (outer + t.slabs - 1) / t.slabs * t.groups;
  t.elements = t.slabs * n * t.width;
  t.lines = t.slabs * t.width;
  return t;
}

// The tiles of a pass whose lines fit no tile in shared memory (longer than
// about 6,800 pixels on an H100 or H200): the same tiles, held in global memory
// instead, of at most `scratch_bytes`, but at least one group of lines (so
// that every line fits one); the kernels load a tile and search it in
// separate launches where a block loads and searches its tile in shared
// memory. A pixel's search is the same; only where its line is held differs.
inline LineTiles global_line_tiles(int64_t n, int64_t inner, int64_t outer, int64_t state_bytes,
                                   int64_t summary_bits, int64_t scratch_bytes) {
  const int64_t sector = 32 / state_bytes > 1 ? 32 / state_bytes : 1;
  const int64_t least =
      n * sector * state_bytes + summary_words(sector, summary_bits) * int64_t(sizeof(unsigned));
  const int64_t bytes = scratch_bytes > least ? scratch_bytes : least;
  return line_tiles(n, inner, outer, state_bytes, summary_bits, bytes / state_bytes, bytes);
}

// Where a pass's tiles are held: in shared memory within the 48 KiB any
// block gets (several blocks per SM), else within the device's opt-in shared
// memory per block (one block per SM at most), else in global memory.
enum class TileMemory { kShared, kOptIn, kGlobal };

struct PassTiles {
  LineTiles tiles;
  TileMemory memory;
};

// The tiles of a pass and where they are held: the first of shared-memory
// tiles of at most max_bytes, of at most optin_bytes (the device's opt-in),
// and global-memory tiles of at most scratch_bytes that the lines fit. The
// CUDA passes take their tiles from here, and so do their CPU emulations in
// tests/cpp, which pass smaller sizes to cut small images into every form.
inline PassTiles pass_tiles(int64_t n, int64_t inner, int64_t outer, int64_t state_bytes,
                            int64_t summary_bits, int64_t optin_bytes, int64_t scratch_bytes,
                            int64_t target = kTileTarget, int64_t max_bytes = kMaxTileBytes) {
  LineTiles tiles = line_tiles(n, inner, outer, state_bytes, summary_bits, target, max_bytes);
  if (tiles.tiles > 0) return {tiles, TileMemory::kShared};
  tiles = line_tiles(n, inner, outer, state_bytes, summary_bits, target, optin_bytes);
  if (tiles.tiles > 0) return {tiles, TileMemory::kOptIn};
  return {global_line_tiles(n, inner, outer, state_bytes, summary_bits, scratch_bytes),
          TileMemory::kGlobal};
}

// The tile passes' per-pixel searches (two_nearest_on_line, nearest_on_line)
// walk a line outward from their pixel, and skip whole blocks of
// kSearchBlock positions where a summary of the block (its floors) shows
// that nothing in it can change the result.
constexpr int64_t kSearchBlock = 32;

SEGLOSS_INLINE int64_t search_blocks(int64_t n) { return (n + kSearchBlock - 1) / kSearchBlock; }

// The walk outward from position x of a line of n positions: each step
// takes the nearer side's next position (the left at equal distances); a
// side ends where the search says so (stop) or at the line's end; a side may
// step past a position or past the rest of its block.
//
//   OutwardWalk walk(x, n);
//   while (walk.more()) {
//     const int64_t t = walk.next_distance(), p = walk.position(t);
//     ... walk.stop(), walk.step(t) or walk.skip_block(p)
//   }
class OutwardWalk {
 public:
  SEGLOSS_INLINE OutwardWalk(int64_t x, int64_t n)
      : x_(x), n_(n), left_(x > 0), right_(x + 1 < n) {}

  SEGLOSS_INLINE bool more() const { return left_ || right_; }

  // The distance of the next step's position (chooses its side).
  SEGLOSS_INLINE int64_t next_distance() {
    go_left_ = left_ && (!right_ || left_t_ <= right_t_);
    return go_left_ ? left_t_ : right_t_;
  }
  SEGLOSS_INLINE int64_t position(int64_t t) const { return go_left_ ? x_ - t : x_ + t; }

  // Whether the side enters position p's block there (its first step, or
  // the block's near end).
  SEGLOSS_INLINE bool entering_block(int64_t t, int64_t p) const {
    return t == 1 || p % kSearchBlock == (go_left_ ? kSearchBlock - 1 : 0);
  }

  SEGLOSS_INLINE void stop() {
    if (go_left_) {
      left_ = false;
    } else {
      right_ = false;
    }
  }
  // Past position p, t from x.
  SEGLOSS_INLINE void step(int64_t t) { advance(t + 1); }
  // Past the far end of p's block.
  SEGLOSS_INLINE void skip_block(int64_t p) {
    const int64_t block = p / kSearchBlock;
    advance(go_left_ ? x_ - (block * kSearchBlock - 1) : (block + 1) * kSearchBlock - x_);
  }

 private:
  SEGLOSS_INLINE void advance(int64_t t) {
    if (go_left_) {
      left_t_ = t;
      left_ = x_ - t >= 0;
    } else {
      right_t_ = t;
      right_ = x_ + t < n_;
    }
  }

  int64_t x_, n_;
  int64_t left_t_ = 1, right_t_ = 1;
  bool left_, right_, go_left_ = false;
};

}  // namespace segloss::core
