// SPDX-License-Identifier: Apache-2.0
// Kernel instantiations of preset fast with s8 output (internal, see qflash_instances.hpp).
#include "instance.cuh"

QFLASH_DEFINE_INSTANCE(fast, s8, qflash::presets::Fast, std::int8_t)
