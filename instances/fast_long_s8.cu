// SPDX-License-Identifier: Apache-2.0
// Kernel instantiations of preset fast_long with s8 output (internal, see qflash_instances.hpp).
#include "instance.cuh"

QFLASH_DEFINE_INSTANCE(fast_long, s8, qflash::presets::FastLong, std::int8_t)
