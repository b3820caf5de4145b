// Validation and preparation of the binary cross-entropy ops' arguments,
// shared by the CPU, CUDA and Meta kernels so that every backend accepts and
// rejects exactly the same inputs with the same messages.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string_view>

#include "../core/bce.h"
#include "../core/broadcast.h"
#include "reduction.h"

namespace segloss::ops {

template <class Variant>
constexpr const char* bce_op_name();
template <>
constexpr const char* bce_op_name<core::ProbabilityBce>() {
  return "segloss.binary_cross_entropy";
}
template <>
constexpr const char* bce_op_name<core::LogitsBce>() {
  return "segloss.binary_cross_entropy_with_logits";
}

// The arguments as the kernels read them.
struct BceOperands {
  at::Tensor input;       // contiguous, floating point
  at::Tensor target;      // contiguous, input's shape and dtype
  at::Tensor weight;      // undefined, or input's dtype expanded to its shape
  at::Tensor pos_weight;  // undefined, or input's dtype expanded to its shape
  core::BroadcastIndexer weight_index;
  core::BroadcastIndexer pos_weight_index;
  Reduction reduction = Reduction::Mean;
};

// Checks every argument (device, dtype, shapes, reduction) without touching
// data; works on Meta tensors with symbolic shapes. Returns the reduction.
Reduction check_bce_arguments(std::string_view op, const at::Tensor& input,
                              const at::Tensor& target, const std::optional<at::Tensor>& weight,
                              const std::optional<at::Tensor>& pos_weight,
                              std::string_view reduction);

// grad_output checked against the forward's result: input-shaped for 'none',
// else 0-dim.
void check_bce_grad_output(std::string_view op, const at::Tensor& grad_output,
                           const at::Tensor& input, Reduction reduction);

// The forward result: input-shaped (contiguous) for reduction 'none', else a
// 0-dim tensor; always the input's dtype.
at::Tensor empty_bce_output(const at::Tensor& input, Reduction reduction);

// check_bce_arguments, then the operands as the kernels read them.
BceOperands prepare_bce_operands(std::string_view op, const at::Tensor& input,
                                 const at::Tensor& target,
                                 const std::optional<at::Tensor>& weight,
                                 const std::optional<at::Tensor>& pos_weight,
                                 std::string_view reduction);

// check_bce_grad_output, then grad_output contiguous in the input's dtype.
at::Tensor prepare_bce_grad_output(std::string_view op, const at::Tensor& grad_output,
                                   const BceOperands& operands);

}  // namespace segloss::ops
