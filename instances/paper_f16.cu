// SPDX-License-Identifier: Apache-2.0
// Kernel instantiations of preset paper with f16 output (internal, see qflash_instances.hpp).
#include "instance.cuh"

QFLASH_DEFINE_INSTANCE(paper, f16, qflash::presets::Paper, qflash::Float16)
