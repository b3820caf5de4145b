// The per-block loops of the CPU weighted softmax cross-entropy kernels;
// torch-free and built once per instruction set like pointwise_block.h (see there
// for why everything here has internal linkage).
//
// A block is up to n pixels of one image; its logits are C rows of n values,
// `row_stride` apart (the image's pixel count when read in place).
#pragma once

#include <cstdint>

#include "../../core/cross_entropy.h"
#include "label_type.h"

namespace segloss::ops::cpu {

template <typename T>
struct CrossEntropyBlockLoops {
  // target[i] = the class of pixel i, -1 where it is ignored; coefficient[i] =
  // weight_map[i] * class_weight[target[i]] (0 where ignored). Sets *invalid
  // if a label is neither ignore_index nor in [0, classes). Indexed by
  // LabelType and by whether class_weight is given (else it reads as 1).
  using Coefficients = void (*)(const void* labels, const T* weight_map, const T* class_weight,
                                std::int64_t n, std::int64_t ignore_index, std::int64_t classes,
                                std::int32_t* target, T* coefficient, int* invalid);
  // loss[i] = coefficient[i] (lse_i - x[target[i]]), 0 where ignored; `work`
  // holds 3n values.
  using Loss = void (*)(const T* x, std::int64_t row_stride, std::int64_t classes, std::int64_t n,
                        const std::int32_t* target, const T* coefficient, T* loss, T* work);
  // grad rows (grad_stride apart) = s_i (softmax_ik - [k == target[i]]), with
  // s_i = coefficient[i] * (grad_output ? grad_output[i] : 1) * scale, 0 where
  // ignored; `work` holds 3n values.
  using Grad = void (*)(const T* x, std::int64_t row_stride, std::int64_t classes,
                        std::int64_t n, const std::int32_t* target, const T* coefficient,
                        const T* grad_output, T scale, T* grad, std::int64_t grad_stride,
                        T* work);
  Coefficients coefficients[3][2];
  Loss loss;
  Grad grad;
};

struct CrossEntropyBlockFunctions {
  CrossEntropyBlockLoops<float> f32;
  CrossEntropyBlockLoops<double> f64;
};

CrossEntropyBlockFunctions cross_entropy_block_functions_baseline();
CrossEntropyBlockFunctions cross_entropy_block_functions_avx2();
CrossEntropyBlockFunctions cross_entropy_block_functions_avx512();

namespace {

template <typename T, typename label_t, bool kClassWeight>
void coefficients_block(const void* label_data, const T* weight_map, const T* class_weight,
                        std::int64_t n, std::int64_t ignore_index, std::int64_t classes,
                        std::int32_t* target, T* coefficient, int* invalid) {
  const label_t* labels = static_cast<const label_t*>(label_data);
  using Compare = LabelComparison<label_t>;
  const Compare compare(/*has_ignore=*/true, ignore_index, classes);
  const bool ignore = compare.ignore;
  const typename Compare::wide_t ignored_label = compare.ignored_label, class_count = compare.count;
  int bad = 0;
#pragma omp simd reduction(| : bad)
  for (std::int64_t i = 0; i < n; ++i) {
    const typename Compare::wide_t label = labels[i];
    const bool ignored = core::is_ignored_label(label, ignore, ignored_label);
    const bool in_range = core::is_class_label(label, class_count);
    bad |= int(!ignored && !in_range);
    const bool counted = !ignored && in_range;
    const std::int32_t t = counted ? std::int32_t(label) : std::int32_t(-1);
    T c = T(1);
    if constexpr (kClassWeight) c = counted ? class_weight[counted ? t : 0] : T(0);
    target[i] = t;
    coefficient[i] = counted ? weight_map[i] * c : T(0);
  }
  *invalid |= bad;
}

// The per-pixel maximum of the C rows into max_x.
template <typename T>
void max_over_rows(const T* x, std::int64_t row_stride, std::int64_t classes, std::int64_t n,
                   T* max_x) {
  for (std::int64_t i = 0; i < n; ++i) max_x[i] = x[i];
  for (std::int64_t c = 1; c < classes; ++c) {
    const T* row = x + c * row_stride;
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) max_x[i] = core::larger_of(max_x[i], row[i]);
  }
}

template <typename T>
void loss_block(const T* x, std::int64_t row_stride, std::int64_t classes, std::int64_t n,
                const std::int32_t* target, const T* coefficient, T* loss, T* work) {
  T* max_x = work;
  T* sum = work + n;
  T* x_target = work + 2 * n;
  max_over_rows(x, row_stride, classes, n, max_x);
  for (std::int64_t i = 0; i < n; ++i) sum[i] = x_target[i] = 0;
  // The target's logit is picked up by a select in the same pass: g++
  // vectorises no gather x[target[i] * row_stride + i].
  for (std::int64_t c = 0; c < classes; ++c) {
    const T* row = x + c * row_stride;
    const std::int32_t k = std::int32_t(c);
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) {
      sum[i] += core::shifted_exp(row[i], max_x[i]);
      x_target[i] = target[i] == k ? row[i] : x_target[i];
    }
  }
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    loss[i] = core::weighted_nll(target[i] < 0, coefficient[i],
                                 core::log_sum_exp(max_x[i], sum[i]), x_target[i]);
  }
}

template <typename T>
void grad_block(const T* x, std::int64_t row_stride, std::int64_t classes, std::int64_t n,
                const std::int32_t* target, const T* coefficient, const T* grad_output, T scale,
                T* grad, std::int64_t grad_stride, T* work) {
  T* max_x = work;  // then the per-pixel scale s_i
  T* sum = work + n;  // then its inverse
  max_over_rows(x, row_stride, classes, n, max_x);
  for (std::int64_t i = 0; i < n; ++i) sum[i] = 0;
  // exp(x - max) into the gradient rows, summed.
  for (std::int64_t c = 0; c < classes; ++c) {
    const T* row = x + c * row_stride;
    T* out = grad + c * grad_stride;
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) {
      out[i] = core::shifted_exp(row[i], max_x[i]);
      sum[i] += out[i];
    }
  }
  T* s = max_x;
  if (grad_output != nullptr) {
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) {
      s[i] = target[i] < 0 ? T(0) : coefficient[i] * grad_output[i] * scale;
      sum[i] = T(1) / sum[i];
    }
  } else {
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) {
      s[i] = target[i] < 0 ? T(0) : coefficient[i] * scale;
      sum[i] = T(1) / sum[i];
    }
  }
  for (std::int64_t c = 0; c < classes; ++c) {
    T* out = grad + c * grad_stride;
    const std::int32_t k = std::int32_t(c);
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) {
      out[i] = core::weighted_nll_grad(s[i], out[i], sum[i], target[i] == k);
    }
  }
}

template <typename T>
CrossEntropyBlockLoops<T> cross_entropy_block_loops() {
  CrossEntropyBlockLoops<T> loops;
  loops.coefficients[kUint8Labels][0] = &coefficients_block<T, std::uint8_t, false>;
  loops.coefficients[kUint8Labels][1] = &coefficients_block<T, std::uint8_t, true>;
  loops.coefficients[kInt32Labels][0] = &coefficients_block<T, std::int32_t, false>;
  loops.coefficients[kInt32Labels][1] = &coefficients_block<T, std::int32_t, true>;
  loops.coefficients[kInt64Labels][0] = &coefficients_block<T, std::int64_t, false>;
  loops.coefficients[kInt64Labels][1] = &coefficients_block<T, std::int64_t, true>;
  loops.loss = &loss_block<T>;
  loops.grad = &grad_block<T>;
  return loops;
}

}  // namespace
}  // namespace segloss::ops::cpu
