// Meta kernels of the weighted softmax cross-entropy: shapes and dtypes, with
// the same argument checks as the real kernels (torch.compile, FakeTensor).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>

#include "cross_entropy_operands.h"

namespace segloss::ops {
namespace {

std::tuple<at::Tensor, at::Tensor> weighted_cross_entropy_meta(
    const at::Tensor& input, const at::Tensor& target,
    const std::optional<at::Tensor>& weight_map, const std::optional<at::Tensor>& weight,
    int64_t, std::string_view reduction, double gamma, double label_smoothing,
    std::string_view caller) {
  const Reduction parsed = check_cross_entropy_arguments(caller, input, target, weight_map,
                                                         weight, reduction, gamma,
                                                         label_smoothing);
  return {empty_cross_entropy_loss(input, parsed), empty_cross_entropy_total_weight(input)};
}

at::Tensor weighted_cross_entropy_backward_meta(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& target,
    const std::optional<at::Tensor>& weight_map, const std::optional<at::Tensor>& weight,
    int64_t, std::string_view reduction, const at::Tensor& total_weight, double gamma,
    double label_smoothing, std::string_view caller) {
  const Reduction parsed = check_cross_entropy_arguments(caller, input, target, weight_map,
                                                         weight, reduction, gamma,
                                                         label_smoothing);
  check_cross_entropy_grad_output(caller, grad_output, input, parsed);
  check_cross_entropy_total_weight(caller, total_weight, input);
  return at::empty_symint(input.sym_sizes(),
                          input.options().memory_format(at::MemoryFormat::Contiguous));
}

}  // namespace

TORCH_LIBRARY_IMPL(segloss, Meta, m) {
  m.impl("_weighted_cross_entropy", &weighted_cross_entropy_meta);
  m.impl("_weighted_cross_entropy_backward", &weighted_cross_entropy_backward_meta);
}

}  // namespace segloss::ops
