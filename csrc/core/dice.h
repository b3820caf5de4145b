// Per-pixel math of the Dice loss family, shared by the CPU and CUDA kernels.
//
// For each (n, c) the forward accumulates
//   I = sum m p y,   P = sum m p^gamma,   T = sum m y^gamma
// (and D = sum m |p - y|^gamma for the soft-label losses) over the pixels,
// with p the activated input, y the target and m the mask (0 for masked or
// ignored pixels). The backward turns dL/dI, dL/dP (and dL/dD) into
//   dL/dp = m (dL/dI y + dL/dP gamma p^(gamma - 1)
//              + dL/dD gamma |p - y|^(gamma - 1) sign(p - y))
// and then through the activation.
#pragma once

#include <cstdint>

#include "bce.h"
#include "float_math.h"
#include "focal.h"
#include "labels.h"
#include "platform.h"
#include "softmax.h"

namespace segloss::core {

enum class Activation { Sigmoid, Softmax, None };

// gamma = 1 and 2 get exact, cheap code; any other gamma >= 1 goes through
// exp(gamma log v), which gives 0 at v = 0 without a special case.
enum class GammaKind { One, Two, General };

template <GammaKind K, typename T>
SEGLOSS_INLINE T power(T v, T gamma) {
  if constexpr (K == GammaKind::One) {
    return v;
  } else if constexpr (K == GammaKind::Two) {
    return v * v;
  } else {
    return exp_(gamma * log_(v));
  }
}

// weight * value, but exactly 0 where the weight is 0 whatever the value
// (+-inf, NaN): a class with no target mass at a pixel adds nothing to its
// cross-entropy, so only the target's logit matters, as in
// F.cross_entropy with class indices (a -inf logit of another class stays
// finite); and a pixel that does not count (m = 0) gets a gradient of 0 even
// when the mean's divisor is 0, as PyTorch's ignore_index gives.
template <typename T>
SEGLOSS_INLINE T weighted_term(T weight, T value) {
  return weight == T(0) ? T(0) : weight * value;
}

// d/dv v^gamma = gamma v^(gamma - 1); 0 at v = 0 for gamma > 1. That 0 is
// explicit because a gamma just above 1 (below 1 + 2^-24) rounds to 1 in
// float, where (gamma - 1) log 0 would be 0 * -inf = NaN.
template <GammaKind K, typename T>
SEGLOSS_INLINE T power_derivative(T v, T gamma) {
  if constexpr (K == GammaKind::One) {
    return T(1);
  } else if constexpr (K == GammaKind::Two) {
    return T(2) * v;
  } else {
    return v == T(0) ? T(0) : gamma * exp_((gamma - T(1)) * log_(v));
  }
}

// dL/dp at one pixel of one channel, from dL/dI and dL/dP of its (n, c);
// exactly 0 at a pixel that does not count (m = 0), even where dL/dI or dL/dP
// overflows to +-inf (a tiny smooth_dr: dL/dI = -2 / smooth_dr).
template <GammaKind K, typename T>
SEGLOSS_INLINE T dice_grad_wrt_probability(T m, T p, T y, T dI, T dP, T gamma) {
  return weighted_term(m, dI * y + dP * power_derivative<K>(p, gamma));
}

// |p - y|, the base of the soft-label column D.
template <typename T>
SEGLOSS_INLINE T absolute_difference(T p, T y) {
  return p > y ? p - y : y - p;
}

// d/dp |p - y|^gamma = gamma |p - y|^(gamma - 1) sign(p - y), 0 at p = y
// (sign(0) = 0, as torch's abs and vector_norm backward give).
template <GammaKind K, typename T>
SEGLOSS_INLINE T difference_derivative(T p, T y, T gamma) {
  const T sign = p > y ? T(1) : (p < y ? T(-1) : T(0));
  return sign * power_derivative<K>(absolute_difference(p, y), gamma);
}

// dL/dp of the soft-label sums (I, P, T, D), as dice_grad_wrt_probability.
template <GammaKind K, typename T>
SEGLOSS_INLINE T soft_dice_grad_wrt_probability(T m, T p, T y, T dI, T dP, T dD, T gamma) {
  return weighted_term(m, dI * y + dP * power_derivative<K>(p, gamma) +
                              dD * difference_derivative<K>(p, y, gamma));
}

// -log(sigmoid(x)) and -log(1 - sigmoid(x)) for the cross-entropy half of
// Dice + CE, stable for every finite x: softplus(-x) and softplus(x).
template <typename T>
struct SigmoidNll {
  T positive;  // -log(sigmoid(x))
  T negative;  // -log(1 - sigmoid(x))
};

// At x = -inf the negative term is NaN, not 0: PyTorch's BCE-with-logits (and
// segloss.binary_cross_entropy_with_logits, core::LogitsBce) computes (1 - y) x - log(sigmoid(x)),
// which is -inf + inf there, and Dice + CE gives the same numbers. The
// min(x, 0) - min(x, 0) term is 0 for every other x.
template <typename T>
SEGLOSS_INLINE SigmoidNll<T> sigmoid_nll(T x) {
  const T softplus_neg_abs = log1p_unit_(exp_nonpositive_(x < T(0) ? x : -x));  // log(1 + exp(-|x|))
  const T min_x_0 = x < T(0) ? x : T(0);
  return {softplus_neg_abs - min_x_0,
          softplus_neg_abs + (x > T(0) ? x : T(0)) + (min_x_0 - min_x_0)};
}

// d/dx of the sigmoid CE columns' terms at one element, from p = sigmoid(x)
// and dL/d(negative NLL), dL/d(positive NLL): d(-log(1 - p))/dx = p and
// d(-log p)/dx = p - 1.
template <typename T>
SEGLOSS_INLINE T sigmoid_ce_grad(T m, T y, T p, T d_negative, T d_positive) {
  return weighted_term(m, d_negative * (T(1) - y) * p + d_positive * y * (p - T(1)));
}

// The softmax CE columns' terms at one pixel are sum_c a_c m (-log p_c) with
// a_c = d_c y_c + e_c, d_c = dL/d(positive NLL of channel c) and
// e_c = dL/d(smoothing NLL of channel c) (which counts every class).
template <typename T>
SEGLOSS_INLINE T softmax_ce_coefficient(T d_positive, T y, T d_smoothing) {
  return d_positive * y + d_smoothing;
}

// d/dx_k of those terms: m (p_k sum_c a_c - a_k).
template <typename T>
SEGLOSS_INLINE T softmax_ce_grad(T m, T p_k, T sum_a, T a_k) {
  return weighted_term(m, p_k * sum_a - a_k);
}

// d/dx of the sigmoid focal columns' terms at one element, from
// d_positive = dL/d(focal positive) and d_negative = dL/d(focal negative):
// m (d_positive y + d_negative (1 - y)) d(M B)/dx (core/focal.h).
template <typename T>
SEGLOSS_INLINE T sigmoid_focal_grad(T m, T y, T x, T d_positive, T d_negative, T focal_gamma) {
  return weighted_term(m * (d_positive * y + d_negative * (T(1) - y)),
                       sigmoid_focal_derivative(x, y, focal_gamma));
}

// The softmax focal columns' terms at one pixel are sum_c m y_c f(l_c) with
// l_c = log p_c; their gradient with respect to the logits is that of the
// softmax CE columns (softmax_ce_grad) with a_c = -d_c y_c f'(l_c),
// d_c = dL/d(focal positive of channel c): 0 where y_c = 0.
template <typename T>
SEGLOSS_INLINE T softmax_focal_coefficient(T d_positive, T y, T log_p, T p, T focal_gamma) {
  return weighted_term(d_positive * y, -softmax_focal_log_derivative(log_p, p, focal_gamma));
}

// Columns of the per-(n, c) sums: Dice's three, then either the soft-label
// losses' one, Dice + CE's five or Dice + focal's three (one SumsLayout each).
enum DiceColumn : int {
  kIntersection = 0,     // sum m p y
  kPrediction = 1,       // sum m p^gamma
  kTruth = 2,            // sum m y^gamma
  kDifference = 3,       // sum m |p - y|^gamma (SoftDice)
  kNegativeNll = 3,      // sum m (1 - y) (-log(1 - p)), sigmoid only (DiceCe)
  kPositiveNll = 4,      // sum m y (-log p)
  kTargetMass = 5,       // sum m y
  kPixels = 6,           // sum m
  kSmoothingNll = 7,     // sum m (-log p), softmax only: label smoothing's term
  kFocalPositive = 3,    // sum m y f, f the unweighted focal loss (DiceFocal)
  kFocalNegative = 4,    // sum m (1 - y) f, sigmoid focal only
  kFocalPixels = 5,      // sum m
  kDiceColumns = 3,
  kSoftDiceColumns = 4,
  kDiceFocalColumns = 6,
  kDiceCeColumns = 8,
};

// Which columns the sums op computes: the region losses' (Dice), with the
// soft-label column (SoftDice: MONAI's soft_label=True, TP = (P + T - D) / 2),
// Dice + CE's, or Dice + focal's (the focal loss from the logits, by a
// sigmoid per element or a softmax over the channels, whatever the Dice's
// activation: MONAI's DiceFocalLoss(softmax=True) has a sigmoid focal loss).
enum class SumsLayout { Dice, SoftDice, DiceCe, DiceFocal };

SEGLOSS_INLINE int column_count(SumsLayout layout) {
  return layout == SumsLayout::Dice       ? kDiceColumns
         : layout == SumsLayout::SoftDice ? kSoftDiceColumns
         : layout == SumsLayout::DiceCe   ? kDiceCeColumns
                                          : kDiceFocalColumns;
}

// What one pixel adds to each column of its (n, c): the sums are these terms
// summed over the pixels. The one definition of the columns; the CPU loops
// and the CUDA kernels only add the terms up.
template <typename T>
struct ColumnTerms {
  T intersection, prediction, truth;  // the Dice columns
  T difference;                       // the soft-label column
  T negative_nll, positive_nll, target_mass, pixels, smoothing_nll;  // Dice + CE's
  T focal_positive, focal_negative;  // Dice + focal's (and pixels)
};

// The Dice columns' terms at a pixel with mask m, activated input p, target y.
template <GammaKind K, typename T>
SEGLOSS_INLINE ColumnTerms<T> dice_terms(T m, T p, T y, T gamma) {
  ColumnTerms<T> t{};
  t.intersection = m * p * y;
  t.prediction = m * power<K>(p, gamma);
  t.truth = m * power<K>(y, gamma);
  return t;
}

// The soft-label losses' terms: Dice's and m |p - y|^gamma.
template <GammaKind K, typename T>
SEGLOSS_INLINE ColumnTerms<T> soft_dice_terms(T m, T p, T y, T gamma) {
  ColumnTerms<T> t = dice_terms<K>(m, p, y, gamma);
  t.difference = m * power<K>(absolute_difference(p, y), gamma);
  return t;
}

// Dice + CE's terms with a sigmoid: the cross-entropy from the logit x.
template <GammaKind K, typename T>
SEGLOSS_INLINE ColumnTerms<T> sigmoid_dice_ce_terms(T m, T p, T y, T x, T gamma) {
  ColumnTerms<T> t = dice_terms<K>(m, p, y, gamma);
  const SigmoidNll<T> nll = sigmoid_nll(x);
  t.negative_nll = m * (T(1) - y) * nll.negative;
  t.positive_nll = m * y * nll.positive;
  t.target_mass = m * y;
  t.pixels = m;
  return t;
}

// Dice + CE's terms with a softmax: -log p from the pixel's normaliser; the
// negative column stays 0.
template <GammaKind K, typename T>
SEGLOSS_INLINE ColumnTerms<T> softmax_dice_ce_terms(T m, T p, T y, T x,
                                                    const LogNormalizer<T>& normalizer,
                                                    T gamma) {
  ColumnTerms<T> t = dice_terms<K>(m, p, y, gamma);
  const T nll = normalizer.negative_log_p(x);
  t.positive_nll = weighted_term(m * y, nll);
  t.smoothing_nll = weighted_term(m, nll);
  t.target_mass = m * y;
  t.pixels = m;
  return t;
}

// Dice + focal's terms with a sigmoid focal loss from the logit x (p is the
// Dice's activated input, a sigmoid or a softmax).
template <GammaKind K, typename T>
SEGLOSS_INLINE ColumnTerms<T> sigmoid_dice_focal_terms(T m, T p, T y, T x, T gamma,
                                                       T focal_gamma) {
  ColumnTerms<T> t = dice_terms<K>(m, p, y, gamma);
  const T f = sigmoid_focal_value(x, y, focal_gamma);
  t.focal_positive = weighted_term(m * y, f);
  t.focal_negative = weighted_term(m * (T(1) - y), f);
  t.pixels = m;
  return t;
}

// Dice + focal's terms with a softmax focal loss, log p from the pixel's
// normaliser; the negative column stays 0.
template <GammaKind K, typename T>
SEGLOSS_INLINE ColumnTerms<T> softmax_dice_focal_terms(T m, T p, T y, T x,
                                                       const LogNormalizer<T>& normalizer,
                                                       T gamma, T focal_gamma) {
  ColumnTerms<T> t = dice_terms<K>(m, p, y, gamma);
  t.focal_positive =
      weighted_term(m * y, softmax_focal_value(-normalizer.negative_log_p(x), focal_gamma));
  t.pixels = m;
  return t;
}

// Adds a pixel's terms to the running sums of one (n, c): sums[k] for the
// kColumns columns (the column_count of a SumsLayout).
template <int kColumns, typename T>
SEGLOSS_INLINE void add_terms(T* sums, const ColumnTerms<T>& t) {
  sums[kIntersection] += t.intersection;
  sums[kPrediction] += t.prediction;
  sums[kTruth] += t.truth;
  if constexpr (kColumns == kSoftDiceColumns) sums[kDifference] += t.difference;
  if constexpr (kColumns == kDiceCeColumns) {
    sums[kNegativeNll] += t.negative_nll;
    sums[kPositiveNll] += t.positive_nll;
    sums[kTargetMass] += t.target_mass;
    sums[kPixels] += t.pixels;
    sums[kSmoothingNll] += t.smoothing_nll;
  }
  if constexpr (kColumns == kDiceFocalColumns) {
    sums[kFocalPositive] += t.focal_positive;
    sums[kFocalNegative] += t.focal_negative;
    sums[kFocalPixels] += t.pixels;
  }
}

// sigmoid'(x) from p = sigmoid(x).
template <typename T>
SEGLOSS_INLINE T sigmoid_derivative_from_output(T p) {
  return p * (T(1) - p);
}

}  // namespace segloss::core
