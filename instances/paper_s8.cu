// SPDX-License-Identifier: Apache-2.0
// Kernel instantiations of preset paper with s8 output (internal, see qflash_instances.hpp).
#include "instance.cuh"

QFLASH_DEFINE_INSTANCE(paper, s8, qflash::presets::Paper, std::int8_t)
