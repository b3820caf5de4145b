// dice_loss and the other region losses (Tversky, Jaccard, log-cosh Dice,
// generalized Dice), and dice_ce_loss: the fused per-(n, c) sums
// (_dice_sums, one pass over the input with its analytic backward) followed
// by a small epilogue on (N, C) values in ordinary ATen ops, which autograd
// differentiates and torch.compile fuses.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <string>
#include <string_view>
#include <utility>

#include "../core/dice.h"
#include "checks.h"
#include "dice_operands.h"
#include "reduction.h"

namespace segloss::ops {
namespace {

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

// class_weights as one weight per channel of the sums: a 0-D tensor is every
// channel's weight (MONAI's `weight` as a single number).
std::optional<at::Tensor> per_channel(const std::optional<at::Tensor>& weights,
                                      const at::Tensor& sums) {
  if (!is_given(weights) || weights->dim() != 0) return weights;
  return weights->expand_symint({sums.sym_size(1)});
}

// The sums op, its errors naming `caller` (the public function).
at::Tensor dice_sums(std::string_view caller, const at::Tensor& input, const at::Tensor& target,
                     std::string_view activation, double gamma,
                     std::optional<int64_t> ignore_index, const std::optional<at::Tensor>& mask,
                     bool cross_entropy, bool soft_label,
                     std::optional<std::string_view> focal_activation = std::nullopt,
                     double focal_gamma = 2.0) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("segloss::_dice_sums", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, std::string_view,
                                         double, std::optional<int64_t>,
                                         const std::optional<at::Tensor>&, bool,
                                         std::string_view, bool,
                                         std::optional<std::string_view>, double)>();
  return op.call(input, target, activation, gamma, ignore_index, mask, cross_entropy, caller,
                 soft_label, focal_activation, focal_gamma);
}

// --------------------------------------------------------------------------
// The region family: each loss is a formula over the per-(n, c) sums
//   TP,   P = sum m p^gamma,   T = sum m y^gamma
// with TP = I = sum m p y, or with soft labels (MONAI's soft_label=True)
// TP = (P + T - D) / 2, D = sum m |p - y|^gamma, which is I for hard labels
// (and for every target with gamma = 2) but no longer counts a soft target
// as partly wrong where p = y. These are the core::DiceColumn columns of
// _dice_sums, followed by one shared tail (class weights,
// include_background, reduction). A new region loss is a formula and a row
// of kRegionLosses, plus its public op. A loss that combines the classes into
// one ratio (generalized Dice) has a combined formula instead, which takes
// the kept classes and their weights.

// The sums of one (n, c), or of one c over the batch with batch_dice.
struct RegionSums {
  at::Tensor true_positives;  // TP
  at::Tensor prediction;      // P
  at::Tensor truth;           // T
};

// The options only some region losses have; each loss reads its own.
struct RegionParams {
  double alpha = 0.5;        // tversky_loss: weight of the false positives
  double beta = 0.5;         // tversky_loss: weight of the false negatives
  double focal_gamma = 1.0;  // tversky_loss: exponent of each per-(n, c) term
  std::string_view w_type = "square";  // generalized_dice_loss: the class weights' rule
};

// numerator / denominator, with 0 / 0 (nothing predicted, nothing true, no
// smoothing) defined as 1, a perfect score, with zero gradient: the safe
// denominator keeps the unused branch of the where finite, so its gradient
// is 0, not NaN.
at::Tensor score_or_perfect(const at::Tensor& numerator, const at::Tensor& denominator) {
  const at::Tensor empty = denominator == 0;
  return at::where(empty, at::ones_like(numerator), numerator / at::where(empty, 1, denominator));
}

using RegionFormula = at::Tensor (*)(const RegionSums&, double smooth_nr, double smooth_dr,
                                     const RegionParams&);
using RegionParamCheck = void (*)(std::string_view op, const RegionParams&);
// A loss that combines the classes into one ratio per image (or per batch):
// it gets the kept channels' sums and class weights, and returns (N,) (or
// (1,) with batch_dice).
using CombinedFormula = at::Tensor (*)(const RegionSums&,
                                       const std::optional<at::Tensor>& class_weights,
                                       double smooth_nr, double smooth_dr, const RegionParams&);

// 1 - (2 I + s_nr) / (P + T + s_dr)
at::Tensor dice_formula(const RegionSums& s, double smooth_nr, double smooth_dr,
                        const RegionParams&) {
  return 1 - score_or_perfect(2 * s.true_positives + smooth_nr,
                              s.prediction + s.truth + smooth_dr);
}

// 1 - (TP + s_nr) / (TP + alpha FP + beta FN + s_dr), FP = P - TP,
// FN = T - TP (gamma = 1 sums; MONAI's TverskyLoss), raised to focal_gamma
// (focal Tversky). Under focal_gamma != 1 a term <= 0 (a perfect score, or
// below 0 where smooth_nr > smooth_dr) counts as 0 with gradient 0: the
// power's derivative there is infinite (focal_gamma < 1) or undefined.
at::Tensor tversky_formula(const RegionSums& s, double smooth_nr, double smooth_dr,
                           const RegionParams& params) {
  const at::Tensor& tp = s.true_positives;
  const at::Tensor false_positives = s.prediction - tp;
  const at::Tensor false_negatives = s.truth - tp;
  const at::Tensor term =
      1 - score_or_perfect(tp + smooth_nr, tp + params.alpha * false_positives +
                                               params.beta * false_negatives + smooth_dr);
  if (params.focal_gamma == 1) return term;
  // A NaN term (from a NaN input) stays NaN, as with focal_gamma = 1.
  const at::Tensor positive = term > 0;
  return at::where(positive, at::pow(at::where(positive, term, 1), params.focal_gamma),
                   at::where(at::isnan(term), term, 0));
}

void check_tversky_params(std::string_view op, const RegionParams& params) {
  TORCH_CHECK_VALUE(params.alpha >= 0, op, ": alpha must be >= 0, got ", params.alpha);
  TORCH_CHECK_VALUE(params.beta >= 0, op, ": beta must be >= 0, got ", params.beta);
  TORCH_CHECK_VALUE(params.focal_gamma > 0, op, ": focal_gamma must be > 0, got ",
                    params.focal_gamma);
  // (An infinite one makes every gradient inf * 0.)
  for (const auto& [name, value] : {std::pair<const char*, double>{"alpha", params.alpha},
                                    {"beta", params.beta}, {"focal_gamma", params.focal_gamma}}) {
    TORCH_CHECK_VALUE(std::isfinite(value), op, ": ", name, " must be finite, got ", value);
  }
}

// 1 - (2 TP + s_nr) / (2 (P + T - TP) + s_dr): the soft IoU in MONAI's
// DiceLoss(jaccard=True) convention (its numerator 2 tp, denominator
// 2 (tp + fp + fn); squared_pred=True is gamma = 2).
at::Tensor jaccard_formula(const RegionSums& s, double smooth_nr, double smooth_dr,
                           const RegionParams&) {
  return 1 - score_or_perfect(2 * s.true_positives + smooth_nr,
                              2 * (s.prediction + s.truth - s.true_positives) + smooth_dr);
}

// log(cosh(d)) of the Dice loss d (Jadon 2020), stable for every finite d:
// log1p(2 sinh(d / 2)^2) for |d| < 1 (cosh d - 1 without cancellation),
// |d| + log1p(exp(-2 |d|)) - log 2 above (no overflow). Its derivative is
// tanh(d), 0 at d = 0.
at::Tensor log_cosh_dice_formula(const RegionSums& s, double smooth_nr, double smooth_dr,
                                 const RegionParams& params) {
  const at::Tensor d = dice_formula(s, smooth_nr, smooth_dr, params);
  const at::Tensor magnitude = d.abs();
  const at::Tensor small = magnitude < 1;
  const at::Tensor half_sinh = at::sinh(at::where(small, d, 0) / 2);
  const at::Tensor near = at::log1p(2 * half_sinh * half_sinh);
  const at::Tensor large = at::where(small, 1, magnitude);
  const at::Tensor far = large + at::log1p(at::exp(-2 * large)) - std::log(2.0);
  return at::where(small, near, far);
}

void check_generalized_dice_params(std::string_view op, const RegionParams& params) {
  TORCH_CHECK_VALUE(
      params.w_type == "square" || params.w_type == "simple" || params.w_type == "uniform", op,
      ": w_type must be 'square', 'simple' or 'uniform', got '", params.w_type, "'");
}

// MONAI's GeneralizedDiceLoss (Sudre et al. 2017):
//   1 - (2 sum_c w_c TP_c + s_nr) / (sum_c w_c (P_c + T_c) + s_dr)
// with w_c = 1 / T_c^2 ("square"), 1 / T_c ("simple") or 1 ("uniform"),
// times class_weights; an infinite w_c (a class absent from the target)
// becomes the largest finite w of its image (of the batch with batch_dice),
// 0 when there is none. The weights depend on the target only: no gradient.
at::Tensor generalized_dice_formula(const RegionSums& s,
                                    const std::optional<at::Tensor>& class_weights,
                                    double smooth_nr, double smooth_dr,
                                    const RegionParams& params) {
  const at::Tensor truth = s.truth.detach();
  at::Tensor w = params.w_type == "square"   ? at::reciprocal(truth * truth)
                 : params.w_type == "simple" ? at::reciprocal(truth)
                                             : at::ones_like(truth);
  const at::Tensor infinite = at::isinf(w);
  w = at::where(infinite, 0, w);
  w = at::where(infinite, w.amax(-1, /*keepdim=*/true), w);
  if (is_given(class_weights)) w = w * class_weights->to(w.scalar_type());
  at::Tensor numerator = 2 * (w * s.true_positives).sum(-1) + smooth_nr;
  at::Tensor denominator = (w * (s.prediction + s.truth)).sum(-1) + smooth_dr;
  if (numerator.dim() == 0) {  // batch_dice: one value for the batch, (1,)
    numerator = numerator.unsqueeze(0);
    denominator = denominator.unsqueeze(0);
  }
  return 1 - score_or_perfect(numerator, denominator);
}

// One row per region loss: `formula` per (n, c), or `combined` over the
// classes (then the class weights and include_background apply inside it).
struct RegionLoss {
  std::string_view name;  // the public function, without "segloss."
  std::string_view op;    // "segloss." + name, for the error messages
  RegionFormula formula;
  RegionParamCheck check_params;  // nullptr: no options of its own
  CombinedFormula combined = nullptr;
};

constexpr RegionLoss kRegionLosses[] = {
    {"dice_loss", "segloss.dice_loss", &dice_formula, nullptr},
    {"tversky_loss", "segloss.tversky_loss", &tversky_formula, &check_tversky_params},
    {"jaccard_loss", "segloss.jaccard_loss", &jaccard_formula, nullptr},
    {"log_cosh_dice_loss", "segloss.log_cosh_dice_loss", &log_cosh_dice_formula, nullptr},
    {"generalized_dice_loss", "segloss.generalized_dice_loss", nullptr,
     &check_generalized_dice_params, &generalized_dice_formula},
};

const RegionLoss& region_loss_named(std::string_view name) {
  for (const RegionLoss& loss : kRegionLosses) {
    if (loss.name == name) return loss;
  }
  std::string known;
  for (const RegionLoss& loss : kRegionLosses) {
    known += known.empty() ? "'" : ", '";
    known += std::string(loss.name) + "'";
  }
  TORCH_CHECK_VALUE(false, "segloss._region_loss_from_sums: loss must be one of ", known,
                    ", got '", name, "'");
}

// include_background=False drops channel 0 of the sums (N, C, ...), except of
// one channel, where MONAI ignores it (with a warning): no other is left.
bool drops_background(bool include_background, const at::Tensor& sums) {
  return !include_background && sums.sym_size(1) > 1;
}

// The argument checks every region loss shares, its errors naming `op`.
void check_region_arguments(std::string_view op, const at::Tensor& sums, double smooth_nr,
                            double smooth_dr, const std::optional<at::Tensor>& class_weights) {
  TORCH_CHECK(sums.dim() == 3 && (sums.sym_size(2) == core::kDiceColumns ||
                                  sums.sym_size(2) == core::kSoftDiceColumns),
              op, ": sums must have shape (N, C, ", static_cast<int>(core::kDiceColumns),
              ") or, with soft labels, (N, C, ", static_cast<int>(core::kSoftDiceColumns),
              "), got ", sums.sym_sizes());
  check_floating(op, "sums", sums);  // (integer sums gave a truncated integer loss)
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
}

// The named columns of the sums (soft labels: four columns), summed over the
// batch for batch_dice.
RegionSums region_sums(const at::Tensor& sums, bool batch_dice) {
  const auto column = [&](int k) {
    const at::Tensor values = sums.select(-1, k);  // (N, C)
    return batch_dice ? values.sum(0) : values;    // (C,): one value per channel
  };
  RegionSums s{at::Tensor(), column(core::kPrediction), column(core::kTruth)};
  if (sums.sym_size(2) == core::kSoftDiceColumns) {
    s.true_positives = (s.prediction + s.truth - column(core::kDifference)) / 2;
  } else {
    s.true_positives = column(core::kIntersection);
  }
  return s;
}

// The tail every region loss shares: class weights and the reduction of the
// per-(n, c) (or per-c) losses.
at::Tensor region_tail(at::Tensor loss, const std::optional<at::Tensor>& class_weights,
                       Reduction reduction) {
  if (is_given(class_weights)) loss = loss * class_weights->to(loss.scalar_type());
  switch (reduction) {
    case Reduction::Mean:
      return loss.mean();
    case Reduction::Sum:
      return loss.sum();
    default:
      return loss;
  }
}

// The sums (N, C, ...) and class weights (C) of the channels a loss keeps:
// include_background=False drops channel 0 before any formula, as MONAI drops
// it from the input, so that its sums get gradient 0 (not 0 / NaN where a
// non-finite logit of channel 0 made them NaN).
std::pair<at::Tensor, std::optional<at::Tensor>> kept_channels(
    const at::Tensor& sums, const std::optional<at::Tensor>& class_weights,
    bool include_background) {
  if (!drops_background(include_background, sums)) return {sums, class_weights};
  std::optional<at::Tensor> weights = class_weights;
  if (is_given(class_weights)) {
    weights = class_weights->narrow_symint(0, 1, class_weights->sym_size(0) - 1);
  }
  return {sums.narrow_symint(1, 1, sums.sym_size(1) - 1), weights};
}

// A region loss from the sums (N, C, 3) or (N, C, 4), its errors naming `op` (the public
// function); also the last step of the distributed losses (ddp=True), after
// the sums are all-reduced across ranks.
at::Tensor region_loss_from_sums(const RegionLoss& loss, std::string_view op,
                                 const at::Tensor& sums, double smooth_nr, double smooth_dr,
                                 bool batch_dice, bool include_background,
                                 const std::optional<at::Tensor>& given_weights,
                                 std::string_view reduction, const RegionParams& params) {
  const Reduction parsed = parse_reduction(op, reduction);
  const std::optional<at::Tensor> class_weights = per_channel(given_weights, sums);
  check_region_arguments(op, sums, smooth_nr, smooth_dr, class_weights);
  if (loss.check_params != nullptr) loss.check_params(op, params);
  // The epilogue runs in float64 whatever the sums' dtype: on (N, C) values
  // it costs nothing, and float32 would overflow where float64 does not. A
  // tiny smooth_dr makes num / den^2 exceed float32 in a group that weighs 0
  // (a zero class weight), whose gradient would then be 0 * inf = NaN; an
  // alpha below float32's range would count as 0.
  const auto [kept, kept_weights] =
      kept_channels(sums.to(at::kDouble), class_weights, include_background);
  const RegionSums columns = region_sums(kept, batch_dice);
  const at::Tensor loss_value =
      loss.combined != nullptr
          ? region_tail(loss.combined(columns, kept_weights, smooth_nr, smooth_dr, params),
                        std::nullopt, parsed)
          : region_tail(loss.formula(columns, smooth_nr, smooth_dr, params), kept_weights,
                        parsed);
  return loss_value.to(sums.scalar_type());
}

// A public region loss: the fused sums, then its epilogue.
at::Tensor region_loss(const RegionLoss& loss, const at::Tensor& input, const at::Tensor& target,
                       std::string_view activation, double gamma, double smooth_nr,
                       double smooth_dr, bool batch_dice, bool include_background,
                       const std::optional<at::Tensor>& class_weights,
                       std::optional<int64_t> ignore_index, const std::optional<at::Tensor>& mask,
                       std::string_view reduction, bool soft_label,
                       const RegionParams& params = {}) {
  // The loss's own options first: no pass over the input for a bad alpha.
  if (loss.check_params != nullptr) loss.check_params(loss.op, params);
  const at::Tensor sums = dice_sums(loss.op, input, target, activation, gamma, ignore_index,
                                    mask, /*cross_entropy=*/false, soft_label);
  return region_loss_from_sums(loss, loss.op, sums, smooth_nr, smooth_dr, batch_dice,
                               include_background, class_weights, reduction, params)
      .to(input.scalar_type());
}

at::Tensor dice_loss(const at::Tensor& input, const at::Tensor& target,
                     std::string_view activation, double gamma, double smooth_nr,
                     double smooth_dr, bool batch_dice, bool include_background,
                     const std::optional<at::Tensor>& class_weights,
                     std::optional<int64_t> ignore_index, const std::optional<at::Tensor>& mask,
                     std::string_view reduction, bool soft_label) {
  return region_loss(region_loss_named("dice_loss"), input, target, activation, gamma,
                     smooth_nr, smooth_dr, batch_dice, include_background, class_weights,
                     ignore_index, mask, reduction, soft_label);
}

// The public region losses other than Dice: each its row of kRegionLosses
// through region_loss. Tversky's FP = P - TP needs gamma = 1 sums.
at::Tensor tversky_loss(const at::Tensor& input, const at::Tensor& target,
                        std::string_view activation, double alpha, double beta,
                        double focal_gamma, double smooth_nr, double smooth_dr, bool batch_dice,
                        bool include_background, const std::optional<at::Tensor>& class_weights,
                        std::optional<int64_t> ignore_index,
                        const std::optional<at::Tensor>& mask, std::string_view reduction,
                        bool soft_label) {
  return region_loss(region_loss_named("tversky_loss"), input, target, activation,
                     /*gamma=*/1.0, smooth_nr, smooth_dr, batch_dice, include_background,
                     class_weights, ignore_index, mask, reduction, soft_label,
                     RegionParams{alpha, beta, focal_gamma});
}

at::Tensor jaccard_loss(const at::Tensor& input, const at::Tensor& target,
                        std::string_view activation, double gamma, double smooth_nr,
                        double smooth_dr, bool batch_dice, bool include_background,
                        const std::optional<at::Tensor>& class_weights,
                        std::optional<int64_t> ignore_index,
                        const std::optional<at::Tensor>& mask, std::string_view reduction,
                        bool soft_label) {
  return region_loss(region_loss_named("jaccard_loss"), input, target, activation, gamma,
                     smooth_nr, smooth_dr, batch_dice, include_background, class_weights,
                     ignore_index, mask, reduction, soft_label);
}

at::Tensor log_cosh_dice_loss(const at::Tensor& input, const at::Tensor& target,
                              std::string_view activation, double gamma, double smooth_nr,
                              double smooth_dr, bool batch_dice, bool include_background,
                              const std::optional<at::Tensor>& class_weights,
                              std::optional<int64_t> ignore_index,
                              const std::optional<at::Tensor>& mask,
                              std::string_view reduction, bool soft_label) {
  return region_loss(region_loss_named("log_cosh_dice_loss"), input, target, activation, gamma,
                     smooth_nr, smooth_dr, batch_dice, include_background, class_weights,
                     ignore_index, mask, reduction, soft_label);
}

// Generalized Dice: gamma = 1 sums (the weights are of the target's volume).
// The losses whose formula needs a class (the generalized Dice's weights are
// normalised over the classes; the CE and focal terms read class 0): with no
// channel they raise, where the plain region losses give the mean of nothing.
void check_has_channels(std::string_view op, const at::Tensor& input) {
  TORCH_CHECK_VALUE(input.dim() < 2 || input.sym_size(1) != 0, op,
                    ": input must have at least one channel, got shape ", input.sym_sizes());
}

at::Tensor generalized_dice_loss(const at::Tensor& input, const at::Tensor& target,
                                 std::string_view activation, std::string_view w_type,
                                 double smooth_nr, double smooth_dr, bool batch_dice,
                                 bool include_background,
                                 const std::optional<at::Tensor>& class_weights,
                                 std::optional<int64_t> ignore_index,
                                 const std::optional<at::Tensor>& mask,
                                 std::string_view reduction, bool soft_label) {
  check_has_channels("segloss.generalized_dice_loss", input);
  RegionParams params;
  params.w_type = w_type;
  return region_loss(region_loss_named("generalized_dice_loss"), input, target, activation,
                     /*gamma=*/1.0, smooth_nr, smooth_dr, batch_dice, include_background,
                     class_weights, ignore_index, mask, reduction, soft_label, params);
}

// The private op _region_loss_from_sums: the epilogue of the region loss
// `loss` (its public name, e.g. "dice_loss"), called by the distributed
// losses (ddp=True) on the all-reduced sums.
at::Tensor region_loss_from_sums_op(const at::Tensor& sums, std::string_view loss,
                                    double smooth_nr, double smooth_dr, bool batch_dice,
                                    bool include_background,
                                    const std::optional<at::Tensor>& class_weights,
                                    std::string_view reduction, double alpha, double beta,
                                    double focal_gamma, std::string_view w_type) {
  const RegionLoss& named = region_loss_named(loss);
  return region_loss_from_sums(named, named.op, sums, smooth_nr, smooth_dr, batch_dice,
                               include_background, class_weights, reduction,
                               RegionParams{alpha, beta, focal_gamma, w_type});
}

constexpr const char* kDiceCeOp = "segloss.dice_ce_loss";

// The cross-entropy from the sums' columns (core::DiceColumn), as PyTorch
// computes it: BCE-with-logits with the class weights as pos_weight over
// every element (sigmoid); weighted cross-entropy over the pixels (softmax),
// with PyTorch's weighted mean for class-index targets. Label smoothing
// (softmax) as F.cross_entropy(label_smoothing=e): (1 - e) times the CE plus
// e / C times sum_c w_c (-log p_c), over the same divisor.
at::Tensor cross_entropy_from_sums(const at::Tensor& sums, core::Activation activation,
                                   bool class_index_target,
                                   const std::optional<at::Tensor>& channel_weights,
                                   Reduction reduction, double label_smoothing) {
  const at::Tensor weights = is_given(channel_weights)
                                 ? channel_weights->to(sums.scalar_type())
                                 : at::ones_symint({sums.sym_size(1)}, sums.options());
  at::Tensor positive = sums.select(-1, core::kPositiveNll) * weights;  // (N, C)
  if (activation == core::Activation::Softmax && !class_index_target) {
    // 0 log 0 = 0 for the weighted target mass w_c y_c: a class of weight 0
    // adds nothing, even where its logit is -inf (its column +inf), as the
    // kernels' terms do for y_c = 0 (core::weighted_term).
    positive = positive.masked_fill(weights == 0, 0);
  }
  at::Tensor total, count;
  if (activation == core::Activation::Sigmoid) {
    total = (sums.select(-1, core::kNegativeNll) + positive).sum();
    count = sums.select(-1, core::kPixels).sum();
  } else {
    total = positive.sum();
    count = class_index_target
                ? (sums.select(-1, core::kTargetMass) * weights).sum()
                : sums.select(-1, core::kPixels).select(-1, 0).sum();  // included pixels
    // Only when asked: the smoothing column is +inf where a logit is -inf.
    if (label_smoothing > 0) {
      // Each term reduced on its own, then mixed, as F.cross_entropy does: a
      // target of weight 0 only is then NaN (0 / 0 in the first), as torch's.
      const at::Tensor smoothing =
          (sums.select(-1, core::kSmoothingNll) * weights).sum() / c10::Scalar(sums.sym_size(1));
      const bool mean = reduction == Reduction::Mean;
      at::Tensor mixed = label_smoothing * (mean ? smoothing / count : smoothing);
      // torch mixes a probability target first, (1 - e) y + e / C: at e = 1
      // its own term is absent (an infinite one is not 0 * inf = NaN).
      if (class_index_target || label_smoothing < 1) {
        mixed = mixed + (1 - label_smoothing) * (mean ? total / count : total);
      }
      return mixed;
    }
  }
  return reduction == Reduction::Mean ? total / count : total;
}

at::Tensor dice_ce_loss(const at::Tensor& input, const at::Tensor& target,
                        std::string_view activation, double gamma, double smooth_nr,
                        double smooth_dr, bool batch_dice, bool include_background,
                        const std::optional<at::Tensor>& given_weights,
                        std::optional<int64_t> ignore_index,
                        const std::optional<at::Tensor>& mask, double lambda_dice,
                        double lambda_ce, std::string_view reduction,
                        const std::optional<at::Tensor>& ce_weight, double label_smoothing) {
  TORCH_CHECK_VALUE(activation == "sigmoid" || activation == "softmax", kDiceCeOp,
                    ": activation must be 'sigmoid' or 'softmax' (the cross-entropy needs "
                    "logits), got '",
                    activation, "'");
  TORCH_CHECK_VALUE(reduction == "mean" || reduction == "sum", kDiceCeOp,
                    ": reduction must be 'mean' or 'sum', got '", reduction, "'");
  check_has_channels(kDiceCeOp, input);
  TORCH_CHECK_VALUE(label_smoothing >= 0 && label_smoothing <= 1, kDiceCeOp,
                    ": label_smoothing must lie in [0, 1], got ", label_smoothing);
  TORCH_CHECK_VALUE(label_smoothing == 0 || activation == "softmax", kDiceCeOp,
                    ": label_smoothing applies to the softmax cross-entropy "
                    "(F.cross_entropy's label_smoothing), got activation='",
                    activation, "'");
  TORCH_CHECK_VALUE(lambda_dice >= 0, kDiceCeOp, ": lambda_dice must be >= 0, got ",
                    lambda_dice);
  TORCH_CHECK_VALUE(lambda_ce >= 0, kDiceCeOp, ": lambda_ce must be >= 0, got ", lambda_ce);
  const core::Activation parsed_activation = parse_activation(kDiceCeOp, activation);
  const Reduction parsed_reduction = parse_reduction(kDiceCeOp, reduction);
  const at::Tensor sums = dice_sums(kDiceCeOp, input, target, activation, gamma, ignore_index,
                                    mask, /*cross_entropy=*/true, /*soft_label=*/false);
  const std::optional<at::Tensor> class_weights = per_channel(given_weights, sums);
  const at::Tensor dice = region_loss_from_sums(
      region_loss_named("dice_loss"), kDiceCeOp, sums.narrow(-1, 0, core::kDiceColumns),
      smooth_nr, smooth_dr, batch_dice, include_background, class_weights, reduction, {});
  // ce_weight, when given, weighs the cross-entropy alone (MONAI's one-channel
  // DiceCELoss(weight=) does that); else class_weights weighs both terms.
  if (is_given(ce_weight)) check_channel_weights(kDiceCeOp, "ce_weight", *ce_weight, sums);
  const at::Tensor cross_entropy = cross_entropy_from_sums(
      sums, parsed_activation, is_class_index_target(input, target),
      is_given(ce_weight) ? ce_weight : class_weights, parsed_reduction, label_smoothing);
  return (lambda_dice * dice + lambda_ce * cross_entropy).to(input.scalar_type());
}

constexpr const char* kDiceFocalOp = "segloss.dice_focal_loss";

// The focal term from the sums' focal columns (core::DiceColumn), as MONAI's
// FocalLoss reduces its (N, C', *spatial) loss: per (n, c) the focal sum
// F_nc, with a scalar alpha alpha * positive + (1 - alpha) * negative
// (sigmoid: MONAI's alpha y + (1 - alpha)(1 - y), exact for soft targets
// too) or the per-class [1 - alpha, alpha, ..., alpha] (softmax), times the
// class weights; without the background, channel 0 is dropped first
// (kept_channels). 'mean' divides the total by the number of elements,
// N C' S, or, with a mask or ignore_index, by the number of counted pixels
// (MONAI's loss.sum() / mask.sum() with its (N, 1, *spatial) mask); 'sum'
// adds each (n, c)'s mean over its counted pixels (MONAI's spatial mean,
// then the sum).
at::Tensor focal_from_sums(const at::Tensor& sums, core::Activation focal_activation,
                           std::optional<double> alpha,
                           const std::optional<at::Tensor>& class_weights,
                           bool include_background, bool masked, Reduction reduction) {
  const bool keeps_background = !drops_background(include_background, sums);
  const auto [kept, kept_weights] = kept_channels(sums, class_weights, include_background);
  const at::Tensor positive = kept.select(-1, core::kFocalPositive);  // (N, C')
  at::Tensor per_class;
  if (focal_activation == core::Activation::Sigmoid) {
    const at::Tensor negative = kept.select(-1, core::kFocalNegative);
    per_class = alpha ? *alpha * positive + (1 - *alpha) * negative : positive + negative;
  } else if (alpha && keeps_background) {  // MONAI's [1 - alpha, alpha, ..., alpha]
    per_class = at::cat({(1 - *alpha) * positive.narrow(1, 0, 1),
                         *alpha * positive.narrow_symint(1, 1, positive.sym_size(1) - 1)},
                        1);
  } else {
    per_class = alpha ? *alpha * positive : positive;
  }
  if (is_given(kept_weights)) per_class = per_class * kept_weights->to(sums.scalar_type());
  const at::Tensor pixels = kept.select(-1, core::kFocalPixels);  // (N, C'), equal over C'
  // MONAI clamps its divisors at float32's epsilon.
  const double eps = std::numeric_limits<float>::epsilon();
  if (reduction == Reduction::Sum) return (per_class / pixels.clamp_min(eps)).sum();
  const at::Tensor counted = pixels.select(1, 0).sum();  // the counted pixels of the batch
  if (masked) return per_class.sum() / counted.clamp_min(eps);
  return per_class.sum() / (counted * c10::Scalar(per_class.sym_size(1)));
}

at::Tensor dice_focal_loss(const at::Tensor& input, const at::Tensor& target,
                           std::string_view activation, double gamma, double smooth_nr,
                           double smooth_dr, bool batch_dice, bool include_background,
                           const std::optional<at::Tensor>& given_weights,
                           std::optional<int64_t> ignore_index,
                           const std::optional<at::Tensor>& mask, std::string_view reduction,
                           double focal_gamma, std::optional<double> alpha, double lambda_dice,
                           double lambda_focal, std::optional<std::string_view> focal_activation) {
  TORCH_CHECK_VALUE(activation == "sigmoid" || activation == "softmax", kDiceFocalOp,
                    ": activation must be 'sigmoid' or 'softmax' (the focal loss needs "
                    "logits), got '",
                    activation, "'");
  const std::string_view focal = focal_activation.value_or(activation);
  TORCH_CHECK_VALUE(reduction == "mean" || reduction == "sum", kDiceFocalOp,
                    ": reduction must be 'mean' or 'sum', got '", reduction, "'");
  check_has_channels(kDiceFocalOp, input);
  TORCH_CHECK_VALUE(std::isfinite(focal_gamma) && focal_gamma >= 0, kDiceFocalOp,
                    ": focal_gamma must be a finite number >= 0, got ", focal_gamma);
  TORCH_CHECK_VALUE(!alpha || (*alpha >= 0 && *alpha <= 1), kDiceFocalOp,
                    ": alpha must lie in [0, 1], got ", alpha.value_or(0));
  TORCH_CHECK_VALUE(lambda_dice >= 0, kDiceFocalOp, ": lambda_dice must be >= 0, got ",
                    lambda_dice);
  TORCH_CHECK_VALUE(lambda_focal >= 0, kDiceFocalOp, ": lambda_focal must be >= 0, got ",
                    lambda_focal);
  const Reduction parsed_reduction = parse_reduction(kDiceFocalOp, reduction);
  const at::Tensor sums = dice_sums(kDiceFocalOp, input, target, activation, gamma, ignore_index,
                                    mask, /*cross_entropy=*/false, /*soft_label=*/false, focal,
                                    focal_gamma);
  const std::optional<at::Tensor> class_weights = per_channel(given_weights, sums);
  const at::Tensor dice = region_loss_from_sums(
      region_loss_named("dice_loss"), kDiceFocalOp, sums.narrow(-1, 0, core::kDiceColumns),
      smooth_nr, smooth_dr, batch_dice, include_background, class_weights, reduction, {});
  const at::Tensor focal_term = focal_from_sums(
      sums.to(at::kDouble), parse_activation(kDiceFocalOp, focal), alpha, class_weights,
      include_background, is_given(mask) || ignore_index.has_value(), parsed_reduction);
  return (lambda_dice * dice + lambda_focal * focal_term).to(input.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(segloss, CompositeImplicitAutograd, m) {
  m.impl("dice_focal_loss", &dice_focal_loss);
  m.impl("dice_loss", &dice_loss);
  m.impl("_region_loss_from_sums", &region_loss_from_sums_op);
  m.impl("dice_ce_loss", &dice_ce_loss);
  m.impl("tversky_loss", &tversky_loss);
  m.impl("jaccard_loss", &jaccard_loss);
  m.impl("log_cosh_dice_loss", &log_cosh_dice_loss);
  m.impl("generalized_dice_loss", &generalized_dice_loss);
}

}  // namespace segloss::ops
