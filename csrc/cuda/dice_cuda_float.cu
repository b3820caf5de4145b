// The Dice sums' kernels for float inputs (dice_kernels.cuh).
#include "dice_kernels.cuh"

namespace segloss::ops::dice_cuda {

template void dice_sums_launch_for<float>(const DiceOperands&, at::Tensor&);
template void dice_sums_backward_launch_for<float>(const DiceOperands&, const at::Tensor&,
                                                 at::Tensor&);

}  // namespace segloss::ops::dice_cuda
