#include "bce_operands.h"

#include <ATen/ATen.h>

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

// An optional weight, converted to the input's dtype and expanded (a view, no
// copy) to the input's shape, with the indexer the kernels walk it with.
void prepare_weight(const std::optional<at::Tensor>& weight, const at::Tensor& input,
                    at::Tensor* out, core::BroadcastIndexer* index) {
  if (!is_given(weight)) return;
  at::Tensor expanded = aligned(weight->to(input.scalar_type())).expand(input.sizes());
  if (!core::make_broadcast_indexer(int(expanded.dim()), expanded.sizes().data(),
                                    expanded.strides().data(), index)) {
    // Too many dimensions to walk by strides: copy to the input's layout.
    expanded = expanded.contiguous();
    core::make_broadcast_indexer(int(expanded.dim()), expanded.sizes().data(),
                                 expanded.strides().data(), index);
  }
  *out = expanded;
}

}  // namespace

Reduction check_bce_arguments(std::string_view op, const at::Tensor& input,
                              const at::Tensor& target, const std::optional<at::Tensor>& weight,
                              const std::optional<at::Tensor>& pos_weight,
                              std::string_view reduction) {
  const Reduction parsed = parse_reduction(op, reduction);
  check_floating(op, "input", input);
  check_same_device(op, "target", target, input);
  check_floating(op, "target", target);
  TORCH_CHECK(target.sym_sizes() == input.sym_sizes(), op, ": target of shape ",
              target.sym_sizes(), " must have the input's shape ", input.sym_sizes());
  check_weight(op, "weight", weight, input);
  check_weight(op, "pos_weight", pos_weight, input);
  return parsed;
}

void check_bce_grad_output(std::string_view op, const at::Tensor& grad_output,
                           const at::Tensor& input, Reduction reduction) {
  check_same_device(op, "grad_output", grad_output, input);
  check_floating(op, "grad_output", grad_output);
  if (reduction == Reduction::None) {
    TORCH_CHECK(grad_output.sym_sizes() == input.sym_sizes(), op, ": grad_output of shape ",
                grad_output.sym_sizes(), " must have the input's shape ", input.sym_sizes(),
                " for reduction 'none'");
  } else {
    TORCH_CHECK(grad_output.dim() == 0, op, ": grad_output must be a 0-dim tensor for a ",
                "reduced loss, got shape ", grad_output.sym_sizes());
  }
}

at::Tensor empty_bce_output(const at::Tensor& input, Reduction reduction) {
  if (reduction == Reduction::None) {
    return at::empty_symint(input.sym_sizes(), input.options().memory_format(
                                                   at::MemoryFormat::Contiguous));
  }
  return at::empty({}, input.options());
}

BceOperands prepare_bce_operands(std::string_view op, const at::Tensor& input,
                                 const at::Tensor& target,
                                 const std::optional<at::Tensor>& weight,
                                 const std::optional<at::Tensor>& pos_weight,
                                 std::string_view reduction) {
  BceOperands operands;
  operands.reduction = check_bce_arguments(op, input, target, weight, pos_weight, reduction);
  operands.input = kernel_layout(input);
  operands.target = kernel_layout(target.to(input.scalar_type()));
  prepare_weight(weight, input, &operands.weight, &operands.weight_index);
  prepare_weight(pos_weight, input, &operands.pos_weight, &operands.pos_weight_index);
  return operands;
}

at::Tensor prepare_bce_grad_output(std::string_view op, const at::Tensor& grad_output,
                                   const BceOperands& operands) {
  check_bce_grad_output(op, grad_output, operands.input, operands.reduction);
  return kernel_layout(grad_output.to(operands.input.scalar_type()));
}

}  // namespace segloss::ops
