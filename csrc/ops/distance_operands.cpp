#include "distance_operands.h"

#include <ATen/ATen.h>

#include <cmath>

#include "checks.h"

namespace segloss::ops {

namespace {

// The spacing per spatial dim: `sampling`, checked, or 1. `of` names what
// the spatial dims belong to in the message ("per spatial dim of labels"),
// or is empty.
std::vector<double> checked_spacing(std::string_view op,
                                    const std::optional<at::ArrayRef<double>>& sampling,
                                    int64_t spatial, std::string_view of) {
  std::vector<double> spacing(spatial, 1.0);
  if (!sampling.has_value()) return spacing;
  TORCH_CHECK_VALUE(int64_t(sampling->size()) == spatial, op,
                    ": sampling must have one value per spatial dim", of.empty() ? "" : " of ",
                    of, " (", spatial, "), got ", sampling->size(), ": ", *sampling);
  for (int64_t d = 0; d < spatial; ++d) {
    const double s = (*sampling)[d];
    // The bounds keep every squared distance a normal, finite double.
    TORCH_CHECK_VALUE(s >= core::kMinSpacing && s <= core::kMaxSpacing, op,
                      ": sampling must be positive (between 1e-100 and 1e100), got ", s,
                      " for spatial dim ", d);
    spacing[d] = s;
  }
  return spacing;
}

}  // namespace

std::vector<double> check_instance_labels(std::string_view op, const at::Tensor& labels,
                                          const std::optional<at::ArrayRef<double>>& sampling,
                                          std::string_view name) {
  TORCH_CHECK_TYPE(at::isIntegralType(labels.scalar_type(), /*includeBool=*/false), op,
                   ": ", name,
                   " must be a tensor of integer instance ids (any integer dtype; 0 is "
                   "background), got ",
                   labels.scalar_type(),
                   labels.scalar_type() == at::kBool
                       ? " (a binary mask? label its connected components first)"
                       : "");
  const int64_t spatial = labels.dim() - 1;
  TORCH_CHECK_VALUE(spatial == 2 || spatial == 3, op,
                    ": ", name,
                    " must be Tensor[N, H, W] or Tensor[N, D, H, W] (a batch of 2D or 3D "
                    "instance maps), got ",
                    labels.dim(), " dimensions of shape ", labels.sym_sizes());
  for (int64_t d = 1; d < labels.dim(); ++d) {
    TORCH_CHECK_VALUE(labels.sym_size(d) <= core::kMaxEnvelopeLine, op, ": ", name, " dim ", d,
                      " has ", labels.sym_size(d), " pixels; at most ", core::kMaxEnvelopeLine,
                      " are supported");
  }
  return checked_spacing(op, sampling, spatial, name);
}

core::UnetWeightParams check_weight_map_arguments(
    std::string_view op, const at::Tensor& labels, double w0, double sigma,
    const std::optional<at::ArrayRef<double>>& class_weights, bool balanced,
    const std::optional<at::Tensor>& pixel_weights, bool border_everywhere) {
  TORCH_CHECK_VALUE(std::isfinite(w0), op, ": w0 must be finite, got ", w0);
  TORCH_CHECK_VALUE(std::isfinite(sigma) && sigma > 0, op,
                    ": sigma must be positive and finite, got ", sigma);
  const int given = int(class_weights.has_value()) + int(balanced) + int(is_given(pixel_weights));
  TORCH_CHECK_VALUE(given <= 1, op,
                    ": give at most one of class_weights, balanced=True and pixel_weights");
  if (class_weights.has_value()) {
    TORCH_CHECK_VALUE(class_weights->size() == 2, op,
                      ": class_weights must be [background_weight, foreground_weight], got ",
                      class_weights->size(), " values");
    for (double w : *class_weights) {
      TORCH_CHECK_VALUE(std::isfinite(w), op, ": class_weights must be finite, got ",
                        *class_weights);
    }
  }
  if (is_given(pixel_weights)) {
    const at::Tensor& w = *pixel_weights;
    check_floating(op, "pixel_weights", w);
    TORCH_CHECK(w.device() == labels.device(), op, ": pixel_weights is on ", w.device(),
                " but labels is on ", labels.device());
    TORCH_CHECK_VALUE(w.sym_sizes() == labels.sym_sizes(), op,
                      ": pixel_weights must have labels' shape ", labels.sym_sizes(), ", got ",
                      w.sym_sizes());
  }
  return core::unet_weight_params(w0, sigma, border_everywhere);
}

core::Grid image_grid(const at::Tensor& labels, const std::vector<double>& spacing) {
  core::Grid grid;
  grid.ndim = int(labels.dim() - 1);
  for (int d = 0; d < grid.ndim; ++d) {
    grid.size[d] = labels.size(d + 1);
    grid.spacing[d] = spacing[d];
  }
  return grid;
}

WeightMapOperands prepare_weight_map_operands(
    const at::Tensor& labels, double w0, double sigma,
    const std::optional<at::ArrayRef<double>>& sampling,
    const std::optional<at::ArrayRef<double>>& class_weights, bool balanced,
    const std::optional<at::Tensor>& pixel_weights, bool border_everywhere) {
  WeightMapOperands ops;
  ops.spacing = check_instance_labels(kWeightMapOp, labels, sampling);
  ops.params = check_weight_map_arguments(kWeightMapOp, labels, w0, sigma, class_weights,
                                          balanced, pixel_weights, border_everywhere);
  if (class_weights.has_value()) {
    ops.fixed.background = (*class_weights)[0];
    ops.fixed.foreground = (*class_weights)[1];
  }
  ops.balanced = balanced;
  if (is_given(pixel_weights)) ops.pixel_weights = kernel_layout(pixel_weights->to(at::kFloat));
  return ops;
}

std::vector<at::Tensor> empty_two_nearest_outputs(const at::Tensor& labels, bool return_labels) {
  const auto distance_options =
      labels.options().dtype(at::kDouble).memory_format(at::MemoryFormat::Contiguous);
  const auto label_options = labels.options().memory_format(at::MemoryFormat::Contiguous);
  std::vector<at::Tensor> outputs;
  outputs.push_back(at::empty_symint(labels.sym_sizes(), distance_options));
  outputs.push_back(at::empty_symint(labels.sym_sizes(), distance_options));
  for (int k = 0; k < 2; ++k) {
    outputs.push_back(return_labels ? at::empty_symint(labels.sym_sizes(), label_options)
                                    : at::empty({0}, label_options));
  }
  return outputs;
}

at::Tensor empty_weight_map(const at::Tensor& labels) {
  return at::empty_symint(labels.sym_sizes(), labels.options().dtype(at::kFloat).memory_format(
                                                  at::MemoryFormat::Contiguous));
}

DistanceMapOperands check_distance_map_arguments(
    const at::Tensor& mask, std::string_view kind, int64_t spatial_dims,
    const std::optional<at::ArrayRef<double>>& sampling) {
  TORCH_CHECK_VALUE(kind == "signed" || kind == "boundary",
                    "segloss.distance_map: kind must be 'signed' or 'boundary', got '", kind,
                    "'");
  DistanceMapOperands ops;
  ops.map = kind == "signed" ? core::DistanceMap::kSigned : core::DistanceMap::kBoundary;
  ops.op = kind == "signed" ? "segloss.signed_distance_map" : "segloss.boundary_distance_map";
  TORCH_CHECK_TYPE(at::isIntegralType(mask.scalar_type(), /*includeBool=*/true), ops.op,
                   ": mask must be a tensor of bools or integers (nonzero is foreground), got ",
                   mask.scalar_type(), "; threshold a probability map first, e.g. mask > 0.5");
  TORCH_CHECK_VALUE(spatial_dims >= 1 && spatial_dims <= core::kMaxDistanceDims &&
                        spatial_dims <= mask.dim(),
                    ops.op, ": spatial_dims must be between 1 and the mask's dims (",
                    mask.dim(), ", shape ", mask.sym_sizes(), "), got ", spatial_dims);
  for (int64_t d = mask.dim() - spatial_dims; d < mask.dim(); ++d) {
    TORCH_CHECK_VALUE(mask.sym_size(d) <= core::kMaxEnvelopeLine, ops.op, ": mask dim ", d,
                      " has ", mask.sym_size(d), " pixels; at most ", core::kMaxEnvelopeLine,
                      " are supported");
  }
  ops.spatial_dims = spatial_dims;
  ops.spacing = checked_spacing(ops.op, sampling, spatial_dims, "");
  return ops;
}

at::Tensor empty_distance_map(const at::Tensor& mask) {
  return at::empty_symint(mask.sym_sizes(), mask.options().dtype(at::kFloat).memory_format(
                                                at::MemoryFormat::Contiguous));
}

MaskImages mask_images(const at::Tensor& mask, const DistanceMapOperands& ops) {
  std::vector<int64_t> shape{-1};
  for (int64_t d = mask.dim() - ops.spatial_dims; d < mask.dim(); ++d) {
    shape.push_back(mask.size(d));
  }
  MaskImages images{aligned(mask.reshape(shape)), {}};
  images.grid.ndim = int(ops.spatial_dims);
  for (int d = 0; d < images.grid.ndim; ++d) {
    images.grid.size[d] = images.mask.size(d + 1);
    images.grid.spacing[d] = ops.spacing[d];
  }
  return images;
}

}  // namespace segloss::ops
