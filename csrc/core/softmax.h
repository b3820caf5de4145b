// The softmax over a pixel's C logits, with its log-sum-exp and its
// Jacobian-vector product, shared by every kernel that needs it (Dice,
// Dice + CE, the multi-class shape-aware cross-entropy; CPU and CUDA).
//
// The steps are per element so that any loop order can use them: the CPU
// loops run each step over a row of pixels, the CUDA kernels over one pixel's
// channels.
//   1. m = max_k x_k                          (larger_of, folded over k)
//   2. e_k = exp(x_k - m),  s = sum_k e_k     (shifted_exp; s in [1, C])
//   3. p_k = e_k / s,  -log p_k = log s - (x_k - m)   (log_normalizer)
// Subtracting the maximum keeps exp from overflowing.
#pragma once

#include "float_math.h"
#include "platform.h"

namespace segloss::core {

// The running maximum of step 1.
template <typename T>
SEGLOSS_INLINE T larger_of(T running, T x) {
  return x > running ? x : running;
}

template <typename T>
SEGLOSS_INLINE T shifted_exp(T x, T max_x) {
  return exp_(x - max_x);
}

// A pixel's log-softmax normaliser, its maximum m and l = log s: -log p_k
// = l - (x_k - m), in torch's log_softmax order. Taking x_k - m first keeps
// the error at eps (|x_k - m| + l); (m + l) - x_k, from the log-sum-exp,
// would lose eps |m| (in float32 1e-5 at logits of 100, 1e-3 at 1e4).
template <typename T>
struct LogNormalizer {
  T max_x;
  T log_sum;

  SEGLOSS_INLINE T negative_log_p(T x) const { return log_sum - (x - max_x); }
};

// The normaliser from the maximum m and s = sum_k exp(x_k - m). s lies in
// [1, C] (its largest term is 1), so its log needs no special values; a NaN
// logit makes s NaN, which s - s carries into the result.
template <typename T>
SEGLOSS_INLINE LogNormalizer<T> log_normalizer(T max_x, T sum_exp_shifted) {
  return {max_x, log_normal_(sum_exp_shifted) + (sum_exp_shifted - sum_exp_shifted)};
}

// The softmax's Jacobian-vector product at channel k: dL/dx_k from p_k,
// g_k = dL/dp_k and dot = sum_j p_j g_j.
template <typename T>
SEGLOSS_INLINE T softmax_jvp(T p_k, T grad_p_k, T dot) {
  return p_k * (grad_p_k - dot);
}

}  // namespace segloss::core
