// dice_loss: the fused per-(n, c) sums (_dice_sums, one pass over the input
// with its analytic backward) followed by a small epilogue on (N, C) values
// in ordinary ATen ops, which autograd differentiates and torch.compile fuses.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <limits>

#include "../core/dice.h"
#include "checks.h"
#include "dice_operands.h"
#include "reduction.h"

namespace segloss::ops {
namespace {

constexpr const char* kOp = "segloss.dice_loss";

// Per-channel weights (class_weights, ce_weight): floating point, shape [C],
// on the sums' (the input's) device.
void check_channel_weights(std::string_view op, std::string_view name, const at::Tensor& weights,
                           const at::Tensor& sums) {
  check_same_device(op, name, weights, sums);
  check_floating(op, name, weights);
  TORCH_CHECK(weights.dim() == 1 && weights.sym_size(0) == sums.sym_size(1), op, ": ", name,
              " must have shape [C] = [", sums.sym_size(1),
              "] (one weight per channel of the input), got ", weights.sym_sizes());
}

// The sums op, its errors naming `caller` (the public function).
at::Tensor dice_sums(std::string_view caller, const at::Tensor& input, const at::Tensor& target,
                     std::string_view activation, double gamma,
                     std::optional<int64_t> ignore_index, const std::optional<at::Tensor>& mask,
                     bool cross_entropy) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("segloss::_dice_sums", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, std::string_view,
                                         double, std::optional<int64_t>,
                                         const std::optional<at::Tensor>&, bool,
                                         std::string_view)>();
  return op.call(input, target, activation, gamma, ignore_index, mask, cross_entropy, caller);
}

// The loss from the per-(n, c) sums (N, C, 3), its errors naming `op` (the
// public function); also the last step of the distributed Dice, after the
// sums are all-reduced across ranks.
at::Tensor dice_loss_from_sums(std::string_view op, const at::Tensor& sums, double smooth_nr,
                               double smooth_dr, bool batch_dice, bool include_background,
                               const std::optional<at::Tensor>& class_weights,
                               std::string_view reduction) {
  const Reduction parsed = parse_reduction(op, reduction);
  TORCH_CHECK(sums.dim() == 3 && sums.sym_size(2) == 3, op,
              ": sums must have shape (N, C, 3), got ", sums.sym_sizes());
  TORCH_CHECK_VALUE(smooth_nr >= 0 && smooth_dr >= 0, op,
                    ": smooth_nr and smooth_dr must be >= 0, got ", smooth_nr, " and ",
                    smooth_dr);
  // float32 sums (of float32 and half inputs) would hold a smaller smoothing
  // term as 0 (or a subnormal): smooth_dr = 1e-100 would silently turn the
  // 0 / 0 rule on where float64 scores 1 - smooth_nr / smooth_dr.
  const auto check_float32_smoothing = [&](const char* name, double value) {
    const double smallest = std::numeric_limits<float>::min();
    TORCH_CHECK_VALUE(value == 0 || value >= smallest, op, ": ", name, " = ", value,
                      " is below the smallest normal float32 (", smallest,
                      "), which the float32 sums of float32, float16 and bfloat16 inputs "
                      "would lose; use 0, a value >= ", smallest, ", or a float64 input");
  };
  if (sums.scalar_type() == at::kFloat) {
    check_float32_smoothing("smooth_nr", smooth_nr);
    check_float32_smoothing("smooth_dr", smooth_dr);
  }
  if (is_given(class_weights)) check_channel_weights(op, "class_weights", *class_weights, sums);
  TORCH_CHECK_VALUE(include_background || sums.sym_size(1) >= 2, op,
                    ": include_background=False drops channel 0, which leaves no channel of an "
                    "input with one channel");
  at::Tensor intersection = sums.select(-1, 0);  // (N, C)
  at::Tensor prediction = sums.select(-1, 1);
  at::Tensor truth = sums.select(-1, 2);
  if (batch_dice) {  // one Dice per channel over the whole batch: (C,)
    intersection = intersection.sum(0);
    prediction = prediction.sum(0);
    truth = truth.sum(0);
  }
  const at::Tensor numerator = 2 * intersection + smooth_nr;
  const at::Tensor denominator = prediction + truth + smooth_dr;
  // Nothing predicted, nothing true and no smoothing: defined as a perfect
  // score with zero gradient (the safe denominator keeps the unused branch
  // of the where finite, so its gradient is 0, not NaN).
  const at::Tensor empty = denominator == 0;
  const at::Tensor dice =
      at::where(empty, at::ones_like(numerator), numerator / at::where(empty, 1, denominator));
  at::Tensor loss = 1 - dice;  // (N, C) or (C,)
  if (is_given(class_weights)) loss = loss * class_weights->to(loss.scalar_type());
  if (!include_background) loss = loss.narrow_symint(-1, 1, loss.sym_size(-1) - 1);
  switch (parsed) {
    case Reduction::Mean:
      return loss.mean();
    case Reduction::Sum:
      return loss.sum();
    default:
      return loss;
  }
}

at::Tensor dice_loss(const at::Tensor& input, const at::Tensor& target,
                     std::string_view activation, double gamma, double smooth_nr,
                     double smooth_dr, bool batch_dice, bool include_background,
                     const std::optional<at::Tensor>& class_weights,
                     std::optional<int64_t> ignore_index, const std::optional<at::Tensor>& mask,
                     std::string_view reduction) {
  const at::Tensor sums = dice_sums(kOp, input, target, activation, gamma, ignore_index, mask,
                                    /*cross_entropy=*/false);
  return dice_loss_from_sums(kOp, sums, smooth_nr, smooth_dr, batch_dice, include_background,
                             class_weights, reduction)
      .to(input.scalar_type());
}

// The private op _dice_loss_from_sums: called by dice_loss(ddp=True).
at::Tensor dice_loss_from_sums_op(const at::Tensor& sums, double smooth_nr, double smooth_dr,
                                  bool batch_dice, bool include_background,
                                  const std::optional<at::Tensor>& class_weights,
                                  std::string_view reduction) {
  return dice_loss_from_sums(kOp, sums, smooth_nr, smooth_dr, batch_dice, include_background,
                             class_weights, reduction);
}

constexpr const char* kDiceCeOp = "segloss.dice_ce_loss";

// The cross-entropy from the sums' columns (core::DiceColumn), as PyTorch
// computes it: BCE-with-logits with the class weights as pos_weight over
// every element (sigmoid); weighted cross-entropy over the pixels (softmax),
// with PyTorch's weighted mean for class-index targets.
at::Tensor cross_entropy_from_sums(const at::Tensor& sums, core::Activation activation,
                                   bool class_index_target,
                                   const std::optional<at::Tensor>& channel_weights,
                                   Reduction reduction) {
  const at::Tensor weights = is_given(channel_weights)
                                 ? channel_weights->to(sums.scalar_type())
                                 : at::ones_symint({sums.sym_size(1)}, sums.options());
  const at::Tensor positive = sums.select(-1, core::kPositiveNll) * weights;  // (N, C)
  at::Tensor total, count;
  if (activation == core::Activation::Sigmoid) {
    total = (sums.select(-1, core::kNegativeNll) + positive).sum();
    count = sums.select(-1, core::kPixels).sum();
  } else if (class_index_target) {
    total = positive.sum();
    count = (sums.select(-1, core::kTargetMass) * weights).sum();
  } else {
    total = positive.sum();
    count = sums.select(-1, core::kPixels).select(-1, 0).sum();  // included pixels
  }
  return reduction == Reduction::Mean ? total / count : total;
}

at::Tensor dice_ce_loss(const at::Tensor& input, const at::Tensor& target,
                        std::string_view activation, double gamma, double smooth_nr,
                        double smooth_dr, bool batch_dice, bool include_background,
                        const std::optional<at::Tensor>& class_weights,
                        std::optional<int64_t> ignore_index,
                        const std::optional<at::Tensor>& mask, double lambda_dice,
                        double lambda_ce, std::string_view reduction,
                        const std::optional<at::Tensor>& ce_weight) {
  TORCH_CHECK_VALUE(activation == "sigmoid" || activation == "softmax", kDiceCeOp,
                    ": activation must be 'sigmoid' or 'softmax' (the cross-entropy needs "
                    "logits), got '",
                    activation, "'");
  TORCH_CHECK_VALUE(reduction == "mean" || reduction == "sum", kDiceCeOp,
                    ": reduction must be 'mean' or 'sum', got '", reduction, "'");
  // A softmax over one channel is 1 everywhere: its Dice and its cross-entropy
  // are constants, and a class-index target has only the label 0.
  TORCH_CHECK_VALUE(activation != "softmax" || input.dim() < 2 || input.sym_size(1) != 1,
                    kDiceCeOp, ": activation='softmax' needs at least 2 channels, got input of "
                    "shape ", input.sym_sizes(), " (a softmax over one channel is 1 everywhere); "
                    "use activation='sigmoid' for a binary mask");
  const core::Activation parsed_activation = parse_activation(kDiceCeOp, activation);
  const Reduction parsed_reduction = parse_reduction(kDiceCeOp, reduction);
  const at::Tensor sums = dice_sums(kDiceCeOp, input, target, activation, gamma, ignore_index,
                                    mask, /*cross_entropy=*/true);
  const at::Tensor dice =
      dice_loss_from_sums(kDiceCeOp, sums.narrow(-1, 0, core::kDiceColumns), smooth_nr,
                          smooth_dr, batch_dice, include_background, class_weights, reduction);
  // ce_weight, when given, weighs the cross-entropy alone (MONAI's one-channel
  // DiceCELoss(weight=) does that); else class_weights weighs both terms.
  if (is_given(ce_weight)) check_channel_weights(kDiceCeOp, "ce_weight", *ce_weight, sums);
  const at::Tensor cross_entropy = cross_entropy_from_sums(
      sums, parsed_activation, at::isIntegralType(target.scalar_type(), /*includeBool=*/true),
      is_given(ce_weight) ? ce_weight : class_weights, parsed_reduction);
  return (lambda_dice * dice + lambda_ce * cross_entropy).to(input.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(segloss, CompositeImplicitAutograd, m) {
  m.impl("dice_loss", &dice_loss);
  m.impl("_dice_loss_from_sums", &dice_loss_from_sums_op);
  m.impl("dice_ce_loss", &dice_ce_loss);
}

}  // namespace segloss::ops
