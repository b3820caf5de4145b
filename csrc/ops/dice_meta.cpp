// Meta kernels of the Dice sums: shapes and dtypes, with the real kernels'
// argument checks.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "dice_operands.h"

namespace segloss::ops {
namespace {

at::Tensor dice_sums_meta(const at::Tensor& input, const at::Tensor& target,
                          std::string_view activation, double gamma,
                          std::optional<int64_t> ignore_index,
                          const std::optional<at::Tensor>& mask, bool cross_entropy,
                          std::string_view caller, bool soft_label,
                          std::optional<std::string_view> focal_activation,
                          double focal_gamma) {
  check_focal_arguments(caller, activation, focal_activation, focal_gamma);
  const core::SumsLayout layout = sums_layout(caller, cross_entropy, soft_label,
                                              focal_activation);
  check_dice_arguments(caller, input, target, activation, gamma, ignore_index, mask, layout);
  return empty_dice_sums(input, layout);
}

at::Tensor dice_sums_backward_meta(const at::Tensor& grad_sums, const at::Tensor& input,
                                   const at::Tensor& target, std::string_view activation,
                                   double gamma, std::optional<int64_t> ignore_index,
                                   const std::optional<at::Tensor>& mask, bool cross_entropy,
                                   std::string_view caller, bool soft_label,
                          std::optional<std::string_view> focal_activation,
                          double focal_gamma) {
  check_focal_arguments(caller, activation, focal_activation, focal_gamma);
  const core::SumsLayout layout = sums_layout(caller, cross_entropy, soft_label,
                                              focal_activation);
  check_dice_arguments(caller, input, target, activation, gamma, ignore_index, mask, layout);
  check_dice_grad_sums(caller, grad_sums, input, layout);
  return at::empty_symint(input.sym_sizes(),
                          input.options().memory_format(at::MemoryFormat::Contiguous));
}

}  // namespace

TORCH_LIBRARY_IMPL(segloss, Meta, m) {
  m.impl("_dice_sums", &dice_sums_meta);
  m.impl("_dice_sums_backward", &dice_sums_backward_meta);
}

}  // namespace segloss::ops
