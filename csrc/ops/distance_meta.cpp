// Meta kernels of the distance-transform ops: shapes and dtypes, with the real
// kernels' argument checks.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>

#include "distance_operands.h"

namespace segloss::ops {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> two_nearest_distances_meta(
    const at::Tensor& labels, std::optional<at::ArrayRef<double>> sampling, bool return_labels) {
  check_instance_labels(kTwoNearestOp, labels, sampling);
  std::vector<at::Tensor> out = empty_two_nearest_outputs(labels, return_labels);
  return {out[0], out[1], out[2], out[3]};
}

at::Tensor unet_weight_map_meta(const at::Tensor& labels, double w0, double sigma,
                                std::optional<at::ArrayRef<double>> sampling,
                                std::optional<at::ArrayRef<double>> class_weights, bool balanced,
                                const std::optional<at::Tensor>& pixel_weights,
                                bool border_everywhere) {
  check_instance_labels(kWeightMapOp, labels, sampling);
  check_weight_map_arguments(kWeightMapOp, labels, w0, sigma, class_weights, balanced,
                             pixel_weights, border_everywhere);
  return empty_weight_map(labels);
}

at::Tensor distance_map_meta(const at::Tensor& mask, std::string_view kind, int64_t spatial_dims,
                             std::optional<at::ArrayRef<double>> sampling) {
  check_distance_map_arguments(mask, kind, spatial_dims, sampling);
  return empty_distance_map(mask);
}

}  // namespace

TORCH_LIBRARY_IMPL(segloss, Meta, m) {
  m.impl("distance_map", &distance_map_meta);
  m.impl("two_nearest_distances", &two_nearest_distances_meta);
  m.impl("unet_weight_map", &unet_weight_map_meta);
}

}  // namespace segloss::ops
