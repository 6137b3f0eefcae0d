// SPDX-License-Identifier: Apache-2.0
/// @file
/// Umbrella header: everything that compiles with both a C++ compiler and nvcc. The CUDA kernel
/// and launcher are in <qflash/device/...> (nvcc only); the references in <qflash/reference/...>.
#pragma once

#include "qflash/attention/flash_step.hpp"
#include "qflash/attention/head_params.hpp"
#include "qflash/attention/presets.hpp"
#include "qflash/attention/problem.hpp"
#include "qflash/attention/validate.hpp"
#include "qflash/core/concepts.hpp"
#include "qflash/core/config.hpp"
#include "qflash/core/dyadic.hpp"
#include "qflash/core/fixed_point.hpp"
#include "qflash/core/float16.hpp"
#include "qflash/core/int8_quantize.hpp"
#include "qflash/core/int_traits.hpp"
#include "qflash/core/status.hpp"
#include "qflash/core/tile.hpp"
#include "qflash/core/tile_ops.hpp"
#include "qflash/policy/calibrate.hpp"
#include "qflash/policy/exp2.hpp"
#include "qflash/policy/logit.hpp"
#include "qflash/policy/online_softmax.hpp"
#include "qflash/policy/output.hpp"
#include "qflash/version.hpp"
