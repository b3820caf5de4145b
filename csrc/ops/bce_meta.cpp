// Meta kernels: shapes and dtypes of the binary cross-entropy ops, with the
// same argument checks as the real kernels (torch.compile, FakeTensor).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "bce_operands.h"

namespace segloss::ops {
namespace {

template <class Variant>
at::Tensor bce_forward_meta(const at::Tensor& input, const at::Tensor& target,
                            const std::optional<at::Tensor>& weight,
                            const std::optional<at::Tensor>& pos_weight,
                            std::string_view reduction) {
  const Reduction parsed =
      check_bce_arguments(bce_op_name<Variant>(), input, target, weight, pos_weight, reduction);
  return empty_bce_output(input, parsed);
}

template <class Variant>
at::Tensor bce_backward_meta(const at::Tensor& grad_output, const at::Tensor& input,
                             const at::Tensor& target, const std::optional<at::Tensor>& weight,
                             const std::optional<at::Tensor>& pos_weight,
                             std::string_view reduction) {
  const Reduction parsed =
      check_bce_arguments(bce_op_name<Variant>(), input, target, weight, pos_weight, reduction);
  check_bce_grad_output(bce_op_name<Variant>(), grad_output, input, parsed);
  return empty_bce_output(input, Reduction::None);
}

}  // namespace

TORCH_LIBRARY_IMPL(segloss, Meta, m) {
  m.impl("binary_cross_entropy", &bce_forward_meta<core::ProbabilityBce>);
  m.impl("binary_cross_entropy_with_logits", &bce_forward_meta<core::LogitsBce>);
  m.impl("_binary_cross_entropy_backward", &bce_backward_meta<core::ProbabilityBce>);
  m.impl("_binary_cross_entropy_with_logits_backward", &bce_backward_meta<core::LogitsBce>);
}

}  // namespace segloss::ops
