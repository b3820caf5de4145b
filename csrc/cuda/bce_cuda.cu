// CUDA kernels of the binary cross-entropy ops: grid-stride loops over the
// per-element math shared with the CPU (csrc/core/bce.h). Reductions are
// deterministic: a fixed number of blocks each writes its partial sum, then
// one block adds the partials in a fixed order (no float atomics).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../core/bce.h"
#include "../core/broadcast.h"
#include "../ops/bce_operands.h"
#include "cuda_utils.cuh"

namespace segloss::ops {
namespace {

using cuda::block_sum;
using cuda::grid_size;
using cuda::kThreads;

using cuda::kMaxElementwiseBlocks;
using cuda::kMaxReduceBlocks;

// The operands as raw pointers; absent weights read as 1.
template <typename scalar_t>
struct DeviceOperands {
  const scalar_t* input;
  const scalar_t* target;
  const scalar_t* weight;
  const scalar_t* pos_weight;
  core::BroadcastIndexer weight_index;
  core::BroadcastIndexer pos_weight_index;
  int64_t numel;

  explicit DeviceOperands(const BceOperands& ops)
      : input(ops.input.const_data_ptr<scalar_t>()),
        target(ops.target.const_data_ptr<scalar_t>()),
        weight(ops.weight.defined() ? ops.weight.const_data_ptr<scalar_t>() : nullptr),
        pos_weight(ops.pos_weight.defined() ? ops.pos_weight.const_data_ptr<scalar_t>() : nullptr),
        weight_index(ops.weight_index),
        pos_weight_index(ops.pos_weight_index),
        numel(ops.input.numel()) {}

  template <typename acc_t>
  __device__ acc_t weight_at(int64_t i) const {
    return weight == nullptr ? acc_t(1) : acc_t(weight[weight_index.offset(i)]);
  }
  template <typename acc_t>
  __device__ acc_t pos_weight_at(int64_t i) const {
    return pos_weight == nullptr ? acc_t(1) : acc_t(pos_weight[pos_weight_index.offset(i)]);
  }
  template <class Variant, typename acc_t>
  __device__ acc_t loss_at(int64_t i) const {
    return weight_at<acc_t>(i) *
           Variant::loss(acc_t(input[i]), acc_t(target[i]), pos_weight_at<acc_t>(i));
  }
  template <class Variant, typename acc_t>
  __device__ acc_t grad_at(int64_t i) const {
    return Variant::grad(acc_t(input[i]), acc_t(target[i]), pos_weight_at<acc_t>(i)) *
           weight_at<acc_t>(i);
  }
};

template <class Variant, typename scalar_t, typename acc_t>
__global__ void bce_loss_kernel(DeviceOperands<scalar_t> ops, scalar_t* loss) {
  SEGLOSS_GRID_STRIDE_LOOP(i, ops.numel) {
    loss[i] = scalar_t(ops.template loss_at<Variant, acc_t>(i));
  }
}

template <class Variant, typename scalar_t, typename acc_t>
__global__ void bce_partial_sums_kernel(DeviceOperands<scalar_t> ops, acc_t* partials) {
  acc_t sum = 0;
  SEGLOSS_GRID_STRIDE_LOOP(i, ops.numel) { sum += ops.template loss_at<Variant, acc_t>(i); }
  sum = block_sum(sum);
  if (threadIdx.x == 0) partials[blockIdx.x] = sum;
}

// One block: out = scale * sum(partials), added in double in a fixed order.
// With no partials and scale = 1/0 (mean of nothing) this gives NaN, as torch.
template <typename scalar_t, typename acc_t>
__global__ void finish_sum_kernel(const acc_t* partials, int64_t count, double scale,
                                  scalar_t* out) {
  double sum = 0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) sum += double(partials[i]);
  sum = block_sum(sum);
  if (threadIdx.x == 0) out[0] = scalar_t(sum * scale);
}

// grad_output is input-shaped for reduction 'none' (grad_scale unused), else
// one value that grad_scale (1 or 1/numel) scales.
template <class Variant, typename scalar_t, typename acc_t>
__global__ void bce_grad_kernel(DeviceOperands<scalar_t> ops, const scalar_t* grad_output,
                                bool elementwise_grad_output, acc_t grad_scale,
                                scalar_t* grad_input) {
  const acc_t reduced_grad = elementwise_grad_output ? acc_t(0) : acc_t(grad_output[0]) * grad_scale;
  SEGLOSS_GRID_STRIDE_LOOP(i, ops.numel) {
    const acc_t g = elementwise_grad_output ? acc_t(grad_output[i]) : reduced_grad;
    grad_input[i] = scalar_t(ops.template grad_at<Variant, acc_t>(i) * g);
  }
}

template <class Variant, typename scalar_t>
void bce_forward_launch(const BceOperands& ops, at::Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  const DeviceOperands<scalar_t> device_ops(ops);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (ops.reduction == Reduction::None) {
    if (device_ops.numel == 0) return;
    bce_loss_kernel<Variant, scalar_t, acc_t>
        <<<grid_size(device_ops.numel, kMaxElementwiseBlocks), kThreads, 0, stream>>>(
            device_ops, out.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  const int64_t blocks = device_ops.numel == 0 ? 0 : grid_size(device_ops.numel, kMaxReduceBlocks);
  const at::Tensor partials = at::empty(
      {blocks}, ops.input.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
  if (blocks > 0) {
    bce_partial_sums_kernel<Variant, scalar_t, acc_t><<<blocks, kThreads, 0, stream>>>(
        device_ops, partials.mutable_data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  const double scale = ops.reduction == Reduction::Mean ? 1.0 / double(device_ops.numel) : 1.0;
  finish_sum_kernel<scalar_t, acc_t><<<1, kThreads, 0, stream>>>(
      partials.const_data_ptr<acc_t>(), blocks, scale, out.mutable_data_ptr<scalar_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <class Variant, typename scalar_t>
void bce_backward_launch(const BceOperands& ops, const at::Tensor& grad_output,
                         at::Tensor& grad_input) {
  using acc_t = at::opmath_type<scalar_t>;
  const DeviceOperands<scalar_t> device_ops(ops);
  if (device_ops.numel == 0) return;
  const bool elementwise = ops.reduction == Reduction::None;
  const acc_t scale =
      ops.reduction == Reduction::Mean ? acc_t(1.0 / double(device_ops.numel)) : acc_t(1);
  bce_grad_kernel<Variant, scalar_t, acc_t>
      <<<grid_size(device_ops.numel, kMaxElementwiseBlocks), kThreads, 0,
         c10::cuda::getCurrentCUDAStream()>>>(device_ops, grad_output.const_data_ptr<scalar_t>(),
                                              elementwise, scale,
                                              grad_input.mutable_data_ptr<scalar_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <class Variant>
at::Tensor bce_forward_cuda(const at::Tensor& input, const at::Tensor& target,
                            const std::optional<at::Tensor>& weight,
                            const std::optional<at::Tensor>& pos_weight,
                            std::string_view reduction) {
  const c10::cuda::CUDAGuard guard(input.device());
  const BceOperands ops =
      prepare_bce_operands(bce_op_name<Variant>(), input, target, weight, pos_weight, reduction);
  at::Tensor out = empty_bce_output(ops.input, ops.reduction);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ops.input.scalar_type(),
                                  "segloss_bce_forward_cuda",
                                  [&] { bce_forward_launch<Variant, scalar_t>(ops, out); });
  return out;
}

template <class Variant>
at::Tensor bce_backward_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                             const at::Tensor& target, const std::optional<at::Tensor>& weight,
                             const std::optional<at::Tensor>& pos_weight,
                             std::string_view reduction) {
  const c10::cuda::CUDAGuard guard(input.device());
  const BceOperands ops =
      prepare_bce_operands(bce_op_name<Variant>(), input, target, weight, pos_weight, reduction);
  const at::Tensor grad_out = prepare_bce_grad_output(bce_op_name<Variant>(), grad_output, ops);
  at::Tensor grad_input = empty_bce_output(ops.input, Reduction::None);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, ops.input.scalar_type(), "segloss_bce_backward_cuda",
      [&] { bce_backward_launch<Variant, scalar_t>(ops, grad_out, grad_input); });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(segloss, CUDA, m) {
  m.impl("binary_cross_entropy", &bce_forward_cuda<core::ProbabilityBce>);
  m.impl("binary_cross_entropy_with_logits", &bce_forward_cuda<core::LogitsBce>);
  m.impl("_binary_cross_entropy_backward", &bce_backward_cuda<core::ProbabilityBce>);
  m.impl("_binary_cross_entropy_with_logits_backward", &bce_backward_cuda<core::LogitsBce>);
}

}  // namespace segloss::ops
