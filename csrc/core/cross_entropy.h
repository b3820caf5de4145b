// Per-pixel math of the weighted softmax cross-entropy (the multi-class
// shape-aware loss), shared by the CPU and CUDA kernels.
//
// At a pixel with logits x_0..x_{C-1}, class-index target t, per-pixel weight
// w (the U-Net weight map) and per-class weights c:
//   loss = a (lse - x_t),   a = w c_t,   lse = log(sum_k exp(x_k))
//   d loss / d x_k = a (softmax_k - [k == t]),   softmax_k = exp(x_k - lse)
// An ignored pixel (t == ignore_index) has loss and gradient 0 and does not
// count in the means. lse is computed as max + log(sum exp(x_k - max)), which
// cannot overflow.
#pragma once

#include <cstdint>

#include "float_math.h"
#include "labels.h"
#include "platform.h"
#include "softmax.h"

namespace segloss::core {

// The pixel's loss, a (lse - x_t); exactly 0 at ignored pixels, whatever the
// logits hold (as torch.nn.functional.cross_entropy).
template <typename T>
SEGLOSS_INLINE T weighted_nll(bool ignored, T coefficient, T lse, T x_target) {
  return ignored ? T(0) : coefficient * (lse - x_target);
}

// d loss / d x_k from e_k = exp(x_k - m) and 1 / sum_k e_k (m the maximum):
// scale (softmax_k - [k == t]), where scale is a times the incoming gradient
// (0 at ignored pixels).
template <typename T>
SEGLOSS_INLINE T weighted_nll_grad(T scale, T shifted_exp, T inverse_sum, bool is_target) {
  return scale * (shifted_exp * inverse_sum - (is_target ? T(1) : T(0)));
}

}  // namespace segloss::core
