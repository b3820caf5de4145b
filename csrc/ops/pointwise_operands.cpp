#include "pointwise_operands.h"

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include "checks.h"

namespace segloss::ops {
namespace {

void check_weight(std::string_view op, std::string_view name,
                  const std::optional<at::Tensor>& weight, const at::Tensor& input) {
  if (!is_given(weight)) return;
  check_same_device(op, name, *weight, input);
  check_floating(op, name, *weight);
  TORCH_CHECK(broadcasts_to(weight->sym_sizes(), input.sym_sizes()), op, ": ", name,
              " of shape ", weight->sym_sizes(), " is not broadcastable to the input's shape ",
              input.sym_sizes());
}

// An optional weight, converted to the compute type (float32 for half and
// bfloat16 inputs: a weight such as a squared distance need not fit their
// range) and expanded (a view, no copy) to the input's shape, with the
// indexer the kernels walk it with.
void prepare_weight(const std::optional<at::Tensor>& weight, const at::Tensor& input,
                    at::Tensor* out, core::BroadcastIndexer* index) {
  if (!is_given(weight)) return;
  at::Tensor expanded =
      aligned(weight->to(at::toOpMathType(input.scalar_type()))).expand(input.sizes());
  if (!core::make_broadcast_indexer(int(expanded.dim()), expanded.sizes().data(),
                                    expanded.strides().data(), index)) {
    // Too many dimensions to walk by strides: copy to the input's layout.
    expanded = expanded.contiguous();
    core::make_broadcast_indexer(int(expanded.dim()), expanded.sizes().data(),
                                 expanded.strides().data(), index);
  }
  *out = expanded;
}

// The row named `loss` and its parameters (gamma, then alpha), checked
// against what its policy takes.
PointwiseLossChoice parse_loss(std::string_view caller, std::string_view loss,
                               at::ArrayRef<double> params, bool has_aux) {
  PointwiseLossChoice choice;
  TORCH_CHECK_VALUE(core::pointwise_loss_named(loss, &choice.loss), caller,
                    ": unknown pointwise loss '", loss, "'");
  const int count = int(params.size());
  if (count > 0) choice.params.gamma = params[0];
  if (count > 1) {
    choice.params.alpha = params[1];
    choice.params.has_alpha = 1;
  }
  choice.params.has_aux = has_aux ? 1 : 0;
  core::visit_pointwise_policy(choice.loss, [&](auto policy) {
    using Policy = decltype(policy);
    TORCH_CHECK_VALUE(count >= Policy::kMinParams && count <= Policy::kMaxParams, caller,
                      ": the loss '", loss, "' takes ", Policy::kMinParams, " to ",
                      Policy::kMaxParams, " parameters, got ", count);
    TORCH_CHECK_VALUE(has_aux || !Policy::kAuxRequired, caller, ": ", Policy::kAux,
                      " is required");
    const char* invalid = Policy::invalid_params(choice.params);
    TORCH_CHECK_VALUE(invalid == nullptr, caller, ": ", invalid, ", got gamma=",
                      choice.params.gamma,
                      choice.params.has_alpha != 0 ? ", alpha=" + std::to_string(choice.params.alpha)
                                              : std::string());
  });
  return choice;
}

}  // namespace

const char* pointwise_aux_name(core::PointwiseLoss loss) {
  return core::visit_pointwise_policy(loss, [](auto policy) { return decltype(policy)::kAux; });
}

PointwiseLossChoice check_pointwise_arguments(std::string_view caller, const at::Tensor& input,
                                              const at::Tensor& target,
                                              const std::optional<at::Tensor>& weight,
                                              const std::optional<at::Tensor>& aux,
                                              std::string_view reduction, std::string_view loss,
                                              at::ArrayRef<double> params) {
  const Reduction parsed = parse_reduction(caller, reduction);
  PointwiseLossChoice choice = parse_loss(caller, loss, params, is_given(aux));
  choice.reduction = parsed;
  check_floating(caller, "input", input);
  check_same_device(caller, "target", target, input);
  check_floating(caller, "target", target);
  TORCH_CHECK(target.sym_sizes() == input.sym_sizes(), caller, ": target of shape ",
              target.sym_sizes(), " must have the input's shape ", input.sym_sizes());
  check_weight(caller, "weight", weight, input);
  check_weight(caller, pointwise_aux_name(choice.loss), aux, input);
  return choice;
}

void check_pointwise_grad_output(std::string_view caller, const at::Tensor& grad_output,
                                 const at::Tensor& input, Reduction reduction) {
  check_same_device(caller, "grad_output", grad_output, input);
  check_floating(caller, "grad_output", grad_output);
  if (reduction == Reduction::None) {
    TORCH_CHECK(grad_output.sym_sizes() == input.sym_sizes(), caller,
                ": grad_output of shape ", grad_output.sym_sizes(),
                " must have the input's shape ", input.sym_sizes(), " for reduction 'none'");
  } else {
    TORCH_CHECK(grad_output.dim() == 0, caller, ": grad_output must be a 0-dim tensor for a ",
                "reduced loss, got shape ", grad_output.sym_sizes());
  }
}

at::Tensor empty_pointwise_output(const at::Tensor& input, Reduction reduction) {
  if (reduction == Reduction::None) {
    return at::empty_symint(input.sym_sizes(), input.options().memory_format(
                                                   at::MemoryFormat::Contiguous));
  }
  return at::empty({}, input.options());
}

PointwiseOperands prepare_pointwise_operands(std::string_view caller, const at::Tensor& input,
                                             const at::Tensor& target,
                                             const std::optional<at::Tensor>& weight,
                                             const std::optional<at::Tensor>& aux,
                                             std::string_view reduction, std::string_view loss,
                                             at::ArrayRef<double> params) {
  PointwiseOperands operands;
  static_cast<PointwiseLossChoice&>(operands) =
      check_pointwise_arguments(caller, input, target, weight, aux, reduction, loss, params);
  operands.caller = caller;
  operands.input = kernel_layout(input);
  operands.target = kernel_layout(target.to(input.scalar_type()));
  prepare_weight(weight, input, &operands.weight, &operands.weight_index);
  prepare_weight(aux, input, &operands.aux, &operands.aux_index);
  return operands;
}

at::Tensor prepare_pointwise_grad_output(const at::Tensor& grad_output,
                                         const PointwiseOperands& operands) {
  check_pointwise_grad_output(operands.caller, grad_output, operands.input, operands.reduction);
  return kernel_layout(grad_output.to(operands.input.scalar_type()));
}

}  // namespace segloss::ops
