// Validation and preparation of the Dice ops' arguments, shared by the CPU,
// CUDA and Meta kernels.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string>
#include <string_view>

#include "../core/broadcast.h"
#include "../core/dice.h"

namespace segloss::ops {

// Whether `target` holds class indices for `input`: an integer or bool
// tensor (but one of the input's shape with more than one channel, which is
// one-hot), or a float one of a label map's shape, (N, *spatial) or, with
// more than one channel, (N, 1, *spatial) (converted to int64, whole numbers
// only). Otherwise it is dense: probabilities, soft or one-hot.
bool is_class_index_target(const at::Tensor& input, const at::Tensor& target);

core::Activation parse_activation(std::string_view op, std::string_view activation);

// gamma = 1, 2 or another real >= 1 (anything else is an error).
core::GammaKind gamma_kind(std::string_view op, double gamma);

// The arguments as the kernels read them. The input is viewed as
// (N, C, S) with S the number of pixels (voxels) per image.
struct DiceOperands {
  at::Tensor input;         // contiguous, floating point
  at::Tensor dense_target;  // contiguous, input's shape and dtype; or undefined
  at::Tensor labels;        // contiguous (N, S) class indices, uint8, int32 or int64; or undefined
  at::Tensor mask;          // undefined, or 0/1 in input's dtype expanded to (N, 1, *spatial)
  core::BroadcastIndexer mask_index;  // walks `mask` over the (N, S) pixels
  core::Activation activation = core::Activation::Sigmoid;
  core::GammaKind gamma_kind = core::GammaKind::One;
  double gamma = 1;
  std::optional<int64_t> ignore_index;
  core::SumsLayout layout = core::SumsLayout::Dice;  // which columns
  // DiceFocal's focal loss: its activation (Sigmoid or Softmax) and exponent.
  core::Activation focal_activation = core::Activation::Sigmoid;
  double focal_gamma = 2;
  int64_t batch = 0, channels = 0, pixels = 0;
  std::string op;  // the public function that the kernels' error messages name

  int columns() const { return core::column_count(layout); }
  bool cross_entropy() const { return layout == core::SumsLayout::DiceCe; }
  bool soft_label() const { return layout == core::SumsLayout::SoftDice; }
  bool focal() const { return layout == core::SumsLayout::DiceFocal; }
  bool softmax_focal() const { return focal() && focal_activation == core::Activation::Softmax; }
};

// The sums ops' column flags as a layout: the soft-label column, the
// cross-entropy columns or (focal_activation given) the focal columns; at
// most one of them (no public loss needs two).
core::SumsLayout sums_layout(std::string_view op, bool cross_entropy, bool soft_label,
                             const std::optional<std::string_view>& focal_activation);

// The focal columns' options, checked (no-op unless the layout is DiceFocal):
// focal_activation 'sigmoid' or 'softmax' ('softmax' needs activation
// 'softmax'), focal_gamma finite and >= 0, and logits (activation not 'none').
void check_focal_arguments(std::string_view op, std::string_view activation,
                           const std::optional<std::string_view>& focal_activation,
                           double focal_gamma);

// Checks every argument without touching data (works on Meta tensors with
// symbolic shapes).
void check_dice_arguments(std::string_view op, const at::Tensor& input, const at::Tensor& target,
                          std::string_view activation, double gamma,
                          const std::optional<int64_t>& ignore_index,
                          const std::optional<at::Tensor>& mask, core::SumsLayout layout);

DiceOperands prepare_dice_operands(std::string_view op, const at::Tensor& input,
                                   const at::Tensor& target, std::string_view activation,
                                   double gamma, const std::optional<int64_t>& ignore_index,
                                   const std::optional<at::Tensor>& mask, core::SumsLayout layout);

// The same with the focal columns' options (after check_focal_arguments).
DiceOperands prepare_dice_operands(std::string_view op, const at::Tensor& input,
                                   const at::Tensor& target, std::string_view activation,
                                   double gamma, const std::optional<int64_t>& ignore_index,
                                   const std::optional<at::Tensor>& mask, bool cross_entropy,
                                   bool soft_label,
                                   const std::optional<std::string_view>& focal_activation,
                                   double focal_gamma);

// The per-(n, c) sums (core::DiceColumn): (N, C, column_count(layout));
// float32 (float64 for float64 input).
at::Tensor empty_dice_sums(const at::Tensor& input, core::SumsLayout layout);

// grad_sums checked against empty_dice_sums's shape (also by the Meta kernel).
void check_dice_grad_sums(std::string_view op, const at::Tensor& grad_sums,
                          const at::Tensor& input, core::SumsLayout layout);

// grad_sums checked, laid out for the kernels, in the sums' dtype.
at::Tensor prepare_dice_grad_sums(std::string_view op, const at::Tensor& grad_sums,
                                  const at::Tensor& input, core::SumsLayout layout);

}  // namespace segloss::ops
