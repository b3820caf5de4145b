// The Dice sums' launches for one input dtype (scalar_t: float, double,
// c10::Half or c10::BFloat16), defined in dice_kernels.cuh and instantiated
// in dice_cuda_<dtype>.cu.
#pragma once

#include <ATen/core/Tensor.h>

#include "../ops/dice_operands.h"

namespace segloss::ops::dice_cuda {

// Adds the sums of ops into sums (zeroed; core::SumsLayout's columns).
template <typename scalar_t>
void dice_sums_launch_for(const DiceOperands& ops, at::Tensor& sums);

// The input's gradient from the sums' gradient.
template <typename scalar_t>
void dice_sums_backward_launch_for(const DiceOperands& ops, const at::Tensor& grad_sums,
                                   at::Tensor& grad_input);

}  // namespace segloss::ops::dice_cuda
