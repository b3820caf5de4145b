// Compiled once per instruction set, with SEGLOSS_CPU_ISA naming it and the
// matching -m flags (CMakeLists.txt). Includes no torch header on purpose:
// torch's inline functions compiled with AVX-512 could be the copies the
// linker keeps for the whole library.
#include "cross_entropy_block.h"
#include "dice_block.h"
#include "pointwise_block.h"

#define SEGLOSS_CONCAT_(a, b) a##b
#define SEGLOSS_CONCAT(a, b) SEGLOSS_CONCAT_(a, b)

namespace segloss::ops::cpu {

PointwiseBlockFunctions SEGLOSS_CONCAT(pointwise_block_functions_, SEGLOSS_CPU_ISA)() {
  return {pointwise_block_loops<float>(), pointwise_block_loops<double>()};
}

DiceBlockFunctions SEGLOSS_CONCAT(dice_block_functions_, SEGLOSS_CPU_ISA)() {
  return {dice_block_loops<float>(), dice_block_loops<double>()};
}

CrossEntropyBlockFunctions SEGLOSS_CONCAT(cross_entropy_block_functions_, SEGLOSS_CPU_ISA)() {
  return {cross_entropy_block_loops<float>(), cross_entropy_block_loops<double>()};
}

}  // namespace segloss::ops::cpu
