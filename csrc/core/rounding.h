// Double arithmetic that gives the same bits on host and device: every
// operation rounded on its own, never fused.
//
// nvcc contracts `a + b * c` into one fused multiply-add (rounded once) by
// default, while the CPU build for baseline x86-64 has no FMA and rounds the
// product first; the two differ in the last bit often enough (about 3% of
// `base + offset * offset` at spacing 1.3) to change distances and, through
// near-ties, nearest ids. The distance transform and the U-Net weight are
// promised bitwise equal on CPU and GPU, so their arithmetic goes through
// these helpers: on the device, the explicitly rounded intrinsics, which nvcc
// never contracts; on the host, plain operators in translation units built
// with -ffp-contract=off (CMakeLists.txt), so that g++ on a target with FMA
// (aarch64, -march=native) does not fuse them either. Division and sqrt are
// correctly rounded on both as they stand.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "platform.h"

namespace segloss::core {

SEGLOSS_INLINE double mul_rn(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

SEGLOSS_INLINE double add_rn(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}

SEGLOSS_INLINE double sub_rn(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dsub_rn(a, b);
#else
  return a - b;
#endif
}

// a + b exactly, as the rounded sum `hi` and its rounding error `lo` (Knuth's
// TwoSum: six rounded additions, exact for any finite a, b whose sum does not
// overflow). Since hi = round(a + b) and rounding is monotone, two such sums
// compare exactly by (hi, then lo).
struct ExactSum {
  double hi, lo;
};

SEGLOSS_INLINE ExactSum exact_sum(double a, double b) {
  const double hi = add_rn(a, b);
  const double b_part = sub_rn(hi, a);
  const double a_part = sub_rn(hi, b_part);
  return ExactSum{hi, add_rn(sub_rn(a, a_part), sub_rn(b, b_part))};
}

// 2^k for k in [-1022, 1023] (a normal double).
SEGLOSS_INLINE double power_of_two(std::int64_t k) {
  const std::uint64_t bits = std::uint64_t(k + 1023) << 52;
  double value;
  memcpy(&value, &bits, sizeof(value));
  return value;
}

// exp(x) with the same bits on host and device (the C library's exp and
// CUDA's differ in the last bit for some x), to about 1 ulp: Cephes' rational
// approximation, x = n log(2) + r with |r| <= log(2) / 2,
// exp(r) = 1 + 2 r P(r^2) / (Q(r^2) - r P(r^2)), scaled by 2^n in two normal
// factors (so that results in the subnormal range round once). Overflows to
// +inf above log(DBL_MAX), underflows to 0, NaN propagates.
SEGLOSS_INLINE double exp_rn(double x) {
  if (x != x) return x;
  double xc = x > 710.0 ? 710.0 : x;      // exp(710) > DBL_MAX: becomes +inf
  xc = xc < -746.0 ? -746.0 : xc;         // exp(-746) < DBL_TRUE_MIN / 2: becomes 0
  const double n = floor(add_rn(mul_rn(1.4426950408889634073599, xc), 0.5));
  // log(2) in two parts; n * the high part is exact (|n| <= 1077).
  double r = sub_rn(xc, mul_rn(n, 6.93145751953125e-1));
  r = sub_rn(r, mul_rn(n, 1.42860682030941723212e-6));
  const double rr = mul_rn(r, r);
  double p = 1.26177193074810590878e-4;
  p = add_rn(mul_rn(p, rr), 3.02994407707441961300e-2);
  p = add_rn(mul_rn(p, rr), 9.99999999999999999910e-1);
  p = mul_rn(p, r);
  double q = 3.00198505138664455042e-6;
  q = add_rn(mul_rn(q, rr), 2.52448340349684104192e-3);
  q = add_rn(mul_rn(q, rr), 2.27265548208155028766e-1);
  q = add_rn(mul_rn(q, rr), 2.00000000000000000009e0);
  const double y = add_rn(1.0, mul_rn(2.0, p / sub_rn(q, p)));
  const std::int64_t k = std::int64_t(n);  // in [-1077, 1025]
  const std::int64_t k1 = k / 2;
  return mul_rn(mul_rn(y, power_of_two(k1)), power_of_two(k - k1));
}

}  // namespace segloss::core
