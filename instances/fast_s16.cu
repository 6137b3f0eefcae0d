// SPDX-License-Identifier: Apache-2.0
// Kernel instantiations of preset fast with s16 output (internal, see qflash_instances.hpp).
#include "instance.cuh"

QFLASH_DEFINE_INSTANCE(fast, s16, qflash::presets::Fast, std::int16_t)
