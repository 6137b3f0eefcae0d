// SPDX-License-Identifier: Apache-2.0
// Kernel instantiations of preset fast with f16 output (internal, see qflash_instances.hpp).
#include "instance.cuh"

QFLASH_DEFINE_INSTANCE(fast, f16, qflash::presets::Fast, qflash::Float16)
