// Portability macros for code shared by host (g++) and device (nvcc) builds.
#pragma once

// Every non-template function defined in a core header uses SEGLOSS_INLINE:
// usable from host and device code, and always inlined, so that the CPU loops
// that call the per-element math vectorise (an out-of-line call stops that).
#if defined(__CUDACC__) || defined(__HIPCC__)
#define SEGLOSS_HOST_DEVICE __host__ __device__
#define SEGLOSS_INLINE __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define SEGLOSS_HOST_DEVICE
#define SEGLOSS_INLINE inline __attribute__((always_inline))
#else
#define SEGLOSS_HOST_DEVICE
#define SEGLOSS_INLINE inline
#endif

// Keeps a host function out of its callers: some loops vectorise on their
// own but not inlined into a large caller (binary_distance.h).
#if defined(__GNUC__)
#define SEGLOSS_NOINLINE __attribute__((noinline))
#elif defined(_MSC_VER)
#define SEGLOSS_NOINLINE __declspec(noinline)
#else
#define SEGLOSS_NOINLINE
#endif
