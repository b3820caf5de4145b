// The `reduction` argument shared by every loss op.
#pragma once

#include <c10/util/Exception.h>

#include <string_view>

namespace segloss::ops {

// WeightedMean (the weighted sum over the sum of the weights) only where an
// op offers it: the shape-aware losses.
enum class Reduction { None, Mean, Sum, WeightedMean };

inline Reduction parse_reduction(std::string_view op, std::string_view reduction,
                                 bool offers_weighted_mean = false) {
  if (reduction == "none") return Reduction::None;
  if (reduction == "mean") return Reduction::Mean;
  if (reduction == "sum") return Reduction::Sum;
  if (offers_weighted_mean && reduction == "weighted_mean") return Reduction::WeightedMean;
  TORCH_CHECK_VALUE(false, op, ": reduction must be ",
                    offers_weighted_mean ? "'none', 'mean', 'sum' or 'weighted_mean'"
                                         : "'none', 'mean' or 'sum'",
                    ", got '", reduction, "'");
}

}  // namespace segloss::ops
