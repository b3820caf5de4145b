// The analytic backward ops have no derivative of their own. Under
// create_graph=True (a gradient penalty, a Hessian-vector product) a second
// backward through them must fail loudly rather than give zeros or None, as
// PyTorch's once_differentiable does: the gradient they computed is handed
// on with an Error node wherever the tensors it came from require grad.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/csrc/autograd/functions/utils.h>

#include <initializer_list>
#include <string>
#include <string_view>

namespace segloss::ops {

// `gradient`, computed by a backward op from `sources` (the upstream gradient
// and the saved inputs), as the gradient of `caller`'s input: unchanged
// unless the backward runs with grad mode on and a source requires grad;
// then differentiating it raises, naming `caller`.
inline at::Tensor once_differentiable(at::Tensor gradient,
                                      std::initializer_list<at::Tensor> sources,
                                      std::string_view caller) {
  if (!at::GradMode::is_enabled()) return gradient;
  const torch::autograd::variable_list inputs(sources);
  bool requires_grad = false;
  for (const at::Tensor& source : inputs) requires_grad |= source.defined() && source.requires_grad();
  if (!requires_grad || !gradient.defined()) return gradient;
  const std::string message =
      std::string(caller) +
      ": the second derivative (a backward through the gradient, create_graph=True) is not "
      "implemented; segloss's backward is analytic and differentiable once";
  torch::autograd::tensor_list outputs{std::move(gradient)};
  return torch::autograd::wrap_outputs(inputs, std::move(outputs),
                                       [&](torch::autograd::edge_list&& next_edges) {
                                         return c10::make_intrusive<torch::autograd::Error>(
                                             message, std::move(next_edges));
                                       })[0];
}

}  // namespace segloss::ops
