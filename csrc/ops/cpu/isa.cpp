#include "isa.h"

#include <cstdlib>
#include <cstring>

namespace segloss::ops::cpu {
namespace {

Isa detect() {
  const char* cap = std::getenv("SEGLOSS_CPU_ISA");
  const bool allow_avx512 = cap == nullptr || std::strcmp(cap, "avx512") == 0;
  const bool allow_avx2 = allow_avx512 || std::strcmp(cap, "avx2") == 0;
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (allow_avx512 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")) {
    return Isa::Avx512;
  }
  if (allow_avx2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return Isa::Avx2;
  }
#else
  (void)allow_avx2;
#endif
  return Isa::Baseline;
}

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

}  // namespace segloss::ops::cpu
