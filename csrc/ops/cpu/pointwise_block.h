// The per-block loops of the CPU pointwise losses (core/pointwise.h): torch-
// free, so that block_isa.cpp can compile them once per instruction set
// (baseline, AVX2, AVX-512) and the op picks the widest the CPU has at run
// time. One loss loop and one gradient loop per row of the table.
//
// Everything here has internal linkage (static / anonymous namespace): each
// instruction-set build keeps its own copy, and the linker can never hand a
// baseline caller an AVX-512 instance.
#pragma once

#include <cstdint>

#include "../../core/pointwise.h"

namespace segloss::ops::cpu {

// Block loops for one compute type T (float or double), indexed by
// core::PointwiseLoss.
template <typename T>
struct PointwiseBlockLoops {
  // loss[i] = w[i] * loss(x[i], y[i], a[i]); sets *out_of_domain if any input
  // lies outside the loss's domain.
  using Loss = void (*)(const T* input, const T* target, const T* weight, const T* aux,
                        core::PointwiseParams<T> params, T* loss, std::int64_t n,
                        int* out_of_domain);
  // grad[i] = grad(x[i], y[i], a[i]) * w[i] * (grad_output ? grad_output[i] : scale)
  using Grad = void (*)(const T* input, const T* target, const T* weight, const T* aux,
                        core::PointwiseParams<T> params, const T* grad_output, T scale, T* grad,
                        std::int64_t n);
  Loss loss[core::kPointwiseLossCount];
  Grad grad[core::kPointwiseLossCount];
};

struct PointwiseBlockFunctions {
  PointwiseBlockLoops<float> f32;
  PointwiseBlockLoops<double> f64;
};

// One per instruction-set build (see CMakeLists.txt).
PointwiseBlockFunctions pointwise_block_functions_baseline();
PointwiseBlockFunctions pointwise_block_functions_avx2();
PointwiseBlockFunctions pointwise_block_functions_avx512();

namespace {

// Whether every target of the block is 0 or 1 (a vectorised scan of a block
// already in cache).
template <typename T>
bool binary_targets(const T* y, std::int64_t n) {
  int other = 0;
#pragma omp simd reduction(| : other)
  for (std::int64_t i = 0; i < n; ++i) other |= int(y[i] != T(0) && y[i] != T(1));
  return other == 0;
}

// One loop body per form of the policy: kBinaryTarget picks its binary-target
// form (core/bce.h, PointwisePolicy::kBinaryTargetForms).
template <class Policy, bool kBinaryTarget, typename T>
SEGLOSS_INLINE T policy_loss(T x, T y, T a, const core::PointwiseParams<T>& params) {
  if constexpr (kBinaryTarget) {
    return Policy::loss_binary_target(x, y, a, params);
  } else {
    return Policy::loss(x, y, a, params);
  }
}

template <class Policy, bool kBinaryTarget, typename T>
SEGLOSS_INLINE T policy_grad(T x, T y, T a, const core::PointwiseParams<T>& params) {
  if constexpr (kBinaryTarget) {
    return Policy::grad_binary_target(x, y, a, params);
  } else {
    return Policy::grad(x, y, a, params);
  }
}

template <class Policy, bool kBinaryTarget, typename T>
void loss_loop(const T* x, const T* y, const T* w, const T* a, core::PointwiseParams<T> params,
               T* loss, std::int64_t n, int* out_of_domain) {
  // A local copy that nothing can alias: its fields stay in registers (an
  // argument passed in memory would be reloaded after every store to loss).
  const core::PointwiseParams<T> local = params;
  int bad = 0;
#pragma omp simd reduction(| : bad)
  for (std::int64_t i = 0; i < n; ++i) {
    loss[i] = w[i] * policy_loss<Policy, kBinaryTarget>(x[i], y[i], a[i], local);
    bad |= int(Policy::out_of_domain(x[i]));
  }
  *out_of_domain |= bad;
}

template <class Policy, bool kBinaryTarget, typename T>
void grad_loop(const T* x, const T* y, const T* w, const T* a, core::PointwiseParams<T> params,
               const T* grad_output, T scale, T* grad, std::int64_t n) {
  const core::PointwiseParams<T> local = params;  // as in loss_loop
  if (grad_output == nullptr) {
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) {
      grad[i] = policy_grad<Policy, kBinaryTarget>(x[i], y[i], a[i], local) * w[i] * scale;
    }
  } else {
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) {
      grad[i] = policy_grad<Policy, kBinaryTarget>(x[i], y[i], a[i], local) * w[i] *
                grad_output[i];
    }
  }
}

template <class Policy, typename T>
void loss_block(const T* x, const T* y, const T* w, const T* a, core::PointwiseParams<T> params,
                T* loss, std::int64_t n, int* out_of_domain) {
  if constexpr (Policy::kBinaryTargetForms) {
    if (binary_targets(y, n)) {
      return loss_loop<Policy, true>(x, y, w, a, params, loss, n, out_of_domain);
    }
  }
  loss_loop<Policy, false>(x, y, w, a, params, loss, n, out_of_domain);
}

template <class Policy, typename T>
void grad_block(const T* x, const T* y, const T* w, const T* a, core::PointwiseParams<T> params,
                const T* grad_output, T scale, T* grad, std::int64_t n) {
  if constexpr (Policy::kBinaryTargetForms) {
    if (binary_targets(y, n)) {
      return grad_loop<Policy, true>(x, y, w, a, params, grad_output, scale, grad, n);
    }
  }
  grad_loop<Policy, false>(x, y, w, a, params, grad_output, scale, grad, n);
}

template <typename T>
PointwiseBlockLoops<T> pointwise_block_loops() {
  PointwiseBlockLoops<T> loops{};
#define SEGLOSS_POINTWISE_LOOPS(id, name, policy)                                    \
  loops.loss[int(core::PointwiseLoss::id)] = &loss_block<core::policy, T>;           \
  loops.grad[int(core::PointwiseLoss::id)] = &grad_block<core::policy, T>;
  SEGLOSS_POINTWISE_LOSSES(SEGLOSS_POINTWISE_LOOPS)
#undef SEGLOSS_POINTWISE_LOOPS
  return loops;
}

}  // namespace
}  // namespace segloss::ops::cpu
