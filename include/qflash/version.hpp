// SPDX-License-Identifier: Apache-2.0
/// @file
/// Library version, kept in step with `project(qflash VERSION ...)` in CMakeLists.txt.
#pragma once

#define QFLASH_VERSION_MAJOR 0
#define QFLASH_VERSION_MINOR 1
#define QFLASH_VERSION_PATCH 0
