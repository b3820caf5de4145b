// Per-element binary cross-entropy math, shared by the CPU and CUDA kernels.
//
// T is the compute type: float for float/half/bfloat16 inputs, double for
// double. The formulas follow PyTorch's own kernels term by term, so that with
// pos_weight = 1 and weight = 1 the results agree with torch.nn.functional to
// rounding.
#pragma once

#include "float_math.h"
#include "platform.h"
#include "pointwise_params.h"

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

// The logistic function's parts at x that share one exp(-|x|), for losses
// that need several of them: log(1 + exp(-|x|)) (log sigmoid(x) is
// min(x, 0) minus it), sigmoid(x) and sigmoid(-x) = 1 - sigmoid(x) without
// the cancellation. Each equals its function above bit for bit; what a caller
// leaves unused costs nothing once inlined.
template <typename T>
struct LogisticParts {
  T log1p_exp;    // log(1 + exp(-|x|))
  T sigmoid;      // sigmoid(x)
  T sigmoid_neg;  // sigmoid(-x)
};

template <typename T>
SEGLOSS_INLINE LogisticParts<T> logistic_parts(T x) {
  const T e = exp_nonpositive_(x < T(0) ? x : -x);
  const T s = T(1) / (T(1) + e);
  const T es = e * s;
  return {log1p_unit_(e), x < T(0) ? es : s, x < T(0) ? s : es};
}

// log clamped below at -100, as torch.nn.BCELoss does, so that p = 0 or 1
// gives a finite loss. NaN passes through.
template <typename T>
SEGLOSS_INLINE T clamped_log_term(T log_value) {
  return log_value < T(-100) ? T(-100) : log_value;
}

// What a pointwise loss policy does not override: no parameters, an optional
// per-element operand `a` (read as 1 when absent), every input in the domain.
// A policy provides loss(x, y, a, params) and grad(x, y, a, params), the loss
// and its derivative with respect to x, inline for host and device.
struct PointwisePolicy {
  static constexpr const char* kAux = "aux";  // the public name of the operand `a`
  static constexpr bool kAuxRequired = false;
  // Whether it also has loss_binary_target and grad_binary_target: the same
  // values, cheaper, where the caller knows every target is 0 or 1 (the CPU
  // loops check each block).
  static constexpr bool kBinaryTargetForms = false;
  static constexpr int kMinParams = 0;        // how many of (gamma, alpha) it takes
  static constexpr int kMaxParams = 0;
  static constexpr const char* kDomain = "";  // what out_of_domain rejects, for the error

  template <typename T>
  static SEGLOSS_INLINE bool out_of_domain(T) {
    return false;
  }
  // Why the parameters are invalid, or nullptr.
  static const char* invalid_params(const PointwiseParams<double>&) { return nullptr; }
};

// Loss and d(loss)/d(input) when the input is a probability p in [0, 1]:
//   loss = -pos_weight * y * log(p) - (1 - y) * log(1 - p),  a = pos_weight
struct ProbabilityBce : PointwisePolicy {
  static constexpr const char* kAux = "pos_weight";
  static constexpr const char* kDomain = "a probability in [0, 1]";

  template <typename T>
  static SEGLOSS_INLINE T loss(T p, T y, T pos_weight, const PointwiseParams<T>&) {
    const T log_p = clamped_log_term(log_(p));
    const T log_1mp = clamped_log_term(log1p_(-p));
    return (y - T(1)) * log_1mp - (pos_weight * y) * log_p;
  }

  // -pos_weight * y / p + (1 - y) / (1 - p), over one denominator that is kept
  // away from 0 as in PyTorch's BCE backward, whose epsilon is the float
  // 1e-12f also for double inputs.
  template <typename T>
  static SEGLOSS_INLINE T grad(T p, T y, T pos_weight, const PointwiseParams<T>&) {
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
//   loss = (1 - y) * x - (1 + (pos_weight - 1) * y) * log(sigmoid(x)),  a = pos_weight
// which equals -pos_weight * y * log(sigmoid(x)) - (1 - y) * log(1 - sigmoid(x)).
struct LogitsBce : PointwisePolicy {
  static constexpr const char* kAux = "pos_weight";

  template <typename T>
  static SEGLOSS_INLINE T loss(T x, T y, T pos_weight, const PointwiseParams<T>&) {
    const T log_weight = (pos_weight - T(1)) * y + T(1);
    return (T(1) - y) * x - log_weight * log_sigmoid(x);
  }

  // (1 + (pos_weight - 1) * y) * sigmoid(x) - pos_weight * y
  template <typename T>
  static SEGLOSS_INLINE T grad(T x, T y, T pos_weight, const PointwiseParams<T>&) {
    const T log_weight = (pos_weight - T(1)) * y + T(1);
    return log_weight * sigmoid(x) - pos_weight * y;
  }
};

// Jadon's balanced cross-entropy of a logit x, with a = beta, a constant of
// the target (1 - mean(y) of the image or batch, computed by the caller):
//   loss = -[beta y log sigmoid(x) + (1 - beta)(1 - y) log(1 - sigmoid(x))]
// with log(1 - sigmoid(x)) = log sigmoid(x) - x.
struct BalancedLogitsBce : PointwisePolicy {
  static constexpr const char* kAux = "beta";
  static constexpr bool kAuxRequired = true;

  template <typename T>
  static SEGLOSS_INLINE T loss(T x, T y, T beta, const PointwiseParams<T>&) {
    const T log_p = log_sigmoid(x);
    return -(beta * y) * log_p - ((T(1) - beta) * (T(1) - y)) * (log_p - x);
  }

  // (1 - beta)(1 - y) sigmoid(x) - beta y sigmoid(-x): 1 - sigmoid(x) as
  // sigmoid(-x), which keeps its relative accuracy where sigmoid(x) nears 1.
  template <typename T>
  static SEGLOSS_INLINE T grad(T x, T y, T beta, const PointwiseParams<T>&) {
    const LogisticParts<T> parts = logistic_parts(x);
    return ((T(1) - beta) * (T(1) - y)) * parts.sigmoid - (beta * y) * parts.sigmoid_neg;
  }
};

}  // namespace segloss::core
