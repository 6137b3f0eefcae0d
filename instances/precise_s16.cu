// SPDX-License-Identifier: Apache-2.0
// Kernel instantiations of preset precise with s16 output (internal, see qflash_instances.hpp).
#include "instance.cuh"

QFLASH_DEFINE_INSTANCE(precise, s16, qflash::presets::Precise, std::int16_t)
