// SPDX-License-Identifier: Apache-2.0
// Kernel instantiations of preset precise with s8 output (internal, see qflash_instances.hpp).
#include "instance.cuh"

QFLASH_DEFINE_INSTANCE(precise, s8, qflash::presets::Precise, std::int8_t)
