// CPU kernels of the distance-transform ops: each image of the batch through
// the core's N-D transform (csrc/core/distance_transform.h), its bands of rows
// spread over torch's intra-op threads; then the per-pixel outputs.
#include <ATen/ATen.h>
#include <ATen/Dispatch_v2.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <type_traits>

#include "../checks.h"
#include "../distance_operands.h"

namespace segloss::ops {
namespace {

// The core's parallel_for: over torch's thread pool (a unit of work is a
// block of columns or a band of rows), or on the calling thread. One type for
// both, so that each transform is compiled once.
struct ImageThreads {
  bool spread;  // over torch's threads
  template <typename Body>
  void operator()(int64_t count, Body&& body) const {
    if (spread) {
      at::parallel_for(0, count, /*grain_size=*/1, body);
    } else {
      body(int64_t(0), count);
    }
  }
};

// Calls image(n, parallel_for) for every image n of a batch: a batch of at
// least two images per thread runs images in parallel, each on one thread;
// fewer, larger images spread each image's work over the threads.
template <typename Image>
void for_each_image_on_threads(int64_t images, const Image& image) {
  if (images >= 2 * int64_t(at::get_num_threads())) {
    at::parallel_for(0, images, 1, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) image(n, ImageThreads{false});
    });
  } else {
    for (int64_t n = 0; n < images; ++n) image(n, ImageThreads{true});
  }
}

// Runs the transform on every image of `labels` (`Label` its C++ type):
// make_sink(image, labels, grid) gives the sink that receives that image's
// pairs (sink(pixel index, pair)); it may be called from several threads.
// (Its type should not depend on Label: the sweep is compiled once per sink.)
template <typename Label, typename MakeSink>
void for_each_image(const at::Tensor& labels_in, const std::vector<double>& spacing,
                    MakeSink&& make_sink) {
  const at::Tensor labels = aligned(labels_in);  // read in place, by strides
  const core::Grid grid = image_grid(labels, spacing);
  if (grid.numel() == 0) return;
  core::StridedLabels<Label, core::LabelIsId> strided{nullptr, {}, core::LabelIsId{}};
  for (int d = 0; d < grid.ndim; ++d) strided.stride[d] = labels.stride(d + 1);
  const auto image = [&](int64_t n, const ImageThreads& parallel_for) {
    core::StridedLabels<Label, core::LabelIsId> image_labels = strided;
    image_labels.data = labels.const_data_ptr<Label>() + n * labels.stride(0);
    core::two_nearest_squared(image_labels, grid, parallel_for, make_sink(n, image_labels, grid));
  };
  for_each_image_on_threads(labels.size(0), image);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> two_nearest_distances_cpu(
    const at::Tensor& labels, std::optional<at::ArrayRef<double>> sampling, bool return_labels) {
  const std::vector<double> spacing = check_instance_labels(kTwoNearestOp, labels, sampling);
  std::vector<at::Tensor> out = empty_two_nearest_outputs(labels, return_labels);
  const int64_t pixels = labels.size(0) > 0 ? labels[0].numel() : 0;
  AT_DISPATCH_V2(
      labels.scalar_type(), "segloss_two_nearest_cpu", AT_WRAP([&] {
        double* d1 = out[0].data_ptr<double>();
        double* d2 = out[1].data_ptr<double>();
        if (!return_labels) {
          for_each_image<scalar_t>(labels, spacing, [&](int64_t n, const auto&, const auto&) {
            return core::TwoNearestOutputs<false>{d1 + n * pixels, d2 + n * pixels};
          });
          return;
        }
        scalar_t* l1 = out[2].data_ptr<scalar_t>();
        scalar_t* l2 = out[3].data_ptr<scalar_t>();
        for_each_image<scalar_t>(labels, spacing, [&](int64_t n, const auto&, const auto&) {
          const int64_t offset = n * pixels;
          return core::TwoNearestOutputs<true>{d1 + offset, d2 + offset, l1 + offset,
                                               l2 + offset, int(sizeof(scalar_t))};
        });
      }),
      AT_EXPAND(AT_INTEGRAL_TYPES_V2));
  return {out[0], out[1], out[2], out[3]};
}

at::Tensor unet_weight_map_cpu(const at::Tensor& labels, double w0, double sigma,
                               std::optional<at::ArrayRef<double>> sampling,
                               std::optional<at::ArrayRef<double>> class_weights, bool balanced,
                               const std::optional<at::Tensor>& pixel_weights,
                               bool border_everywhere) {
  const WeightMapOperands ops = prepare_weight_map_operands(
      labels, w0, sigma, sampling, class_weights, balanced, pixel_weights, border_everywhere);
  at::Tensor out = empty_weight_map(labels);
  const float* pixel_weight =
      ops.pixel_weights.defined() ? ops.pixel_weights.const_data_ptr<float>() : nullptr;
  float* weights = out.data_ptr<float>();
  const int64_t pixels = labels.size(0) > 0 ? labels[0].numel() : 0;
  AT_DISPATCH_V2(
      labels.scalar_type(), "segloss_unet_weight_map_cpu", AT_WRAP([&] {
        for_each_image<scalar_t>(labels, ops.spacing, [&](int64_t n, const auto& strided,
                                                          const core::Grid& grid) {
          const core::ClassWeights class_weight =
              ops.balanced ? core::balanced_class_weights(
                                 pixels, core::count_instance_pixels(strided, grid))
                           : ops.fixed;
          return core::UnetWeightOutput{weights + n * pixels,
                                        pixel_weight ? pixel_weight + n * pixels : nullptr,
                                        class_weight, ops.params};
        });
      }),
      AT_EXPAND(AT_INTEGRAL_TYPES_V2));
  return out;
}

// The maps of every image: the mask read in place by strides, its batch
// dims flattened (a view where they allow one).
at::Tensor distance_map_cpu(const at::Tensor& mask_in, std::string_view kind,
                            int64_t spatial_dims, std::optional<at::ArrayRef<double>> sampling) {
  const DistanceMapOperands ops =
      check_distance_map_arguments(mask_in, kind, spatial_dims, sampling);
  at::Tensor out = empty_distance_map(mask_in);
  if (out.numel() == 0) return out;
  const MaskImages images_of_mask = mask_images(mask_in, ops);
  const at::Tensor& mask = images_of_mask.mask;
  const core::Grid& grid = images_of_mask.grid;
  const int64_t pixels = grid.numel();
  const int64_t images = mask.size(0);
  float* result = out.mutable_data_ptr<float>();
  const core::DistanceMap map = ops.map;
  AT_DISPATCH_V2(
      mask.scalar_type(), "segloss_distance_map_cpu", AT_WRAP([&] {
        core::StridedMask<scalar_t> strided{nullptr, {}, core::NonzeroIsForeground{}};
        for (int d = 0; d < grid.ndim; ++d) strided.stride[d] = mask.stride(d + 1);
        const auto image_map = [&](int64_t n, const ImageThreads& parallel_for) {
          core::StridedMask<scalar_t> image_mask = strided;
          image_mask.data = mask.const_data_ptr<scalar_t>() + n * mask.stride(0);
          float* image = result + n * pixels;
          const auto transform = [&](const auto& sink) {
            return core::binary_distance(image_mask, grid, core::DistanceTarget::kOtherClass,
                                         parallel_for, sink);
          };
          const int64_t foreground = core::with_map_output(map, image, transform);
          if (!core::has_both_classes(foreground, pixels)) std::fill(image, image + pixels, 0.0f);
        };
        for_each_image_on_threads(images, image_map);
      }),
      AT_EXPAND(AT_INTEGRAL_TYPES_V2), at::kBool);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(segloss, CPU, m) {
  m.impl("distance_map", &distance_map_cpu);
  m.impl("two_nearest_distances", &two_nearest_distances_cpu);
  m.impl("unet_weight_map", &unet_weight_map_cpu);
}

}  // namespace segloss::ops
