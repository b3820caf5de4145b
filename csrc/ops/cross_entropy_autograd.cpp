// Autograd for the weighted softmax cross-entropy, registered in C++ at the
// Autograd key (as pointwise_autograd.cpp). Gradients flow to the logits only: the
// weight map and the class weights are constants.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <string>
#include <tuple>

#include "cross_entropy_operands.h"

namespace segloss::ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::optional<at::Tensor> optional_of(const at::Tensor& tensor) {
  return tensor.defined() ? std::optional<at::Tensor>(tensor) : std::nullopt;
}

void check_no_grad(const char* name, const std::optional<at::Tensor>& tensor) {
  TORCH_CHECK(!(tensor.has_value() && tensor->defined() && tensor->requires_grad()),
              kCrossEntropyOp, ": the gradient with respect to ", name,
              " is not implemented (it is treated as a constant); pass ", name, ".detach()");
}

class WeightedCrossEntropy : public torch::autograd::Function<WeightedCrossEntropy> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input,
                               const at::Tensor& target,
                               const std::optional<at::Tensor>& weight_map,
                               const std::optional<at::Tensor>& weight, int64_t ignore_index,
                               std::string_view reduction) {
    check_no_grad("weight_map", weight_map);
    check_no_grad("weight", weight);
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("segloss::_weighted_cross_entropy", "")
                         .typed<WeightedCrossEntropySignature>();
    auto [loss, total_weight] = op.call(input, target, weight_map, weight, ignore_index,
                                        reduction);
    ctx->mark_non_differentiable({total_weight});
    ctx->save_for_backward({input, target, weight_map.value_or(at::Tensor()),
                            weight.value_or(at::Tensor()), total_weight});
    ctx->saved_data["ignore_index"] = ignore_index;
    ctx->saved_data["reduction"] = std::string(reduction);
    return {loss, total_weight};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("segloss::_weighted_cross_entropy_backward", "")
                         .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                           const at::Tensor&, const std::optional<at::Tensor>&,
                                           const std::optional<at::Tensor>&, int64_t,
                                           std::string_view, const at::Tensor&)>();
    at::Tensor grad_input =
        op.call(grad_outputs[0], saved[0], saved[1], optional_of(saved[2]),
                optional_of(saved[3]), ctx->saved_data["ignore_index"].toInt(),
                ctx->saved_data["reduction"].toStringRef(), saved[4]);
    return {grad_input, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> weighted_cross_entropy_autograd(
    const at::Tensor& input, const at::Tensor& target,
    const std::optional<at::Tensor>& weight_map, const std::optional<at::Tensor>& weight,
    int64_t ignore_index, std::string_view reduction) {
  const variable_list outputs =
      WeightedCrossEntropy::apply(input, target, weight_map, weight, ignore_index, reduction);
  return {outputs[0], outputs[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(segloss, Autograd, m) {
  m.impl("_weighted_cross_entropy", &weighted_cross_entropy_autograd);
}

}  // namespace segloss::ops
