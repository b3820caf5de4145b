// Launch helpers shared by the CUDA kernels.
#pragma once

#include <c10/core/ScalarType.h>
#include <c10/macros/Macros.h>

#include <cstdint>

// Checks the data a kernel reads (class indices) on the device, as ATen's
// nll_loss does: a failed check is a device-side assert, which the host sees
// as a CUDA error at its next synchronisation, and the CUDA context is
// unusable afterwards. A host-side check would copy a flag back and
// synchronise the stream every call: a stall per training step, and not
// allowed while a CUDA graph is captured.
#ifdef CUDA_KERNEL_ASSERT_PRINTF
#define SEGLOSS_KERNEL_ASSERT(cond, msg, ...) CUDA_KERNEL_ASSERT_PRINTF(cond, msg, __VA_ARGS__)
#else
#define SEGLOSS_KERNEL_ASSERT(cond, msg, ...) CUDA_KERNEL_ASSERT_MSG(cond, msg)
#endif

namespace segloss::ops::cuda {

constexpr int kThreads = 256;
// Grid sizes of the reductions are capped at a fixed count so that the
// partials, added in a fixed order, give the same bits on every run.
constexpr int64_t kMaxReduceBlocks = 1024;
constexpr int64_t kMaxElementwiseBlocks = 65535;

inline int64_t grid_size(int64_t work_items, int64_t max_blocks, int threads = kThreads) {
  const int64_t needed = (work_items + threads - 1) / threads;
  return needed < 1 ? 1 : (needed < max_blocks ? needed : max_blocks);
}

#define SEGLOSS_GRID_STRIDE_LOOP(i, n)                                      \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += int64_t(blockDim.x) * gridDim.x)

// Sum over the block's threads (kThreads of them) in a fixed tree order, so
// the same inputs give the same bits; the result is returned to every thread.
template <typename acc_t>
__device__ acc_t block_sum(acc_t value) {
  __shared__ acc_t shared[kThreads];
  shared[threadIdx.x] = value;
  __syncthreads();
  for (int width = kThreads / 2; width > 0; width /= 2) {
    if (threadIdx.x < width) shared[threadIdx.x] += shared[threadIdx.x + width];
    __syncthreads();
  }
  const acc_t result = shared[0];
  __syncthreads();  // the next call may overwrite shared[]
  return result;
}

// Sums each of kCount per-thread values over the block (kThreads threads)
// in a fixed order, and thread k < kCount writes the total of value k to
// out[k]: a shuffle tree within each warp, then the warps' totals in warp
// order. Two barriers for all kCount values, where block_sum costs
// log2(kThreads) + 2 per value (the tail of a kernel that reduces many
// columns, e.g. the Dice sums' chunk of channels x columns).
template <int kCount, typename acc_t>
__device__ __forceinline__ void block_sums_to(const acc_t (&values)[kCount], acc_t* out) {
  constexpr int kWarpSize = 32;
  constexpr int kWarps = kThreads / kWarpSize;
  static_assert(kCount <= kThreads, "one thread writes each total");
  __shared__ acc_t warp_totals[kWarps][kCount];
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
#pragma unroll
  for (int k = 0; k < kCount; ++k) {
    acc_t v = values[k];
#pragma unroll
    for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
      v += __shfl_down_sync(0xffffffffu, v, offset);
    }
    if (lane == 0) warp_totals[warp][k] = v;
  }
  __syncthreads();
  if (threadIdx.x < kCount) {
    acc_t total = warp_totals[0][threadIdx.x];
    for (int w = 1; w < kWarps; ++w) total += warp_totals[w][threadIdx.x];
    out[threadIdx.x] = total;
  }
  __syncthreads();  // the next call may overwrite warp_totals
}

// Calls body(label_t{}) for a class-index dtype the kernels read in place
// (uint8, int32 or int64; readable_labels converts the others).
template <typename Body>
void dispatch_labels(c10::ScalarType dtype, const Body& body) {
  if (dtype == c10::ScalarType::Byte) {
    body(uint8_t{});
  } else if (dtype == c10::ScalarType::Int) {
    body(int32_t{});
  } else {
    body(int64_t{});
  }
}

}  // namespace segloss::ops::cuda
