// Every segloss op's schema, in one place. Backend files add kernels with
// TORCH_LIBRARY_IMPL.
#include <torch/library.h>

TORCH_LIBRARY(segloss, m) {
  const std::vector<at::Tag> tags = {at::Tag::pt2_compliant_tag};
  m.def(
      "binary_cross_entropy(Tensor input, Tensor target, Tensor? weight=None, "
      "Tensor? pos_weight=None, str reduction=\"mean\") -> Tensor",
      tags);
  m.def(
      "binary_cross_entropy_with_logits(Tensor input, Tensor target, Tensor? weight=None, "
      "Tensor? pos_weight=None, str reduction=\"mean\") -> Tensor",
      tags);
  // Every per-element loss (the rows of core/pointwise.h: `loss` names one)
  // with an optional broadcast weight and per-element operand `aux`
  // (pos_weight, alpha, ...) and scalar parameters (gamma, then alpha, as the
  // row takes them). Error messages name `caller`, the public function. The
  // public pointwise losses are composites of it.
  m.def(
      "_pointwise_loss(Tensor input, Tensor target, Tensor? weight, Tensor? aux, "
      "str reduction, str loss, float[] params, str caller) -> Tensor",
      tags);
  // Its gradient with respect to `input`; called by its autograd kernel.
  m.def(
      "_pointwise_loss_backward(Tensor grad_output, Tensor input, Tensor target, "
      "Tensor? weight, Tensor? aux, str reduction, str loss, float[] params, "
      "str caller) -> Tensor",
      tags);
  // The BCE ops' gradients with respect to `input`, kept by name.
  m.def(
      "_binary_cross_entropy_backward(Tensor grad_output, Tensor input, Tensor target, "
      "Tensor? weight, Tensor? pos_weight, str reduction) -> Tensor",
      tags);
  m.def(
      "_binary_cross_entropy_with_logits_backward(Tensor grad_output, Tensor input, "
      "Tensor target, Tensor? weight, Tensor? pos_weight, str reduction) -> Tensor",
      tags);

  // Dice loss: a composite of the per-(n, c) sums below and a small epilogue.
  m.def(
      "dice_loss(Tensor input, Tensor target, *, str activation=\"sigmoid\", float gamma=1.0, "
      "float smooth_nr=1e-05, float smooth_dr=1e-05, bool batch_dice=False, "
      "bool include_background=True, Tensor? class_weights=None, int? ignore_index=None, "
      "Tensor? mask=None, str reduction=\"mean\", bool soft_label=False) -> Tensor",
      tags);
  // The other region losses: formulas over the same sums as dice_loss.
  m.def(
      "tversky_loss(Tensor input, Tensor target, *, str activation=\"sigmoid\", "
      "float alpha=0.5, float beta=0.5, float focal_gamma=1.0, float smooth_nr=1e-05, "
      "float smooth_dr=1e-05, bool batch_dice=False, bool include_background=True, "
      "Tensor? class_weights=None, int? ignore_index=None, Tensor? mask=None, "
      "str reduction=\"mean\", bool soft_label=False) -> Tensor",
      tags);
  m.def(
      "jaccard_loss(Tensor input, Tensor target, *, str activation=\"sigmoid\", "
      "float gamma=1.0, float smooth_nr=1e-05, float smooth_dr=1e-05, bool batch_dice=False, "
      "bool include_background=True, Tensor? class_weights=None, int? ignore_index=None, "
      "Tensor? mask=None, str reduction=\"mean\", bool soft_label=False) -> Tensor",
      tags);
  m.def(
      "log_cosh_dice_loss(Tensor input, Tensor target, *, str activation=\"sigmoid\", "
      "float gamma=1.0, float smooth_nr=1e-05, float smooth_dr=1e-05, bool batch_dice=False, "
      "bool include_background=True, Tensor? class_weights=None, int? ignore_index=None, "
      "Tensor? mask=None, str reduction=\"mean\", bool soft_label=False) -> Tensor",
      tags);
  // Generalized Dice: one ratio over the classes per image (or batch).
  m.def(
      "generalized_dice_loss(Tensor input, Tensor target, *, str activation=\"sigmoid\", "
      "str w_type=\"square\", float smooth_nr=1e-05, float smooth_dr=1e-05, "
      "bool batch_dice=False, bool include_background=True, Tensor? class_weights=None, "
      "int? ignore_index=None, Tensor? mask=None, str reduction=\"mean\", "
      "bool soft_label=False) -> Tensor",
      tags);
  // Dice + cross-entropy: one pass over the logits for both.
  m.def(
      "dice_ce_loss(Tensor input, Tensor target, *, str activation=\"softmax\", "
      "float gamma=1.0, float smooth_nr=1e-05, float smooth_dr=1e-05, bool batch_dice=False, "
      "bool include_background=True, Tensor? class_weights=None, int? ignore_index=None, "
      "Tensor? mask=None, float lambda_dice=1.0, float lambda_ce=1.0, "
      "str reduction=\"mean\", Tensor? ce_weight=None, float label_smoothing=0.0) -> Tensor",
      tags);
  // Dice + focal: one pass over the logits for both.
  m.def(
      "dice_focal_loss(Tensor input, Tensor target, *, str activation=\"sigmoid\", "
      "float gamma=1.0, float smooth_nr=1e-05, float smooth_dr=1e-05, bool batch_dice=False, "
      "bool include_background=True, Tensor? class_weights=None, int? ignore_index=None, "
      "Tensor? mask=None, str reduction=\"mean\", float focal_gamma=2.0, float? alpha=None, "
      "float lambda_dice=1.0, float lambda_focal=1.0, str? focal_activation=None) -> Tensor",
      tags);
  // (N, C, 3): sum m p y, sum m p^gamma, sum m y^gamma per image and channel;
  // (N, C, 4) with soft_label (and sum m |p - y|^gamma), (N, C, 8) with
  // cross_entropy, (N, C, 6) with a focal_activation ('sigmoid' or 'softmax':
  // the unweighted focal loss's sum m y f and sum m (1 - y) f with exponent
  // focal_gamma, and sum m) (core::DiceColumn). Error messages name `caller`, the public
  // function that computes the sums.
  m.def(
      "_dice_sums(Tensor input, Tensor target, str activation, float gamma, int? ignore_index, "
      "Tensor? mask, bool cross_entropy=False, str caller=\"segloss._dice_sums\", "
      "bool soft_label=False, str? focal_activation=None, float focal_gamma=2.0) -> Tensor",
      tags);
  // A region loss (`loss`: its public name, e.g. "dice_loss") from the sums;
  // the distributed region losses call it after all-reducing the sums.
  // alpha, beta and focal_gamma are read by tversky_loss only, w_type by
  // generalized_dice_loss.
  m.def(
      "_region_loss_from_sums(Tensor sums, str loss, float smooth_nr, float smooth_dr, "
      "bool batch_dice, bool include_background, Tensor? class_weights, str reduction, "
      "float alpha=0.5, float beta=0.5, float focal_gamma=1.0, str w_type=\"square\") -> Tensor",
      tags);
  m.def(
      "_dice_sums_backward(Tensor grad_sums, Tensor input, Tensor target, str activation, "
      "float gamma, int? ignore_index, Tensor? mask, bool cross_entropy=False, "
      "str caller=\"segloss._dice_sums\", bool soft_label=False, "
      "str? focal_activation=None, float focal_gamma=2.0) -> Tensor",
      tags);

  // Exact distances to the nearest and second-nearest instance of a batch of
  // instance maps (N, *spatial): (d1, d2, l1, l2), the ids empty unless
  // return_labels. Not differentiable (integer input).
  m.def(
      "two_nearest_distances(Tensor labels, float[]? sampling=None, bool return_labels=False) "
      "-> (Tensor, Tensor, Tensor, Tensor)",
      tags);
  // The shape-aware (U-Net) loss: BCE (a float target) or softmax
  // cross-entropy (a class-index target) weighted per pixel by a given U-Net
  // weight map or one computed from instance labels.
  m.def(
      "shape_aware_loss(Tensor input, Tensor target, Tensor? weight_map=None, *, "
      "Tensor? instances=None, float w0=10.0, float sigma=5.0, float[]? sampling=None, "
      "float[]? class_weights=None, bool balanced=False, bool from_logits=True, "
      "Tensor? weight=None, int ignore_index=-100, str reduction=\"mean\", "
      "float label_smoothing=0.0) -> Tensor",
      tags);
  // Its multi-class kernel: the loss and the reduction's divisor (the number
  // of pixels not ignored for 'mean', their total weight for
  // 'weighted_mean', else 1), which the backward takes back. gamma > 0: the
  // softmax focal loss (1 - p_t)^gamma (-log p_t); label_smoothing as
  // F.cross_entropy's (not both). Messages name `caller`, the public function.
  m.def(
      "_weighted_cross_entropy(Tensor input, Tensor target, Tensor? weight_map, Tensor? weight, "
      "int ignore_index, str reduction, float gamma=0.0, float label_smoothing=0.0, "
      "str caller=\"segloss.shape_aware_loss\") -> (Tensor, Tensor)",
      tags);
  m.def(
      "_weighted_cross_entropy_backward(Tensor grad_output, Tensor input, Tensor target, "
      "Tensor? weight_map, Tensor? weight, int ignore_index, str reduction, "
      "Tensor total_weight, float gamma=0.0, float label_smoothing=0.0, "
      "str caller=\"segloss.shape_aware_loss\") -> Tensor",
      tags);
  // The U-Net weight map w_c + w0 exp(-(d1 + d2)^2 / (2 sigma^2)), float32.
  m.def(
      "unet_weight_map(Tensor labels, *, float w0=10.0, float sigma=5.0, float[]? sampling=None, "
      "float[]? class_weights=None, bool balanced=False, Tensor? pixel_weights=None, "
      "bool border_everywhere=False) -> Tensor",
      tags);
  // The distance maps of the boundary losses, float32 of the mask's shape:
  // "signed" (Kervadec's; MONAI BoundaryLoss) or "boundary" (the distance
  // to the other class on both sides; MONAI HausdorffDTLoss), exact, of
  // every image (the last spatial_dims dims; the others are batch dims) of
  // an integer or bool mask; 0 for an image without both classes.
  m.def(
      "distance_map(Tensor mask, str kind, int spatial_dims, float[]? sampling=None) -> Tensor",
      tags);
  // The instruction set the CPU kernels use: 'baseline', 'avx2' or 'avx512'.
  m.def("_cpu_instruction_set() -> str");
}
