// CPU kernels of the Dice sums (_dice_sums and its backward).
//
// Work is split into units of up to kBlock pixels of one image, all channels
// together (softmax needs them). Per unit: the mask and labels are read once,
// each channel's row is activated and summed (forward) or differentiated
// (backward). Per-unit partial sums are added in unit order, so the result
// does not depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../dice_operands.h"
#include "blocks.h"
#include "dice_block.h"
#include "isa.h"

namespace segloss::ops {
namespace {

using cpu::kBlock;
using cpu::NormalizerRows;
using cpu::load_block;

const cpu::DiceBlockFunctions& dice_functions() {
  static const cpu::DiceBlockFunctions functions = cpu::for_selected_isa(
      &cpu::dice_block_functions_baseline, &cpu::dice_block_functions_avx2,
      &cpu::dice_block_functions_avx512);
  return functions;
}

template <typename acc_t>
const cpu::DiceBlockLoops<acc_t>& dice_loops() {
  return cpu::for_compute_type<acc_t>(dice_functions());
}

// Per-thread buffers: `channels` rows of kBlock values each for the input,
// activated input, target and gradients, and single rows for the rest.
template <typename acc_t>
struct DiceScratch {
  std::vector<acc_t> x, p, y, grad_p, grad, mask, work, ones;
  std::vector<acc_t> normalizer_rows;  // NormalizerRows: max_x, then log_sum
  std::vector<const acc_t*> y_rows;  // each channel's target row
  std::vector<acc_t> d_positive;     // each channel's dL/d(positive NLL)
  std::vector<acc_t> d_smoothing;    // each channel's dL/d(smoothing NLL)

  void ensure(int64_t channels) {
    if (!x.empty()) return;
    for (auto* rows : {&x, &p, &y, &grad_p, &grad}) rows->resize(channels * kBlock);
    for (auto* row : {&mask, &work}) row->resize(kBlock);
    normalizer_rows.resize(2 * kBlock);
    ones.assign(kBlock, acc_t(1));
    y_rows.resize(channels);
    d_positive.resize(channels);
    d_smoothing.resize(channels);
  }
  NormalizerRows<acc_t> normalizers() {
    return {normalizer_rows.data(), normalizer_rows.data() + kBlock};
  }
};

// One unit's operands in the compute type.
template <typename scalar_t, typename acc_t>
struct DiceUnit {
  const DiceOperands& ops;
  DiceScratch<acc_t>& scratch;
  int64_t n, begin, length;
  const acc_t* mask = nullptr;
  const void* labels = nullptr;  // this unit's class indices, if the target is a map
  int label_type = cpu::kInt64Labels;
  bool labels_in_range = true;

  DiceUnit(const DiceOperands& operands, DiceScratch<acc_t>& s, int64_t image, int64_t first,
           int64_t count)
      : ops(operands), scratch(s), n(image), begin(first), length(count) {
    s.ensure(ops.channels);
    const int64_t pixel0 = n * ops.pixels + begin;
    const acc_t* m = s.ones.data();
    if (ops.mask.defined()) {
      m = load_block(ops.mask.const_data_ptr<scalar_t>(), ops.mask_index, pixel0, length,
                     s.mask.data());
    }
    if (ops.labels.defined()) {
      label_type = cpu::label_type_of(ops.labels.scalar_type());
      labels = static_cast<const char*>(ops.labels.const_data_ptr()) +
               pixel0 * ops.labels.element_size();
      int invalid = 0;
      dice_loops<acc_t>().mask_labels[label_type](
          labels, m, length, ops.ignore_index.has_value(), ops.ignore_index.value_or(0),
          core::number_of_labels(ops.channels), s.mask.data(), &invalid);
      labels_in_range = invalid == 0;
      m = s.mask.data();
    }
    mask = m;
  }

  // The input's row for channel c, and the stride between channel rows.
  const acc_t* input_rows(int64_t* row_stride) {
    const scalar_t* rows = ops.input.const_data_ptr<scalar_t>() +
                           n * ops.channels * ops.pixels + begin;
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      *row_stride = ops.pixels;
      return rows;
    } else {
      for (int64_t c = 0; c < ops.channels; ++c) {
        acc_t* dst = scratch.x.data() + c * kBlock;
        for (int64_t i = 0; i < length; ++i) dst[i] = acc_t(rows[c * ops.pixels + i]);
      }
      *row_stride = kBlock;
      return scratch.x.data();
    }
  }

  // The target's row for channel c.
  const acc_t* target_row(int64_t c) {
    acc_t* dst = scratch.y.data() + c * kBlock;
    if (labels != nullptr) {
      dice_loops<acc_t>().one_hot_row[label_type](
          labels, core::label_of_channel(ops.channels, c), length, dst);
      return dst;
    }
    const core::BroadcastIndexer identity;
    return load_block(ops.dense_target.const_data_ptr<scalar_t>(), identity,
                      (n * ops.channels + c) * ops.pixels + begin, length, dst);
  }
};

// Calls body(unit, n, begin, length, scratch) for every unit, in parallel;
// unit u covers pixels [begin, begin + length) of image n = u / units_per_image.
template <typename acc_t, typename Body>
void for_each_unit(const DiceOperands& ops, const Body& body) {
  const int64_t units_per_image = (ops.pixels + kBlock - 1) / kBlock;
  at::parallel_for(0, ops.batch * units_per_image, 1, [&](int64_t first, int64_t last) {
    DiceScratch<acc_t> scratch;
    for (int64_t u = first; u < last; ++u) {
      const int64_t n = u / units_per_image;
      const int64_t begin = (u % units_per_image) * kBlock;
      body(u, n, begin, std::min(kBlock, ops.pixels - begin), scratch);
    }
  });
}

// sigmoid reads the raw input; softmax and none read (activated) probabilities.
int row_activation_index(core::Activation activation) {
  return activation == core::Activation::Sigmoid ? 0 : 1;
}

template <typename scalar_t>
void dice_sums_kernel(const DiceOperands& ops, at::Tensor& sums) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto& loops = dice_loops<acc_t>();
  const int gamma = int(ops.gamma_kind);
  const auto sum_row = loops.sums[ops.soft_label()][row_activation_index(ops.activation)][gamma];
  const bool softmax = ops.activation == core::Activation::Softmax;
  const int64_t C = ops.channels;
  const int64_t columns = ops.columns();
  const int64_t units_per_image = (ops.pixels + kBlock - 1) / kBlock;
  const int64_t units = ops.batch * units_per_image;
  std::vector<acc_t> partials(units * C * columns, acc_t(0));
  std::vector<char> labels_in_range(units, 1);

  for_each_unit<acc_t>(ops, [&](int64_t u, int64_t n, int64_t begin, int64_t length,
                                DiceScratch<acc_t>& scratch) {
    DiceUnit<scalar_t, acc_t> unit(ops, scratch, n, begin, length);
    labels_in_range[u] = unit.labels_in_range;
    int64_t x_stride = 0;
    const acc_t* x = unit.input_rows(&x_stride);
    const acc_t* p = x;  // the rows that the Dice terms read
    int64_t p_stride = x_stride;
    const NormalizerRows<acc_t> normalizers = ops.cross_entropy() || ops.softmax_focal()
                                                  ? scratch.normalizers()
                                                  : NormalizerRows<acc_t>{};
    if (softmax) {
      loops.softmax(x, x_stride, C, length, scratch.p.data(), scratch.work.data(), normalizers);
      p = scratch.p.data();
      p_stride = length;
    }
    for (int64_t c = 0; c < C; ++c) {
      acc_t* out = &partials[(u * C + c) * columns];
      const acc_t* y = unit.target_row(c);
      if (ops.softmax_focal()) {
        loops.softmax_focal_sums[gamma](p + c * p_stride, x + c * x_stride, normalizers, y,
                                        unit.mask, length, acc_t(ops.gamma),
                                        acc_t(ops.focal_gamma), out);
      } else if (ops.focal()) {
        loops.sigmoid_focal_sums[softmax ? 1 : 0][gamma](p + c * p_stride, x + c * x_stride, y,
                                                         unit.mask, length, acc_t(ops.gamma),
                                                         acc_t(ops.focal_gamma), out);
      } else if (!ops.cross_entropy()) {
        sum_row(p + c * p_stride, y, unit.mask, length, acc_t(ops.gamma), out);
      } else if (softmax) {
        loops.softmax_ce_sums[gamma](p + c * p_stride, x + c * x_stride, normalizers, y,
                                     unit.mask, length, acc_t(ops.gamma), out);
      } else {
        loops.sigmoid_ce_sums[gamma](x + c * x_stride, y, unit.mask, length, acc_t(ops.gamma),
                                     out);
      }
    }
  });

  TORCH_CHECK(std::all_of(labels_in_range.begin(), labels_in_range.end(),
                          [](char ok) { return ok != 0; }),
              ops.op, ": class indices in target must lie in [0, ", core::number_of_labels(C),
              ")", ops.ignore_index ? " or equal ignore_index" : "", " for input with ", C,
              " channel(s)");
  acc_t* out = sums.mutable_data_ptr<acc_t>();
  for (int64_t n = 0; n < ops.batch; ++n) {
    for (int64_t k = 0; k < C * columns; ++k) {
      double total = 0;  // in unit order: independent of the thread count
      for (int64_t b = 0; b < units_per_image; ++b) {
        total += double(partials[(n * units_per_image + b) * C * columns + k]);
      }
      out[n * C * columns + k] = acc_t(total);
    }
  }
}

template <typename scalar_t>
void dice_sums_backward_kernel(const DiceOperands& ops, const at::Tensor& grad_sums,
                               at::Tensor& grad_input) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto& loops = dice_loops<acc_t>();
  const int gamma_index = int(ops.gamma_kind);
  const auto grad_row =
      loops.grads[ops.soft_label()][row_activation_index(ops.activation)][gamma_index];
  const int64_t C = ops.channels;
  const int64_t columns = ops.columns();
  const acc_t* dsums = grad_sums.const_data_ptr<acc_t>();
  const acc_t gamma = acc_t(ops.gamma);
  const acc_t focal_gamma = acc_t(ops.focal_gamma);

  for_each_unit<acc_t>(ops, [&](int64_t, int64_t n, int64_t begin, int64_t length,
                                DiceScratch<acc_t>& scratch) {
    DiceUnit<scalar_t, acc_t> unit(ops, scratch, n, begin, length);
    DiceScratch<acc_t>& s = unit.scratch;
    int64_t row_stride = 0;
    const acc_t* x = unit.input_rows(&row_stride);
    scalar_t* out = grad_input.mutable_data_ptr<scalar_t>() + n * C * ops.pixels + begin;
    const acc_t* ds = dsums + n * C * columns;  // dL/d(column) of this image's channels
    if (ops.activation == core::Activation::Softmax) {
      // dL/dp per channel, then through the softmax's Jacobian, then the
      // cross-entropy's own term.
      const NormalizerRows<acc_t> normalizers =
          ops.softmax_focal() ? s.normalizers() : NormalizerRows<acc_t>{};
      loops.softmax(x, row_stride, C, length, s.p.data(), s.work.data(), normalizers);
      std::vector<const acc_t*>& y_rows = s.y_rows;
      std::vector<acc_t>& d_positive = s.d_positive;
      for (int64_t c = 0; c < C; ++c) {
        y_rows[c] = unit.target_row(c);
        grad_row(s.p.data() + c * length, y_rows[c], unit.mask, length, gamma, ds + c * columns,
                 s.grad_p.data() + c * length);
        if (ops.cross_entropy()) {
          d_positive[c] = ds[c * columns + core::kPositiveNll];
          s.d_smoothing[c] = ds[c * columns + core::kSmoothingNll];
        }
      }
      loops.softmax_grad(s.p.data(), s.grad_p.data(), C, length, s.grad.data(), s.work.data());
      if (ops.cross_entropy()) {
        loops.softmax_ce_grad_add(s.p.data(), y_rows.data(), unit.mask, d_positive.data(),
                                  s.d_smoothing.data(), C,
                                  length, s.grad.data(), s.work.data());
      }
      if (ops.softmax_focal()) {
        // The focal term couples the channels as the CE's does; grad_p's rows
        // (read by softmax_grad above) hold its coefficients.
        for (int64_t c = 0; c < C; ++c) d_positive[c] = ds[c * columns + core::kFocalPositive];
        loops.softmax_focal_grad_add(s.p.data(), x, row_stride, normalizers, y_rows.data(),
                                     unit.mask, d_positive.data(), focal_gamma, C, length,
                                     s.grad.data(), s.work.data(), s.grad_p.data());
      } else if (ops.focal()) {
        for (int64_t c = 0; c < C; ++c) {
          loops.sigmoid_focal_grad_add(x + c * row_stride, y_rows[c], unit.mask, length,
                                       focal_gamma, ds[c * columns + core::kFocalPositive],
                                       ds[c * columns + core::kFocalNegative],
                                       s.grad.data() + c * length);
        }
      }
      for (int64_t c = 0; c < C; ++c) {
        const acc_t* g = s.grad.data() + c * length;
        scalar_t* dst = out + c * ops.pixels;
        for (int64_t i = 0; i < length; ++i) dst[i] = scalar_t(g[i]);
      }
      return;
    }
    for (int64_t c = 0; c < C; ++c) {
      scalar_t* dst = out + c * ops.pixels;
      acc_t* g = cpu::block_output(dst, s.grad.data());
      const acc_t* d = ds + c * columns;
      if (ops.cross_entropy()) {
        loops.sigmoid_ce_grads[gamma_index](x + c * row_stride, unit.target_row(c), unit.mask,
                                            length, gamma, d, g);
      } else if (ops.focal()) {
        const acc_t* y = unit.target_row(c);
        grad_row(x + c * row_stride, y, unit.mask, length, gamma, d, g);
        loops.sigmoid_focal_grad_add(x + c * row_stride, y, unit.mask, length, focal_gamma,
                                     d[core::kFocalPositive], d[core::kFocalNegative], g);
      } else {
        grad_row(x + c * row_stride, unit.target_row(c), unit.mask, length, gamma, d, g);
      }
      cpu::store_block(g, length, dst);
    }
  });
}

at::Tensor dice_sums_cpu(const at::Tensor& input, const at::Tensor& target,
                         std::string_view activation, double gamma,
                         std::optional<int64_t> ignore_index,
                         const std::optional<at::Tensor>& mask, bool cross_entropy,
                         std::string_view caller, bool soft_label,
                         std::optional<std::string_view> focal_activation, double focal_gamma) {
  const DiceOperands ops =
      prepare_dice_operands(caller, input, target, activation, gamma, ignore_index, mask,
                            cross_entropy, soft_label, focal_activation, focal_gamma);
  at::Tensor sums = empty_dice_sums(ops.input, ops.layout);
  sums.zero_();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ops.input.scalar_type(),
                                  "segloss_dice_sums_cpu",
                                  [&] { dice_sums_kernel<scalar_t>(ops, sums); });
  return sums;
}

at::Tensor dice_sums_backward_cpu(const at::Tensor& grad_sums, const at::Tensor& input,
                                  const at::Tensor& target, std::string_view activation,
                                  double gamma, std::optional<int64_t> ignore_index,
                                  const std::optional<at::Tensor>& mask, bool cross_entropy,
                                  std::string_view caller, bool soft_label,
                                  std::optional<std::string_view> focal_activation,
                                  double focal_gamma) {
  const DiceOperands ops =
      prepare_dice_operands(caller, input, target, activation, gamma, ignore_index, mask,
                            cross_entropy, soft_label, focal_activation, focal_gamma);
  const at::Tensor dsums = prepare_dice_grad_sums(caller, grad_sums, ops.input, ops.layout);
  at::Tensor grad_input = at::empty_like(ops.input, at::MemoryFormat::Contiguous);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, ops.input.scalar_type(), "segloss_dice_sums_backward_cpu",
      [&] { dice_sums_backward_kernel<scalar_t>(ops, dsums, grad_input); });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(segloss, CPU, m) {
  m.impl("_dice_sums", &dice_sums_cpu);
  m.impl("_dice_sums_backward", &dice_sums_backward_cpu);
}

}  // namespace segloss::ops
