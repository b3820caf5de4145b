// CPU kernels of the weighted softmax cross-entropy (_weighted_cross_entropy
// and its backward), the multi-class shape-aware loss.
//
// Work is split into units of up to unit_pixels(C) pixels of one image, all
// classes together (softmax needs them). Per unit: the labels, weight map and
// class weights become one coefficient per pixel, then one loop over the C
// logit rows gives the losses (forward) or the gradient rows (backward), with
// the per-pixel math of core/cross_entropy.h. Per-unit partial sums are added
// in unit order, so the result does not depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "../cross_entropy_operands.h"
#include "blocks.h"
#include "cross_entropy_block.h"
#include "isa.h"

namespace segloss::ops {
namespace {

using cpu::kBlock;

const cpu::CrossEntropyBlockFunctions& functions() {
  static const cpu::CrossEntropyBlockFunctions table = cpu::for_selected_isa(
      &cpu::cross_entropy_block_functions_baseline, &cpu::cross_entropy_block_functions_avx2,
      &cpu::cross_entropy_block_functions_avx512);
  return table;
}

template <typename acc_t>
const cpu::CrossEntropyBlockLoops<acc_t>& loops() {
  return cpu::for_compute_type<acc_t>(functions());
}

// Pixels per unit: about 8 * kBlock logits, so that a unit's rows stay in
// the L1/L2 cache between their passes; fixed by C alone (determinism).
int64_t unit_pixels(int64_t classes) {
  return std::clamp<int64_t>(8 * kBlock / classes, 64, kBlock);
}

// Per-thread buffers, sized for one unit.
template <typename acc_t>
struct Scratch {
  std::vector<acc_t> x, grad, coefficient, loss, grad_output, work, ones;
  std::vector<int32_t> target;

  void ensure(int64_t classes, int64_t unit) {
    if (!coefficient.empty()) return;
    for (auto* rows : {&x, &grad}) rows->resize(classes * unit);
    for (auto* row : {&coefficient, &loss, &grad_output}) row->resize(unit);
    work.resize(cpu::kCrossEntropyWorkRows * unit);
    ones.assign(unit, acc_t(1));
    target.resize(unit);
  }
};

// One unit's operands: the logit rows in the compute type and the per-pixel
// targets and coefficients.
template <typename scalar_t, typename acc_t>
struct Unit {
  const acc_t* x = nullptr;
  int64_t x_stride = 0;
  const acc_t* weight_map = nullptr;    // the unit's pixels' map values (ones if none)
  const acc_t* class_weight = nullptr;  // or nullptr: 1
  bool labels_valid = true;

  Unit(const CrossEntropyOperands& ops, Scratch<acc_t>& s, int64_t n, int64_t begin,
       int64_t length) {
    const int64_t C = ops.classes, S = ops.pixels;
    const scalar_t* rows = ops.input.const_data_ptr<scalar_t>() + n * C * S + begin;
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      x = rows;
      x_stride = S;
    } else {
      for (int64_t c = 0; c < C; ++c) {
        for (int64_t i = 0; i < length; ++i) s.x[c * length + i] = acc_t(rows[c * S + i]);
      }
      x = s.x.data();
      x_stride = length;
    }
    const int64_t pixel0 = n * S + begin;
    const void* labels =
        static_cast<const char*>(ops.labels.const_data_ptr()) + pixel0 * ops.labels.element_size();
    weight_map =
        ops.weight_map.defined() ? ops.weight_map.const_data_ptr<acc_t>() + pixel0 : s.ones.data();
    class_weight = ops.weight.defined() ? ops.weight.const_data_ptr<acc_t>() : nullptr;
    int invalid = 0;
    loops<acc_t>().coefficients[cpu::label_type_of(ops.labels.scalar_type())][class_weight != nullptr](
        labels, weight_map, class_weight, length, ops.ignore_index, C, s.target.data(),
        s.coefficient.data(), &invalid);
    labels_valid = invalid == 0;
  }
};

int64_t units_per_image(const CrossEntropyOperands& ops) {
  const int64_t unit = unit_pixels(ops.classes);
  return (ops.pixels + unit - 1) / unit;
}

int64_t unit_count(const CrossEntropyOperands& ops) { return ops.batch * units_per_image(ops); }

// Calls body(unit, n, begin, length, scratch) for every unit, in parallel.
template <typename acc_t, typename Body>
void for_each_unit(const CrossEntropyOperands& ops, const Body& body) {
  const int64_t unit = unit_pixels(ops.classes);
  const int64_t per_image = units_per_image(ops);
  at::parallel_for(0, unit_count(ops), 1, [&](int64_t first, int64_t last) {
    Scratch<acc_t> scratch;
    scratch.ensure(ops.classes, unit);
    for (int64_t u = first; u < last; ++u) {
      const int64_t n = u / per_image;
      const int64_t begin = (u % per_image) * unit;
      body(u, n, begin, std::min(unit, ops.pixels - begin), scratch);
    }
  });
}

void check_labels(const std::vector<char>& labels_valid, const CrossEntropyOperands& ops) {
  check_class_indices(
      std::all_of(labels_valid.begin(), labels_valid.end(), [](char ok) { return ok != 0; }),
      ops);
}

template <typename scalar_t>
void forward_kernel(const CrossEntropyOperands& ops, at::Tensor& loss, at::Tensor& total_weight) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto& fns = loops<acc_t>();
  const bool reduce_loss = ops.reduction != Reduction::None;
  const int64_t units = unit_count(ops);
  std::vector<acc_t> loss_sums(units, 0), weight_sums(units, 0);
  std::vector<int64_t> counted(units, 0);
  std::vector<char> labels_valid(units, 1);

  for_each_unit<acc_t>(ops, [&](int64_t u, int64_t n, int64_t begin, int64_t length,
                                Scratch<acc_t>& s) {
    const Unit<scalar_t, acc_t> unit(ops, s, n, begin, length);
    labels_valid[u] = unit.labels_valid;
    scalar_t* out = reduce_loss ? nullptr : loss.mutable_data_ptr<scalar_t>() + n * ops.pixels + begin;
    acc_t* values = reduce_loss ? s.loss.data() : cpu::block_output(out, s.loss.data());
    fns.loss(unit.x, unit.x_stride, ops.classes, length, s.target.data(), s.coefficient.data(),
             unit.weight_map, unit.class_weight, acc_t(ops.gamma), acc_t(ops.label_smoothing),
             values, s.work.data());
    if (!reduce_loss) {
      cpu::store_block(values, length, out);
      return;
    }
    loss_sums[u] = cpu::sum_block(values, length);
    weight_sums[u] = cpu::sum_block(s.coefficient.data(), length);
    counted[u] = std::count_if(s.target.data(), s.target.data() + length,
                               [](int32_t t) { return t >= 0; });
  });

  check_labels(labels_valid, ops);
  double sum = 0, weight = 0, count = 0;  // in unit order: independent of the thread count
  for (int64_t u = 0; u < units; ++u) {
    sum += double(loss_sums[u]);
    weight += double(weight_sums[u]);
    count += double(counted[u]);
  }
  const double divide_by = cross_entropy_divisor(ops.reduction, count, weight);
  total_weight.fill_(divide_by);
  if (reduce_loss) loss.fill_(cross_entropy_reduced(ops.reduction, sum, divide_by));
}

template <typename scalar_t>
void backward_kernel(const CrossEntropyOperands& ops, const at::Tensor& grad_output,
                     double total_weight, at::Tensor& grad_input) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto& fns = loops<acc_t>();
  const bool per_pixel = ops.reduction == Reduction::None;
  const scalar_t* grad_out = grad_output.const_data_ptr<scalar_t>();
  // The reduction's factor: d(reduced)/d(loss_i) / coefficient_i.
  const acc_t scale =
      per_pixel ? acc_t(1) : acc_t(cross_entropy_reduced(ops.reduction, double(grad_out[0]), total_weight));
  const int64_t C = ops.classes, S = ops.pixels;
  std::vector<char> labels_valid(unit_count(ops), 1);

  for_each_unit<acc_t>(ops, [&](int64_t u, int64_t n, int64_t begin, int64_t length,
                                Scratch<acc_t>& s) {
    const Unit<scalar_t, acc_t> unit(ops, s, n, begin, length);
    labels_valid[u] = unit.labels_valid;
    const acc_t* g = per_pixel ? cpu::load_block(grad_out, core::BroadcastIndexer(),
                                                 n * S + begin, length, s.grad_output.data())
                               : nullptr;
    scalar_t* out = grad_input.mutable_data_ptr<scalar_t>() + n * C * S + begin;
    acc_t* grad = cpu::block_output(out, s.grad.data());
    const int64_t grad_stride = std::is_same_v<scalar_t, acc_t> ? S : length;
    fns.grad(unit.x, unit.x_stride, C, length, s.target.data(), s.coefficient.data(),
             unit.weight_map, unit.class_weight, acc_t(ops.gamma), acc_t(ops.label_smoothing), g,
             scale, grad, grad_stride, s.work.data());
    if constexpr (!std::is_same_v<scalar_t, acc_t>) {
      for (int64_t c = 0; c < C; ++c) cpu::store_block(grad + c * length, length, out + c * S);
    }
  });
  check_labels(labels_valid, ops);
}

std::tuple<at::Tensor, at::Tensor> weighted_cross_entropy_cpu(
    const at::Tensor& input, const at::Tensor& target,
    const std::optional<at::Tensor>& weight_map, const std::optional<at::Tensor>& weight,
    int64_t ignore_index, std::string_view reduction, double gamma, double label_smoothing,
    std::string_view caller) {
  const CrossEntropyOperands ops = prepare_cross_entropy_operands(
      input, target, weight_map, weight, ignore_index, reduction, gamma, label_smoothing, caller);
  at::Tensor loss = empty_cross_entropy_loss(ops.input, ops.reduction);
  at::Tensor total_weight = empty_cross_entropy_total_weight(ops.input);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ops.input.scalar_type(),
                                  "segloss_weighted_cross_entropy_cpu",
                                  [&] { forward_kernel<scalar_t>(ops, loss, total_weight); });
  return {loss, total_weight};
}

at::Tensor weighted_cross_entropy_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& target,
    const std::optional<at::Tensor>& weight_map, const std::optional<at::Tensor>& weight,
    int64_t ignore_index, std::string_view reduction, const at::Tensor& total_weight,
    double gamma, double label_smoothing, std::string_view caller) {
  const CrossEntropyOperands ops = prepare_cross_entropy_operands(
      input, target, weight_map, weight, ignore_index, reduction, gamma, label_smoothing, caller);
  const at::Tensor grad_out = prepare_cross_entropy_grad_output(grad_output, ops);
  check_cross_entropy_total_weight(caller, total_weight, ops.input);
  const double divide_by = total_weight.item<double>();
  at::Tensor grad_input = at::empty_like(ops.input, at::MemoryFormat::Contiguous);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, ops.input.scalar_type(), "segloss_weighted_cross_entropy_backward_cpu",
      [&] { backward_kernel<scalar_t>(ops, grad_out, divide_by, grad_input); });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(segloss, CPU, m) {
  m.impl("_weighted_cross_entropy", &weighted_cross_entropy_cpu);
  m.impl("_weighted_cross_entropy_backward", &weighted_cross_entropy_backward_cpu);
}

}  // namespace segloss::ops
