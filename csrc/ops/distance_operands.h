// Validation and preparation of the distance-transform ops' arguments
// (two_nearest_distances, unet_weight_map), shared by the CPU, CUDA and Meta
// kernels.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string_view>
#include <vector>

#include "../core/binary_distance.h"
#include "../core/distance_transform.h"
#include "../core/unet_weight.h"

namespace segloss::ops {

constexpr const char* kTwoNearestOp = "segloss.two_nearest_distances";
constexpr const char* kWeightMapOp = "segloss.unet_weight_map";

// labels: Tensor[N, *spatial] of integer instance ids with 2 or 3 spatial
// dims; sampling: one spacing per spatial dim, or absent (1). Returns the
// spacing per spatial dim. Works on Meta tensors with symbolic shapes.
// Messages name the public function `op` and call the labels `name`.
std::vector<double> check_instance_labels(std::string_view op, const at::Tensor& labels,
                                          const std::optional<at::ArrayRef<double>>& sampling,
                                          std::string_view name = "labels");

// The weight map's options; returns its parameters. Messages name `op`.
core::UnetWeightParams check_weight_map_arguments(
    std::string_view op, const at::Tensor& labels, double w0, double sigma,
    const std::optional<at::ArrayRef<double>>& class_weights, bool balanced,
    const std::optional<at::Tensor>& pixel_weights, bool border_everywhere);

// One image's grid: the spatial sizes of `labels` and the spacing.
core::Grid image_grid(const at::Tensor& labels, const std::vector<double>& spacing);

// The weight map's arguments as the kernels read them (the checks included).
struct WeightMapOperands {
  std::vector<double> spacing;
  core::UnetWeightParams params;
  core::ClassWeights fixed;  // w_c by class, unless balanced or per-pixel
  bool balanced = false;     // w_c per image from core::balanced_class_weights
  at::Tensor pixel_weights;  // per-pixel w_c, float32 and contiguous; or undefined
};

WeightMapOperands prepare_weight_map_operands(
    const at::Tensor& labels, double w0, double sigma,
    const std::optional<at::ArrayRef<double>>& sampling,
    const std::optional<at::ArrayRef<double>>& class_weights, bool balanced,
    const std::optional<at::Tensor>& pixel_weights, bool border_everywhere);

// The outputs: d1, d2 as float64 of labels' shape; l1, l2 in labels' dtype and
// shape, or empty ([0]) unless return_labels.
std::vector<at::Tensor> empty_two_nearest_outputs(const at::Tensor& labels, bool return_labels);
at::Tensor empty_weight_map(const at::Tensor& labels);

// The distance maps (segloss::distance_map): a mask of any integer or bool
// dtype whose last spatial_dims dims are spatial and whose others are batch
// dims; kind "signed" or "boundary" (which also picks the public function
// that messages name).
struct DistanceMapOperands {
  core::DistanceMap map;
  const char* op;             // the public function
  std::vector<double> spacing;
  int64_t spatial_dims;
};

DistanceMapOperands check_distance_map_arguments(const at::Tensor& mask, std::string_view kind,
                                                 int64_t spatial_dims,
                                                 const std::optional<at::ArrayRef<double>>& sampling);

// The maps' output: float32, the mask's shape, contiguous.
at::Tensor empty_distance_map(const at::Tensor& mask);

// The mask as the kernels read it: its batch dims flattened into one
// ([images, *spatial], a view where the strides allow), aligned; and one
// image's grid. (Not for an empty mask.)
struct MaskImages {
  at::Tensor mask;
  core::Grid grid;
};
MaskImages mask_images(const at::Tensor& mask, const DistanceMapOperands& ops);

}  // namespace segloss::ops
