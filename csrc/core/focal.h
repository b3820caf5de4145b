// The sigmoid focal loss (Lin et al. 2017) as MONAI's sigmoid_focal_loss
// writes it, which torchvision's sigmoid_focal_loss equals for binary
// targets. With x the logit, y the target and gamma >= 0:
//   loss = A M B
//   B = (1 - y) x - log sigmoid(x)               the BCE of the logit (computed
//       as max(x, 0) - x y + log(1 + exp(-|x|)), which does not cancel)
//   M = sigmoid(z)^gamma = exp(gamma log sigmoid(z)),  z = x (1 - 2y)
//   A = alpha y + (1 - alpha)(1 - y)             a scalar alpha,
//       [y == 1] ? a : 1                          a per-class alpha a (MONAI's sequence),
//       1                                         no alpha.
// For y in {0, 1}, M is (1 - p_t)^gamma. For soft targets MONAI's M differs
// from torchvision's (1 - p_t)^gamma with p_t = p y + (1 - p)(1 - y); we
// follow MONAI.
//   dB/dx = sigmoid(x) - y,   dM/dx = gamma M sigmoid(-z) (1 - 2y)
// M's derivative goes through log sigmoid, so it is finite for every gamma,
// also 0 < gamma < 1 at p_t = 1, where d(1 - p_t)^gamma / dp_t is infinite.
// gamma = 0 is the BCE exactly for finite x (M = 1, the focusing term 0).
// The unweighted value and derivative are functions of their own, which
// SigmoidFocal and the Dice + focal sums (core/dice.h) share; so is the
// softmax focal loss's math (per class, -(1 - p)^gamma log p), shared by the
// multi-class cross-entropy (core/cross_entropy.h) and the Dice + focal sums.
#pragma once

#include <cmath>
#include <limits>

#include "bce.h"

namespace segloss::core {

// These take no branch on gamma, so that the CPU loops that call them
// vectorise: log sigmoid(z) is kept above -max so that gamma = 0 gives M = 1
// even at z = -inf (where exp(0 * -inf) would be NaN), and the focusing term
// is gamma times a finite value. They are written over the logistic parts
// of x and of z (bce.h), which share one exp each; for a target y in {0, 1},
// |z| = |x| and the parts of z are those of x, so the binary-target forms
// evaluate one exp(-|x|) and give the same bits as the general ones.

// M = sigmoid(z)^gamma = exp(gamma log sigmoid(z)), from log(1 + exp(-|z|)).
template <typename T>
SEGLOSS_INLINE T sigmoid_focal_modulation(T z, T log1p_exp_z, T gamma) {
  const T log_s = (z < T(0) ? z : T(0)) - log1p_exp_z;
  const T lowest = -std::numeric_limits<T>::max();
  return exp_(gamma * (log_s < lowest ? lowest : log_s));
}

// B = (1 - y) x - log sigmoid(x) as x (1 - y) (x > 0) or -x y (x <= 0), plus
// log(1 + exp(-|x|)): the first form subtracts two numbers near x for x < 0
// and y = 0. A zero factor gives 0 also for x = +-inf, so that a logit of
// +-inf on the right side of its target has B = 0 (PyTorch's BCE gives NaN).
template <typename T>
SEGLOSS_INLINE T logit_bce(T x, T y, T log1p_exp_x) {
  const T one_minus_y = T(1) - y;
  const T positive_part = one_minus_y == T(0) ? T(0) : x * one_minus_y;
  const T negative_part = y == T(0) ? T(0) : -x * y;
  return (x > T(0) ? positive_part : negative_part) + log1p_exp_x;
}

// d(M B)/dx = M (sigmoid(x) - y) + gamma M sigmoid(-z) (1 - 2y) B, the
// focusing term 0 where sigmoid(-z) is (at a logit of +-inf on the wrong
// side of its target B is inf: the BCE's gradient, finite, remains).
template <typename T>
SEGLOSS_INLINE T sigmoid_focal_derivative_from(T x, T y, T z, const LogisticParts<T>& px,
                                               T log1p_exp_z, T sigmoid_neg_z, T gamma) {
  const T m = sigmoid_focal_modulation(z, log1p_exp_z, gamma);
  const T s_b = sigmoid_neg_z == T(0) ? T(0) : sigmoid_neg_z * logit_bce(x, y, px.log1p_exp);
  return m * (px.sigmoid - y) + gamma * m * (T(1) - y - y) * s_b;
}

// The unweighted sigmoid focal loss M B at one element (no alpha): the value
// that SigmoidFocal scales by its alpha factor, and that Dice + focal sums
// (its alpha is applied to the sums).
template <typename T>
SEGLOSS_INLINE T sigmoid_focal_value(T x, T y, T gamma) {
  const T z = x * (T(1) - y - y);
  const T log1p_exp_z = logistic_parts(z).log1p_exp;
  return sigmoid_focal_modulation(z, log1p_exp_z, gamma) *
         logit_bce(x, y, logistic_parts(x).log1p_exp);
}

template <typename T>
SEGLOSS_INLINE T sigmoid_focal_derivative(T x, T y, T gamma) {
  const T z = x * (T(1) - y - y);
  const LogisticParts<T> pz = logistic_parts(z);
  return sigmoid_focal_derivative_from(x, y, z, logistic_parts(x), pz.log1p_exp, pz.sigmoid_neg,
                                       gamma);
}

// The same for a target y in {0, 1} (z = x or -x): sigmoid(-z) is sigmoid(-x)
// for y = 0 and sigmoid(x) for y = 1.
template <typename T>
SEGLOSS_INLINE T sigmoid_focal_value_binary_target(T x, T y, T gamma) {
  const T z = x * (T(1) - y - y);
  const T log1p_exp_x = logistic_parts(x).log1p_exp;
  return sigmoid_focal_modulation(z, log1p_exp_x, gamma) * logit_bce(x, y, log1p_exp_x);
}

template <typename T>
SEGLOSS_INLINE T sigmoid_focal_derivative_binary_target(T x, T y, T gamma) {
  const T z = x * (T(1) - y - y);
  const LogisticParts<T> px = logistic_parts(x);
  const T sigmoid_neg_z = y == T(0) ? px.sigmoid_neg : px.sigmoid;
  return sigmoid_focal_derivative_from(x, y, z, px, px.log1p_exp, sigmoid_neg_z, gamma);
}

// The softmax focal loss of one class (MONAI's softmax_focal_loss; the
// focal form of the multi-class cross-entropy and the Dice + focal columns):
//   f = q^gamma (-log p),   q = 1 - p,
//   -df/dlog p = q^gamma (1 + gamma p (-log p) / q).
// As q -> 0, (-log p) / q -> 1, so the derivative stays finite for every
// gamma >= 0 (also 0 < gamma < 1, whose q^(gamma - 1) alone is infinite at
// q = 0). Callers compute q without the cancellation of 1 - p.

// q^gamma for q in [0, 1]: 1 at gamma = 0 (also at q = 0), 0 at q = 0 for
// gamma > 0. log q is kept above -max, and there is no select on gamma (g++
// does not vectorise the CPU loops with one).
template <typename T>
SEGLOSS_INLINE T focal_power(T q, T gamma) {
  const T log_q = log_(q);
  const T lowest = -std::numeric_limits<T>::max();
  return exp_(gamma * (log_q < lowest ? lowest : log_q));
}

// (-log p) / q, with its limit 1 at q = 0 (where -log p = 0).
template <typename T>
SEGLOSS_INLINE T nll_over_q(T nll, T q) {
  return q == T(0) ? T(1) : nll / (q == T(0) ? T(1) : q);
}

// -df/dlog p. p (-log p) / q is taken as 0 where p = 0 (-log p = inf), its
// limit.
template <typename T>
SEGLOSS_INLINE T focal_grad_factor(T q, T p, T nll, T gamma) {
  const T ratio = nll_over_q(nll, q);
  const T p_ratio = p == T(0) ? T(0) : p * ratio;
  return focal_power(q, gamma) * (T(1) + gamma * p_ratio);
}

// f from l = log p (x - lse, accurate where p is near 1); q = 1 - p is
// one_minus_exp(l) (float_math.h), without the cancellation of 1 - p.
template <typename T>
SEGLOSS_INLINE T softmax_focal_value(T l, T gamma) {
  return focal_power(one_minus_exp(l), gamma) * -l;
}

// df/dlog p from l and p: -1 at gamma = 0 (the cross-entropy's).
template <typename T>
SEGLOSS_INLINE T softmax_focal_log_derivative(T l, T p, T gamma) {
  return -focal_grad_factor(one_minus_exp(l), p, -l, gamma);
}

struct SigmoidFocal : PointwisePolicy {
  static constexpr const char* kAux = "alpha";  // per-class alpha, broadcast
  static constexpr int kMinParams = 1;          // gamma
  static constexpr int kMaxParams = 2;          // gamma, scalar alpha

  // No selects on the parameters (g++ would not vectorise the CPU loops):
  // the flags blend arithmetically (a reads 1 when absent).
  template <typename T>
  static SEGLOSS_INLINE T alpha_factor(T y, T a, const PointwiseParams<T>& params) {
    const T per_class = y == T(1) ? a : T(1);
    const T scalar = params.alpha * y + (T(1) - params.alpha) * (T(1) - y);
    const T without_aux = params.has_alpha * scalar + (T(1) - params.has_alpha);
    return params.has_aux * per_class + (T(1) - params.has_aux) * without_aux;
  }

  template <typename T>
  static SEGLOSS_INLINE T loss(T x, T y, T a, const PointwiseParams<T>& params) {
    return alpha_factor(y, a, params) * sigmoid_focal_value(x, y, params.gamma);
  }

  template <typename T>
  static SEGLOSS_INLINE T grad(T x, T y, T a, const PointwiseParams<T>& params) {
    return alpha_factor(y, a, params) * sigmoid_focal_derivative(x, y, params.gamma);
  }

  // Forms that a loop may call when every target is 0 or 1: the same values
  // from half the transcendental functions.
  static constexpr bool kBinaryTargetForms = true;

  template <typename T>
  static SEGLOSS_INLINE T loss_binary_target(T x, T y, T a, const PointwiseParams<T>& params) {
    return alpha_factor(y, a, params) * sigmoid_focal_value_binary_target(x, y, params.gamma);
  }

  template <typename T>
  static SEGLOSS_INLINE T grad_binary_target(T x, T y, T a, const PointwiseParams<T>& params) {
    return alpha_factor(y, a, params) * sigmoid_focal_derivative_binary_target(x, y, params.gamma);
  }

  static const char* invalid_params(const PointwiseParams<double>& params) {
    if (!(params.gamma >= 0)) return "gamma must be >= 0";
    if (params.has_alpha != 0 && !(params.alpha >= 0 && params.alpha <= 1)) {
      return "alpha must be in [0, 1]";
    }
    return nullptr;
  }
};

}  // namespace segloss::core
