// Per-pixel math of the weighted softmax cross-entropy (the multi-class
// shape-aware loss), shared by the CPU and CUDA kernels.
//
// At a pixel with logits x_0..x_{C-1}, class-index target t, per-pixel weight
// w (the U-Net weight map) and per-class weights c:
//   loss = a (-log p_t),   a = w c_t,   -log p_t = lse - x_t
//   d loss / d x_k = a (softmax_k - [k == t]),   softmax_k = exp(x_k - lse)
// An ignored pixel (t == ignore_index) has loss and gradient 0 and does not
// count in the means. -log p_t is computed as log(sum exp(x_k - max)) -
// (x_t - max) (core::LogNormalizer), which cannot overflow. Two variants
// below (never together): the focal loss (gamma > 0) and label smoothing;
// gamma = 0 and no smoothing is the plain loss above, computed by the same
// code as before they existed.
#pragma once

#include <cstdint>

#include "dice.h"
#include "focal.h"
#include "float_math.h"
#include "labels.h"
#include "platform.h"
#include "softmax.h"

namespace segloss::core {

// The pixel's loss, a (-log p_t); exactly 0 at ignored pixels, whatever the
// logits hold (as torch.nn.functional.cross_entropy).
template <typename T>
SEGLOSS_INLINE T weighted_nll(bool ignored, T coefficient, const LogNormalizer<T>& normalizer,
                              T x_target) {
  return ignored ? T(0) : coefficient * normalizer.negative_log_p(x_target);
}

// d loss / d x_k from e_k = exp(x_k - m) and 1 / sum_k e_k (m the maximum):
// scale (softmax_k - [k == t]), where scale is a times the incoming gradient
// (0 at ignored pixels).
template <typename T>
SEGLOSS_INLINE T weighted_nll_grad(T scale, T shifted_exp, T inverse_sum, bool is_target) {
  return scale * (shifted_exp * inverse_sum - (is_target ? T(1) : T(0)));
}

// ---------------------------------------------------------------------------
// The focal form (gamma > 0; Lin et al., as MONAI's softmax_focal_loss):
//   loss = a (1 - p_t)^gamma (-log p_t)
//   d loss / d x_k = a f (p_k - [k == t]),
//   f = q^gamma (1 + gamma p_t (-log p_t) / q),   q = 1 - p_t,
// which is -dL/dlog p_t / a (core::focal_grad_factor, focal.h). As q -> 0, (-log p_t) / q -> 1, so f stays
// finite for every gamma >= 0 (also 0 < gamma < 1, whose q^(gamma - 1) alone
// is infinite at q = 0). q is computed as (sum of the other classes' e_k) /
// (sum of all e_k), not 1 - p_t, which would cancel as p_t -> 1.

// -log p_t, accurate as p_t -> 1: where the target holds the maximum logit,
// e_t = 1 and s = 1 + other, so -log p_t = log1p(other) (log1p_unit_ takes
// [0, 1]: other <= 1 there, else p_t <= 1/2); elsewhere the normaliser's.
// NaN logits fail the comparison and reach the normaliser.
template <typename T>
SEGLOSS_INLINE T target_nll(T max_x, T sum_exp_shifted, T other_exp_shifted, T x_target) {
  const bool target_is_max = x_target == max_x && other_exp_shifted <= T(1);
  const T near_one = log1p_unit_(target_is_max ? other_exp_shifted : T(0));
  return target_is_max ? near_one
                       : log_normalizer(max_x, sum_exp_shifted).negative_log_p(x_target);
}

// The pixel's focal loss, a q^gamma (-log p_t); 0 at ignored pixels.
template <typename T>
SEGLOSS_INLINE T focal_nll(bool ignored, T coefficient, T q, T nll, T gamma) {
  return ignored ? T(0) : coefficient * focal_power(q, gamma) * nll;
}

// d loss / d x_k of the focal form: scale (p_k - [k == t]), scale = a f times
// the incoming gradient; p_t - 1 is taken as -q (no cancellation).
template <typename T>
SEGLOSS_INLINE T focal_nll_grad(T scale, T shifted_exp, T inverse_sum, bool is_target, T q) {
  return scale * (is_target ? -q : shifted_exp * inverse_sum);
}

// ---------------------------------------------------------------------------
// Label smoothing e (as F.cross_entropy(weight=c, label_smoothing=e)):
//   loss = (1 - e) a (-log p_t) + (e / C) m sum_k c_k (-log p_k),   a = m c_t
// over the same divisor as the plain loss (F.cross_entropy's weighted mean
// divides both terms by sum c_t). Its gradient is the Dice + CE's softmax CE
// gradient (core::softmax_ce_coefficient, core::softmax_ce_grad in dice.h)
// with a_k = (1 - e) a [k == t] + (e / C) m c_k.

// One class's term of the smoothing sum: c_k (-log p_k).
template <typename T>
SEGLOSS_INLINE T smoothing_nll(T class_weight, const LogNormalizer<T>& normalizer, T x) {
  return class_weight * normalizer.negative_log_p(x);
}

// The pixel's smoothed loss from weighted_nll's a (-log p_t) and the
// smoothing sum sum_k c_k (-log p_k); 0 at ignored pixels.
template <typename T>
SEGLOSS_INLINE T smoothed_nll(bool ignored, T target_term, T pixel_weight, T smoothing_sum,
                              T label_smoothing, T classes) {
  return ignored ? T(0)
                 : (T(1) - label_smoothing) * target_term +
                       label_smoothing / classes * pixel_weight * smoothing_sum;
}

}  // namespace segloss::core
