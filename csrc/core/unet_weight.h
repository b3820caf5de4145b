// The U-Net weight map of Ronneberger et al. (2015) from the two nearest
// instances, per pixel, for host and device:
//   w(x) = w_c(x) + w0 exp(-(d1(x) + d2(x))^2 / (2 sigma^2))
// The border term is added on background pixels only (as the paper's
// implementations do) unless `border_everywhere`, and is 0 where there is no
// second instance (d2 infinite).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "platform.h"
#include "rounding.h"
#include "two_nearest.h"

namespace segloss::core {

struct UnetWeightParams {
  double w0 = 10;
  double sigma = 5;
  bool border_everywhere = false;
  double log_abs_w0 = 2.302585092994046;  // log|w0|: set by unet_weight_params
};

inline UnetWeightParams unet_weight_params(double w0, double sigma, bool border_everywhere) {
  return UnetWeightParams{w0, sigma, border_everywhere, std::log(std::fabs(w0))};
}

// Whether the border term w0 exp(exponent) is below a quarter of weight's
// ulp, so that adding it, rounded to nearest, gives weight back (a quarter:
// below a power of two the ulp halves), and the exp can be skipped: the same
// bits, less time where the two nearest cells are far (exp_rn is most of a
// background pixel's cost). With e = ilogb(weight), the test is |w0| exp(x)
// < 2^(e - 54) in logarithms, less 1e-9: far more than exp_rn's and the
// product's rounding (a few 2^-52) and the bound's own. Only for normal
// weights (zero, subnormal, infinite and NaN ones: never);
// tests/cpp/unet_weight_skip.cpp checks the margin.
SEGLOSS_INLINE bool border_term_is_negligible(double weight, double exponent,
                                              double log_abs_w0) {
  std::uint64_t bits;
  memcpy(&bits, &weight, sizeof(bits));
  const int field = int((bits >> 52) & 0x7ff);
  if (field == 0 || field == 0x7ff) return false;
  const double ln2 = 0.6931471805599453;
  const double bound = sub_rn(mul_rn(double(field - 1023 - 54), ln2), log_abs_w0);
  return exponent < sub_rn(bound, 1e-9);
}

// w_c of the two classes: background (label 0) and foreground (any instance).
struct ClassWeights {
  double background = 1;
  double foreground = 1;
};

// "Balanced" w_c of an image: each class gets n_pixels / (2 n_pixels_of_that
// class); a class with no pixels gets 1 (no pixel uses it).
SEGLOSS_INLINE ClassWeights balanced_class_weights(int64_t pixels, int64_t foreground) {
  const int64_t background = pixels - foreground;
  ClassWeights weights;
  if (background > 0) weights.background = double(pixels) / (2 * double(background));
  if (foreground > 0) weights.foreground = double(pixels) / (2 * double(foreground));
  return weights;
}

// Instance pixels, and only they, are at distance 0 from their nearest
// instance (with every spacing >= kMinSpacing, distances between pixels are
// positive doubles).
SEGLOSS_INLINE bool is_instance_pixel(const NearestPair& pair) { return pair.d[0] == 0; }

// The weight at a pixel whose two nearest instances are `pair` (squared
// distances): w_c is *pixel_weight if given (per-pixel weights), else the
// pixel's class weight.
SEGLOSS_INLINE float unet_weight(const NearestPair& pair, const float* pixel_weight,
                                 const ClassWeights& class_weights,
                                 const UnetWeightParams& params) {
  const bool on_instance = is_instance_pixel(pair);
  double weight = pixel_weight != nullptr ? double(*pixel_weight)
                  : on_instance           ? class_weights.foreground
                                          : class_weights.background;
  if ((params.border_everywhere || !on_instance) && pair.id[1] != kNoInstance) {
    // Unfused arithmetic and exp_rn (rounding.h): the same bits on CPU and GPU.
    const double gap = add_rn(sqrt(pair.d[0]), sqrt(pair.d[1]));
    const double exponent = -mul_rn(gap, gap) / mul_rn(2 * params.sigma, params.sigma);
    if (!border_term_is_negligible(weight, exponent, params.log_abs_w0)) {
      weight = add_rn(weight, mul_rn(params.w0, exp_rn(exponent)));
    }
  }
  return float(weight);
}

// The CPU callers' sink: the weight of pixel i into weights[i], w_c from
// pixel_weights[i] where given. One type for every label type, so that the
// sweep is compiled once for it.
struct UnetWeightOutput {
  float* weights;
  const float* pixel_weights;  // or null
  ClassWeights class_weights;
  UnetWeightParams params;

  SEGLOSS_INLINE void operator()(int64_t i, const NearestPair& pair) const {
    weights[i] = unet_weight(pair, pixel_weights != nullptr ? pixel_weights + i : nullptr,
                             class_weights, params);
  }
};

}  // namespace segloss::core
