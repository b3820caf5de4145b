// CUDA kernels of the pointwise ops (segloss::_pointwise_loss and its
// backward): grid-stride loops over the per-element math shared with the CPU
// (the policies of csrc/core/pointwise.h), instantiated for every row. Reductions are
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

#include "../core/broadcast.h"
#include "../core/pointwise.h"
#include "../ops/pointwise_operands.h"
#include "cuda_utils.cuh"

namespace segloss::ops {
namespace {

using cuda::block_sum;
using cuda::grid_size;
using cuda::kThreads;

using cuda::kMaxElementwiseBlocks;
using cuda::kMaxReduceBlocks;

// The operands as raw pointers; absent weights read as 1.
template <typename scalar_t, typename acc_t>
struct DeviceOperands {
  const scalar_t* input;
  const scalar_t* target;
  const acc_t* weight;  // in the compute type (pointwise_operands.cpp)
  const acc_t* aux;
  core::BroadcastIndexer weight_index;
  core::BroadcastIndexer aux_index;
  core::PointwiseParams<acc_t> params;
  int64_t numel;

  explicit DeviceOperands(const PointwiseOperands& ops)
      : input(ops.input.const_data_ptr<scalar_t>()),
        target(ops.target.const_data_ptr<scalar_t>()),
        weight(ops.weight.defined() ? ops.weight.const_data_ptr<acc_t>() : nullptr),
        aux(ops.aux.defined() ? ops.aux.const_data_ptr<acc_t>() : nullptr),
        weight_index(ops.weight_index),
        aux_index(ops.aux_index),
        params(ops.params.as<acc_t>()),
        numel(ops.input.numel()) {}

  __device__ acc_t weight_at(int64_t i) const {
    return weight == nullptr ? acc_t(1) : weight[weight_index.offset(i)];
  }
  __device__ acc_t aux_at(int64_t i) const {
    return aux == nullptr ? acc_t(1) : aux[aux_index.offset(i)];
  }
  template <class Policy>
  __device__ acc_t loss_at(int64_t i) const {
    return weight_at(i) * Policy::loss(acc_t(input[i]), acc_t(target[i]), aux_at(i), params);
  }
  template <class Policy>
  __device__ acc_t grad_at(int64_t i) const {
    return Policy::grad(acc_t(input[i]), acc_t(target[i]), aux_at(i), params) * weight_at(i);
  }
};

template <class Policy, typename scalar_t, typename acc_t>
__global__ void pointwise_loss_kernel(DeviceOperands<scalar_t, acc_t> ops, scalar_t* loss) {
  SEGLOSS_GRID_STRIDE_LOOP(i, ops.numel) {
    loss[i] = scalar_t(ops.template loss_at<Policy>(i));
  }
}

template <class Policy, typename scalar_t, typename acc_t>
__global__ void pointwise_partial_sums_kernel(DeviceOperands<scalar_t, acc_t> ops,
                                              acc_t* partials) {
  acc_t sum = 0;
  SEGLOSS_GRID_STRIDE_LOOP(i, ops.numel) { sum += ops.template loss_at<Policy>(i); }
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
template <class Policy, typename scalar_t, typename acc_t>
__global__ void pointwise_grad_kernel(DeviceOperands<scalar_t, acc_t> ops,
                                      const scalar_t* grad_output, bool elementwise_grad_output,
                                      acc_t grad_scale, scalar_t* grad_input) {
  const acc_t reduced_grad = elementwise_grad_output ? acc_t(0) : acc_t(grad_output[0]) * grad_scale;
  SEGLOSS_GRID_STRIDE_LOOP(i, ops.numel) {
    const acc_t g = elementwise_grad_output ? acc_t(grad_output[i]) : reduced_grad;
    grad_input[i] = scalar_t(ops.template grad_at<Policy>(i) * g);
  }
}

template <class Policy, typename scalar_t>
void forward_launch(const PointwiseOperands& ops, at::Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  const DeviceOperands<scalar_t, acc_t> device_ops(ops);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (ops.reduction == Reduction::None) {
    if (device_ops.numel == 0) return;
    pointwise_loss_kernel<Policy, scalar_t, acc_t>
        <<<grid_size(device_ops.numel, kMaxElementwiseBlocks), kThreads, 0, stream>>>(
            device_ops, out.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  const int64_t blocks = device_ops.numel == 0 ? 0 : grid_size(device_ops.numel, kMaxReduceBlocks);
  const at::Tensor partials = at::empty(
      {blocks}, ops.input.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
  if (blocks > 0) {
    pointwise_partial_sums_kernel<Policy, scalar_t, acc_t><<<blocks, kThreads, 0, stream>>>(
        device_ops, partials.mutable_data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  const double scale = ops.reduction == Reduction::Mean ? 1.0 / double(device_ops.numel) : 1.0;
  finish_sum_kernel<scalar_t, acc_t><<<1, kThreads, 0, stream>>>(
      partials.const_data_ptr<acc_t>(), blocks, scale, out.mutable_data_ptr<scalar_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <class Policy, typename scalar_t>
void backward_launch(const PointwiseOperands& ops, const at::Tensor& grad_output,
                     at::Tensor& grad_input) {
  using acc_t = at::opmath_type<scalar_t>;
  const DeviceOperands<scalar_t, acc_t> device_ops(ops);
  if (device_ops.numel == 0) return;
  const bool elementwise = ops.reduction == Reduction::None;
  const acc_t scale =
      ops.reduction == Reduction::Mean ? acc_t(1.0 / double(device_ops.numel)) : acc_t(1);
  pointwise_grad_kernel<Policy, scalar_t, acc_t>
      <<<grid_size(device_ops.numel, kMaxElementwiseBlocks), kThreads, 0,
         c10::cuda::getCurrentCUDAStream()>>>(device_ops, grad_output.const_data_ptr<scalar_t>(),
                                              elementwise, scale,
                                              grad_input.mutable_data_ptr<scalar_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// On CUDA an input outside a policy's domain gives NaN (no device check).
at::Tensor pointwise_loss_cuda(const at::Tensor& input, const at::Tensor& target,
                               const std::optional<at::Tensor>& weight,
                               const std::optional<at::Tensor>& aux, std::string_view reduction,
                               std::string_view loss, at::ArrayRef<double> params,
                               std::string_view caller) {
  const c10::cuda::CUDAGuard guard(input.device());
  const PointwiseOperands ops =
      prepare_pointwise_operands(caller, input, target, weight, aux, reduction, loss, params);
  at::Tensor out = empty_pointwise_output(ops.input, ops.reduction);
  core::visit_pointwise_policy(ops.loss, [&](auto policy) {
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, ops.input.scalar_type(), "segloss_pointwise_loss_cuda",
        [&] { forward_launch<decltype(policy), scalar_t>(ops, out); });
  });
  return out;
}

at::Tensor pointwise_loss_backward_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                        const at::Tensor& target,
                                        const std::optional<at::Tensor>& weight,
                                        const std::optional<at::Tensor>& aux,
                                        std::string_view reduction, std::string_view loss,
                                        at::ArrayRef<double> params, std::string_view caller) {
  const c10::cuda::CUDAGuard guard(input.device());
  const PointwiseOperands ops =
      prepare_pointwise_operands(caller, input, target, weight, aux, reduction, loss, params);
  const at::Tensor grad_out = prepare_pointwise_grad_output(grad_output, ops);
  at::Tensor grad_input = empty_pointwise_output(ops.input, Reduction::None);
  core::visit_pointwise_policy(ops.loss, [&](auto policy) {
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, ops.input.scalar_type(), "segloss_pointwise_backward_cuda",
        [&] { backward_launch<decltype(policy), scalar_t>(ops, grad_out, grad_input); });
  });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(segloss, CUDA, m) {
  m.impl("_pointwise_loss", &pointwise_loss_cuda);
  m.impl("_pointwise_loss_backward", &pointwise_loss_backward_cuda);
}

}  // namespace segloss::ops
