// SPDX-License-Identifier: Apache-2.0
// Kernel instantiations of preset paper with s16 output (internal, see qflash_instances.hpp).
#include "instance.cuh"

QFLASH_DEFINE_INSTANCE(paper, s16, qflash::presets::Paper, std::int16_t)
