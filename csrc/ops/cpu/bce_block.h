// The per-block loops of the CPU binary cross-entropy kernels: torch-free, so
// that block_isa.cpp can compile them once per instruction set (baseline,
// AVX2, AVX-512) and the op picks the widest the CPU has at run time.
//
// Everything here has internal linkage (static / anonymous namespace): each
// instruction-set build keeps its own copy, and the linker can never hand a
// baseline caller an AVX-512 instance.
#pragma once

#include <cstdint>

#include "../../core/bce.h"

namespace segloss::ops::cpu {

// Block loops for one compute type T (float or double).
template <typename T>
struct BceBlockLoops {
  // loss[i] = w[i] * loss(p[i], y[i], pw[i]); sets *out_of_domain if any input
  // lies outside the loss's domain.
  using Loss = void (*)(const T* input, const T* target, const T* weight, const T* pos_weight,
                        T* loss, std::int64_t n, int* out_of_domain);
  // grad[i] = grad(p[i], y[i], pw[i]) * w[i] * (grad_output ? grad_output[i] : scale)
  using Grad = void (*)(const T* input, const T* target, const T* weight, const T* pos_weight,
                        const T* grad_output, T scale, T* grad, std::int64_t n);
  Loss probability_loss;
  Grad probability_grad;
  Loss logits_loss;
  Grad logits_grad;
};

struct BceBlockFunctions {
  BceBlockLoops<float> f32;
  BceBlockLoops<double> f64;
};

// One per instruction-set build (see CMakeLists.txt).
BceBlockFunctions bce_block_functions_baseline();
BceBlockFunctions bce_block_functions_avx2();
BceBlockFunctions bce_block_functions_avx512();

namespace {

template <class Variant, typename T>
void loss_block(const T* p, const T* y, const T* w, const T* pw, T* loss, std::int64_t n,
                int* out_of_domain) {
  int bad = 0;
#pragma omp simd reduction(| : bad)
  for (std::int64_t i = 0; i < n; ++i) {
    loss[i] = w[i] * Variant::loss(p[i], y[i], pw[i]);
    bad |= int(Variant::out_of_domain(p[i]));
  }
  *out_of_domain |= bad;
}

template <class Variant, typename T>
void grad_block(const T* p, const T* y, const T* w, const T* pw, const T* grad_output, T scale,
                T* grad, std::int64_t n) {
  if (grad_output == nullptr) {
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) grad[i] = Variant::grad(p[i], y[i], pw[i]) * w[i] * scale;
  } else {
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) {
      grad[i] = Variant::grad(p[i], y[i], pw[i]) * w[i] * grad_output[i];
    }
  }
}

template <typename T>
BceBlockLoops<T> block_loops() {
  return {&loss_block<core::ProbabilityBce, T>, &grad_block<core::ProbabilityBce, T>,
          &loss_block<core::LogitsBce, T>, &grad_block<core::LogitsBce, T>};
}

}  // namespace
}  // namespace segloss::ops::cpu
