// Offsets of a broadcast operand (a weight expanded to the input's shape) at a
// linear index of the input, for row-major iteration over the input.
#pragma once

#include <cstdint>

#include "platform.h"

namespace segloss::core {

// Division of 32-bit unsigned values by a divisor fixed in advance, as a
// multiply-high, an add and a shift (Granlund & Montgomery's round-up
// method): a GPU has no integer divider, and a 64-bit division there is a
// long software sequence per element. Exact for every n < 2^32 and every
// divisor in [1, 2^31].
struct FastDivider {
  std::uint32_t divisor = 1;
  std::uint32_t magic = 1;  // floor(2^32 (2^shift - divisor) / divisor) + 1
  std::uint32_t shift = 0;  // ceil(log2(divisor))

  FastDivider() = default;
  explicit FastDivider(std::uint32_t d) : divisor(d) {
    while ((std::uint64_t(1) << shift) < d) ++shift;
    magic = std::uint32_t(((std::uint64_t(1) << 32) * ((std::uint64_t(1) << shift) - d)) / d + 1);
  }

  SEGLOSS_INLINE std::uint32_t divide(std::uint32_t n) const {
#ifdef __CUDA_ARCH__
    const std::uint32_t high = __umulhi(n, magic);
#else
    const std::uint32_t high = std::uint32_t((std::uint64_t(n) * magic) >> 32);
#endif
    return std::uint32_t((std::uint64_t(high) + n) >> shift);
  }
};

struct BroadcastIndexer {
  static constexpr int kMaxDims = 8;

  // Dimensions after merging those the operand walks contiguously; a stride
  // of 0 marks a broadcast dimension.
  int ndim = 0;
  std::int64_t sizes[kMaxDims] = {};
  std::int64_t strides[kMaxDims] = {};
  // The product of sizes (the iteration's element count) is below 2^32: the
  // linear index is split with the 32-bit dividers.
  bool fits_32_bits = true;
  FastDivider dividers[kMaxDims];

  // True when offset(i) == i: the operand is laid out like the input.
  SEGLOSS_INLINE bool is_identity() const {
    return ndim == 0 || (ndim == 1 && strides[0] == 1);
  }

  SEGLOSS_INLINE std::int64_t offset(std::int64_t linear) const {
    // One merged dimension spans the whole input: no division needed.
    if (ndim == 1) return linear * strides[0];
    std::int64_t result = 0;
    if (fits_32_bits) {
      std::uint32_t rest = std::uint32_t(linear);
      for (int d = ndim - 1; d >= 0; --d) {
        const std::uint32_t quotient = dividers[d].divide(rest);
        result += std::int64_t(rest - quotient * dividers[d].divisor) * strides[d];
        rest = quotient;
      }
      return result;
    }
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
  // An empty iteration (a size of 0) indexes nothing: no divider (of 0).
  std::int64_t total = 1;
  for (int d = 0; d < result.ndim; ++d) {
    total *= result.sizes[d];
    result.fits_32_bits = result.fits_32_bits && total < (std::int64_t(1) << 31);
  }
  result.fits_32_bits = result.fits_32_bits && total > 0;
  if (result.fits_32_bits) {
    for (int d = 0; d < result.ndim; ++d) {
      result.dividers[d] = FastDivider(std::uint32_t(result.sizes[d]));
    }
  }
  *out = result;
  return true;
}

}  // namespace segloss::core
