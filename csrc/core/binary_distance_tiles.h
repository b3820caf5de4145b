// The pixel-parallel form of the binary sweep (binary_distance.h), as the
// CUDA kernels of the distance maps run it: every pixel of a pass computes
// its own new state, with no sequential envelope, from its line held in
// shared memory.
//
// Every pass, the first included, is the same line pass along one axis. The
// states start at +-inf (the other class not seen yet, signed by the
// pixel's class: initial_binary_state), and a pass gives each pixel the
// minimum over the parabolas of its run of one class and of the run's two
// neighbours of the other class (nearest_on_line): what binary_distance_line
// computes per run, and what pass 0's two scans give from the initial
// states. So the passes along axes 0, 1, ... of the states give the maps.
//
// Lines are swept in tiles (LineTiles): whole slabs of lines that lie
// together in memory, or groups of adjacent lines along an inner axis, so
// that a block's loads and stores are coalesced, whichever the axis. A
// tile's lines are its own: a block reads its tile, then writes its pixels'
// new states in place. Lines too long for any tile in shared memory are
// held in the same tiles in global memory (global_line_tiles).
//
// tests/cpp/binary_distance_tiles.cpp runs these functions, tile by tile as
// the kernels do, on the CPU; tests/test_distance_tiles.py compares its maps
// with the CPU driver's (bit for bit) and with SciPy.
#pragma once

#include <cstdint>

#include "binary_distance.h"
#include "line_tiles.h"
#include "platform.h"
#include "rounding.h"
#include "two_nearest.h"

namespace segloss::core {

// A pixel's state before any pass: the other class not seen yet.
template <typename T>
SEGLOSS_INLINE T initial_binary_state(bool foreground) {
  return foreground ? T(infinite_distance()) : -T(infinite_distance());
}

// Blocks of kSearchBlock positions (line_tiles.h) that the search skips
// whole. Each block of a line has two floors, one for each class of the
// pixel searching it ([0]: a foreground pixel's, [1]: a background
// pixel's): the least magnitude of the block's states of that class, or 0
// where the block holds a pixel of the other class (a parabola of base 0
// there); +inf for none. Every parabola of the block, t or more positions
// from the pixel, is then at least parabola_value(floor, rise(t)) (rounding
// is monotone): where that reaches the best so far, nothing in the block can
// lower it, nor can anything past a border in it (its rise alone reaches the
// best), so the search skips the block. So the search crosses long runs far
// from any border, as around a small object in a large image, 32 positions
// at a time, where its steps grew with the pixel's distance to the border.

// Position state `state`'s share of its block's floor for a pixel of the
// class `foreground_pixel`. Never negative, not even -0 (whose bit pattern
// is above every other), so the floors order as their bit patterns (the GPU
// takes their minimum as integers).
template <typename T>
SEGLOSS_INLINE T binary_floor_share(T state, bool foreground_pixel) {
  const bool foreground = state > 0;
  const T magnitude = foreground ? state : -state;
  return foreground == foreground_pixel && magnitude > T(0) ? magnitude : T(0);
}

// The new signed state of the pixel at `own`, position q of a line of n
// pixels whose states lie at `stride` apart: the minimum over the parabolas
// of the pixel's run and of the run's neighbours of the other class (base
// 0), as binary_distance_line gives it with kOtherClass.
//
// Searched outward from the pixel, the nearer side first; a side ends at
// the other class (nothing beyond can be nearer), where a parabola's rise
// alone reaches the best so far (every farther parabola is at least as
// high), or at the line's end. With `floors` (the line's blocks' floors,
// two per block), a side entering a block skips it where its floor allows.
// The minimum does not depend on the order of the offers. The values are
// rounded as the envelope and the short runs round them (parabola_rise, then
// parabola_value), so at unit spacing they are the exact minimum, the CPU's
// bit for bit, in float (where binary_state_fits_float) as in double.
template <typename T>
SEGLOSS_INLINE T nearest_on_line(const T* own, int64_t stride, int64_t q, int64_t n,
                                 double spacing, const T* floors = nullptr) {
  const T state = own[0];
  const bool foreground = state > 0;
  T best = foreground ? state : -state;
  OutwardWalk walk(q, n);
  while (walk.more()) {
    const int64_t t = walk.next_distance(), p = walk.position(t);
    const T rise = parabola_rise<T>(spacing, t);
    if (!(rise < best)) {
      walk.stop();
      continue;
    }
    if (floors != nullptr && walk.entering_block(t, p) &&
        !(parabola_value(floors[2 * (p / kSearchBlock) + (foreground ? 0 : 1)], rise) < best)) {
      walk.skip_block(p);
      continue;
    }
    const T other = own[(p - q) * stride];
    if ((other > 0) != foreground) {
      best = rise;  // rise < best: the other class, base 0
      walk.stop();
    } else {
      const T value = parabola_value(foreground ? other : -other, rise);
      best = value < best ? value : best;
      walk.step(t);
    }
  }
  return foreground ? best : -best;
}

// What a line's states say about its pass, as bits (or-ed over the line):
// a line needs no search when every state is infinite and all of one class
// (its states stay as they are). This keeps lines that pass no border, as in
// a volume around a small object, from an n-step search per pixel.
constexpr unsigned kLineFinite = 1, kLineForeground = 2, kLineBackground = 4;

template <typename T>
SEGLOSS_INLINE unsigned line_flags(T state) {
  const T magnitude = state < 0 ? -state : state;
  return (magnitude < T(infinite_distance()) ? kLineFinite : 0u) |
         (state > 0 ? kLineForeground : kLineBackground);
}

SEGLOSS_INLINE bool line_needs_search(unsigned flags) {
  return (flags & kLineFinite) != 0 ||
         (flags & (kLineForeground | kLineBackground)) == (kLineForeground | kLineBackground);
}

// A tile's flags: four bits per line (its summary in LineTiles), eight lines
// per 32-bit word.
constexpr int64_t kLineFlagBits = 4;
SEGLOSS_INLINE int64_t line_flag_words(int64_t lines) { return summary_words(lines, kLineFlagBits); }
SEGLOSS_INLINE unsigned line_flag_shift(int64_t line) { return unsigned(line % 8) * 4; }

// A tile's shared memory: its states, its lines' floors (2 search_blocks(n)
// per line, aligned as the states are), then its lines' flags.
template <typename T>
SEGLOSS_INLINE int64_t binary_summary_bits(int64_t n) {
  return kLineFlagBits + 2 * search_blocks(n) * 8 * int64_t(sizeof(T));
}

}  // namespace segloss::core
