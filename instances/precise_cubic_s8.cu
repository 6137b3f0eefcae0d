// SPDX-License-Identifier: Apache-2.0
// Kernel instantiations of preset precise_cubic with s8 output (internal, see
// qflash_instances.hpp).
#include "instance.cuh"

QFLASH_DEFINE_INSTANCE(precise_cubic, s8, qflash::presets::PreciseCubic, std::int8_t)
