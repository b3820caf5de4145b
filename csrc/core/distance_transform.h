// The N-dimensional two-nearest-instance distance transform on the CPU, over
// the per-line passes of two_nearest.h. Torch- and Python-free: the NumPy
// module and the torch CPU kernels call it with their own thread pools.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "platform.h"
#include "two_nearest.h"

namespace segloss::core {

constexpr int kMaxDistanceDims = 8;

// A C-contiguous grid of pixels and its spacing per axis.
struct Grid {
  int ndim = 0;
  int64_t size[kMaxDistanceDims] = {};
  double spacing[kMaxDistanceDims] = {};

  SEGLOSS_INLINE int64_t numel() const {
    int64_t n = 1;
    for (int d = 0; d < ndim; ++d) n *= size[d];
    return n;
  }
  // Product of the sizes of the axes after `axis`.
  SEGLOSS_INLINE int64_t inner(int axis) const {
    int64_t n = 1;
    for (int d = axis + 1; d < ndim; ++d) n *= size[d];
    return n;
  }
};

// A label array read with element strides (any signed or unsigned integer
// type); `to_id` maps a label to its instance id.
template <typename Label, typename ToId>
struct StridedLabels {
  const Label* data;
  int64_t stride[kMaxDistanceDims];
  ToId to_id;
};

// Instance maps: the label is the id (0: background).
struct LabelIsId {
  template <typename Label>
  SEGLOSS_INLINE InstanceId operator()(Label label) const {
    return InstanceId(label);
  }
};

// The plain distance transform of a mask: every zero is a pixel of the one
// instance (as scipy.ndimage.distance_transform_edt measures to zeros).
struct ZeroIsFeature {
  template <typename Label>
  SEGLOSS_INLINE InstanceId operator()(Label value) const {
    return value == Label(0) ? InstanceId(1) : kNoInstance;
  }
};

// The offset of the first label of `column` (a line along axis 0; columns are
// the pixels of the remaining axes in C order).
template <typename Label, typename ToId>
SEGLOSS_INLINE int64_t column_offset(const StridedLabels<Label, ToId>& labels, const Grid& grid,
                                     int64_t column) {
  int64_t offset = 0;
  for (int d = grid.ndim - 1; d >= 1; --d) {
    offset += (column % grid.size[d]) * labels.stride[d];
    column /= grid.size[d];
  }
  return offset;
}

// The number of pixels that belong to an instance.
template <typename Label, typename ToId>
int64_t count_instance_pixels(const StridedLabels<Label, ToId>& labels, const Grid& grid) {
  if (grid.ndim == 0 || grid.numel() == 0) return 0;
  int64_t count = 0;
  for (int64_t column = 0; column < grid.inner(0); ++column) {
    const Label* first = labels.data + column_offset(labels, grid, column);
    for (int64_t i = 0; i < grid.size[0]; ++i) {
      count += labels.to_id(first[i * labels.stride[0]]) != kNoInstance;
    }
  }
  return count;
}

// `parallel_for(count, body)` runs body(begin, end) over a partition of
// [0, count), possibly in parallel; body may be called from several threads.
//
// Computes each pixel's squared distances to and ids of its two nearest
// distinct instances and hands them to sink(index, pair), once per pixel (C
// order index), possibly from several threads. `state` (numel pairs) is the
// working memory of the passes before the last.
template <typename Label, typename ToId, typename ParallelFor, typename Sink>
void two_nearest_squared(const StridedLabels<Label, ToId>& labels, const Grid& grid,
                         NearestPair* state, ParallelFor&& parallel_for, const Sink& sink) {
  if (grid.ndim == 0 || grid.numel() == 0) return;
  // Pass 0: lines along axis 0, swept row by row over blocks of columns (the
  // same scan as scan_line, with contiguous reads and writes).
  const int64_t n0 = grid.size[0];
  const int64_t columns = grid.inner(0);
  const double spacing0 = grid.spacing[0];
  parallel_for(columns, [&](int64_t begin, int64_t end) {
    constexpr int64_t kBlock = 512;
    std::vector<int64_t> offsets(kBlock);
    std::vector<LineScan> scans(kBlock);
    for (int64_t block = begin; block < end; block += kBlock) {
      const int64_t width = std::min(kBlock, end - block);
      for (int64_t j = 0; j < width; ++j) offsets[j] = column_offset(labels, grid, block + j);
      const auto row_ids = [&](int64_t i, int64_t j) {
        return labels.to_id(labels.data[i * labels.stride[0] + offsets[j]]);
      };
      std::fill(scans.begin(), scans.end(), LineScan{});
      for (int64_t i = 0; i < n0; ++i) {
        NearestPair* row = state + i * columns + block;
        for (int64_t j = 0; j < width; ++j) {
          scans[j].see(i, row_ids(i, j));
          row[j] = scans[j].pair(i, spacing0);
        }
      }
      std::fill(scans.begin(), scans.end(), LineScan{});
      for (int64_t i = n0 - 1; i >= 0; --i) {
        NearestPair* row = state + i * columns + block;
        for (int64_t j = 0; j < width; ++j) {
          scans[j].see(i, row_ids(i, j));
          scans[j].offer_to(row[j], i, spacing0);
        }
      }
    }
  });
  if (grid.ndim == 1) {
    parallel_for(n0, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) sink(i, state[i]);
    });
    return;
  }
  // Later passes: each line is gathered, then rewritten in place (the last
  // pass hands its pairs to the sink instead).
  for (int axis = 1; axis < grid.ndim; ++axis) {
    const int64_t n = grid.size[axis];
    const int64_t inner = grid.inner(axis);
    const int64_t lines = grid.numel() / n;
    const double spacing = grid.spacing[axis];
    const bool last = axis == grid.ndim - 1;
    parallel_for(lines, [&](int64_t begin, int64_t end) {
      std::vector<double> base(2 * n), key(2 * n);
      std::vector<InstanceId> ids(2 * n);
      std::vector<EnvelopePiece> scratch(envelope_scratch_pieces(n));
      const LineCandidates candidates{base.data(), key.data(), ids.data()};
      for (int64_t index = begin; index < end; ++index) {
        const int64_t first = (index / inner) * n * inner + index % inner;
        gather_line(state + first, inner, n, spacing, candidates);
        if (last) {
          envelope_line(candidates, n, spacing, scratch.data(),
                        [&](int64_t x, const NearestPair& pair) { sink(first + x * inner, pair); });
        } else {
          envelope_line(candidates, n, spacing, scratch.data(),
                        StridedPairs{state + first, inner});
        }
      }
    });
  }
}

}  // namespace segloss::core
