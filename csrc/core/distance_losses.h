// The per-element terms of the distance-based losses, over a sigmoid or
// over probabilities p (a softmax's, or the input itself), as pointwise
// policies (core/pointwise.h). The operand `a` is the element's distance
// term, a constant of the target (and of the thresholded prediction) that
// the caller computes from segloss's exact distance maps:
//   boundary loss (Kervadec et al. 2019):   sigmoid(x) a,          a = phi_G, the signed map
//   Hausdorff DT loss (Karimi & Salcudean): (sigmoid(x) - y)^2 a,  a = d_p^alpha + d_g^alpha
// and p a, (p - y)^2 a over probabilities. The softmax itself and the
// per-image means are composed around them (python/segloss/functional.py).
#pragma once

#include "bce.h"

namespace segloss::core {

struct SigmoidBoundary : PointwisePolicy {
  static constexpr const char* kAux = "distance_map";
  static constexpr bool kAuxRequired = true;

  template <typename T>
  static SEGLOSS_INLINE T loss(T x, T, T a, const PointwiseParams<T>&) {
    return logistic_parts(x).sigmoid * a;
  }

  // sigmoid'(x) = sigmoid(x) sigmoid(-x).
  template <typename T>
  static SEGLOSS_INLINE T grad(T x, T, T a, const PointwiseParams<T>&) {
    const LogisticParts<T> parts = logistic_parts(x);
    return parts.sigmoid * parts.sigmoid_neg * a;
  }
};

struct SigmoidHausdorffDt : PointwisePolicy {
  static constexpr const char* kAux = "distance_weight";
  static constexpr bool kAuxRequired = true;

  // sigmoid(x) - y as (1 - y) sigmoid(x) - y sigmoid(-x): no cancellation
  // for y in {0, 1} where sigmoid(x) nears y.
  template <typename T>
  static SEGLOSS_INLINE T error(const LogisticParts<T>& parts, T y) {
    return (T(1) - y) * parts.sigmoid - y * parts.sigmoid_neg;
  }

  template <typename T>
  static SEGLOSS_INLINE T loss(T x, T y, T a, const PointwiseParams<T>&) {
    const T e = error(logistic_parts(x), y);
    return e * e * a;
  }

  template <typename T>
  static SEGLOSS_INLINE T grad(T x, T y, T a, const PointwiseParams<T>&) {
    const LogisticParts<T> parts = logistic_parts(x);
    return T(2) * error(parts, y) * parts.sigmoid * parts.sigmoid_neg * a;
  }
};

// Over probabilities (no activation; any real p, as MONAI takes them).
struct ProbabilityBoundary : PointwisePolicy {
  static constexpr const char* kAux = "distance_map";
  static constexpr bool kAuxRequired = true;

  template <typename T>
  static SEGLOSS_INLINE T loss(T p, T, T a, const PointwiseParams<T>&) {
    return p * a;
  }

  template <typename T>
  static SEGLOSS_INLINE T grad(T, T, T a, const PointwiseParams<T>&) {
    return a;
  }
};

struct ProbabilityHausdorffDt : PointwisePolicy {
  static constexpr const char* kAux = "distance_weight";
  static constexpr bool kAuxRequired = true;

  template <typename T>
  static SEGLOSS_INLINE T loss(T p, T y, T a, const PointwiseParams<T>&) {
    const T e = p - y;
    return e * e * a;
  }

  template <typename T>
  static SEGLOSS_INLINE T grad(T p, T y, T a, const PointwiseParams<T>&) {
    return T(2) * (p - y) * a;
  }
};

}  // namespace segloss::core
