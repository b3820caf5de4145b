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

// Whether every envelope key of a later pass (two_nearest.h: a squared
// distance over the spacing's square plus a squared position) is an integer
// below 2^52, so exact in double: unit spacing on every axis, and the squared
// sizes' sum below 2^52.
SEGLOSS_INLINE bool integer_envelope_keys(const Grid& grid) {
  double sum = 0;
  for (int d = 0; d < grid.ndim; ++d) {
    if (grid.spacing[d] != 1.0) return false;
    sum += double(grid.size[d]) * double(grid.size[d]);
  }
  return sum < 4503599627370496.0;  // 2^52
}

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

// The id of pixel `p` (C order over `grid`) of image `image` of a batch
// whose images start `batch_stride` labels apart, read by strides: the CUDA
// initial pass's read, one thread per pixel (its emulations in tests/cpp
// read strided batches through it).
template <typename Label, typename ToId>
SEGLOSS_INLINE auto batch_pixel_id(const StridedLabels<Label, ToId>& labels, const Grid& grid,
                                   int64_t batch_stride, int64_t image, int64_t p) {
  const int64_t columns = grid.inner(0);
  const int64_t offset = image * batch_stride + (p / columns) * labels.stride[0] +
                         column_offset(labels, grid, p % columns);
  return labels.to_id(labels.data[offset]);
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

// Pass 0's scan state between bands, kept small: the line positions of the
// last instance seen and of the last one with another id (-1: none). Their ids
// are read back from the labels.
struct ScanMark {
  int32_t last_at = -1, other_at = -1;
};

SEGLOSS_INLINE ScanMark mark_of(const LineScan& scan) {
  return ScanMark{scan.last_id != kNoInstance ? int32_t(scan.last_at) : -1,
                  scan.other_id != kNoInstance ? int32_t(scan.other_at) : -1};
}

// The pixels along axis 0 of a block of up to kColumnBlock columns (lines
// along axis 0), read row by row: contiguous in C-order labels.
template <typename Label, typename ToId>
class ColumnBlock {
 public:
  static constexpr int64_t kColumnBlock = 512;

  ColumnBlock(const StridedLabels<Label, ToId>& labels, const Grid& grid)
      : labels_(labels), grid_(grid), offsets_(kColumnBlock), scans_(kColumnBlock) {}

  // Starts the block of columns [first, first + width).
  void start(int64_t first, int64_t width) {
    width_ = width;
    for (int64_t j = 0; j < width; ++j) offsets_[j] = column_offset(labels_, grid_, first + j);
  }
  int64_t width() const { return width_; }
  InstanceId id(int64_t i, int64_t j) const {
    return labels_.to_id(labels_.data[i * labels_.stride[0] + offsets_[j]]);
  }
  LineScan& scan(int64_t j) { return scans_[j]; }
  // Resets every column's scan, to no instance or to marks[j].
  void reset_scans() { std::fill(scans_.begin(), scans_.end(), LineScan{}); }
  void restore_scans(const ScanMark* marks) {
    for (int64_t j = 0; j < width_; ++j) {
      LineScan& scan = scans_[j];
      scan = LineScan{};
      if (marks[j].other_at >= 0) {
        scan.other_at = marks[j].other_at;
        scan.other_id = id(scan.other_at, j);
      }
      if (marks[j].last_at >= 0) {
        scan.last_at = marks[j].last_at;
        scan.last_id = id(scan.last_at, j);
      }
    }
  }

 private:
  const StridedLabels<Label, ToId>& labels_;
  const Grid& grid_;
  int64_t width_ = 0;
  std::vector<int64_t> offsets_;
  std::vector<LineScan> scans_;
};

// A last pass's writer: hands position x's pair to sink(first + x * stride,
// pair). (One type per sink, whatever the label type: each sink's sweep is
// compiled once.)
template <typename Sink>
struct SinkAt {
  const Sink& sink;
  int64_t first, stride;
  SEGLOSS_INLINE void operator()(int64_t x, const NearestPair& pair) const {
    sink(first + x * stride, pair);
  }
};

// The CPU callers' sink for d1, d2 (two_distances) and, with kLabels, the
// ids of the two nearest instances as labels of `label_bytes` bytes, the
// labels' own integer type: each id came from such a label, so its low bytes
// are that label's bits, whether the type is signed or not. One type for
// every label type, so that the sweep is compiled once for it.
template <bool kLabels>
struct TwoNearestOutputs {
  double* d1;
  double* d2;
  void* l1 = nullptr;
  void* l2 = nullptr;
  int label_bytes = 0;

  SEGLOSS_INLINE void operator()(int64_t i, const NearestPair& pair) const {
    const TwoDistances d = two_distances(pair);
    d1[i] = d.d1;
    d2[i] = d.d2;
    if constexpr (kLabels) {
      store_label(l1, i, pair.id[0]);
      store_label(l2, i, pair.id[1]);
    }
  }

 private:
  SEGLOSS_INLINE void store_label(void* labels, int64_t i, InstanceId id) const {
    switch (label_bytes) {
      case 1: static_cast<int8_t*>(labels)[i] = int8_t(id); break;
      case 2: static_cast<int16_t*>(labels)[i] = int16_t(id); break;
      case 4: static_cast<int32_t*>(labels)[i] = int32_t(id); break;
      default: static_cast<int64_t*>(labels)[i] = int64_t(id); break;
    }
  }
};

// The later passes (axes 1 and up) over the pairs of `grid`'s pixels in
// `state`, on the calling thread: each line is gathered, then rewritten in
// place; the last pass hands its pairs to sink(index + first_index, pair).
// integer_keys: integer_envelope_keys of the whole image.
template <typename Sink>
void later_passes(const Grid& grid, NearestPair* state, int64_t first_index, bool integer_keys,
                  const Sink& sink) {
  std::vector<double> base, key;
  std::vector<InstanceId> ids;
  std::vector<EnvelopePiece> scratch;
  for (int axis = 1; axis < grid.ndim; ++axis) {
    const int64_t n = grid.size[axis];
    const int64_t inner = grid.inner(axis);
    const int64_t lines = grid.numel() / n;
    const double spacing = grid.spacing[axis];
    const bool last = axis == grid.ndim - 1;
    if (!integer_keys) base.resize(2 * n);  // (else computed from the keys)
    key.resize(2 * n);
    ids.resize(2 * n);
    scratch.resize(envelope_scratch_pieces(n));
    const LineCandidates candidates{integer_keys ? nullptr : base.data(), key.data(), ids.data()};
    for (int64_t index = 0; index < lines; ++index) {
      const int64_t first = (index / inner) * n * inner + index % inner;
      gather_line(state + first, inner, n, spacing, candidates);
      if (last) {
        envelope_line(candidates, n, spacing, integer_keys, scratch.data(),
                      SinkAt<Sink>{sink, first_index + first, inner});
      } else {
        envelope_line(candidates, n, spacing, integer_keys, scratch.data(),
                      StridedPairs{state + first, inner});
      }
    }
  }
}

// Where pass 0 leaves a band's pairs. PairRows: a NearestPair per pixel, from
// which the later passes gather each line. CandidateRows, for a 2D image with
// integer keys (integer_envelope_keys): each row as the LineCandidates of its
// line along axis 1, the only later pass (keys: squared distance plus j^2 at
// column j, exact; no bases), so that pass reads the row where it lies (the
// gathers took 4% of the time at 512^2 with 100 cells; without them a
// standalone serial run took 1-4% less).
struct PairRows {
  NearestPair* pairs;
  int64_t columns;
  SEGLOSS_INLINE void store(int64_t row, int64_t j, const NearestPair& pair) const {
    pairs[row * columns + j] = pair;
  }
  SEGLOSS_INLINE void offer(int64_t row, int64_t j, const LineScan& scan, int64_t i,
                            double spacing) const {
    scan.offer_to(pairs[row * columns + j], i, spacing);
  }
};

struct CandidateRows {
  double* keys;  // [row][2 * columns]
  InstanceId* ids;
  int64_t columns;
  SEGLOSS_INLINE LineCandidates line(int64_t row) const {
    return LineCandidates{nullptr, keys + row * 2 * columns, ids + row * 2 * columns};
  }
  SEGLOSS_INLINE void store(int64_t row, int64_t j, const NearestPair& pair) const {
    const int64_t at = (row * columns + j) * 2;
    for (int k = 0; k < 2; ++k) {
      keys[at + k] = envelope_key(pair.d[k], j, 1.0);  // (unit spacing: integer keys)
      ids[at + k] = pair.id[k];
    }
  }
  SEGLOSS_INLINE void offer(int64_t row, int64_t j, const LineScan& scan, int64_t i,
                            double spacing) const {
    const int64_t at = (row * columns + j) * 2;
    NearestPair keyed{{keys[at], keys[at + 1]}, {ids[at], ids[at + 1]}};
    scan.offer_to(keyed, i, spacing, double(j) * double(j));
    for (int k = 0; k < 2; ++k) {
      keys[at + k] = keyed.d[k];
      ids[at + k] = keyed.id[k];
    }
  }
};

// How two_nearest_squared cuts an image into bands of rows: as many rows as
// hold about `pairs` pairs (512 KiB: the later passes then sweep a band's
// pass-0 pairs while they are in cache), but at least `min_rows`, so that the
// ScanMarks stay small (16 bytes per column and band: at most 2 per pixel).
// Tests pass small sizes to make small images take many bands.
struct BandSize {
  int64_t pairs = int64_t(1) << 14;
  int64_t min_rows = 8;
};

// `parallel_for(count, body)` runs body(begin, end) over a partition of
// [0, count), possibly in parallel; body may be called from several threads.
//
// Computes each pixel's squared distances to and ids of its two nearest
// distinct instances and hands them to sink(index, pair), once per pixel (C
// order index), possibly from several threads. The result does not depend on
// `band_size` or on how parallel_for partitions the work.
//
// The image is cut along axis 0 into bands of rows (a row: the pixels with one
// axis-0 index), and each band runs every pass on its own: pass 0 along axis
// 0 from the scan states entering the band from above and below, then the
// later passes, whose lines lie within a row (in 2D with integer keys, pass 0
// leaves its pairs as the later pass's candidates: CandidateRows). Only a
// band's pairs are held, so they stay in cache, and the memory is a band per
// thread and a ScanMark per column and band edge, not a pair per pixel. A
// first sweep over the labels, bottom to top, records the scan states
// entering each band from below; the states from above pass from band to band
// (a thread's first band scans the rows above it: none with one thread).
template <typename Label, typename ToId, typename ParallelFor, typename Sink>
void two_nearest_squared(const StridedLabels<Label, ToId>& labels, const Grid& grid,
                         ParallelFor&& parallel_for, const Sink& sink,
                         const BandSize& band_size = BandSize{}) {
  if (grid.ndim == 0 || grid.numel() == 0) return;
  const int64_t n0 = grid.size[0];
  const int64_t columns = grid.inner(0);
  const double spacing0 = grid.spacing[0];
  const int64_t band_rows =
      std::min(std::max({band_size.pairs / columns, band_size.min_rows, int64_t(1)}), n0);
  const int64_t bands = (n0 + band_rows - 1) / band_rows;
  const bool integer_keys = integer_envelope_keys(grid);
  using Block = ColumnBlock<Label, ToId>;

  // The scan states entering band b from below (rows past the band):
  // [b * columns + column].
  std::vector<ScanMark> from_below;
  if (bands > 1) {
    from_below.resize(bands * columns);
    parallel_for(columns, [&](int64_t begin, int64_t end) {
      Block block(labels, grid);
      for (int64_t first = begin; first < end; first += Block::kColumnBlock) {
        block.start(first, std::min(Block::kColumnBlock, end - first));
        block.reset_scans();
        for (int64_t i = n0 - 1; i >= 0; --i) {
          if ((i + 1) % band_rows == 0) {  // (nothing enters the last band from below)
            ScanMark* marks = from_below.data() + (i / band_rows) * columns + first;
            for (int64_t j = 0; j < block.width(); ++j) marks[j] = mark_of(block.scan(j));
          }
          for (int64_t j = 0; j < block.width(); ++j) block.scan(j).see(i, block.id(i, j));
        }
      }
    });
  }

  // 2D with integer keys: the later pass reads pass 0's rows where they lie.
  const bool direct = grid.ndim == 2 && integer_keys;
  parallel_for(bands, [&](int64_t begin, int64_t end) {
    Block block(labels, grid);
    std::vector<NearestPair> pairs(direct ? 0 : band_rows * columns);
    std::vector<double> keys(direct ? 2 * band_rows * columns : 0);
    std::vector<InstanceId> ids(direct ? 2 * band_rows * columns : 0);
    std::vector<EnvelopePiece> scratch(direct ? envelope_scratch_pieces(columns) : 0);
    const PairRows pair_rows{pairs.data(), columns};
    const CandidateRows candidate_rows{keys.data(), ids.data(), columns};
    // The scan states entering the next band from above: [column].
    std::vector<ScanMark> from_above(columns);
    for (int64_t first = 0; first < columns && begin > 0; first += Block::kColumnBlock) {
      block.start(first, std::min(Block::kColumnBlock, columns - first));
      block.reset_scans();
      for (int64_t i = 0; i < begin * band_rows; ++i) {
        for (int64_t j = 0; j < block.width(); ++j) block.scan(j).see(i, block.id(i, j));
      }
      for (int64_t j = 0; j < block.width(); ++j) from_above[first + j] = mark_of(block.scan(j));
    }
    for (int64_t band = begin; band < end; ++band) {
      const int64_t row_begin = band * band_rows;
      const int64_t row_end = std::min(row_begin + band_rows, n0);
      // Pass 0 over the band's rows, block of columns by block, into `rows`
      // (PairRows or CandidateRows).
      auto scan_band = [&](const auto& rows) {
        for (int64_t first = 0; first < columns; first += Block::kColumnBlock) {
          block.start(first, std::min(Block::kColumnBlock, columns - first));
          const int64_t width = block.width();
          block.restore_scans(from_above.data() + first);
          for (int64_t i = row_begin; i < row_end; ++i) {
            for (int64_t j = 0; j < width; ++j) {
              block.scan(j).see(i, block.id(i, j));
              rows.store(i - row_begin, first + j, block.scan(j).pair(i, spacing0));
            }
          }
          for (int64_t j = 0; j < width; ++j) from_above[first + j] = mark_of(block.scan(j));
          if (bands > 1) {
            block.restore_scans(from_below.data() + band * columns + first);
          } else {
            block.reset_scans();
          }
          for (int64_t i = row_end - 1; i >= row_begin; --i) {
            for (int64_t j = 0; j < width; ++j) {
              block.scan(j).see(i, block.id(i, j));
              rows.offer(i - row_begin, first + j, block.scan(j), i, spacing0);
            }
          }
        }
      };
      const int64_t first_index = row_begin * columns;
      if (direct) {
        scan_band(candidate_rows);
        for (int64_t row = 0; row < row_end - row_begin; ++row) {
          const int64_t row_index = first_index + row * columns;
          envelope_line(candidate_rows.line(row), columns, grid.spacing[1], true, scratch.data(),
                        SinkAt<Sink>{sink, row_index, 1});
        }
        continue;
      }
      scan_band(pair_rows);
      if (grid.ndim == 1) {
        for (int64_t i = row_begin; i < row_end; ++i) sink(i, pairs[i - row_begin]);
        continue;
      }
      Grid band_grid = grid;
      band_grid.size[0] = row_end - row_begin;
      later_passes(band_grid, pairs.data(), first_index, integer_keys, sink);
    }
  });
}

}  // namespace segloss::core
