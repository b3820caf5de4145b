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
  // loss[i] = coefficient[i] (-log p_i of target[i]), 0 where ignored; with
  // gamma > 0 the focal loss, with label_smoothing > 0 the smoothed one
  // (core/cross_entropy.h), which read pixel_weight[i] (the weight map) and
  // class_weight (nullptr: 1). `work` holds kWorkRows * n values.
  using Loss = void (*)(const T* x, std::int64_t row_stride, std::int64_t classes, std::int64_t n,
                        const std::int32_t* target, const T* coefficient, const T* pixel_weight,
                        const T* class_weight, T gamma, T label_smoothing, T* loss, T* work);
  // grad rows (grad_stride apart) = s_i (softmax_ik - [k == target[i]]), with
  // s_i = coefficient[i] * (grad_output ? grad_output[i] : 1) * scale, 0 where
  // ignored (the plain loss; the focal and smoothed ones as their core
  // functions say); `work` holds kWorkRows * n values.
  using Grad = void (*)(const T* x, std::int64_t row_stride, std::int64_t classes,
                        std::int64_t n, const std::int32_t* target, const T* coefficient,
                        const T* pixel_weight, const T* class_weight, T gamma,
                        T label_smoothing, const T* grad_output, T scale, T* grad,
                        std::int64_t grad_stride, T* work);
  Coefficients coefficients[3][2];
  Loss loss;
  Grad grad;
};

// Rows of n values the Loss and Grad loops need in `work`.
constexpr std::int64_t kCrossEntropyWorkRows = 5;

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

// Per pixel: the maximum logit, sum_k exp(x_k - max) and the target's logit,
// in one pass over the rows. The target's logit is picked up by a select: g++
// vectorises no gather x[target[i] * row_stride + i].
template <typename T>
void softmax_stats(const T* x, std::int64_t row_stride, std::int64_t classes, std::int64_t n,
                   const std::int32_t* target, T* max_x, T* sum, T* x_target) {
  max_over_rows(x, row_stride, classes, n, max_x);
  for (std::int64_t i = 0; i < n; ++i) sum[i] = x_target[i] = 0;
  for (std::int64_t c = 0; c < classes; ++c) {
    const T* row = x + c * row_stride;
    const std::int32_t k = std::int32_t(c);
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) {
      sum[i] += core::shifted_exp(row[i], max_x[i]);
      x_target[i] = target[i] == k ? row[i] : x_target[i];
    }
  }
}

template <typename T>
void plain_loss_block(const T* x, std::int64_t row_stride, std::int64_t classes, std::int64_t n,
                const std::int32_t* target, const T* coefficient, T* loss, T* work) {
  T* max_x = work;
  T* sum = work + n;
  T* x_target = work + 2 * n;
  softmax_stats(x, row_stride, classes, n, target, max_x, sum, x_target);
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    loss[i] = core::weighted_nll(target[i] < 0, coefficient[i],
                                 core::log_normalizer(max_x[i], sum[i]), x_target[i]);
  }
}

template <typename T>
void plain_grad_block(const T* x, std::int64_t row_stride, std::int64_t classes, std::int64_t n,
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

// Per pixel: the maximum, the sum of e_k = exp(x_k - max), the sum of the
// other classes' e_k and the target's e_t and x_t (the focal form's inputs);
// the e_k also into the rows of `exps` (exps_stride apart) unless nullptr.
template <typename T>
void focal_sums(const T* x, std::int64_t row_stride, std::int64_t classes, std::int64_t n,
                const std::int32_t* target, T* max_x, T* sum, T* other, T* e_target,
                T* x_target, T* exps, std::int64_t exps_stride) {
  max_over_rows(x, row_stride, classes, n, max_x);
  for (std::int64_t i = 0; i < n; ++i) sum[i] = other[i] = e_target[i] = x_target[i] = 0;
  for (std::int64_t c = 0; c < classes; ++c) {
    const T* row = x + c * row_stride;
    T* out = exps == nullptr ? nullptr : exps + c * exps_stride;
    const std::int32_t k = std::int32_t(c);
    const auto add = [&](std::int64_t i, T e) {
      const bool is_target = target[i] == k;
      sum[i] += e;
      other[i] += is_target ? T(0) : e;
      e_target[i] = is_target ? e : e_target[i];
      x_target[i] = is_target ? row[i] : x_target[i];
    };
    if (out == nullptr) {
#pragma omp simd
      for (std::int64_t i = 0; i < n; ++i) add(i, core::shifted_exp(row[i], max_x[i]));
    } else {
#pragma omp simd
      for (std::int64_t i = 0; i < n; ++i) {
        out[i] = core::shifted_exp(row[i], max_x[i]);
        add(i, out[i]);
      }
    }
  }
}

template <typename T>
void focal_loss_block(const T* x, std::int64_t row_stride, std::int64_t classes, std::int64_t n,
                      const std::int32_t* target, const T* coefficient, T gamma, T* loss,
                      T* work) {
  T* max_x = work;
  T* sum = work + n;
  T* other = work + 2 * n;
  T* e_target = work + 3 * n;
  T* x_target = work + 4 * n;
  focal_sums(x, row_stride, classes, n, target, max_x, sum, other, e_target, x_target,
             static_cast<T*>(nullptr), 0);
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    const T nll = core::target_nll(max_x[i], sum[i], other[i], x_target[i]);
    loss[i] = core::focal_nll(target[i] < 0, coefficient[i], other[i] / sum[i], nll, gamma);
  }
}

// The smoothing sum sum_k c_k (-log p_ik) into smoothing, from each pixel's
// maximum and log sum (core::LogNormalizer).
template <typename T>
void smoothing_sums(const T* x, std::int64_t row_stride, std::int64_t classes, std::int64_t n,
                    const T* class_weight, const T* max_x, const T* log_sum, T* smoothing) {
  for (std::int64_t i = 0; i < n; ++i) smoothing[i] = 0;
  for (std::int64_t c = 0; c < classes; ++c) {
    const T* row = x + c * row_stride;
    const T weight = class_weight == nullptr ? T(1) : class_weight[c];
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) {
      smoothing[i] += core::smoothing_nll(weight, core::LogNormalizer<T>{max_x[i], log_sum[i]},
                                          row[i]);
    }
  }
}

template <typename T>
void smoothed_loss_block(const T* x, std::int64_t row_stride, std::int64_t classes,
                         std::int64_t n, const std::int32_t* target, const T* coefficient,
                         const T* pixel_weight, const T* class_weight, T label_smoothing,
                         T* loss, T* work) {
  T* max_x = work;
  T* sum = work + n;  // then the log sum
  T* x_target = work + 2 * n;
  T* smoothing = work + 3 * n;
  softmax_stats(x, row_stride, classes, n, target, max_x, sum, x_target);
  T* log_sum = sum;
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) log_sum[i] = core::log_normalizer(max_x[i], sum[i]).log_sum;
  smoothing_sums(x, row_stride, classes, n, class_weight, max_x, log_sum, smoothing);
  const T count = T(classes);
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    const bool ignored = target[i] < 0;
    const core::LogNormalizer<T> normalizer{max_x[i], log_sum[i]};
    loss[i] = core::smoothed_nll(ignored,
                                 core::weighted_nll(ignored, coefficient[i], normalizer,
                                                    x_target[i]),
                                 pixel_weight[i], smoothing[i], label_smoothing, count);
  }
}

template <typename T>
void loss_block(const T* x, std::int64_t row_stride, std::int64_t classes, std::int64_t n,
                const std::int32_t* target, const T* coefficient, const T* pixel_weight,
                const T* class_weight, T gamma, T label_smoothing, T* loss, T* work) {
  if (gamma > T(0)) {
    focal_loss_block(x, row_stride, classes, n, target, coefficient, gamma, loss, work);
  } else if (label_smoothing > T(0)) {
    smoothed_loss_block(x, row_stride, classes, n, target, coefficient, pixel_weight,
                        class_weight, label_smoothing, loss, work);
  } else {
    plain_loss_block(x, row_stride, classes, n, target, coefficient, loss, work);
  }
}

// The incoming gradient per pixel: coefficient[i] g_i scale, or with
// `weights` given, weights[i] g_i scale (0 where ignored).
template <typename T>
void pixel_scales(const std::int32_t* target, const T* weights, const T* grad_output, T scale,
                  std::int64_t n, T* s) {
  if (grad_output != nullptr) {
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) {
      s[i] = target[i] < 0 ? T(0) : weights[i] * grad_output[i] * scale;
    }
  } else {
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) s[i] = target[i] < 0 ? T(0) : weights[i] * scale;
  }
}

template <typename T>
void focal_grad_block(const T* x, std::int64_t row_stride, std::int64_t classes, std::int64_t n,
                      const std::int32_t* target, const T* coefficient, T gamma,
                      const T* grad_output, T scale, T* grad, std::int64_t grad_stride,
                      T* work) {
  T* max_x = work;  // then f
  T* sum = work + n;  // then its inverse
  T* other = work + 2 * n;  // then q
  T* e_target = work + 3 * n;  // then the per-pixel scale a g
  T* x_target = work + 4 * n;
  // e_k into the gradient rows, as the plain loss does.
  focal_sums(x, row_stride, classes, n, target, max_x, sum, other, e_target, x_target, grad,
             grad_stride);
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    const T nll = core::target_nll(max_x[i], sum[i], other[i], x_target[i]);
    const T inverse_sum = T(1) / sum[i];
    const T q = other[i] * inverse_sum;
    max_x[i] = core::focal_grad_factor(q, e_target[i] * inverse_sum, nll, gamma);
    sum[i] = inverse_sum;
    other[i] = q;
  }
  T* factor = max_x;
  T* s = e_target;
  pixel_scales(target, coefficient, grad_output, scale, n, s);
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) s[i] *= factor[i];
  for (std::int64_t c = 0; c < classes; ++c) {
    T* out = grad + c * grad_stride;
    const std::int32_t k = std::int32_t(c);
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) {
      out[i] = core::focal_nll_grad(s[i], out[i], sum[i], target[i] == k, other[i]);
    }
  }
}

template <typename T>
void smoothed_grad_block(const T* x, std::int64_t row_stride, std::int64_t classes,
                         std::int64_t n, const std::int32_t* target, const T* coefficient,
                         const T* pixel_weight, const T* class_weight, T label_smoothing,
                         const T* grad_output, T scale, T* grad, std::int64_t grad_stride,
                         T* work) {
  T* max_x = work;
  T* sum = work + n;  // then its inverse
  T* positive = work + 2 * n;  // (1 - e) a g: the target's coefficient
  T* smoothing = work + 3 * n;  // (e / C) m g: class k's is this times c_k
  T* sum_a = work + 4 * n;  // sum_k a_k
  max_over_rows(x, row_stride, classes, n, max_x);
  for (std::int64_t i = 0; i < n; ++i) sum[i] = 0;
  for (std::int64_t c = 0; c < classes; ++c) {
    const T* row = x + c * row_stride;
    T* out = grad + c * grad_stride;
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) {
      out[i] = core::shifted_exp(row[i], max_x[i]);
      sum[i] += out[i];
    }
  }
  T weight_sum = 0;
  for (std::int64_t c = 0; c < classes; ++c) {
    weight_sum += class_weight == nullptr ? T(1) : class_weight[c];
  }
  pixel_scales(target, coefficient, grad_output, scale, n, positive);
  pixel_scales(target, pixel_weight, grad_output, scale, n, smoothing);
  const T per_class = label_smoothing / T(classes);
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    positive[i] *= T(1) - label_smoothing;
    smoothing[i] *= per_class;
    sum_a[i] = positive[i] + smoothing[i] * weight_sum;
    sum[i] = T(1) / sum[i];
  }
  for (std::int64_t c = 0; c < classes; ++c) {
    T* out = grad + c * grad_stride;
    const std::int32_t k = std::int32_t(c);
    const T weight = class_weight == nullptr ? T(1) : class_weight[c];
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) {
      const T a = core::softmax_ce_coefficient(positive[i], target[i] == k ? T(1) : T(0),
                                               smoothing[i] * weight);
      out[i] = core::softmax_ce_grad(T(1), out[i] * sum[i], sum_a[i], a);
    }
  }
}

template <typename T>
void grad_block(const T* x, std::int64_t row_stride, std::int64_t classes, std::int64_t n,
                const std::int32_t* target, const T* coefficient, const T* pixel_weight,
                const T* class_weight, T gamma, T label_smoothing, const T* grad_output, T scale,
                T* grad, std::int64_t grad_stride, T* work) {
  if (gamma > T(0)) {
    focal_grad_block(x, row_stride, classes, n, target, coefficient, gamma, grad_output, scale,
                     grad, grad_stride, work);
  } else if (label_smoothing > T(0)) {
    smoothed_grad_block(x, row_stride, classes, n, target, coefficient, pixel_weight,
                        class_weight, label_smoothing, grad_output, scale, grad, grad_stride,
                        work);
  } else {
    plain_grad_block(x, row_stride, classes, n, target, coefficient, grad_output, scale, grad,
                     grad_stride, work);
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
