// The scalar parameters of a pointwise loss, in one small struct that every
// pointwise policy takes; each policy documents which fields it reads.
#pragma once

#include "platform.h"

namespace segloss::core {

template <typename T>
struct PointwiseParams {
  T gamma = T(0);          // a focusing exponent (focal losses)
  T alpha = T(0);          // a class-balance weight, when has_alpha
  bool has_alpha = false;
  bool has_aux = false;    // whether the per-element operand `a` was given (else it reads 1)

  // The same parameters in another compute type.
  template <typename U>
  SEGLOSS_INLINE PointwiseParams<U> as() const {
    PointwiseParams<U> out;
    out.gamma = U(gamma);
    out.alpha = U(alpha);
    out.has_alpha = has_alpha;
    out.has_aux = has_aux;
    return out;
  }
};

}  // namespace segloss::core
