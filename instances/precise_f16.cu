// SPDX-License-Identifier: Apache-2.0
// Kernel instantiations of preset precise with f16 output (internal, see qflash_instances.hpp).
#include "instance.cuh"

QFLASH_DEFINE_INSTANCE(precise, f16, qflash::presets::Precise, qflash::Float16)
