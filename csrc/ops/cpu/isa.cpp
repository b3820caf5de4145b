#include "isa.h"

#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

namespace segloss::ops::cpu {
namespace {

// The widest instruction set whose build this CPU can run.
Isa widest_supported() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")) {
    return Isa::Avx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::Avx2;
#endif
  return Isa::Baseline;
}

// The cap SEGLOSS_CPU_ISA asks for: none when unset or empty; an unknown
// value is ignored with a warning, as PyTorch does for ATEN_CPU_CAPABILITY.
std::optional<Isa> requested_cap() {
  const char* value = std::getenv("SEGLOSS_CPU_ISA");
  if (value == nullptr || *value == '\0') return std::nullopt;
  const std::string_view cap(value);
  for (Isa isa : {Isa::Baseline, Isa::Avx2, Isa::Avx512}) {
    if (cap == isa_name(isa)) return isa;
  }
  TORCH_WARN("segloss: ignoring SEGLOSS_CPU_ISA='", cap,
             "', which is not one of 'baseline', 'avx2' or 'avx512'; the CPU kernels use the "
             "widest instruction set the CPU has (",
             isa_name(widest_supported()), ")");
  return std::nullopt;
}

// The widest supported set, at most the cap: a cap above what the CPU has
// (avx512 on an AVX2-only CPU) selects what the CPU has.
Isa detect() {
  const Isa widest = widest_supported();
  const std::optional<Isa> cap = requested_cap();
  return cap.has_value() && int(*cap) < int(widest) ? *cap : widest;
}

std::string cpu_instruction_set() { return isa_name(selected_isa()); }

}  // namespace

Isa selected_isa() {
  static const Isa isa = detect();
  return isa;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx512:
      return "avx512";
    case Isa::Avx2:
      return "avx2";
    default:
      return "baseline";
  }
}

// No tensor arguments: the dispatcher takes a CompositeImplicitAutograd
// kernel for such ops.
TORCH_LIBRARY_IMPL(segloss, CompositeImplicitAutograd, m) {
  m.impl("_cpu_instruction_set", &cpu_instruction_set);
}

}  // namespace segloss::ops::cpu
