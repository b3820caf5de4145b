// Run-time choice among the per-instruction-set builds of the CPU block loops
// (block_isa.cpp is compiled once per instruction set).
#pragma once

#include <type_traits>

namespace segloss::ops::cpu {

enum class Isa { Baseline, Avx2, Avx512 };

// The instruction set whose loops every CPU kernel uses: the widest this CPU
// supports, capped by the environment variable SEGLOSS_CPU_ISA (baseline,
// avx2 or avx512) when it is set; a cap above what the CPU has selects what it
// has, an unknown value is ignored with a warning. Read once. The private op
// segloss::_cpu_instruction_set() returns its name.
Isa selected_isa();

const char* isa_name(Isa isa);

// The table that `make_<isa>` returns for the selected instruction set.
template <class Table>
Table for_selected_isa(Table (*make_baseline)(), Table (*make_avx2)(), Table (*make_avx512)()) {
  switch (selected_isa()) {
    case Isa::Avx512:
      return make_avx512();
    case Isa::Avx2:
      return make_avx2();
    default:
      return make_baseline();
  }
}

// The float32 or float64 half of a per-instruction-set table (members f32
// and f64), by compute type.
template <typename acc_t, class Table>
const auto& for_compute_type(const Table& table) {
  if constexpr (std::is_same_v<acc_t, double>) {
    return table.f64;
  } else {
    return table.f32;
  }
}

}  // namespace segloss::ops::cpu
