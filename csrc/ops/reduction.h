// The `reduction` argument shared by every loss op.
#pragma once

#include <c10/util/Exception.h>

#include <string_view>

namespace segloss::ops {

enum class Reduction { None, Mean, Sum };

inline Reduction parse_reduction(std::string_view op, std::string_view reduction) {
  if (reduction == "none") return Reduction::None;
  if (reduction == "mean") return Reduction::Mean;
  if (reduction == "sum") return Reduction::Sum;
  TORCH_CHECK_VALUE(false, op, ": reduction must be 'none', 'mean' or 'sum', got '",
                    reduction, "'");
}

}  // namespace segloss::ops
