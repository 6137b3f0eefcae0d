// SPDX-License-Identifier: Apache-2.0
// Kernel instantiations of preset precise_cubic with f16 output (internal, see
// qflash_instances.hpp).
#include "instance.cuh"

QFLASH_DEFINE_INSTANCE(precise_cubic, f16, qflash::presets::PreciseCubic, qflash::Float16)
