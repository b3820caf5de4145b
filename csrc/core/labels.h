// The class-index target rule, shared by every kernel that reads label maps
// (Dice, Dice + CE, the multi-class shape-aware cross-entropy; CPU and CUDA):
// a label is ignored (equal to ignore_index, when one is given), a class in
// [0, classes), or invalid. Templates, so that the CPU loops compare in the
// labels' own width (label_type.h says why) and CUDA in int64.
#pragma once

#include <cstdint>

#include "platform.h"

namespace segloss::core {

template <typename L>
SEGLOSS_INLINE bool is_ignored_label(L label, bool has_ignore, L ignore_index) {
  return has_ignore && label == ignore_index;
}

template <typename L>
SEGLOSS_INLINE bool is_class_label(L label, L classes) {
  return label >= L(0) && label < classes;
}

template <typename L>
SEGLOSS_INLINE bool is_valid_label(L label, bool has_ignore, L ignore_index, L classes) {
  return is_ignored_label(label, has_ignore, ignore_index) || is_class_label(label, classes);
}

// The label value that means "foreground" for channel c of a Dice target:
// with one channel the map is the binary mask itself (label 1), otherwise
// channel c is label c.
SEGLOSS_INLINE std::int64_t label_of_channel(std::int64_t channels, std::int64_t c) {
  return channels == 1 ? 1 : c;
}

// The number of valid labels of a Dice target: [0, number_of_labels(channels)).
SEGLOSS_INLINE std::int64_t number_of_labels(std::int64_t channels) {
  return channels == 1 ? 2 : channels;
}

}  // namespace segloss::core
