// The Dice sums' kernels for c10::BFloat16 inputs (dice_kernels.cuh).
#include "dice_kernels.cuh"

namespace segloss::ops::dice_cuda {

template void dice_sums_launch_for<c10::BFloat16>(const DiceOperands&, at::Tensor&);
template void dice_sums_backward_launch_for<c10::BFloat16>(const DiceOperands&, const at::Tensor&,
                                                 at::Tensor&);

}  // namespace segloss::ops::dice_cuda
