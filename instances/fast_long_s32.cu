// SPDX-License-Identifier: Apache-2.0
// Kernel instantiations of preset fast_long with s32 output (internal, see qflash_instances.hpp).
#include "instance.cuh"

QFLASH_DEFINE_INSTANCE(fast_long, s32, qflash::presets::FastLong, std::int32_t)
