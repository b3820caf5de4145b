// CPU kernels of the binary cross-entropy ops.
//
// The input is walked in fixed blocks of kBlock elements. Each block's
// operands are brought to the compute type in small per-thread buffers (or
// read in place when they already are), then one loop per block calls the
// shared per-element math (bce_block.h, built per instruction set). Block
// sums are stored per block and added in block order, so a reduced loss has
// the same bits for any thread count.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "../bce_operands.h"
#include "bce_block.h"

namespace segloss::ops {
namespace {

constexpr int64_t kBlock = 2048;

using core::BroadcastIndexer;

// The widest instruction set the CPU supports, capped by the environment
// variable SEGLOSS_CPU_ISA (baseline, avx2 or avx512) when it is set.
const cpu::BceBlockFunctions& block_functions() {
  static const cpu::BceBlockFunctions functions = [] {
    const char* cap = std::getenv("SEGLOSS_CPU_ISA");
    const bool allow_avx512 = cap == nullptr || std::strcmp(cap, "avx512") == 0;
    const bool allow_avx2 = allow_avx512 || std::strcmp(cap, "avx2") == 0;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (allow_avx512 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")) {
      return cpu::bce_block_functions_avx512();
    }
    if (allow_avx2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
      return cpu::bce_block_functions_avx2();
    }
#else
    (void)allow_avx2;
#endif
    return cpu::bce_block_functions_baseline();
  }();
  return functions;
}

template <typename acc_t>
const cpu::BceBlockLoops<acc_t>& block_loops() {
  if constexpr (std::is_same_v<acc_t, double>) {
    return block_functions().f64;
  } else {
    return block_functions().f32;
  }
}

template <class Variant, typename acc_t>
typename cpu::BceBlockLoops<acc_t>::Loss loss_loop() {
  const auto& loops = block_loops<acc_t>();
  return std::is_same_v<Variant, core::LogitsBce> ? loops.logits_loss : loops.probability_loss;
}

template <class Variant, typename acc_t>
typename cpu::BceBlockLoops<acc_t>::Grad grad_loop() {
  const auto& loops = block_loops<acc_t>();
  return std::is_same_v<Variant, core::LogitsBce> ? loops.logits_grad : loops.probability_grad;
}

// kBlock values of each operand in the compute type.
template <typename acc_t>
struct BlockBuffers {
  std::unique_ptr<acc_t[]> storage{new acc_t[7 * kBlock]};
  acc_t* input() { return storage.get(); }
  acc_t* target() { return storage.get() + kBlock; }
  acc_t* weight() { return storage.get() + 2 * kBlock; }
  acc_t* pos_weight() { return storage.get() + 3 * kBlock; }
  acc_t* grad_output() { return storage.get() + 4 * kBlock; }
  acc_t* result() { return storage.get() + 5 * kBlock; }
  acc_t* ones() { return storage.get() + 6 * kBlock; }
  BlockBuffers() { std::fill(ones(), ones() + kBlock, acc_t(1)); }
};

// Elements [begin, begin + n) of an operand in the compute type: a pointer into
// the tensor when its layout and dtype already match, otherwise a copy into
// `buffer`, read row by row along the operand's innermost dimension.
template <typename scalar_t, typename acc_t>
const acc_t* load_block(const scalar_t* data, const BroadcastIndexer& index, int64_t begin,
                        int64_t n, acc_t* buffer) {
  if (index.is_identity()) {
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      return data + begin;
    } else {
      for (int64_t i = 0; i < n; ++i) buffer[i] = acc_t(data[begin + i]);
      return buffer;
    }
  }
  const int64_t inner_size = index.sizes[index.ndim - 1];
  const int64_t inner_stride = index.strides[index.ndim - 1];
  for (int64_t i = 0; i < n;) {
    const int64_t linear = begin + i;
    const int64_t run = std::min(inner_size - linear % inner_size, n - i);
    const scalar_t* row = data + index.offset(linear);
    acc_t* dst = buffer + i;
    // The common layouts get loops the compiler vectorises.
    if (inner_stride == 0) {
      std::fill(dst, dst + run, acc_t(row[0]));
    } else if (inner_stride == 1) {
      for (int64_t j = 0; j < run; ++j) dst[j] = acc_t(row[j]);
    } else {
      for (int64_t j = 0; j < run; ++j) dst[j] = acc_t(row[j * inner_stride]);
    }
    i += run;
  }
  return buffer;
}

// An optional weight reads as ones when absent.
template <typename scalar_t, typename acc_t>
const acc_t* load_optional_block(const at::Tensor& tensor, const BroadcastIndexer& index,
                                 int64_t begin, int64_t n, acc_t* buffer, const acc_t* ones) {
  if (!tensor.defined()) return ones;
  return load_block(tensor.const_data_ptr<scalar_t>(), index, begin, n, buffer);
}

// Where a block loop writes its results: straight into the output when it
// has the compute type, else into `buffer` for store_block to convert.
template <typename scalar_t, typename acc_t>
acc_t* block_output(scalar_t* out, acc_t* buffer) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    return out;
  } else {
    return buffer;
  }
}

template <typename scalar_t, typename acc_t>
void store_block(const acc_t* values, int64_t n, scalar_t* out) {
  if constexpr (!std::is_same_v<scalar_t, acc_t>) {
    for (int64_t i = 0; i < n; ++i) out[i] = scalar_t(values[i]);
  }
}

// Sum of n <= kBlock values with independent lanes (vectorisable, and more
// accurate than one running sum), combined pairwise.
template <typename acc_t>
acc_t sum_block(const acc_t* values, int64_t n) {
  constexpr int kLanes = 16;
  acc_t lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) lanes[j] += values[i + j];
  }
  for (int j = 0; i < n; ++i, ++j) lanes[j] += values[i];
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int j = 0; j < width; ++j) lanes[j] += lanes[j + width];
  }
  return lanes[0];
}

// Calls body(block_index, begin, n, buffers) for every block, in parallel.
template <typename acc_t, typename Body>
void for_each_block(int64_t numel, const Body& body) {
  const int64_t blocks = (numel + kBlock - 1) / kBlock;
  at::parallel_for(0, blocks, 1, [&](int64_t first, int64_t last) {
    BlockBuffers<acc_t> buffers;
    for (int64_t b = first; b < last; ++b) {
      const int64_t begin = b * kBlock;
      body(b, begin, std::min(kBlock, numel - begin), buffers);
    }
  });
}

// The operands of one block in the compute type.
template <typename scalar_t, typename acc_t>
struct Block {
  const acc_t* input;
  const acc_t* target;
  const acc_t* weight;
  const acc_t* pos_weight;

  Block(const BceOperands& ops, int64_t begin, int64_t n, BlockBuffers<acc_t>& buf) {
    const BroadcastIndexer identity;
    input = load_block(ops.input.const_data_ptr<scalar_t>(), identity, begin, n, buf.input());
    target = load_block(ops.target.const_data_ptr<scalar_t>(), identity, begin, n, buf.target());
    weight = load_optional_block<scalar_t>(ops.weight, ops.weight_index, begin, n, buf.weight(),
                                           buf.ones());
    pos_weight = load_optional_block<scalar_t>(ops.pos_weight, ops.pos_weight_index, begin, n,
                                               buf.pos_weight(), buf.ones());
  }
};

template <class Variant, typename scalar_t>
void bce_forward_kernel(const BceOperands& ops, at::Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto loss_fn = loss_loop<Variant, acc_t>();
  const int64_t numel = ops.input.numel();
  const bool reduce = ops.reduction != Reduction::None;
  const int64_t blocks = (numel + kBlock - 1) / kBlock;
  std::vector<acc_t> block_sums(reduce ? blocks : 0);
  std::vector<int> block_out_of_domain(blocks, 0);

  for_each_block<acc_t>(numel, [&](int64_t b, int64_t begin, int64_t n,
                                   BlockBuffers<acc_t>& buf) {
    const Block<scalar_t, acc_t> in(ops, begin, n, buf);
    acc_t* loss = reduce ? buf.result() : block_output(out.mutable_data_ptr<scalar_t>() + begin,
                                                        buf.result());
    loss_fn(in.input, in.target, in.weight, in.pos_weight, loss, n, &block_out_of_domain[b]);
    if (reduce) {
      block_sums[b] = sum_block(loss, n);
    } else {
      store_block(loss, n, out.mutable_data_ptr<scalar_t>() + begin);
    }
  });

  TORCH_CHECK(std::none_of(block_out_of_domain.begin(), block_out_of_domain.end(),
                           [](int bad) { return bad != 0; }),
              bce_op_name<Variant>(), ": every element of input must be a probability in [0, 1]");
  if (reduce) {
    double total = 0;  // in block order: independent of the thread count
    for (acc_t s : block_sums) total += double(s);
    if (ops.reduction == Reduction::Mean) total /= double(numel);
    out.mutable_data_ptr<scalar_t>()[0] = scalar_t(total);
  }
}

template <class Variant, typename scalar_t>
void bce_backward_kernel(const BceOperands& ops, const at::Tensor& grad_output,
                         at::Tensor& grad_input) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto grad_fn = grad_loop<Variant, acc_t>();
  const int64_t numel = ops.input.numel();
  const bool reduce = ops.reduction != Reduction::None;
  const scalar_t* grad_out = grad_output.const_data_ptr<scalar_t>();
  scalar_t* grad_in = grad_input.mutable_data_ptr<scalar_t>();
  acc_t scale = 1;
  if (reduce) {
    scale = acc_t(grad_out[0]);
    if (ops.reduction == Reduction::Mean) scale = acc_t(double(scale) / double(numel));
  }

  for_each_block<acc_t>(numel, [&](int64_t, int64_t begin, int64_t n, BlockBuffers<acc_t>& buf) {
    const Block<scalar_t, acc_t> in(ops, begin, n, buf);
    const acc_t* g =
        reduce ? nullptr : load_block(grad_out, BroadcastIndexer(), begin, n, buf.grad_output());
    acc_t* grad = block_output(grad_in + begin, buf.result());
    grad_fn(in.input, in.target, in.weight, in.pos_weight, g, scale, grad, n);
    store_block(grad, n, grad_in + begin);
  });
}

template <class Variant>
at::Tensor bce_forward_cpu(const at::Tensor& input, const at::Tensor& target,
                           const std::optional<at::Tensor>& weight,
                           const std::optional<at::Tensor>& pos_weight,
                           std::string_view reduction) {
  const BceOperands ops =
      prepare_bce_operands(bce_op_name<Variant>(), input, target, weight, pos_weight, reduction);
  at::Tensor out = empty_bce_output(ops.input, ops.reduction);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ops.input.scalar_type(),
                                  "segloss_bce_forward_cpu",
                                  [&] { bce_forward_kernel<Variant, scalar_t>(ops, out); });
  return out;
}

template <class Variant>
at::Tensor bce_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                            const at::Tensor& target, const std::optional<at::Tensor>& weight,
                            const std::optional<at::Tensor>& pos_weight,
                            std::string_view reduction) {
  const BceOperands ops =
      prepare_bce_operands(bce_op_name<Variant>(), input, target, weight, pos_weight, reduction);
  const at::Tensor grad_out = prepare_bce_grad_output(bce_op_name<Variant>(), grad_output, ops);
  at::Tensor grad_input = empty_bce_output(ops.input, Reduction::None);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, ops.input.scalar_type(), "segloss_bce_backward_cpu",
      [&] { bce_backward_kernel<Variant, scalar_t>(ops, grad_out, grad_input); });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(segloss, CPU, m) {
  m.impl("binary_cross_entropy", &bce_forward_cpu<core::ProbabilityBce>);
  m.impl("binary_cross_entropy_with_logits", &bce_forward_cpu<core::LogitsBce>);
  m.impl("_binary_cross_entropy_backward", &bce_backward_cpu<core::ProbabilityBce>);
  m.impl("_binary_cross_entropy_with_logits_backward", &bce_backward_cpu<core::LogitsBce>);
}

}  // namespace segloss::ops
