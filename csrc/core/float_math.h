// Elementary functions for the loss kernels, written once for host and device.
//
// The float versions are minimax polynomials after a range reduction, within
// 2 ulp (sigmoid and log_sigmoid in bce.h within 3; the project's budget for
// float32 per-element math is 4 ulp: tests/test_float_math_error.py, README),
// built only from arithmetic, bit casts and selects, so that g++ vectorises
// the CPU loops that call them; libm's logf/expf are opaque calls that keep
// those loops scalar.
// The double versions call the C library, which is exact enough and fast enough
// for float64 work on both host and device.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "platform.h"

namespace segloss::core {

SEGLOSS_INLINE float float_from_bits(std::uint32_t bits) {
  float value;
  memcpy(&value, &bits, sizeof(value));
  return value;
}

SEGLOSS_INLINE std::uint32_t bits_from_float(float value) {
  std::uint32_t bits;
  memcpy(&bits, &value, sizeof(bits));
  return bits;
}

// log(1 + m) = m + m^2 q(m) for m in [-1/3, 1/3] (the reduced argument of
// log_normal_f): q, a degree-7 minimax polynomial (the sum's relative error is
// 2.6e-8 in exact arithmetic).
SEGLOSS_INLINE float log1p_reduced_q_f(float m) {
  float q = 1.4028407633e-01f;
  q = q * m - 1.5390542150e-01f;
  q = q * m + 1.3995420933e-01f;
  q = q * m - 1.6415630281e-01f;
  q = q * m + 2.0011191070e-01f;
  q = q * m - 2.5007835031e-01f;
  q = q * m + 3.3333197236e-01f;
  q = q * m - 4.9999934435e-01f;
  return q;
}

// log(x) for a finite, normal x > 0 (no special values), times 2^extra_exponent
// folded in: log(x) + extra_exponent * log(2). The kernel of log_f.
SEGLOSS_INLINE float log_normal_f(float x, std::int32_t extra_exponent) {
  // x = (1 + m) 2^k with 1 + m in [2/3, 4/3): subtracting the bits of 2/3
  // (rounded up) leaves k in the exponent field (an arithmetic shift takes it
  // out) and the mantissa to put back above 2/3. No compare and no select;
  // (1 + m) - 1 is exact (Sterbenz).
  constexpr std::uint32_t kTwoThirds = 0x3f2aaaabu;
  const std::uint32_t offset = bits_from_float(x) - kTwoThirds;
  const std::int32_t k = (std::int32_t(offset) >> 23) + extra_exponent;
  const float m = float_from_bits((offset & 0x007fffffu) + kTwoThirds) - 1.0f;
  const float fk = float(k);
  // log(2) = 0.693359375 - 2.12194440e-4, the high part times k exact. The
  // terms from the smallest: |m + small| <= log(3/2) rounds finely, and where
  // the last sum cancels (k = +-1) its result still exceeds log(4/3).
  const float small = (m * m) * log1p_reduced_q_f(m) - 2.12194440e-4f * fk;
  return (m + small) + 0.693359375f * fk;
}

// Natural logarithm. log(0) = -inf, log(x < 0) = NaN, NaN propagates.
SEGLOSS_INLINE float log_f(float x) {
  constexpr float kMinNormal = 1.17549435e-38f;
  const bool subnormal = x < kMinNormal;  // also true for 0 and negatives
  const float scaled = subnormal ? x * 8388608.0f : x;  // 2^23 makes it normal
  float result = log_normal_f(scaled, subnormal ? -23 : 0);
  constexpr float kInf = std::numeric_limits<float>::infinity();
  result = x == 0.0f ? -kInf : result;
  result = x < 0.0f ? std::numeric_limits<float>::quiet_NaN() : result;
  result = x == kInf ? kInf : result;
  result = x != x ? x : result;
  return result;
}

// exp(r) for |r| <= log(2) / 2 (plus rounding): 1 + r + r^2 q(r), q a
// degree-4 minimax polynomial (relative error 3.1e-9 in exact arithmetic).
SEGLOSS_INLINE float exp_reduced_f(float r) {
  float q = 1.3814540580e-03f;
  q = q * r + 8.3687454462e-03f;
  q = q * r + 4.1668388993e-02f;
  q = q * r + 1.6666521132e-01f;
  q = q * r + 4.9999994040e-01f;
  return ((r * r) * q + r) + 1.0f;
}

// x = n log(2) + r, n = x / log(2) rounded to nearest by adding and
// subtracting 1.5 * 2^23 (|x| / log(2) < 2^22): the sum's low bits hold n as
// an integer, returned in *shifted_bits.
SEGLOSS_INLINE float exp_reduce_f(float x, std::uint32_t* shifted_bits) {
  constexpr float kRound = 12582912.0f;
  const float shifted = x * 1.44269504088896341f + kRound;
  const float n = shifted - kRound;
  *shifted_bits = bits_from_float(shifted);
  // log(2) = 0.693359375 - 2.12194440e-4: n times the high part is exact.
  const float r = x - n * 0.693359375f;
  return r - n * -2.12194440e-4f;
}

// Exponential. Overflows to +inf above log(FLT_MAX), underflows through the
// subnormals to 0, NaN propagates. Clamping the argument is the only select:
// the scaling by 2^n then overflows or underflows by itself.
SEGLOSS_INLINE float exp_f(float x) {
  float xc = x > 89.0f ? 89.0f : x;         // exp(89) > FLT_MAX: becomes +inf
  xc = xc < -104.0f ? -104.0f : xc;         // exp(-104) < FLT_TRUE_MIN / 2: becomes 0
  std::uint32_t shifted_bits;
  const float y = exp_reduced_f(exp_reduce_f(xc, &shifted_bits));
  // 2^n as two normal factors: n ranges over [-150, 128]. For a NaN x, y is
  // already NaN and stays NaN whatever the bits make of n.
  const std::int32_t n = std::int32_t(shifted_bits - 0x4b400000u);  // the bits of 1.5 * 2^23
  const std::int32_t n1 = n >> 1;
  const std::int32_t n2 = n - n1;
  return (y * float_from_bits(std::uint32_t(n1 + 127) << 23)) *
         float_from_bits(std::uint32_t(n2 + 127) << 23);
}

// exp_f for x <= 0 (or NaN) only, a little cheaper: n ranges over [-150, 0],
// so 2^n = 2^(n + 64) 2^-64, the first factor normal, the second a constant
// (results below FLT_MIN are rounded once, by the last product).
SEGLOSS_INLINE float exp_nonpositive_f(float x) {
  const float xc = x < -104.0f ? -104.0f : x;  // exp(-104) < FLT_TRUE_MIN / 2: becomes 0
  std::uint32_t shifted_bits;
  const float y = exp_reduced_f(exp_reduce_f(xc, &shifted_bits));
  // (n + 64 + 127) << 23 from the bits 0x4b400000 + n of the rounding sum.
  const float scale = float_from_bits((shifted_bits - (0x4b400000u - 191u)) << 23);
  return (y * scale) * 5.42101086e-20f;  // 2^-64
}

// log(1 + t) for t in [-1, 1]. With u = 1 + t rounded, log1p(t) = log(u) +
// log(1 + c / u) where c = t - (u - 1) is the rounding error (u - 1 is exact
// on this domain), |c| <= ulp(u) / 2. Taking c for log(1 + c / u) errs by
// c (1 - 1/u), at most 2^-25 (u in [1, 2)): under an ulp of the result except
// where log(u) < 1/4, up to about 1 ulp there. It needs no division.
SEGLOSS_INLINE float log1p_f(float t) {
  const float u = 1.0f + t;
  return log_f(u) + (t - (u - 1.0f));
}

// log1p_f for t in [0, 1] only (softplus(-|x|) = log1p(exp(-|x|))), with no
// range reduction and no rounding of 1 + t: log(1 + t) = t + t^2 q(t), q a
// degree-7 minimax polynomial on [0, 1] (relative error 3.3e-8 in exact
// arithmetic). The singularity at t = -1 is as far from [0, 1], relative to
// its width, as from the reduced ranges of log_normal_f, so one polynomial of
// that degree covers it. NaN propagates.
SEGLOSS_INLINE float log1p_unit_f(float t) {
  float q = 5.3648245521e-03f;
  q = q * t - 3.0065791681e-02f;
  q = q * t + 7.9204536974e-02f;
  q = q * t - 1.3753803074e-01f;
  q = q * t + 1.9153654575e-01f;
  q = q * t - 2.4857163429e-01f;
  q = q * t + 3.3321323991e-01f;
  q = q * t - 4.9999648333e-01f;
  return (t * t) * q + t;
}

// 1 - exp(l) = -expm1(l) for l <= 0 (1 - p from l = log p, the focal
// losses' q), without the cancellation of 1 - exp(l) near l = 0: above
// -log(2), expm1's Taylor polynomial to degree 10 (truncation under 1e-9
// relative); below it, 1 - exp(l), where exp(l) <= 1/2 loses nothing. 0 for
// l >= 0 and for NaN (callers' other factor, -l, propagates NaN).
SEGLOSS_INLINE float one_minus_exp_f(float l) {
  float p = 2.7557319e-7f;  // 1 / 10!
  p = p * l + 2.7557319e-6f;
  p = p * l + 2.4801587e-5f;
  p = p * l + 1.9841270e-4f;
  p = p * l + 1.3888889e-3f;
  p = p * l + 8.3333333e-3f;
  p = p * l + 4.1666667e-2f;
  p = p * l + 1.6666667e-1f;
  p = p * l + 0.5f;  // 1 / 2!
  const float near_zero = -(l + (l * l) * p);
  const float q = l > -0.693147182f ? near_zero : 1.0f - exp_nonpositive_f(l);
  return l < 0.0f ? q : 0.0f;
}

// log(x) for a finite, normal x > 0 only (a NaN x gives an unspecified
// finite value): no special-value selects, so loops that call it vectorise.
SEGLOSS_INLINE float log_normal_f(float x) { return log_normal_f(x, 0); }

// Overloads that let templated math pick the float or double version.
SEGLOSS_INLINE float log_(float x) { return log_f(x); }
SEGLOSS_INLINE float log_normal_(float x) { return log_normal_f(x); }
SEGLOSS_INLINE double log_normal_(double x) { return ::log(x); }
SEGLOSS_INLINE float log1p_(float x) { return log1p_f(x); }
SEGLOSS_INLINE float log1p_unit_(float x) { return log1p_unit_f(x); }
SEGLOSS_INLINE float exp_(float x) { return exp_f(x); }
SEGLOSS_INLINE float exp_nonpositive_(float x) { return exp_nonpositive_f(x); }
SEGLOSS_INLINE double log_(double x) { return ::log(x); }
SEGLOSS_INLINE double log1p_(double x) { return ::log1p(x); }
SEGLOSS_INLINE double log1p_unit_(double x) { return ::log1p(x); }
SEGLOSS_INLINE double exp_(double x) { return ::exp(x); }
SEGLOSS_INLINE double exp_nonpositive_(double x) { return ::exp(x); }
SEGLOSS_INLINE float one_minus_exp(float l) { return one_minus_exp_f(l); }
SEGLOSS_INLINE double one_minus_exp(double l) { return l < 0.0 ? -::expm1(l) : 0.0; }

}  // namespace segloss::core
