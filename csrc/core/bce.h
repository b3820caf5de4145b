// Per-element binary cross-entropy math, shared by the CPU and CUDA kernels.
//
// T is the compute type: float for float/half/bfloat16 inputs, double for
// double. The formulas follow PyTorch's own kernels term by term, so that with
// pos_weight = 1 and weight = 1 the results agree with torch.nn.functional to
// rounding.
#pragma once

#include "float_math.h"
#include "platform.h"

namespace segloss::core {

// log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|)): finite for every finite x.
// A NaN x gives NaN (the losses' (1 - y) x term propagates it too).
template <typename T>
SEGLOSS_INLINE T log_sigmoid(T x) {
  const T neg_abs = x < T(0) ? x : -x;
  const T min_x_0 = x < T(0) ? x : T(0);
  return min_x_0 - log1p_unit_(exp_nonpositive_(neg_abs));  // exp(-|x|) in [0, 1]
}

// 1 / (1 + exp(-x)) without overflow for large |x|.
template <typename T>
SEGLOSS_INLINE T sigmoid(T x) {
  const T e = exp_nonpositive_(x < T(0) ? x : -x);  // exp(-|x|) in (0, 1]
  const T s = T(1) / (T(1) + e);
  return x < T(0) ? e * s : s;
}

// log clamped below at -100, as torch.nn.BCELoss does, so that p = 0 or 1
// gives a finite loss. NaN passes through.
template <typename T>
SEGLOSS_INLINE T clamped_log_term(T log_value) {
  return log_value < T(-100) ? T(-100) : log_value;
}

// Loss and d(loss)/d(input) when the input is a probability p in [0, 1]:
//   loss = -pos_weight * y * log(p) - (1 - y) * log(1 - p)
struct ProbabilityBce {
  template <typename T>
  static SEGLOSS_INLINE T loss(T p, T y, T pos_weight) {
    const T log_p = clamped_log_term(log_(p));
    const T log_1mp = clamped_log_term(log1p_(-p));
    return (y - T(1)) * log_1mp - (pos_weight * y) * log_p;
  }

  // -pos_weight * y / p + (1 - y) / (1 - p), over one denominator that is kept
  // away from 0 as in PyTorch's BCE backward, whose epsilon is the float
  // 1e-12f also for double inputs.
  template <typename T>
  static SEGLOSS_INLINE T grad(T p, T y, T pos_weight) {
    const T epsilon = T(1e-12f);
    const T denominator = (T(1) - p) * p;
    const T safe = denominator < epsilon ? epsilon : denominator;
    return ((p - y) - (pos_weight - T(1)) * y * (T(1) - p)) / safe;
  }

  // Probabilities outside [0, 1] (NaN excluded: it propagates).
  template <typename T>
  static SEGLOSS_INLINE bool out_of_domain(T p) {
    return p < T(0) || p > T(1);
  }
};

// Loss and d(loss)/d(input) when the input is a logit x:
//   loss = (1 - y) * x - (1 + (pos_weight - 1) * y) * log(sigmoid(x))
// which equals -pos_weight * y * log(sigmoid(x)) - (1 - y) * log(1 - sigmoid(x)).
struct LogitsBce {
  template <typename T>
  static SEGLOSS_INLINE T loss(T x, T y, T pos_weight) {
    const T log_weight = (pos_weight - T(1)) * y + T(1);
    return (T(1) - y) * x - log_weight * log_sigmoid(x);
  }

  // (1 + (pos_weight - 1) * y) * sigmoid(x) - pos_weight * y
  template <typename T>
  static SEGLOSS_INLINE T grad(T x, T y, T pos_weight) {
    const T log_weight = (pos_weight - T(1)) * y + T(1);
    return log_weight * sigmoid(x) - pos_weight * y;
  }

  template <typename T>
  static SEGLOSS_INLINE bool out_of_domain(T) {
    return false;
  }
};

}  // namespace segloss::core
