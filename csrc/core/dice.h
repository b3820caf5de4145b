// Per-pixel math of the Dice loss family, shared by the CPU and CUDA kernels.
//
// For each (n, c) the forward accumulates
//   I = sum m p y,   P = sum m p^gamma,   T = sum m y^gamma
// over the pixels, with p the activated input, y the target and m the mask
// (0 for masked or ignored pixels). The backward turns dL/dI and dL/dP into
//   dL/dp = m (dL/dI y + dL/dP gamma p^(gamma - 1))
// and then through the activation.
#pragma once

#include <cstdint>

#include "bce.h"
#include "float_math.h"
#include "platform.h"

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

// d/dv v^gamma = gamma v^(gamma - 1); 0 at v = 0 for gamma > 1.
template <GammaKind K, typename T>
SEGLOSS_INLINE T power_derivative(T v, T gamma) {
  if constexpr (K == GammaKind::One) {
    return T(1);
  } else if constexpr (K == GammaKind::Two) {
    return T(2) * v;
  } else {
    return gamma * exp_((gamma - T(1)) * log_(v));
  }
}

// dL/dp at one pixel of one channel, from dL/dI and dL/dP of its (n, c).
template <GammaKind K, typename T>
SEGLOSS_INLINE T dice_grad_wrt_probability(T m, T p, T y, T dI, T dP, T gamma) {
  return m * (dI * y + dP * power_derivative<K>(p, gamma));
}

// -log(sigmoid(x)) and -log(1 - sigmoid(x)) for the cross-entropy half of
// Dice + CE, stable for every finite x: softplus(-x) and softplus(x).
template <typename T>
struct SigmoidNll {
  T positive;  // -log(sigmoid(x))
  T negative;  // -log(1 - sigmoid(x))
};

template <typename T>
SEGLOSS_INLINE SigmoidNll<T> sigmoid_nll(T x) {
  const T softplus_neg_abs = log1p_unit_(exp_(x < T(0) ? x : -x));  // log(1 + exp(-|x|))
  return {softplus_neg_abs - (x < T(0) ? x : T(0)), softplus_neg_abs + (x > T(0) ? x : T(0))};
}

// Columns of the per-(n, c) sums: Dice's three, then Dice + CE's four.
enum DiceColumn : int {
  kIntersection = 0,     // sum m p y
  kPrediction = 1,       // sum m p^gamma
  kTruth = 2,            // sum m y^gamma
  kNegativeNll = 3,      // sum m (1 - y) (-log(1 - p)), sigmoid only
  kPositiveNll = 4,      // sum m y (-log p)
  kTargetMass = 5,       // sum m y
  kPixels = 6,           // sum m
  kDiceColumns = 3,
  kDiceCeColumns = 7,
};

// The label value that means "foreground" for channel c of a class-index
// target: with one channel the map is the binary mask itself (label 1),
// otherwise channel c is label c.
SEGLOSS_INLINE std::int64_t label_of_channel(std::int64_t channels, std::int64_t c) {
  return channels == 1 ? 1 : c;
}

// Valid labels lie in [0, number_of_labels(channels)) (or equal ignore_index).
SEGLOSS_INLINE std::int64_t number_of_labels(std::int64_t channels) {
  return channels == 1 ? 2 : channels;
}

// sigmoid'(x) from p = sigmoid(x).
template <typename T>
SEGLOSS_INLINE T sigmoid_derivative_from_output(T p) {
  return p * (T(1) - p);
}

}  // namespace segloss::core
