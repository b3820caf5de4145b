// The sigmoid focal loss (Lin et al. 2017) as MONAI's sigmoid_focal_loss
// writes it, which torchvision's sigmoid_focal_loss equals for binary
// targets. With x the logit, y the target and gamma >= 0:
//   loss = A M B
//   B = (1 - y) x - log sigmoid(x)               the BCE of the logit
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
#pragma once

#include <limits>

#include "bce.h"

namespace segloss::core {

struct SigmoidFocal : PointwisePolicy {
  static constexpr const char* kAux = "alpha";  // per-class alpha, broadcast
  static constexpr int kMinParams = 1;          // gamma
  static constexpr int kMaxParams = 2;          // gamma, scalar alpha

  // No selects on the parameters (g++ does not vectorise the CPU loops with
  // them): the flags blend arithmetically (a reads 1 when absent), and
  // log sigmoid(z) is kept above -FLT_MAX so that gamma = 0 gives M = 1 even
  // at z = -inf, where exp(0 * -inf) would be NaN.
  template <typename T>
  static SEGLOSS_INLINE T alpha_factor(T y, T a, const PointwiseParams<T>& params) {
    const T per_class = y == T(1) ? a : T(1);
    const T scalar = params.alpha * y + (T(1) - params.alpha) * (T(1) - y);
    const T without_aux = params.has_alpha * scalar + (T(1) - params.has_alpha);
    return params.has_aux * per_class + (T(1) - params.has_aux) * without_aux;
  }

  template <typename T>
  static SEGLOSS_INLINE T modulation(T z, const PointwiseParams<T>& params) {
    const T log_s = log_sigmoid(z);
    const T lowest = -std::numeric_limits<T>::max();
    return exp_(params.gamma * (log_s < lowest ? lowest : log_s));
  }

  template <typename T>
  static SEGLOSS_INLINE T loss(T x, T y, T a, const PointwiseParams<T>& params) {
    const T bce = (T(1) - y) * x - log_sigmoid(x);
    const T z = x * (T(1) - y - y);
    return alpha_factor(y, a, params) * modulation(z, params) * bce;
  }

  // The focusing term is gamma (...): exactly 0 for gamma = 0 and finite x.
  template <typename T>
  static SEGLOSS_INLINE T grad(T x, T y, T a, const PointwiseParams<T>& params) {
    const T one_minus_2y = T(1) - y - y;
    const T z = x * one_minus_2y;
    const T m = modulation(z, params);
    const T bce = (T(1) - y) * x - log_sigmoid(x);
    const T d = m * (sigmoid(x) - y) + params.gamma * m * sigmoid(-z) * one_minus_2y * bce;
    return alpha_factor(y, a, params) * d;
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
