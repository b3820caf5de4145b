// The scalar parameters of a pointwise loss, in one small struct that every
// pointwise policy takes; each policy documents which fields it reads.
#pragma once

#include "platform.h"

namespace segloss::core {

// The flags are T (0 or 1), not bool: a bool field read in a CPU loop keeps
// g++ from vectorising it.
template <typename T>
struct PointwiseParams {
  T gamma = T(0);          // a focusing exponent (focal losses)
  T alpha = T(0);          // a class-balance weight, when has_alpha
  T has_alpha = T(0);
  T has_aux = T(0);        // whether the per-element operand `a` was given (else it reads 1)

  // The same parameters in another compute type.
  template <typename U>
  SEGLOSS_INLINE PointwiseParams<U> as() const {
    PointwiseParams<U> out;
    out.gamma = U(gamma);
    out.alpha = U(alpha);
    out.has_alpha = U(has_alpha);
    out.has_aux = U(has_aux);
    return out;
  }
};

}  // namespace segloss::core
