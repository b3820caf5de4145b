// The pointwise loss family: every loss whose value at an element depends on
// that element only. Each is a policy (bce.h, focal.h, ...: loss and gradient
// from the input x, the target y, a broadcast per-element operand a and the
// PointwiseParams) and one row below. The CPU block loops, the CUDA kernels,
// the argument checks, autograd, autocast and the Meta kernel are written
// once over these rows (csrc/ops/pointwise_*, csrc/cuda/pointwise_cuda.cu),
// behind the private ops segloss::_pointwise_loss and its backward, which
// take the row's name as `loss`.
#pragma once

#include <string_view>

#include "bce.h"
#include "distance_losses.h"
#include "focal.h"

namespace segloss::core {

// ROW(enumerator, name, policy)
#define SEGLOSS_POINTWISE_LOSSES(ROW)                                        \
  ROW(Bce, "binary_cross_entropy", ProbabilityBce)                          \
  ROW(BceWithLogits, "binary_cross_entropy_with_logits", LogitsBce)         \
  ROW(SigmoidFocal, "sigmoid_focal_loss", SigmoidFocal)                     \
  ROW(BalancedBceWithLogits, "balanced_bce_with_logits", BalancedLogitsBce)  \
  ROW(SigmoidBoundary, "sigmoid_boundary_loss", SigmoidBoundary)            \
  ROW(SigmoidHausdorffDt, "sigmoid_hausdorff_dt_loss", SigmoidHausdorffDt)   \
  ROW(Boundary, "boundary_loss", ProbabilityBoundary)                        \
  ROW(HausdorffDt, "hausdorff_dt_loss", ProbabilityHausdorffDt)

enum class PointwiseLoss : int {
#define SEGLOSS_POINTWISE_ENUMERATOR(id, name, policy) id,
  SEGLOSS_POINTWISE_LOSSES(SEGLOSS_POINTWISE_ENUMERATOR)
#undef SEGLOSS_POINTWISE_ENUMERATOR
};

#define SEGLOSS_POINTWISE_ONE(id, name, policy) +1
constexpr int kPointwiseLossCount = 0 SEGLOSS_POINTWISE_LOSSES(SEGLOSS_POINTWISE_ONE);
#undef SEGLOSS_POINTWISE_ONE

// The row named `name`; false if there is none.
inline bool pointwise_loss_named(std::string_view name, PointwiseLoss* loss) {
#define SEGLOSS_POINTWISE_MATCH(id, row_name, policy) \
  if (name == row_name) {                             \
    *loss = PointwiseLoss::id;                        \
    return true;                                      \
  }
  SEGLOSS_POINTWISE_LOSSES(SEGLOSS_POINTWISE_MATCH)
#undef SEGLOSS_POINTWISE_MATCH
  return false;
}

// The row's name.
inline const char* pointwise_loss_name(PointwiseLoss loss) {
  switch (loss) {
#define SEGLOSS_POINTWISE_NAME(id, name, policy) \
  case PointwiseLoss::id:                        \
    return name;
    SEGLOSS_POINTWISE_LOSSES(SEGLOSS_POINTWISE_NAME)
#undef SEGLOSS_POINTWISE_NAME
  }
  return "";
}

// f(Policy{}) for the row's policy (host code: picks the kernels to run).
template <class F>
decltype(auto) visit_pointwise_policy(PointwiseLoss loss, F&& f) {
  switch (loss) {
#define SEGLOSS_POINTWISE_CASE(id, name, policy) \
  case PointwiseLoss::id:                        \
    return f(policy{});
    SEGLOSS_POINTWISE_LOSSES(SEGLOSS_POINTWISE_CASE)
#undef SEGLOSS_POINTWISE_CASE
  }
  return f(LogitsBce{});  // unreachable: every enumerator has a row
}

}  // namespace segloss::core
