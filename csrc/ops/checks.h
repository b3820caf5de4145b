// Argument checks shared by every op's validation. Messages name the op and
// the argument, and say what was received and what was expected.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/SymIntArrayRef.h>

#include <cstdint>
#include <optional>
#include <string_view>

namespace segloss::ops {

inline bool is_given(const std::optional<at::Tensor>& tensor) {
  return tensor.has_value() && tensor->defined();
}

inline bool is_supported_float(at::ScalarType dtype) {
  return dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf ||
         dtype == at::kBFloat16;
}

inline void check_same_device(std::string_view op, std::string_view name,
                              const at::Tensor& tensor, const at::Tensor& input) {
  TORCH_CHECK(tensor.device() == input.device(), op, ": ", name, " is on ", tensor.device(),
              " but input is on ", input.device(), "; all tensors must be on one device");
}

inline void check_floating(std::string_view op, std::string_view name, const at::Tensor& tensor) {
  TORCH_CHECK_TYPE(is_supported_float(tensor.scalar_type()), op, ": ", name,
                   " must be a float32, float64, float16 or bfloat16 tensor, got ",
                   tensor.scalar_type());
}

// NumPy broadcasting of `from` to exactly `to`; over SymInts so that the Meta
// kernels check dynamic shapes too.
inline bool broadcasts_to(c10::SymIntArrayRef from, c10::SymIntArrayRef to) {
  if (from.size() > to.size()) return false;
  const size_t lead = to.size() - from.size();
  for (size_t d = 0; d < from.size(); ++d) {
    if (from[d] != 1 && from[d] != to[lead + d]) return false;
  }
  return true;
}

// `tensor` with its data aligned to its element size, copied if it is not.
// Memory viewed at an odd address (torch.from_numpy of a NumPy view at a
// byte offset, torch.frombuffer) would otherwise reach the kernels, whose
// element loads are then undefined behaviour (UBSan reports them).
// (Only for tensors with data: not for the Meta kernels' inputs.)
inline at::Tensor aligned(const at::Tensor& tensor) {
  const auto address = reinterpret_cast<std::uintptr_t>(tensor.const_data_ptr());
  if (address % std::uintptr_t(tensor.element_size()) == 0) return tensor;
  return tensor.clone();
}

// `tensor` as the kernels walk it: contiguous and aligned.
inline at::Tensor kernel_layout(const at::Tensor& tensor) {
  return aligned(tensor.contiguous());
}

// A class-index target as the kernels read it: uint8, int32 and int64 in
// place (bool viewed as uint8), other integer dtypes converted to int64.
inline at::Tensor readable_labels(const at::Tensor& target) {
  const at::ScalarType dtype = target.scalar_type();
  if (dtype == at::kBool) return target.view(at::kByte);
  if (dtype == at::kByte || dtype == at::kInt || dtype == at::kLong) return target;
  return target.to(at::kLong);
}

}  // namespace segloss::ops
