// The U-Net weight map of Ronneberger et al. (2015) from the two nearest
// instances, per pixel, for host and device:
//   w(x) = w_c(x) + w0 exp(-(d1(x) + d2(x))^2 / (2 sigma^2))
// The border term is added on background pixels only (as the paper's
// implementations do) unless `border_everywhere`, and is 0 where there is no
// second instance (d2 infinite).
#pragma once

#include <cmath>
#include <cstdint>

#include "platform.h"
#include "rounding.h"
#include "two_nearest.h"

namespace segloss::core {

struct UnetWeightParams {
  double w0 = 10;
  double sigma = 5;
  bool border_everywhere = false;
};

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
    weight = add_rn(weight, mul_rn(params.w0, exp_rn(exponent)));
  }
  return float(weight);
}

}  // namespace segloss::core
