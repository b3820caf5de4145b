// Compiles every core header as C++17 with warnings as errors (see
// CMakeLists.txt): the core must not depend on torch or on C++20.
#include "bce.h"
#include "broadcast.h"
#include "cross_entropy.h"
#include "dice.h"
#include "distance_transform.h"
#include "float_math.h"
#include "platform.h"
#include "two_nearest.h"
#include "unet_weight.h"
