// The per-block loops of the CPU Dice kernels; torch-free and built once per
// instruction set like pointwise_block.h (see there for why everything here has
// internal linkage).
//
// A block is up to n pixels of one image; "rows" are the block's values for
// one channel, stored one after another with `row_stride` between channels.
#pragma once

#include <cstdint>

#include "../../core/dice.h"
#include "label_type.h"

namespace segloss::ops::cpu {

// The log-softmax normalisers (core::LogNormalizer) of a block's pixels, as
// two rows of n values: each pixel's maximum logit and log sum.
template <typename T>
struct NormalizerRows {
  T* max_x = nullptr;
  T* log_sum = nullptr;

  core::LogNormalizer<T> at(std::int64_t i) const { return {max_x[i], log_sum[i]}; }
};

template <typename T>
struct DiceBlockLoops {
  // sums[0..2] = (sum m p y, sum m p^gamma, sum m y^gamma) over the n pixels,
  // and sums[3] = sum m |p - y|^gamma for soft labels; indexed by soft
  // labels, then p = sigmoid(x) (0) or x itself (1), then GammaKind.
  using Sums = void (*)(const T* x, const T* y, const T* m, std::int64_t n, T gamma, T* sums);
  // grad[i] = act'(x_i) dL/dp_i (core::dice_grad_wrt_probability, or its soft
  // form) from d = dL/d(column) of the row's (n, c); indexed as Sums.
  using Grad = void (*)(const T* x, const T* y, const T* m, std::int64_t n, T gamma, const T* d,
                        T* grad);
  // p rows (n values each) = softmax over the C rows of x; `work` holds n
  // values; and the pixels' normalisers where `normalizers` has rows.
  using Softmax = void (*)(const T* x, std::int64_t x_row_stride, std::int64_t channels,
                           std::int64_t n, T* p, T* work, NormalizerRows<T> normalizers);
  // Dice + CE, sigmoid: the 8 columns of core::DiceColumn over the n pixels.
  using SigmoidCeSums = void (*)(const T* x, const T* y, const T* m, std::int64_t n, T gamma,
                                 T* sums);
  // Dice + CE, softmax: the 8 columns for one channel from its probabilities
  // p, logits x and the pixels' normalisers.
  using SoftmaxCeSums = void (*)(const T* p, const T* x, NormalizerRows<T> normalizers,
                                 const T* y, const T* m, std::int64_t n, T gamma, T* sums);
  // Dice + CE, sigmoid: grad[i] from dL/d(column) d[0..6].
  using SigmoidCeGrad = void (*)(const T* x, const T* y, const T* m, std::int64_t n, T gamma,
                                 const T* d, T* grad);
  // Dice + CE, softmax: adds the CE term m (p_k sum_c a_c - a_k) to the
  // gradient rows, a_c = d_c y_c + e_c from d_c = dL/d(positive NLL of channel
  // c) and e_c = dL/d(smoothing NLL of channel c); `work` holds n values.
  using SoftmaxCeGradAdd = void (*)(const T* p, const T* const* y_rows, const T* m,
                                    const T* d_positive, const T* d_smoothing,
                                    std::int64_t channels, std::int64_t n, T* grad, T* work);
  // Dice + focal, sigmoid focal: the 6 columns (core::DiceColumn) over the n
  // pixels, from the logits x and the Dice's probabilities p; indexed by
  // p = sigmoid(x) computed here (0, p unused) or read (1, softmax), then
  // GammaKind.
  using SigmoidFocalSums = void (*)(const T* p, const T* x, const T* y, const T* m,
                                    std::int64_t n, T gamma, T focal_gamma, T* sums);
  // Dice + focal, softmax focal: the 6 columns for one channel from its
  // probabilities p, logits x and the pixels' normalisers.
  using SoftmaxFocalSums = void (*)(const T* p, const T* x, NormalizerRows<T> normalizers,
                                    const T* y, const T* m, std::int64_t n, T gamma,
                                    T focal_gamma, T* sums);
  // Dice + focal, sigmoid focal: adds core::sigmoid_focal_grad to grad[i]
  // from dL/d(focal positive) and dL/d(focal negative).
  using SigmoidFocalGradAdd = void (*)(const T* x, const T* y, const T* m, std::int64_t n,
                                       T focal_gamma, T d_positive, T d_negative, T* grad);
  // Dice + focal, softmax focal: adds m (p_k sum_c a_c - a_k) to the gradient
  // rows, a_c = core::softmax_focal_coefficient of channel c; x rows
  // `x_row_stride` apart, `work` holds n values and `coefficients` C rows of n.
  using SoftmaxFocalGradAdd = void (*)(const T* p, const T* x, std::int64_t x_row_stride,
                                       NormalizerRows<T> normalizers, const T* const* y_rows,
                                       const T* m, const T* d_positive, T focal_gamma,
                                       std::int64_t channels, std::int64_t n, T* grad, T* work,
                                       T* coefficients);
  // grad rows = p (dL/dp - sum_k p_k dL/dp_k), rows of n values; `work` holds n values.
  using SoftmaxGrad = void (*)(const T* p, const T* grad_p, std::int64_t channels,
                               std::int64_t n, T* grad, T* work);
  // Class-index loops, for labels of each LabelType (`labels` points to them).
  // mask_out[i] = 0 where labels[i] == ignore_index (if has_ignore), else
  // mask_in[i]; sets *invalid if a label is neither ignored nor in [0, count).
  using MaskLabels = void (*)(const void* labels, const T* mask_in, std::int64_t n,
                              bool has_ignore, std::int64_t ignore_index, std::int64_t count,
                              T* mask_out, int* invalid);
  // y[i] = labels[i] == label ? 1 : 0.
  using OneHotRow = void (*)(const void* labels, std::int64_t label, std::int64_t n, T* y);
  Sums sums[2][2][3];
  Grad grads[2][2][3];
  Softmax softmax;
  SoftmaxGrad softmax_grad;
  MaskLabels mask_labels[3];  // by LabelType
  OneHotRow one_hot_row[3];
  SigmoidCeSums sigmoid_ce_sums[3];  // by GammaKind
  SoftmaxCeSums softmax_ce_sums[3];
  SigmoidCeGrad sigmoid_ce_grads[3];
  SoftmaxCeGradAdd softmax_ce_grad_add;
  SigmoidFocalSums sigmoid_focal_sums[2][3];
  SoftmaxFocalSums softmax_focal_sums[3];
  SigmoidFocalGradAdd sigmoid_focal_grad_add;
  SoftmaxFocalGradAdd softmax_focal_grad_add;
};

struct DiceBlockFunctions {
  DiceBlockLoops<float> f32;
  DiceBlockLoops<double> f64;
};

DiceBlockFunctions dice_block_functions_baseline();
DiceBlockFunctions dice_block_functions_avx2();
DiceBlockFunctions dice_block_functions_avx512();

namespace {

template <bool kSigmoid, typename T>
inline T activate(T x) {
  if constexpr (kSigmoid) {
    return core::sigmoid(x);
  } else {
    return x;
  }
}

// A region row's terms: Dice's, and the soft-label column's with kSoft.
template <bool kSoft, core::GammaKind K, typename T>
inline core::ColumnTerms<T> region_terms(T m, T p, T y, T gamma) {
  if constexpr (kSoft) {
    return core::soft_dice_terms<K>(m, p, y, gamma);
  } else {
    return core::dice_terms<K>(m, p, y, gamma);
  }
}

template <bool kSoft, bool kSigmoid, core::GammaKind K, typename T>
void dice_sums_block(const T* x, const T* y, const T* m, std::int64_t n, T gamma, T* sums) {
  T intersection = 0, prediction = 0, truth = 0, difference = 0;
#pragma omp simd reduction(+ : intersection, prediction, truth, difference)
  for (std::int64_t i = 0; i < n; ++i) {
    const core::ColumnTerms<T> t =
        region_terms<kSoft, K>(m[i], activate<kSigmoid>(x[i]), y[i], gamma);
    intersection += t.intersection;
    prediction += t.prediction;
    truth += t.truth;
    if constexpr (kSoft) difference += t.difference;
  }
  if constexpr (kSoft) sums[core::kDifference] = difference;
  sums[core::kIntersection] = intersection;
  sums[core::kPrediction] = prediction;
  sums[core::kTruth] = truth;
}

template <bool kSoft, bool kSigmoid, core::GammaKind K, typename T>
void dice_grad_block(const T* x, const T* y, const T* m, std::int64_t n, T gamma, const T* d,
                     T* grad) {
  const T dI = d[core::kIntersection], dP = d[core::kPrediction];
  const T dD = kSoft ? d[core::kDifference] : T(0);
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    const T p = activate<kSigmoid>(x[i]);
    T g;
    if constexpr (kSoft) {
      g = core::soft_dice_grad_wrt_probability<K>(m[i], p, y[i], dI, dP, dD, gamma);
    } else {
      g = core::dice_grad_wrt_probability<K>(m[i], p, y[i], dI, dP, gamma);
    }
    if constexpr (kSigmoid) g *= core::sigmoid_derivative_from_output(p);
    grad[i] = g;
  }
}

template <typename T>
void softmax_block(const T* x, std::int64_t x_row_stride, std::int64_t channels, std::int64_t n,
                   T* p, T* work, NormalizerRows<T> normalizers) {
  // The steps of core/softmax.h, each over the row of n pixels.
  T* max_x = work;
  for (std::int64_t i = 0; i < n; ++i) max_x[i] = x[i];
  for (std::int64_t c = 1; c < channels; ++c) {
    const T* row = x + c * x_row_stride;
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) max_x[i] = core::larger_of(max_x[i], row[i]);
  }
  for (std::int64_t c = 0; c < channels; ++c) {
    const T* row = x + c * x_row_stride;
    T* out = p + c * n;
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) out[i] = core::shifted_exp(row[i], max_x[i]);
  }
  if (normalizers.max_x != nullptr) {
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) normalizers.max_x[i] = max_x[i];
  }
  T* inverse_sum = work;
  for (std::int64_t i = 0; i < n; ++i) inverse_sum[i] = 0;
  for (std::int64_t c = 0; c < channels; ++c) {
    const T* row = p + c * n;
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) inverse_sum[i] += row[i];
  }
  if (normalizers.max_x != nullptr) {
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) {
      const T sum = inverse_sum[i];  // (the sum, until inverted below)
      normalizers.log_sum[i] = core::log_normalizer(normalizers.max_x[i], sum).log_sum;
    }
  }
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) inverse_sum[i] = T(1) / inverse_sum[i];
  for (std::int64_t c = 0; c < channels; ++c) {
    T* row = p + c * n;
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) row[i] *= inverse_sum[i];
  }
}

template <typename T>
void softmax_grad_block(const T* p, const T* grad_p, std::int64_t channels, std::int64_t n,
                        T* grad, T* work) {
  for (std::int64_t i = 0; i < n; ++i) work[i] = 0;
  for (std::int64_t c = 0; c < channels; ++c) {
    const T* pc = p + c * n;
    const T* gc = grad_p + c * n;
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) work[i] += pc[i] * gc[i];
  }
  for (std::int64_t c = 0; c < channels; ++c) {
    const T* pc = p + c * n;
    const T* gc = grad_p + c * n;
    T* out = grad + c * n;
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) out[i] = core::softmax_jvp(pc[i], gc[i], work[i]);
  }
}

template <typename T, typename label_t>
void mask_labels_block(const void* label_data, const T* mask_in, std::int64_t n,
                       bool has_ignore, std::int64_t ignore_index, std::int64_t count,
                       T* mask_out, int* invalid) {
  const label_t* labels = static_cast<const label_t*>(label_data);
  using Compare = LabelComparison<label_t>;
  const Compare compare(has_ignore, ignore_index, count);
  const bool ignore = compare.ignore;
  const typename Compare::wide_t ignored_label = compare.ignored_label, label_count = compare.count;
  int bad = 0;
#pragma omp simd reduction(| : bad)
  for (std::int64_t i = 0; i < n; ++i) {
    const typename Compare::wide_t label = labels[i];
    bad |= int(!core::is_valid_label(label, ignore, ignored_label, label_count));
    mask_out[i] = core::is_ignored_label(label, ignore, ignored_label) ? T(0) : mask_in[i];
  }
  *invalid |= bad;
}

template <typename T, typename label_t>
void one_hot_row_block(const void* label_data, std::int64_t label, std::int64_t n, T* y) {
  const label_t* labels = static_cast<const label_t*>(label_data);
  using wide_t = typename LabelComparison<label_t>::wide_t;
  // Channel labels are small (< number of channels): they fit in wide_t.
  const wide_t channel_label = wide_t(label);
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) y[i] = wide_t(labels[i]) == channel_label ? T(1) : T(0);
}

template <core::GammaKind K, typename T>
void sigmoid_ce_sums_block(const T* x, const T* y, const T* m, std::int64_t n, T gamma,
                           T* sums) {
  T intersection = 0, prediction = 0, truth = 0, negative = 0, positive = 0, mass = 0,
    pixels = 0;
#pragma omp simd reduction(+ : intersection, prediction, truth, negative, positive, mass, pixels)
  for (std::int64_t i = 0; i < n; ++i) {
    const core::ColumnTerms<T> t =
        core::sigmoid_dice_ce_terms<K>(m[i], core::sigmoid(x[i]), y[i], x[i], gamma);
    intersection += t.intersection;
    prediction += t.prediction;
    truth += t.truth;
    negative += t.negative_nll;
    positive += t.positive_nll;
    mass += t.target_mass;
    pixels += t.pixels;
  }
  const T values[core::kDiceCeColumns] = {intersection, prediction, truth,  negative,
                                          positive,     mass,       pixels, T(0)};
  for (int k = 0; k < core::kDiceCeColumns; ++k) sums[k] = values[k];
}

template <core::GammaKind K, typename T>
void softmax_ce_sums_block(const T* p, const T* x, NormalizerRows<T> normalizers, const T* y,
                           const T* m, std::int64_t n, T gamma, T* sums) {
  T intersection = 0, prediction = 0, truth = 0, positive = 0, mass = 0, pixels = 0,
    smoothing = 0;
#pragma omp simd reduction(+ : intersection, prediction, truth, positive, mass, pixels, smoothing)
  for (std::int64_t i = 0; i < n; ++i) {
    const core::ColumnTerms<T> t =
        core::softmax_dice_ce_terms<K>(m[i], p[i], y[i], x[i], normalizers.at(i), gamma);
    intersection += t.intersection;
    prediction += t.prediction;
    truth += t.truth;
    positive += t.positive_nll;
    mass += t.target_mass;
    pixels += t.pixels;
    smoothing += t.smoothing_nll;
  }
  const T values[core::kDiceCeColumns] = {intersection, prediction, truth,  T(0),
                                          positive,     mass,       pixels, smoothing};
  for (int k = 0; k < core::kDiceCeColumns; ++k) sums[k] = values[k];
}

template <core::GammaKind K, typename T>
void sigmoid_ce_grad_block(const T* x, const T* y, const T* m, std::int64_t n, T gamma,
                           const T* d, T* grad) {
  const T dI = d[core::kIntersection], dP = d[core::kPrediction];
  const T dNeg = d[core::kNegativeNll], dPos = d[core::kPositiveNll];
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    const T p = core::sigmoid(x[i]);
    grad[i] = core::dice_grad_wrt_probability<K>(m[i], p, y[i], dI, dP, gamma) *
                  core::sigmoid_derivative_from_output(p) +
              core::sigmoid_ce_grad(m[i], y[i], p, dNeg, dPos);
  }
}

template <typename T>
void softmax_ce_grad_add_block(const T* p, const T* const* y_rows, const T* m,
                               const T* d_positive, const T* d_smoothing,
                               std::int64_t channels, std::int64_t n, T* grad, T* work) {
  for (std::int64_t i = 0; i < n; ++i) work[i] = 0;
  for (std::int64_t c = 0; c < channels; ++c) {
    const T* y = y_rows[c];
    const T dc = d_positive[c], ec = d_smoothing[c];
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) work[i] += core::softmax_ce_coefficient(dc, y[i], ec);
  }
  for (std::int64_t c = 0; c < channels; ++c) {
    const T* pc = p + c * n;
    const T* y = y_rows[c];
    const T dc = d_positive[c], ec = d_smoothing[c];
    T* out = grad + c * n;
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) {
      out[i] += core::softmax_ce_grad(m[i], pc[i], work[i],
                                      core::softmax_ce_coefficient(dc, y[i], ec));
    }
  }
}

template <bool kDiceSigmoid, core::GammaKind K, typename T>
void sigmoid_focal_sums_block(const T* p, const T* x, const T* y, const T* m, std::int64_t n,
                              T gamma, T focal_gamma, T* sums) {
  T intersection = 0, prediction = 0, truth = 0, positive = 0, negative = 0, pixels = 0;
#pragma omp simd reduction(+ : intersection, prediction, truth, positive, negative, pixels)
  for (std::int64_t i = 0; i < n; ++i) {
    const T pi = kDiceSigmoid ? core::sigmoid(x[i]) : p[i];
    const core::ColumnTerms<T> t =
        core::sigmoid_dice_focal_terms<K>(m[i], pi, y[i], x[i], gamma, focal_gamma);
    intersection += t.intersection;
    prediction += t.prediction;
    truth += t.truth;
    positive += t.focal_positive;
    negative += t.focal_negative;
    pixels += t.pixels;
  }
  const T values[core::kDiceFocalColumns] = {intersection, prediction, truth,
                                             positive,     negative,   pixels};
  for (int k = 0; k < core::kDiceFocalColumns; ++k) sums[k] = values[k];
}

template <core::GammaKind K, typename T>
void softmax_focal_sums_block(const T* p, const T* x, NormalizerRows<T> normalizers,
                              const T* y, const T* m, std::int64_t n, T gamma, T focal_gamma,
                              T* sums) {
  T intersection = 0, prediction = 0, truth = 0, positive = 0, pixels = 0;
#pragma omp simd reduction(+ : intersection, prediction, truth, positive, pixels)
  for (std::int64_t i = 0; i < n; ++i) {
    const core::ColumnTerms<T> t =
        core::softmax_dice_focal_terms<K>(m[i], p[i], y[i], x[i], normalizers.at(i), gamma,
                                          focal_gamma);
    intersection += t.intersection;
    prediction += t.prediction;
    truth += t.truth;
    positive += t.focal_positive;
    pixels += t.pixels;
  }
  const T values[core::kDiceFocalColumns] = {intersection, prediction, truth,
                                             positive,     T(0),       pixels};
  for (int k = 0; k < core::kDiceFocalColumns; ++k) sums[k] = values[k];
}

template <typename T>
void sigmoid_focal_grad_add_block(const T* x, const T* y, const T* m, std::int64_t n,
                                  T focal_gamma, T d_positive, T d_negative, T* grad) {
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) {
    grad[i] += core::sigmoid_focal_grad(m[i], y[i], x[i], d_positive, d_negative, focal_gamma);
  }
}

template <typename T>
void softmax_focal_grad_add_block(const T* p, const T* x, std::int64_t x_row_stride,
                                  NormalizerRows<T> normalizers, const T* const* y_rows,
                                  const T* m,
                                  const T* d_positive, T focal_gamma, std::int64_t channels,
                                  std::int64_t n, T* grad, T* work, T* coefficients) {
  for (std::int64_t i = 0; i < n; ++i) work[i] = 0;
  for (std::int64_t c = 0; c < channels; ++c) {
    const T* pc = p + c * n;
    const T* xc = x + c * x_row_stride;
    const T* y = y_rows[c];
    const T dc = d_positive[c];
    T* a = coefficients + c * n;
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) {
      a[i] = core::softmax_focal_coefficient(dc, y[i], -normalizers.at(i).negative_log_p(xc[i]),
                                             pc[i], focal_gamma);
      work[i] += a[i];
    }
  }
  for (std::int64_t c = 0; c < channels; ++c) {
    const T* pc = p + c * n;
    const T* a = coefficients + c * n;
    T* out = grad + c * n;
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) out[i] += core::softmax_ce_grad(m[i], pc[i], work[i], a[i]);
  }
}

// The Sums and Grad rows of one soft-label setting.
template <bool kSoft, typename T>
void set_dice_row_loops(DiceBlockLoops<T>& loops) {
  using core::GammaKind;
  loops.sums[kSoft][0][0] = &dice_sums_block<kSoft, true, GammaKind::One, T>;
  loops.sums[kSoft][0][1] = &dice_sums_block<kSoft, true, GammaKind::Two, T>;
  loops.sums[kSoft][0][2] = &dice_sums_block<kSoft, true, GammaKind::General, T>;
  loops.sums[kSoft][1][0] = &dice_sums_block<kSoft, false, GammaKind::One, T>;
  loops.sums[kSoft][1][1] = &dice_sums_block<kSoft, false, GammaKind::Two, T>;
  loops.sums[kSoft][1][2] = &dice_sums_block<kSoft, false, GammaKind::General, T>;
  loops.grads[kSoft][0][0] = &dice_grad_block<kSoft, true, GammaKind::One, T>;
  loops.grads[kSoft][0][1] = &dice_grad_block<kSoft, true, GammaKind::Two, T>;
  loops.grads[kSoft][0][2] = &dice_grad_block<kSoft, true, GammaKind::General, T>;
  loops.grads[kSoft][1][0] = &dice_grad_block<kSoft, false, GammaKind::One, T>;
  loops.grads[kSoft][1][1] = &dice_grad_block<kSoft, false, GammaKind::Two, T>;
  loops.grads[kSoft][1][2] = &dice_grad_block<kSoft, false, GammaKind::General, T>;
}

template <typename T>
DiceBlockLoops<T> dice_block_loops() {
  using core::GammaKind;
  DiceBlockLoops<T> loops;
  set_dice_row_loops<false>(loops);
  set_dice_row_loops<true>(loops);
  loops.softmax = &softmax_block<T>;
  loops.softmax_grad = &softmax_grad_block<T>;
  loops.mask_labels[kUint8Labels] = &mask_labels_block<T, std::uint8_t>;
  loops.mask_labels[kInt32Labels] = &mask_labels_block<T, std::int32_t>;
  loops.mask_labels[kInt64Labels] = &mask_labels_block<T, std::int64_t>;
  loops.one_hot_row[kUint8Labels] = &one_hot_row_block<T, std::uint8_t>;
  loops.one_hot_row[kInt32Labels] = &one_hot_row_block<T, std::int32_t>;
  loops.one_hot_row[kInt64Labels] = &one_hot_row_block<T, std::int64_t>;
  loops.sigmoid_ce_sums[0] = &sigmoid_ce_sums_block<GammaKind::One, T>;
  loops.sigmoid_ce_sums[1] = &sigmoid_ce_sums_block<GammaKind::Two, T>;
  loops.sigmoid_ce_sums[2] = &sigmoid_ce_sums_block<GammaKind::General, T>;
  loops.softmax_ce_sums[0] = &softmax_ce_sums_block<GammaKind::One, T>;
  loops.softmax_ce_sums[1] = &softmax_ce_sums_block<GammaKind::Two, T>;
  loops.softmax_ce_sums[2] = &softmax_ce_sums_block<GammaKind::General, T>;
  loops.sigmoid_ce_grads[0] = &sigmoid_ce_grad_block<GammaKind::One, T>;
  loops.sigmoid_ce_grads[1] = &sigmoid_ce_grad_block<GammaKind::Two, T>;
  loops.sigmoid_ce_grads[2] = &sigmoid_ce_grad_block<GammaKind::General, T>;
  loops.softmax_ce_grad_add = &softmax_ce_grad_add_block<T>;
  loops.sigmoid_focal_sums[0][0] = &sigmoid_focal_sums_block<true, GammaKind::One, T>;
  loops.sigmoid_focal_sums[0][1] = &sigmoid_focal_sums_block<true, GammaKind::Two, T>;
  loops.sigmoid_focal_sums[0][2] = &sigmoid_focal_sums_block<true, GammaKind::General, T>;
  loops.sigmoid_focal_sums[1][0] = &sigmoid_focal_sums_block<false, GammaKind::One, T>;
  loops.sigmoid_focal_sums[1][1] = &sigmoid_focal_sums_block<false, GammaKind::Two, T>;
  loops.sigmoid_focal_sums[1][2] = &sigmoid_focal_sums_block<false, GammaKind::General, T>;
  loops.softmax_focal_sums[0] = &softmax_focal_sums_block<GammaKind::One, T>;
  loops.softmax_focal_sums[1] = &softmax_focal_sums_block<GammaKind::Two, T>;
  loops.softmax_focal_sums[2] = &softmax_focal_sums_block<GammaKind::General, T>;
  loops.sigmoid_focal_grad_add = &sigmoid_focal_grad_add_block<T>;
  loops.softmax_focal_grad_add = &softmax_focal_grad_add_block<T>;
  return loops;
}

}  // namespace
}  // namespace segloss::ops::cpu
