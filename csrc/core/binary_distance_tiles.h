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
// new states in place. Lines too long for any tile are swept from global
// memory into a second buffer instead (LineTiles::tiles == 0).
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

// The new signed state of the pixel at `own`, position q of a line of n
// pixels whose states lie at `stride` apart: the minimum over the parabolas
// of the pixel's run and of the run's neighbours of the other class (base
// 0), as binary_distance_line gives it with kOtherClass.
//
// Searched outward from the pixel on both sides; a side ends at the other
// class (nothing beyond can be nearer) or the line's end, and the search
// ends where a parabola's rise alone reaches the best so far: every farther
// parabola is at least as high. The values are rounded as the envelope and
// the short runs round them (parabola_rise, then parabola_value), so at
// unit spacing they are the exact minimum, the CPU's bit for bit, in float
// (where binary_state_fits_float) as in double.
template <typename T>
SEGLOSS_INLINE T nearest_on_line(const T* own, int64_t stride, int64_t q, int64_t n,
                                 double spacing) {
  const T state = own[0];
  const bool foreground = state > 0;
  T best = foreground ? state : -state;
  bool left = q > 0, right = q + 1 < n;
  for (int64_t t = 1; left || right; ++t) {
    const T rise = parabola_rise<T>(spacing, t);
    if (!(rise < best)) break;
    if (left) {
      const T other = own[-t * stride];
      if ((other > 0) != foreground) {
        best = rise;  // rise < best: the other class, base 0
        left = false;
      } else {
        const T value = parabola_value(foreground ? other : -other, rise);
        best = value < best ? value : best;
        left = q - t > 0;
      }
    }
    if (right) {
      const T other = own[t * stride];
      if ((other > 0) != foreground) {
        best = rise < best ? rise : best;
        right = false;
      } else {
        const T value = parabola_value(foreground ? other : -other, rise);
        best = value < best ? value : best;
        right = q + t + 1 < n;
      }
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

}  // namespace segloss::core
