// Elementary functions for the loss kernels, written once for host and device.
//
// The float versions are Cephes-style polynomials (about 1 ulp) built only from
// arithmetic, bit casts and selects, so that g++ vectorises the CPU loops that
// call them; libm's logf/expf are opaque calls that keep those loops scalar.
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

// log(x) for a finite, normal x > 0 (no special values), times 2^extra_exponent
// folded in: log(x) + extra_exponent * log(2). The kernel of log_f.
SEGLOSS_INLINE float log_normal_f(float x, std::int32_t extra_exponent) {
  const std::uint32_t bits = bits_from_float(x);
  // x = m * 2^e with m in [0.5, 1).
  std::int32_t e = std::int32_t((bits >> 23) & 0xffu) - 126 + extra_exponent;
  float m = float_from_bits((bits & 0x007fffffu) | 0x3f000000u);
  // Move m to [sqrt(1/2), sqrt(2)) and take the polynomial in m - 1.
  const bool below_sqrt_half = m < 0.707106781186547524f;
  e -= below_sqrt_half ? 1 : 0;
  m = below_sqrt_half ? (m + m - 1.0f) : (m - 1.0f);
  const float z = m * m;
  float p = 7.0376836292e-2f;
  p = p * m - 1.1514610310e-1f;
  p = p * m + 1.1676998740e-1f;
  p = p * m - 1.2420140846e-1f;
  p = p * m + 1.4249322787e-1f;
  p = p * m - 1.6668057665e-1f;
  p = p * m + 2.0000714765e-1f;
  p = p * m - 2.4999993993e-1f;
  p = p * m + 3.3333331174e-1f;
  const float fe = float(e);
  float y = p * m * z;
  y += -2.12194440e-4f * fe;  // low part of log(2)
  y += -0.5f * z;
  return (m + y) + 0.693359375f * fe;  // high part of log(2)
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

// Exponential. Overflows to +inf above log(FLT_MAX), underflows through the
// subnormals to 0, NaN propagates. Clamping the argument is the only select:
// the scaling by 2^n then overflows or underflows by itself (and g++ stops
// vectorising when more selects follow the clamp).
SEGLOSS_INLINE float exp_f(float x) {
  float xc = x > 89.0f ? 89.0f : x;         // exp(89) > FLT_MAX: becomes +inf
  xc = xc < -104.0f ? -104.0f : xc;         // exp(-104) < FLT_TRUE_MIN / 2: becomes 0
  // x = n log(2) + r, |r| <= log(2) / 2; n rounded half away from zero.
  const float t = xc * 1.44269504088896341f;
  const float n = float(std::int32_t(t + (t >= 0.0f ? 0.5f : -0.5f)));
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  const float z = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  float y = p * z + r + 1.0f;
  // 2^n as two normal factors: n ranges over [-150, 128]. For a NaN x, y is
  // already NaN and stays NaN whatever the conversion makes of n.
  const std::int32_t ni = std::int32_t(n);
  const std::int32_t n1 = ni >> 1;
  const std::int32_t n2 = ni - n1;
  y = y * float_from_bits(std::uint32_t(n1 + 127) << 23);
  y = y * float_from_bits(std::uint32_t(n2 + 127) << 23);
  return y;
}

// log(1 + t) for t in [-1, 1], to about 1.5 ulp. With u = 1 + t rounded,
// log1p(t) = log(u) + log(1 + c / u) where c = t - (u - 1) is the rounding
// error, |c| <= ulp(u) / 2; taking c for log(1 + c / u) errs by c (1 - 1/u),
// under half an ulp of the result on this domain, and needs no division.
SEGLOSS_INLINE float log1p_f(float t) {
  const float u = 1.0f + t;
  return log_f(u) + (t - (u - 1.0f));
}

// log1p_f for t in [0, 1] only: u = 1 + t is normal, so no special values.
// NaN t gives an unspecified finite value: callers propagate NaN otherwise.
SEGLOSS_INLINE float log1p_unit_f(float t) {
  const float u = 1.0f + t;
  return log_normal_f(u, 0) + (t - (u - 1.0f));
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
SEGLOSS_INLINE double log_(double x) { return ::log(x); }
SEGLOSS_INLINE double log1p_(double x) { return ::log1p(x); }
SEGLOSS_INLINE double log1p_unit_(double x) { return ::log1p(x); }
SEGLOSS_INLINE double exp_(double x) { return ::exp(x); }

}  // namespace segloss::core
