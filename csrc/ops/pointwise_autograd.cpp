// Autograd of the pointwise ops: one torch::autograd::Function for every row
// of core/pointwise.h, registered in C++ at the Autograd key so that the
// shared library alone gives TorchScript and C++ users the backward. The
// backward is the private op, so it also traces under torch.compile.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "once_differentiable.h"
#include "pointwise_operands.h"

namespace segloss::ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::optional<at::Tensor> optional_of(const at::Tensor& tensor) {
  return tensor.defined() ? std::optional<at::Tensor>(tensor) : std::nullopt;
}

// Gradients flow to `input` only; refuse the others rather than silently
// returning none for them.
void check_no_grad(std::string_view caller, std::string_view name, const at::Tensor& tensor) {
  TORCH_CHECK(!(tensor.defined() && tensor.requires_grad()), caller,
              ": the gradient with respect to ", name, " is not implemented; pass ", name,
              ".detach()");
}

class PointwiseLossFunction : public torch::autograd::Function<PointwiseLossFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input,
                            const at::Tensor& target, const std::optional<at::Tensor>& weight,
                            const std::optional<at::Tensor>& aux, std::string_view reduction,
                            std::string_view loss, at::ArrayRef<double> params,
                            std::string_view caller) {
    check_no_grad(caller, "target", target);
    check_no_grad(caller, "weight", weight.value_or(at::Tensor()));
    core::PointwiseLoss row;
    if (core::pointwise_loss_named(loss, &row)) {
      check_no_grad(caller, pointwise_aux_name(row), aux.value_or(at::Tensor()));
    }
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("segloss::_pointwise_loss", "")
                         .typed<PointwiseLossSignature>();
    // Dense once, for both passes (the kernels read dense operands): a view,
    // such as a distance loss's kept channels, is not copied again by the
    // backward.
    const at::Tensor dense_input = input.contiguous();
    const at::Tensor dense_target = target.contiguous();
    at::Tensor result =
        op.call(dense_input, dense_target, weight, aux, reduction, loss, params, caller);
    // The input itself too where the dense copy is another tensor: a second
    // backward must reach the input's graph (once_differentiable).
    const at::Tensor graph_input =
        input.requires_grad() && !input.is_same(dense_input) ? input : at::Tensor();
    ctx->save_for_backward({dense_input, dense_target, weight.value_or(at::Tensor()),
                            aux.value_or(at::Tensor()), graph_input});
    ctx->saved_data["reduction"] = std::string(reduction);
    ctx->saved_data["loss"] = std::string(loss);
    ctx->saved_data["params"] = std::vector<double>(params.begin(), params.end());
    ctx->saved_data["caller"] = std::string(caller);
    return result;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("segloss::_pointwise_loss_backward", "")
                         .typed<PointwiseBackwardSignature>();
    const std::vector<double> params = ctx->saved_data["params"].toDoubleVector();
    at::AutoDispatchBelowADInplaceOrView guard;  // (no derivative: once_differentiable)
    at::Tensor grad_input =
        op.call(grad_outputs[0], saved[0], saved[1], optional_of(saved[2]), optional_of(saved[3]),
                ctx->saved_data["reduction"].toStringRef(), ctx->saved_data["loss"].toStringRef(),
                params, ctx->saved_data["caller"].toStringRef());
    grad_input = once_differentiable(grad_input,
                                     {grad_outputs[0], saved[4].defined() ? saved[4] : saved[0]},
                                     ctx->saved_data["caller"].toStringRef());
    return {grad_input, at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor pointwise_loss_autograd(const at::Tensor& input, const at::Tensor& target,
                                   const std::optional<at::Tensor>& weight,
                                   const std::optional<at::Tensor>& aux,
                                   std::string_view reduction, std::string_view loss,
                                   at::ArrayRef<double> params, std::string_view caller) {
  return PointwiseLossFunction::apply(input, target, weight, aux, reduction, loss, params,
                                      caller);
}

}  // namespace

TORCH_LIBRARY_IMPL(segloss, Autograd, m) {
  m.impl("_pointwise_loss", &pointwise_loss_autograd);
}

}  // namespace segloss::ops
