// Meta kernels: shapes and dtypes of the pointwise ops, with the same
// argument checks as the real kernels (torch.compile, FakeTensor).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "pointwise_operands.h"

namespace segloss::ops {
namespace {

at::Tensor pointwise_loss_meta(const at::Tensor& input, const at::Tensor& target,
                               const std::optional<at::Tensor>& weight,
                               const std::optional<at::Tensor>& aux, std::string_view reduction,
                               std::string_view loss, at::ArrayRef<double> params,
                               std::string_view caller) {
  const PointwiseLossChoice choice =
      check_pointwise_arguments(caller, input, target, weight, aux, reduction, loss, params);
  return empty_pointwise_output(input, choice.reduction);
}

at::Tensor pointwise_loss_backward_meta(const at::Tensor& grad_output, const at::Tensor& input,
                                        const at::Tensor& target,
                                        const std::optional<at::Tensor>& weight,
                                        const std::optional<at::Tensor>& aux,
                                        std::string_view reduction, std::string_view loss,
                                        at::ArrayRef<double> params, std::string_view caller) {
  const PointwiseLossChoice choice =
      check_pointwise_arguments(caller, input, target, weight, aux, reduction, loss, params);
  check_pointwise_grad_output(caller, grad_output, input, choice.reduction);
  return empty_pointwise_output(input, Reduction::None);
}

}  // namespace

TORCH_LIBRARY_IMPL(segloss, Meta, m) {
  m.impl("_pointwise_loss", &pointwise_loss_meta);
  m.impl("_pointwise_loss_backward", &pointwise_loss_backward_meta);
}

}  // namespace segloss::ops
