// The steps of a line pass in tiles (line_tiles.h), shared by the CUDA
// kernels of csrc/cuda/distance_cuda.cu and their CPU emulations in
// tests/cpp/two_nearest_tiles.cpp and binary_distance_tiles.cpp, so that the
// emulations run the kernels' own code over the kernels' own memory layout.
//
// A tile's memory (LineTiles::shared_bytes, in shared memory or in global
// memory) holds its states, then its lines' summaries. A pass over tile t:
//
//   tile.reset(tiles, first, step);   every summary emptied (by all threads)
//   tile.load(state, tiles, t, e);    each element e: its state into the tile,
//                                     folded into its line's summaries
//   tile.search(..., t, e, ...);      each element's new state, from its line
//                                     in the tile (skipping blocks)
//
// with all of one step done before the next begins. `Updates` folds a value
// into a summary: with atomics on the GPU, where a line's pixels load in
// parallel; plainly on the CPU (SerialUpdates). Each update only lowers a
// minimum or raises a maximum or flag, so the order does not matter.
#pragma once

#include <cstdint>

#include "binary_distance_tiles.h"
#include "line_tiles.h"
#include "platform.h"
#include "two_nearest.h"

namespace segloss::core {

// The updates of one thread at a time (the CPU emulations).
struct SerialUpdates {
  template <typename T>
  static SEGLOSS_INLINE void floor_min(T* at, T value) {
    if (value < *at) *at = value;
  }
  static SEGLOSS_INLINE void id_min(InstanceId* at, InstanceId id) {
    if (id < *at) *at = id;
  }
  static SEGLOSS_INLINE void id_max(InstanceId* at, InstanceId id) {
    if (id > *at) *at = id;
  }
  static SEGLOSS_INLINE void flags_or(unsigned* at, unsigned bits) { *at |= bits; }
};

// A two-nearest tile's memory: its pairs, its lines' id ranges, then their
// blocks' floors and id ranges.
template <typename Updates>
struct TwoNearestTile {
  NearestPair* pairs;
  LineIdRange* ranges;
  double* floors;
  LineIdRange* block_ids;
  int64_t blocks;  // per line

  SEGLOSS_INLINE TwoNearestTile(unsigned char* memory, const LineTiles& tiles)
      : pairs(reinterpret_cast<NearestPair*>(memory)),
        ranges(reinterpret_cast<LineIdRange*>(pairs + tiles.elements)),
        floors(reinterpret_cast<double*>(ranges + tiles.lines)),
        block_ids(reinterpret_cast<LineIdRange*>(floors + tiles.lines * search_blocks(tiles.n))),
        blocks(search_blocks(tiles.n)) {}

  // Empties the summaries, thread `first` of `step` threads.
  SEGLOSS_INLINE void reset(const LineTiles& tiles, int64_t first, int64_t step) const {
    for (int64_t l = first; l < tiles.lines; l += step) ranges[l] = empty_id_range();
    for (int64_t b = first; b < tiles.lines * blocks; b += step) {
      floors[b] = infinite_distance();
      block_ids[b] = empty_id_range();
    }
  }

  // Loads element e of tile t, folding it into its line's id range and its
  // block's floor and id range.
  SEGLOSS_INLINE void load(const NearestPair* state, const LineTiles& tiles, int64_t t, int64_t e,
                           double inverse_square) const {
    const TileElement el = tiles.element(t, e);
    if (!el.valid) return;
    const NearestPair pair = state[el.offset];
    pairs[e] = pair;
    const int64_t block = el.line * blocks + el.q / kSearchBlock;
    for (int k = 0; k < 2; ++k) {
      if (pair.id[k] == kNoInstance) continue;
      Updates::id_min(&ranges[el.line].low, pair.id[k]);
      Updates::id_max(&ranges[el.line].high, pair.id[k]);
      Updates::id_min(&block_ids[block].low, pair.id[k]);
      Updates::id_max(&block_ids[block].high, pair.id[k]);
    }
    const double floor = position_floor(pair, el.q, inverse_square);
    if (floor != infinite_distance()) Updates::floor_min(floors + block, floor);
  }

  // Element e's new pair, from its line in the tile (skipping blocks), in
  // place; a line without ids keeps its empty pairs.
  SEGLOSS_INLINE void search(NearestPair* state, const LineTiles& tiles, int64_t t, int64_t e,
                             double spacing) const {
    const TileElement el = tiles.element(t, e);
    if (!el.valid) return;
    const LineIdRange range = ranges[el.line];
    if (!range_has_ids(range)) return;
    state[el.offset] =
        two_nearest_on_line(pairs + e, tiles.width, el.q, tiles.n, spacing,
                            range_has_one_id(range), floors + el.line * blocks,
                            block_ids + el.line * blocks);
  }
};

// A distance maps' tile's memory: its states, its lines' blocks' floors (two
// per block, one per class), then its lines' flags.
template <typename State, typename Updates>
struct BinaryTile {
  State* states;
  State* floors;
  unsigned* flags;
  int64_t floors_per_line;

  SEGLOSS_INLINE BinaryTile(unsigned char* memory, const LineTiles& tiles)
      : states(reinterpret_cast<State*>(memory)),
        floors(states + tiles.elements),
        flags(reinterpret_cast<unsigned*>(floors + tiles.lines * 2 * search_blocks(tiles.n))),
        floors_per_line(2 * search_blocks(tiles.n)) {}

  // Empties the summaries, thread `first` of `step` threads.
  SEGLOSS_INLINE void reset(const LineTiles& tiles, int64_t first, int64_t step) const {
    for (int64_t w = first; w < line_flag_words(tiles.lines); w += step) flags[w] = 0;
    for (int64_t f = first; f < tiles.lines * floors_per_line; f += step) {
      floors[f] = State(infinite_distance());
    }
  }

  // Loads element e of tile t, folding it into its line's flags and its
  // block's floors.
  SEGLOSS_INLINE void load(const State* state, const LineTiles& tiles, int64_t t,
                           int64_t e) const {
    const TileElement el = tiles.element(t, e);
    if (!el.valid) return;
    const State own = state[el.offset];
    states[e] = own;
    Updates::flags_or(flags + el.line / 8, line_flags(own) << line_flag_shift(el.line));
    State* block = floors + el.line * floors_per_line + 2 * (el.q / kSearchBlock);
    Updates::floor_min(block, binary_floor_share(own, true));
    Updates::floor_min(block + 1, binary_floor_share(own, false));
  }

  // Element e's new state from its line in the tile (skipping blocks), given
  // to store(offset, state): in place, or on the last pass, its map.
  template <typename Store>
  SEGLOSS_INLINE void search(const LineTiles& tiles, int64_t t, int64_t e, double spacing,
                             const Store& store) const {
    const TileElement el = tiles.element(t, e);
    if (!el.valid) return;
    const unsigned line = flags[el.line / 8] >> line_flag_shift(el.line);
    store(el.offset, line_needs_search(line)
                         ? nearest_on_line(states + e, tiles.width, el.q, tiles.n, spacing,
                                           floors + el.line * floors_per_line)
                         : states[e]);
  }
};

// Where a maps pass puts a pixel's new state (BinaryTile::search's store):
// in place, or on the last pass (with `out`) its map's value, 0 in an image
// without both classes (`foreground` counts each image's foreground pixels).
template <typename State, typename Count>
struct BinaryPassOutput {
  State* state;
  float* out;
  DistanceMap map;
  const Count* foreground;
  int64_t pixels;

  SEGLOSS_INLINE void operator()(int64_t offset, State next) const {
    if (out == nullptr) {
      state[offset] = next;
    } else {
      out[offset] = has_both_classes(int64_t(foreground[offset / pixels]), pixels)
                        ? distance_map_value<float>(map, double(next))
                        : 0.0f;
    }
  }
};

}  // namespace segloss::core
