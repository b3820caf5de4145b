// The U-Net weight's skipped exp (csrc/core/unet_weight.h,
// border_term_is_negligible): wherever the test says the border term is
// negligible, adding it as unet_weight would (add_rn(weight, mul_rn(w0,
// exp_rn(exponent)))) must give weight back, bit for bit. Built and run by
// tests/test_unfused_arithmetic.py:
//
//   unet_weight_skip COUNT SEED
//
// COUNT random weights (normal doubles of either sign and any scale, and
// zeros, subnormals, infinities), w0 (0, tiny, negative, ordinary) and
// exponents, most within 1e-6 of the skip's bound, the rest anywhere. Prints
// the first pixel where the skip would change the weight and exits 1; else
// "ok", how many were skipped and how many of those lay within 1e-6 of the
// bound.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>

#include "../../csrc/core/unet_weight.h"

using namespace segloss::core;

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s COUNT SEED\n", argv[0]);
    return 2;
  }
  const long long count = std::atoll(argv[1]);
  std::mt19937_64 rng(std::strtoull(argv[2], nullptr, 10));
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  long long skipped = 0, near_bound = 0;
  for (long long trial = 0; trial < count; ++trial) {
    double weight = std::ldexp(1.0 + unit(rng), int(rng() % 121) - 60);
    if (rng() % 8 == 0) weight = -weight;
    switch (rng() % 64) {
      case 0: weight = 0.0; break;
      case 1: weight = 1e-310; break;
      case 2: weight = INFINITY; break;
      case 3: weight = double(rng() % 5);  // small integers: powers of two among them
    }
    double w0 = std::ldexp(1.0 + unit(rng), int(rng() % 41) - 20);
    switch (rng() % 16) {
      case 0: w0 = 0.0; break;
      case 1: w0 = -w0; break;
      case 2: w0 = 1e-300; break;
      case 3: w0 = 10.0; break;
    }
    const UnetWeightParams params = unet_weight_params(w0, 5.0, false);
    // The bound where the skip starts, for weight's exponent (when normal).
    const double bound = double(std::ilogb(weight) - 54) * 0.6931471805599453 - std::log(std::fabs(w0));
    const bool close = rng() % 4 != 0 && std::isfinite(bound);
    const double exponent = close ? bound + (unit(rng) - 0.5) * 2e-6 : -unit(rng) * 800.0;
    if (!border_term_is_negligible(weight, exponent, params.log_abs_w0)) continue;
    ++skipped;
    near_bound += close;
    const double full = add_rn(weight, mul_rn(w0, exp_rn(exponent)));
    if (std::memcmp(&full, &weight, sizeof(double)) != 0) {
      std::printf("weight %.17g, w0 %.17g, exponent %.17g: the term changes it to %.17g\n",
                  weight, w0, exponent, full);
      return 1;
    }
  }
  std::printf("ok\n%lld skipped, %lld near the bound\n", skipped, near_bound);
  return 0;
}
