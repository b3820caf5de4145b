// The error, in units in the last place (ulp) of the float32 result, of the
// float32 elementary functions in csrc/core (float_math.h, bce.h) against the
// C library's double versions rounded to float: every `stride`-th float32
// input of each function's range (stride 1: all of them). Prints one line per
// function: name, inputs checked, max error in ulp, the input where it is.
// Built and run by tests/test_float_math_error.py; torch-free (core only).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "../../csrc/core/bce.h"
#include "../../csrc/core/float_math.h"

namespace {

float float_of(std::uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// |got - exact| in ulp of the float nearest to exact.
double ulp_error(float got, double exact) {
  if (std::isnan(exact)) return std::isnan(got) ? 0.0 : INFINITY;
  if (std::isinf(exact)) return float(exact) == got ? 0.0 : INFINITY;
  const float nearest = float(exact);
  if (std::isinf(nearest)) return std::isinf(got) && (got > 0) == (exact > 0) ? 0.0 : INFINITY;
  const float magnitude = std::fabs(nearest);
  const double ulp =
      double(std::nextafter(magnitude, std::numeric_limits<float>::infinity())) - magnitude;
  return std::fabs(double(got) - exact) / ulp;
}

struct Result {
  std::uint64_t checked = 0;
  double max_error = 0;
  float worst_input = 0;
};

// Every stride-th float in [lo, hi] (both finite, same sign or lo <= 0 <= hi).
template <typename F, typename R>
Result sweep(float lo, float hi, std::uint32_t stride, F f, R reference) {
  Result result;
  auto visit = [&](float x) {
    const double error = ulp_error(f(x), reference(double(x)));
    ++result.checked;
    if (error > result.max_error) {
      result.max_error = error;
      result.worst_input = x;
    }
  };
  // Positive floats [max(lo, 0), hi] and negative ones [lo, min(hi, -0)],
  // by their bit patterns (ordered by magnitude).
  auto walk = [&](float a, float b, bool negative) {
    std::uint32_t from, to;
    std::memcpy(&from, &a, sizeof a);
    std::memcpy(&to, &b, sizeof b);
    from &= 0x7fffffffu;
    to &= 0x7fffffffu;
    if (from > to) std::swap(from, to);
    for (std::uint64_t bits = from; bits <= to; bits += stride) {
      visit(float_of(std::uint32_t(bits) | (negative ? 0x80000000u : 0u)));
    }
  };
  if (hi >= 0) walk(lo > 0 ? lo : 0.0f, hi, false);
  if (lo < 0) walk(hi < 0 ? hi : 0.0f, lo, true);
  return result;
}

void report(const char* name, const Result& r) {
  std::printf("%s %llu %.3f %.9g\n", name, (unsigned long long)r.checked, r.max_error,
              double(r.worst_input));
}

}  // namespace

int main(int argc, char** argv) {
  namespace core = segloss::core;
  const std::uint32_t stride = argc > 1 ? std::uint32_t(std::strtoul(argv[1], nullptr, 10)) : 1;
  const float max_float = std::numeric_limits<float>::max();
  const float smallest = std::numeric_limits<float>::denorm_min();
  // exp: every input whose result is a normal float or rounds to 0 / inf near the ends.
  report("exp", sweep(-103.0f, 88.7f, stride, [](float x) { return core::exp_(x); },
                      [](double x) { return std::exp(x); }));
  // exp_nonpositive: the same below 0 (sigmoid and log_sigmoid take exp(-|x|) with it).
  report("exp_nonpositive", sweep(-103.0f, 0.0f, stride,
                                  [](float x) { return core::exp_nonpositive_(x); },
                                  [](double x) { return std::exp(x); }));
  // one_minus_exp: 1 - exp(l) for l <= 0 (the focal losses' 1 - p).
  report("one_minus_exp", sweep(-103.0f, 0.0f, stride,
                                [](float x) { return core::one_minus_exp(x); },
                                [](double x) { return -std::expm1(x); }));
  report("log", sweep(smallest, max_float, stride, [](float x) { return core::log_(x); },
                      [](double x) { return std::log(x); }));
  report("log1p", sweep(-0.999999940f, 1.0f, stride,  // its documented domain [-1, 1]
                        [](float x) { return core::log1p_(x); },
                        [](double x) { return std::log1p(x); }));
  report("log1p_unit", sweep(0.0f, 1.0f, stride, [](float x) { return core::log1p_unit_(x); },
                             [](double x) { return std::log1p(x); }));
  report("sigmoid", sweep(-max_float, max_float, stride,
                          [](float x) { return core::sigmoid(x); },
                          [](double x) { return 1.0 / (1.0 + std::exp(-x)); }));
  report("log_sigmoid", sweep(-max_float, max_float, stride,
                              [](float x) { return core::log_sigmoid(x); },
                              [](double x) { return x < 0 ? x - std::log1p(std::exp(x))
                                                           : -std::log1p(std::exp(-x)); }));
  return 0;
}
