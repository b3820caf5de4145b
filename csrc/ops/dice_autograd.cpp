// Autograd of the Dice sums, in C++ at the Autograd key (see pointwise_autograd.cpp):
// the backward is the private op _dice_sums_backward. Gradients flow to the
// input only; the target and mask are data.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <string>

#include "once_differentiable.h"

namespace segloss::ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using SumsSignature = at::Tensor(const at::Tensor&, const at::Tensor&, std::string_view, double,
                                 std::optional<int64_t>, const std::optional<at::Tensor>&, bool,
                                 std::string_view, bool,
                                 std::optional<std::string_view>, double);
using SumsBackwardSignature = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         std::string_view, double, std::optional<int64_t>,
                                         const std::optional<at::Tensor>&, bool,
                                         std::string_view, bool,
                                         std::optional<std::string_view>, double);

void check_no_grad(std::string_view caller, const char* name, const at::Tensor& tensor) {
  TORCH_CHECK(!(tensor.defined() && tensor.requires_grad()), caller,
              ": the gradient with respect to ", name, " is not implemented; pass ", name,
              ".detach()");
}

class DiceSumsFunction : public torch::autograd::Function<DiceSumsFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input,
                            const at::Tensor& target, std::string_view activation, double gamma,
                            std::optional<int64_t> ignore_index,
                            const std::optional<at::Tensor>& mask, bool cross_entropy,
                            std::string_view caller, bool soft_label,
                            std::optional<std::string_view> focal_activation,
                            double focal_gamma) {
    check_no_grad(caller, "target", target);
    check_no_grad(caller, "mask", mask.value_or(at::Tensor()));
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("segloss::_dice_sums", "")
                         .typed<SumsSignature>();
    at::Tensor sums = op.call(input, target, activation, gamma, ignore_index, mask,
                              cross_entropy, caller, soft_label, focal_activation, focal_gamma);
    ctx->save_for_backward({input, target, mask.value_or(at::Tensor())});
    ctx->saved_data["activation"] = std::string(activation);
    ctx->saved_data["gamma"] = gamma;
    ctx->saved_data["ignore_index"] = ignore_index;
    ctx->saved_data["cross_entropy"] = cross_entropy;
    ctx->saved_data["caller"] = std::string(caller);
    ctx->saved_data["soft_label"] = soft_label;
    ctx->saved_data["focal_activation"] =
        focal_activation ? c10::IValue(std::string(*focal_activation)) : c10::IValue();
    ctx->saved_data["focal_gamma"] = focal_gamma;
    return sums;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("segloss::_dice_sums_backward", "")
                         .typed<SumsBackwardSignature>();
    const c10::IValue ignore = ctx->saved_data["ignore_index"];
    const c10::IValue focal = ctx->saved_data["focal_activation"];
    const std::optional<std::string_view> focal_activation =
        focal.isNone() ? std::nullopt : std::optional<std::string_view>(focal.toStringRef());
    const std::string caller = ctx->saved_data["caller"].toStringRef();
    // (Below autograd: the backward op has no derivative; once_differentiable
    // says so where one is asked for.)
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor grad_input = op.call(
        grad_outputs[0], saved[0], saved[1], ctx->saved_data["activation"].toStringRef(),
        ctx->saved_data["gamma"].toDouble(),
        ignore.isNone() ? std::nullopt : std::optional<int64_t>(ignore.toInt()),
        saved[2].defined() ? std::optional<at::Tensor>(saved[2]) : std::nullopt,
        ctx->saved_data["cross_entropy"].toBool(), caller,
        ctx->saved_data["soft_label"].toBool(), focal_activation,
        ctx->saved_data["focal_gamma"].toDouble());
    grad_input = once_differentiable(grad_input, {grad_outputs[0], saved[0]}, caller);
    return {grad_input,   at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor dice_sums_autograd(const at::Tensor& input, const at::Tensor& target,
                              std::string_view activation, double gamma,
                              std::optional<int64_t> ignore_index,
                              const std::optional<at::Tensor>& mask, bool cross_entropy,
                              std::string_view caller, bool soft_label,
                              std::optional<std::string_view> focal_activation,
                              double focal_gamma) {
  return DiceSumsFunction::apply(input, target, activation, gamma, ignore_index, mask,
                                 cross_entropy, caller, soft_label, focal_activation,
                                 focal_gamma);
}

}  // namespace

TORCH_LIBRARY_IMPL(segloss, Autograd, m) { m.impl("_dice_sums", &dice_sums_autograd); }

}  // namespace segloss::ops
