// The class-index label dtypes the CPU block loops read in place (torch-free:
// included by the per-instruction-set builds).
#pragma once

#include <cstdint>
#include <limits>
#include <type_traits>

namespace segloss::ops::cpu {

// Others are converted to int64 first (readable_labels in checks.h).
enum LabelType : int { kUint8Labels = 0, kInt32Labels = 1, kInt64Labels = 2 };

// How the block loops compare labels of type label_t: in int32 for the
// narrow types, since with uint8 labels widened to int64 the AVX2 and AVX-512
// builds of those loops (g++ 12) flagged valid labels as out of range. An
// ignore_index outside that width matches no label.
template <typename label_t>
struct LabelComparison {
  using wide_t = std::conditional_t<sizeof(label_t) < 8, std::int32_t, std::int64_t>;
  bool ignore;          // whether some label can equal ignore_index
  wide_t ignored_label;  // ignore_index, when `ignore`
  wide_t count;         // valid labels lie in [0, count)

  LabelComparison(bool has_ignore, std::int64_t ignore_index, std::int64_t label_count) {
    constexpr std::int64_t kLow = std::numeric_limits<wide_t>::min();
    constexpr std::int64_t kHigh = std::numeric_limits<wide_t>::max();
    ignore = has_ignore && ignore_index >= kLow && ignore_index <= kHigh;
    ignored_label = ignore ? wide_t(ignore_index) : wide_t(0);
    count = label_count < kHigh ? wide_t(label_count) : wide_t(kHigh);
  }
};

}  // namespace segloss::ops::cpu
