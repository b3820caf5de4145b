// Validation and preparation of the pointwise ops' arguments (the private
// segloss::_pointwise_loss and its backward, behind every per-element loss),
// shared by the CPU, CUDA and Meta kernels so that every backend accepts and
// rejects exactly the same inputs with the same messages. Messages name
// `caller`, the public function.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <optional>
#include <string_view>

#include "../core/broadcast.h"
#include "../core/pointwise.h"
#include "reduction.h"

namespace segloss::ops {

// The C++ signatures of segloss::_pointwise_loss and its backward.
using PointwiseLossSignature = at::Tensor(const at::Tensor& input, const at::Tensor& target,
                                          const std::optional<at::Tensor>& weight,
                                          const std::optional<at::Tensor>& aux,
                                          std::string_view reduction, std::string_view loss,
                                          at::ArrayRef<double> params, std::string_view caller);
using PointwiseBackwardSignature = at::Tensor(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& target,
    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& aux,
    std::string_view reduction, std::string_view loss, at::ArrayRef<double> params,
    std::string_view caller);

// The loss row and its parameters, checked.
struct PointwiseLossChoice {
  core::PointwiseLoss loss = core::PointwiseLoss::BceWithLogits;
  core::PointwiseParams<double> params;
  Reduction reduction = Reduction::Mean;
};

// The arguments as the kernels read them.
struct PointwiseOperands : PointwiseLossChoice {
  std::string_view caller;
  at::Tensor input;   // contiguous, floating point
  at::Tensor target;  // contiguous, input's shape and dtype
  at::Tensor weight;  // undefined, or input's dtype expanded to its shape
  at::Tensor aux;     // undefined, or input's dtype expanded to its shape
  core::BroadcastIndexer weight_index;
  core::BroadcastIndexer aux_index;
};

// The name of the per-element operand `a` of a loss (pos_weight, alpha, ...).
const char* pointwise_aux_name(core::PointwiseLoss loss);

// Checks every argument (the loss name, its parameters, device, dtype,
// shapes, reduction) without touching data; works on Meta tensors with
// symbolic shapes.
PointwiseLossChoice check_pointwise_arguments(std::string_view caller, const at::Tensor& input,
                                              const at::Tensor& target,
                                              const std::optional<at::Tensor>& weight,
                                              const std::optional<at::Tensor>& aux,
                                              std::string_view reduction, std::string_view loss,
                                              at::ArrayRef<double> params);

// grad_output checked against the forward's result: input-shaped for 'none',
// else 0-dim.
void check_pointwise_grad_output(std::string_view caller, const at::Tensor& grad_output,
                                 const at::Tensor& input, Reduction reduction);

// The forward result: input-shaped (contiguous) for reduction 'none', else a
// 0-dim tensor; always the input's dtype.
at::Tensor empty_pointwise_output(const at::Tensor& input, Reduction reduction);

// check_pointwise_arguments, then the operands as the kernels read them.
PointwiseOperands prepare_pointwise_operands(std::string_view caller, const at::Tensor& input,
                                             const at::Tensor& target,
                                             const std::optional<at::Tensor>& weight,
                                             const std::optional<at::Tensor>& aux,
                                             std::string_view reduction, std::string_view loss,
                                             at::ArrayRef<double> params);

// check_pointwise_grad_output, then grad_output contiguous in the input's dtype.
at::Tensor prepare_pointwise_grad_output(const at::Tensor& grad_output,
                                         const PointwiseOperands& operands);

}  // namespace segloss::ops
