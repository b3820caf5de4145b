// Offsets of a broadcast operand (a weight expanded to the input's shape) at a
// linear index of the input, for row-major iteration over the input.
#pragma once

#include <cstdint>

#include "platform.h"

namespace segloss::core {

struct BroadcastIndexer {
  static constexpr int kMaxDims = 8;

  // Dimensions after merging those the operand walks contiguously; a stride
  // of 0 marks a broadcast dimension.
  int ndim = 0;
  std::int64_t sizes[kMaxDims] = {};
  std::int64_t strides[kMaxDims] = {};

  // True when offset(i) == i: the operand is laid out like the input.
  SEGLOSS_INLINE bool is_identity() const {
    return ndim == 0 || (ndim == 1 && strides[0] == 1);
  }

  SEGLOSS_INLINE std::int64_t offset(std::int64_t linear) const {
    // One merged dimension spans the whole input: no division needed.
    if (ndim == 1) return linear * strides[0];
    std::int64_t result = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      const std::int64_t quotient = linear / sizes[d];
      result += (linear - quotient * sizes[d]) * strides[d];
      linear = quotient;
    }
    return result;
  }
};

// Builds the indexer from the operand's sizes and element strides (already
// expanded to the iteration shape). Returns false if more than kMaxDims
// dimensions remain after merging; the caller then makes the operand
// contiguous instead.
inline bool make_broadcast_indexer(int ndim, const std::int64_t* sizes,
                                   const std::int64_t* strides,
                                   BroadcastIndexer* out) {
  BroadcastIndexer result;
  for (int d = 0; d < ndim; ++d) {
    if (sizes[d] == 1) continue;  // contributes nothing to any offset
    if (result.ndim > 0) {
      const int last = result.ndim - 1;
      // Merge with the previous kept dimension when walking both in order is
      // one arithmetic progression.
      if (result.strides[last] == strides[d] * sizes[d]) {
        result.sizes[last] *= sizes[d];
        result.strides[last] = strides[d];
        continue;
      }
    }
    if (result.ndim == BroadcastIndexer::kMaxDims) return false;
    result.sizes[result.ndim] = sizes[d];
    result.strides[result.ndim] = strides[d];
    ++result.ndim;
  }
  *out = result;
  return true;
}

}  // namespace segloss::core
