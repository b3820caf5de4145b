// Autograd for the binary cross-entropy ops, registered in C++ at the
// Autograd key so that the shared library alone gives TorchScript and C++
// users the backward. The backward is the private op, so it also traces under
// torch.compile.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <string>

namespace segloss::ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using ForwardSignature = at::Tensor(const at::Tensor&, const at::Tensor&,
                                    const std::optional<at::Tensor>&,
                                    const std::optional<at::Tensor>&, std::string_view);
using BackwardSignature = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                     const std::optional<at::Tensor>&,
                                     const std::optional<at::Tensor>&, std::string_view);

std::optional<at::Tensor> optional_of(const at::Tensor& tensor) {
  return tensor.defined() ? std::optional<at::Tensor>(tensor) : std::nullopt;
}

// Gradients flow to `input` only; refuse the others rather than silently
// returning none for them.
void check_no_grad(const char* op, const char* name, const at::Tensor& tensor) {
  TORCH_CHECK(!(tensor.defined() && tensor.requires_grad()), op, ": the gradient with respect to ",
              name, " is not implemented; pass ", name, ".detach()");
}

// OpNames provides kForward, kBackward (qualified op names) and kPublic (the
// name in error messages).
template <class OpNames>
class BceFunction : public torch::autograd::Function<BceFunction<OpNames>> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input,
                            const at::Tensor& target, const std::optional<at::Tensor>& weight,
                            const std::optional<at::Tensor>& pos_weight,
                            std::string_view reduction) {
    check_no_grad(OpNames::kPublic, "target", target);
    check_no_grad(OpNames::kPublic, "weight", weight.value_or(at::Tensor()));
    check_no_grad(OpNames::kPublic, "pos_weight", pos_weight.value_or(at::Tensor()));
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow(OpNames::kForward, "")
                         .template typed<ForwardSignature>();
    at::Tensor loss = op.call(input, target, weight, pos_weight, reduction);
    ctx->save_for_backward({input, target, weight.value_or(at::Tensor()),
                            pos_weight.value_or(at::Tensor())});
    ctx->saved_data["reduction"] = std::string(reduction);
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const std::string reduction = ctx->saved_data["reduction"].toStringRef();
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow(OpNames::kBackward, "")
                         .template typed<BackwardSignature>();
    at::Tensor grad_input = op.call(grad_outputs[0], saved[0], saved[1], optional_of(saved[2]),
                                    optional_of(saved[3]), reduction);
    return {grad_input, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

struct ProbabilityNames {
  static constexpr const char* kForward = "segloss::binary_cross_entropy";
  static constexpr const char* kBackward = "segloss::_binary_cross_entropy_backward";
  static constexpr const char* kPublic = "segloss.binary_cross_entropy";
};

struct LogitsNames {
  static constexpr const char* kForward = "segloss::binary_cross_entropy_with_logits";
  static constexpr const char* kBackward = "segloss::_binary_cross_entropy_with_logits_backward";
  static constexpr const char* kPublic = "segloss.binary_cross_entropy_with_logits";
};

template <class OpNames>
at::Tensor bce_autograd(const at::Tensor& input, const at::Tensor& target,
                        const std::optional<at::Tensor>& weight,
                        const std::optional<at::Tensor>& pos_weight,
                        std::string_view reduction) {
  return BceFunction<OpNames>::apply(input, target, weight, pos_weight, reduction);
}

}  // namespace

TORCH_LIBRARY_IMPL(segloss, Autograd, m) {
  m.impl("binary_cross_entropy", &bce_autograd<ProbabilityNames>);
  m.impl("binary_cross_entropy_with_logits", &bce_autograd<LogitsNames>);
}

}  // namespace segloss::ops
