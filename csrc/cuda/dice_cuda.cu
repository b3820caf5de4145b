// The Dice sums' CUDA ops (_dice_sums and its backward): checks, outputs and
// the dispatch on the input's dtype; the kernels are in dice_kernels.cuh,
// compiled one dtype per file (dice_cuda_<dtype>.cu).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../ops/dice_operands.h"
#include "dice_launch.h"

namespace segloss::ops {
namespace {

at::Tensor dice_sums_cuda(const at::Tensor& input, const at::Tensor& target,
                          std::string_view activation, double gamma,
                          std::optional<int64_t> ignore_index,
                          const std::optional<at::Tensor>& mask, bool cross_entropy,
                          std::string_view caller, bool soft_label,
                          std::optional<std::string_view> focal_activation, double focal_gamma) {
  const c10::cuda::CUDAGuard guard(input.device());
  const DiceOperands ops =
      prepare_dice_operands(caller, input, target, activation, gamma, ignore_index, mask,
                            cross_entropy, soft_label, focal_activation, focal_gamma);
  at::Tensor sums = empty_dice_sums(ops.input, ops.layout);
  sums.zero_();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, ops.input.scalar_type(), "segloss_dice_sums_cuda", [&] {
        dice_cuda::dice_sums_launch_for<scalar_t>(ops, sums);
      });
  return sums;
}

at::Tensor dice_sums_backward_cuda(const at::Tensor& grad_sums, const at::Tensor& input,
                                   const at::Tensor& target, std::string_view activation,
                                   double gamma, std::optional<int64_t> ignore_index,
                                   const std::optional<at::Tensor>& mask, bool cross_entropy,
                                   std::string_view caller, bool soft_label,
                          std::optional<std::string_view> focal_activation, double focal_gamma) {
  const c10::cuda::CUDAGuard guard(input.device());
  const DiceOperands ops =
      prepare_dice_operands(caller, input, target, activation, gamma, ignore_index, mask,
                            cross_entropy, soft_label, focal_activation, focal_gamma);
  const at::Tensor dsums = prepare_dice_grad_sums(caller, grad_sums, ops.input, ops.layout);
  at::Tensor grad_input = at::empty(ops.input.sizes(), ops.input.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, ops.input.scalar_type(), "segloss_dice_sums_backward_cuda", [&] {
        dice_cuda::dice_sums_backward_launch_for<scalar_t>(ops, dsums, grad_input);
      });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(segloss, CUDA, m) {
  m.impl("_dice_sums", &dice_sums_cuda);
  m.impl("_dice_sums_backward", &dice_sums_backward_cuda);
}

}  // namespace segloss::ops
