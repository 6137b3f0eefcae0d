// SPDX-License-Identifier: Apache-2.0
// Kernel instantiations of preset fast with s32 output (internal, see qflash_instances.hpp).
#include "instance.cuh"

QFLASH_DEFINE_INSTANCE(fast, s32, qflash::presets::Fast, std::int32_t)
