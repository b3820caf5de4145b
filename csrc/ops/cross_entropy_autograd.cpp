// Autograd for the weighted softmax cross-entropy, registered in C++ at the
// Autograd key (as pointwise_autograd.cpp). Gradients flow to the logits only: the
// weight map and the class weights are constants.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <string>
#include <tuple>

#include "cross_entropy_operands.h"
#include "once_differentiable.h"

namespace segloss::ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::optional<at::Tensor> optional_of(const at::Tensor& tensor) {
  return tensor.defined() ? std::optional<at::Tensor>(tensor) : std::nullopt;
}

void check_no_grad(std::string_view caller, const char* name,
                   const std::optional<at::Tensor>& tensor) {
  TORCH_CHECK(!(tensor.has_value() && tensor->defined() && tensor->requires_grad()),
              caller, ": the gradient with respect to ", name,
              " is not implemented (it is treated as a constant); pass ", name, ".detach()");
}

class WeightedCrossEntropy : public torch::autograd::Function<WeightedCrossEntropy> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input,
                               const at::Tensor& target,
                               const std::optional<at::Tensor>& weight_map,
                               const std::optional<at::Tensor>& weight, int64_t ignore_index,
                               std::string_view reduction, double gamma,
                               double label_smoothing, std::string_view caller) {
    check_no_grad(caller, "weight_map", weight_map);
    check_no_grad(caller, "weight", weight);
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("segloss::_weighted_cross_entropy", "")
                         .typed<WeightedCrossEntropySignature>();
    auto [loss, total_weight] = op.call(input, target, weight_map, weight, ignore_index,
                                        reduction, gamma, label_smoothing, caller);
    ctx->mark_non_differentiable({total_weight});
    ctx->save_for_backward({input, target, weight_map.value_or(at::Tensor()),
                            weight.value_or(at::Tensor()), total_weight});
    ctx->saved_data["ignore_index"] = ignore_index;
    ctx->saved_data["reduction"] = std::string(reduction);
    ctx->saved_data["gamma"] = gamma;
    ctx->saved_data["label_smoothing"] = label_smoothing;
    ctx->saved_data["caller"] = std::string(caller);
    return {loss, total_weight};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("segloss::_weighted_cross_entropy_backward", "")
                         .typed<WeightedCrossEntropyBackwardSignature>();
    at::AutoDispatchBelowADInplaceOrView guard;  // (no derivative: once_differentiable)
    at::Tensor grad_input =
        op.call(grad_outputs[0], saved[0], saved[1], optional_of(saved[2]),
                optional_of(saved[3]), ctx->saved_data["ignore_index"].toInt(),
                ctx->saved_data["reduction"].toStringRef(), saved[4],
                ctx->saved_data["gamma"].toDouble(),
                ctx->saved_data["label_smoothing"].toDouble(),
                ctx->saved_data["caller"].toStringRef());
    // No gradient for the other eight arguments.
    variable_list grads(9);
    grads[0] = once_differentiable(grad_input, {grad_outputs[0], saved[0]},
                                   ctx->saved_data["caller"].toStringRef());
    return grads;
  }
};

std::tuple<at::Tensor, at::Tensor> weighted_cross_entropy_autograd(
    const at::Tensor& input, const at::Tensor& target,
    const std::optional<at::Tensor>& weight_map, const std::optional<at::Tensor>& weight,
    int64_t ignore_index, std::string_view reduction, double gamma, double label_smoothing,
    std::string_view caller) {
  const variable_list outputs = WeightedCrossEntropy::apply(
      input, target, weight_map, weight, ignore_index, reduction, gamma, label_smoothing, caller);
  return {outputs[0], outputs[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(segloss, Autograd, m) {
  m.impl("_weighted_cross_entropy", &weighted_cross_entropy_autograd);
}

}  // namespace segloss::ops
