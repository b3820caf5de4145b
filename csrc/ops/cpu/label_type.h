// The class-index label dtypes the CPU block loops read in place (torch-free:
// included by the per-instruction-set builds).
#pragma once

namespace segloss::ops::cpu {

// Others are converted to int64 first (readable_labels in checks.h).
enum LabelType : int { kUint8Labels = 0, kInt32Labels = 1, kInt64Labels = 2 };

}  // namespace segloss::ops::cpu
