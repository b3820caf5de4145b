// CPU kernels of the pointwise ops (segloss::_pointwise_loss and its
// backward), one pair for every row of core/pointwise.h.
//
// The input is walked in fixed blocks of kBlock elements. Each block's
// operands are brought to the compute type in small per-thread buffers (or
// read in place when they already are), then the row's loop (built per
// instruction set, pointwise_block.h) calls the shared per-element math.
// Block sums are stored per block and added in block order, so a reduced loss
// has the same bits for any thread count.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "../pointwise_operands.h"
#include "blocks.h"
#include "isa.h"
#include "pointwise_block.h"

namespace segloss::ops {
namespace {

using core::BroadcastIndexer;
using cpu::kBlock;
using cpu::load_block;

const cpu::PointwiseBlockFunctions& block_functions() {
  static const cpu::PointwiseBlockFunctions functions = cpu::for_selected_isa(
      &cpu::pointwise_block_functions_baseline, &cpu::pointwise_block_functions_avx2,
      &cpu::pointwise_block_functions_avx512);
  return functions;
}

template <typename acc_t>
const cpu::PointwiseBlockLoops<acc_t>& block_loops() {
  return cpu::for_compute_type<acc_t>(block_functions());
}

// kBlock values of each operand in the compute type.
template <typename acc_t>
struct BlockBuffers {
  std::unique_ptr<acc_t[]> storage{new acc_t[7 * kBlock]};
  acc_t* input() { return storage.get(); }
  acc_t* target() { return storage.get() + kBlock; }
  acc_t* weight() { return storage.get() + 2 * kBlock; }
  acc_t* aux() { return storage.get() + 3 * kBlock; }
  acc_t* grad_output() { return storage.get() + 4 * kBlock; }
  acc_t* result() { return storage.get() + 5 * kBlock; }
  acc_t* ones() { return storage.get() + 6 * kBlock; }
  BlockBuffers() { std::fill(ones(), ones() + kBlock, acc_t(1)); }
};

// An optional operand (in the compute type) reads as ones when absent.
template <typename acc_t>
const acc_t* load_optional_block(const at::Tensor& tensor, const BroadcastIndexer& index,
                                 int64_t begin, int64_t n, acc_t* buffer, const acc_t* ones) {
  if (!tensor.defined()) return ones;
  return load_block(tensor.const_data_ptr<acc_t>(), index, begin, n, buffer);
}

// The operands of one block in the compute type.
template <typename scalar_t, typename acc_t>
struct Block {
  const acc_t* input;
  const acc_t* target;
  const acc_t* weight;
  const acc_t* aux;

  Block(const PointwiseOperands& ops, int64_t begin, int64_t n, BlockBuffers<acc_t>& buf) {
    const BroadcastIndexer identity;
    input = load_block(ops.input.const_data_ptr<scalar_t>(), identity, begin, n, buf.input());
    target = load_block(ops.target.const_data_ptr<scalar_t>(), identity, begin, n, buf.target());
    weight = load_optional_block(ops.weight, ops.weight_index, begin, n, buf.weight(), buf.ones());
    aux = load_optional_block(ops.aux, ops.aux_index, begin, n, buf.aux(), buf.ones());
  }
};

template <typename scalar_t>
void forward_kernel(const PointwiseOperands& ops, at::Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto loss_fn = block_loops<acc_t>().loss[int(ops.loss)];
  const auto params = ops.params.as<acc_t>();
  const int64_t numel = ops.input.numel();
  const bool reduce = ops.reduction != Reduction::None;
  const int64_t blocks = (numel + kBlock - 1) / kBlock;
  std::vector<acc_t> block_sums(reduce ? blocks : 0);
  std::vector<int> block_out_of_domain(blocks, 0);

  cpu::for_each_block<BlockBuffers<acc_t>>(numel, [&](int64_t b, int64_t begin, int64_t n,
                                                      BlockBuffers<acc_t>& buf) {
    const Block<scalar_t, acc_t> in(ops, begin, n, buf);
    acc_t* loss = reduce ? buf.result()
                         : cpu::block_output(out.mutable_data_ptr<scalar_t>() + begin,
                                             buf.result());
    loss_fn(in.input, in.target, in.weight, in.aux, params, loss, n, &block_out_of_domain[b]);
    if (reduce) {
      block_sums[b] = cpu::sum_block(loss, n);
    } else {
      cpu::store_block(loss, n, out.mutable_data_ptr<scalar_t>() + begin);
    }
  });

  if (std::any_of(block_out_of_domain.begin(), block_out_of_domain.end(),
                  [](int bad) { return bad != 0; })) {
    const char* domain = core::visit_pointwise_policy(
        ops.loss, [](auto policy) { return decltype(policy)::kDomain; });
    TORCH_CHECK(false, ops.caller, ": every element of input must be ", domain);
  }
  if (reduce) {
    double total = 0;  // in block order: independent of the thread count
    for (acc_t s : block_sums) total += double(s);
    if (ops.reduction == Reduction::Mean) total /= double(numel);
    out.mutable_data_ptr<scalar_t>()[0] = scalar_t(total);
  }
}

template <typename scalar_t>
void backward_kernel(const PointwiseOperands& ops, const at::Tensor& grad_output,
                     at::Tensor& grad_input) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto grad_fn = block_loops<acc_t>().grad[int(ops.loss)];
  const auto params = ops.params.as<acc_t>();
  const int64_t numel = ops.input.numel();
  const bool reduce = ops.reduction != Reduction::None;
  const scalar_t* grad_out = grad_output.const_data_ptr<scalar_t>();
  scalar_t* grad_in = grad_input.mutable_data_ptr<scalar_t>();
  acc_t scale = 1;
  if (reduce) {
    scale = acc_t(grad_out[0]);
    if (ops.reduction == Reduction::Mean) scale = acc_t(double(scale) / double(numel));
  }

  cpu::for_each_block<BlockBuffers<acc_t>>(numel, [&](int64_t, int64_t begin, int64_t n,
                                                      BlockBuffers<acc_t>& buf) {
    const Block<scalar_t, acc_t> in(ops, begin, n, buf);
    const acc_t* g =
        reduce ? nullptr : load_block(grad_out, BroadcastIndexer(), begin, n, buf.grad_output());
    acc_t* grad = cpu::block_output(grad_in + begin, buf.result());
    grad_fn(in.input, in.target, in.weight, in.aux, params, g, scale, grad, n);
    cpu::store_block(grad, n, grad_in + begin);
  });
}

at::Tensor pointwise_loss_cpu(const at::Tensor& input, const at::Tensor& target,
                              const std::optional<at::Tensor>& weight,
                              const std::optional<at::Tensor>& aux, std::string_view reduction,
                              std::string_view loss, at::ArrayRef<double> params,
                              std::string_view caller) {
  const PointwiseOperands ops =
      prepare_pointwise_operands(caller, input, target, weight, aux, reduction, loss, params);
  at::Tensor out = empty_pointwise_output(ops.input, ops.reduction);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ops.input.scalar_type(),
                                  "segloss_pointwise_loss_cpu",
                                  [&] { forward_kernel<scalar_t>(ops, out); });
  return out;
}

at::Tensor pointwise_loss_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                       const at::Tensor& target,
                                       const std::optional<at::Tensor>& weight,
                                       const std::optional<at::Tensor>& aux,
                                       std::string_view reduction, std::string_view loss,
                                       at::ArrayRef<double> params, std::string_view caller) {
  const PointwiseOperands ops =
      prepare_pointwise_operands(caller, input, target, weight, aux, reduction, loss, params);
  const at::Tensor grad_out = prepare_pointwise_grad_output(grad_output, ops);
  at::Tensor grad_input = empty_pointwise_output(ops.input, Reduction::None);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ops.input.scalar_type(),
                                  "segloss_pointwise_loss_backward_cpu",
                                  [&] { backward_kernel<scalar_t>(ops, grad_out, grad_input); });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(segloss, CPU, m) {
  m.impl("_pointwise_loss", &pointwise_loss_cpu);
  m.impl("_pointwise_loss_backward", &pointwise_loss_backward_cpu);
}

}  // namespace segloss::ops
