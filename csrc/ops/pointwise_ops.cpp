// The binary cross-entropy ops, whose schemas predate the pointwise family,
// as composites of segloss::_pointwise_loss (and their private backward names
// of its backward): every backend, autograd and autocast rule comes from the
// family's rows. Error messages name the public function.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "pointwise_operands.h"

namespace segloss::ops {
namespace {

template <core::PointwiseLoss kLoss>
constexpr const char* public_name() {
  return kLoss == core::PointwiseLoss::Bce ? "segloss.binary_cross_entropy"
                                           : "segloss.binary_cross_entropy_with_logits";
}

template <core::PointwiseLoss kLoss>
at::Tensor bce(const at::Tensor& input, const at::Tensor& target,
               const std::optional<at::Tensor>& weight,
               const std::optional<at::Tensor>& pos_weight, std::string_view reduction) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("segloss::_pointwise_loss", "")
                       .typed<PointwiseLossSignature>();
  return op.call(input, target, weight, pos_weight, reduction, core::pointwise_loss_name(kLoss),
                 {}, public_name<kLoss>());
}

template <core::PointwiseLoss kLoss>
at::Tensor bce_backward(const at::Tensor& grad_output, const at::Tensor& input,
                        const at::Tensor& target, const std::optional<at::Tensor>& weight,
                        const std::optional<at::Tensor>& pos_weight,
                        std::string_view reduction) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("segloss::_pointwise_loss_backward", "")
                       .typed<PointwiseBackwardSignature>();
  return op.call(grad_output, input, target, weight, pos_weight, reduction,
                 core::pointwise_loss_name(kLoss), {}, public_name<kLoss>());
}

}  // namespace

TORCH_LIBRARY_IMPL(segloss, CompositeImplicitAutograd, m) {
  using core::PointwiseLoss;
  m.impl("binary_cross_entropy", &bce<PointwiseLoss::Bce>);
  m.impl("binary_cross_entropy_with_logits", &bce<PointwiseLoss::BceWithLogits>);
  m.impl("_binary_cross_entropy_backward", &bce_backward<PointwiseLoss::Bce>);
  m.impl("_binary_cross_entropy_with_logits_backward",
         &bce_backward<PointwiseLoss::BceWithLogits>);
}

}  // namespace segloss::ops
