// Walking a tensor in fixed blocks on the CPU: the shared plumbing of the
// CPU kernels. Blocks have a fixed size so that per-block partial sums, added
// in block order, give the same bits for any thread count.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "../../core/broadcast.h"
#include "label_type.h"

namespace segloss::ops::cpu {

constexpr int64_t kBlock = 2048;

// Elements [begin, begin + n) of an operand in the compute type: a pointer into
// the data when its layout and dtype already match, otherwise a copy into
// `buffer`, read row by row along the operand's innermost dimension.
template <typename scalar_t, typename acc_t>
const acc_t* load_block(const scalar_t* data, const core::BroadcastIndexer& index, int64_t begin,
                        int64_t n, acc_t* buffer) {
  if (index.is_identity()) {
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      return data + begin;
    } else {
      for (int64_t i = 0; i < n; ++i) buffer[i] = acc_t(data[begin + i]);
      return buffer;
    }
  }
  const int64_t inner_size = index.sizes[index.ndim - 1];
  const int64_t inner_stride = index.strides[index.ndim - 1];
  for (int64_t i = 0; i < n;) {
    const int64_t linear = begin + i;
    const int64_t run = std::min(inner_size - linear % inner_size, n - i);
    const scalar_t* row = data + index.offset(linear);
    acc_t* dst = buffer + i;
    // The common layouts get loops the compiler vectorises.
    if (inner_stride == 0) {
      std::fill(dst, dst + run, acc_t(row[0]));
    } else if (inner_stride == 1) {
      for (int64_t j = 0; j < run; ++j) dst[j] = acc_t(row[j]);
    } else {
      for (int64_t j = 0; j < run; ++j) dst[j] = acc_t(row[j * inner_stride]);
    }
    i += run;
  }
  return buffer;
}

// Where a block loop writes its results: straight into the output when it
// has the compute type, else into `buffer` for store_block to convert.
template <typename scalar_t, typename acc_t>
acc_t* block_output(scalar_t* out, acc_t* buffer) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    return out;
  } else {
    return buffer;
  }
}

template <typename scalar_t, typename acc_t>
void store_block(const acc_t* values, int64_t n, scalar_t* out) {
  if constexpr (!std::is_same_v<scalar_t, acc_t>) {
    for (int64_t i = 0; i < n; ++i) out[i] = scalar_t(values[i]);
  }
}

// Sum of n values with independent lanes (vectorisable, and more accurate
// than one running sum), combined pairwise.
template <typename acc_t>
acc_t sum_block(const acc_t* values, int64_t n) {
  constexpr int kLanes = 16;
  acc_t lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) lanes[j] += values[i + j];
  }
  for (int j = 0; i < n; ++i, ++j) lanes[j] += values[i];
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int j = 0; j < width; ++j) lanes[j] += lanes[j + width];
  }
  return lanes[0];
}

// The LabelType of a readable_labels tensor.
inline LabelType label_type_of(at::ScalarType dtype) {
  return dtype == at::kByte ? kUint8Labels : dtype == at::kInt ? kInt32Labels : kInt64Labels;
}

// Calls body(block_index, begin, n, scratch) for the blocks of [0, numel) in
// parallel; each thread default-constructs one Scratch for all its blocks.
template <class Scratch, typename Body>
void for_each_block(int64_t numel, const Body& body) {
  const int64_t blocks = (numel + kBlock - 1) / kBlock;
  at::parallel_for(0, blocks, 1, [&](int64_t first, int64_t last) {
    Scratch scratch;
    for (int64_t b = first; b < last; ++b) {
      const int64_t begin = b * kBlock;
      body(b, begin, std::min(kBlock, numel - begin), scratch);
    }
  });
}

}  // namespace segloss::ops::cpu
