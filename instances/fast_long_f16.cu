// SPDX-License-Identifier: Apache-2.0
// Kernel instantiations of preset fast_long with f16 output (internal, see qflash_instances.hpp).
#include "instance.cuh"

QFLASH_DEFINE_INSTANCE(fast_long, f16, qflash::presets::FastLong, qflash::Float16)
