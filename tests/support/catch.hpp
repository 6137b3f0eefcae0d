// SPDX-License-Identifier: Apache-2.0
/// @file
/// Catch2 v2/v3 shim: Debian bookworm ships v2.13 (<catch2/catch.hpp>); newer systems ship v3.
/// Tests include this file and use only macros both versions have (no SKIP()).
#pragma once

#if __has_include(<catch2/catch_test_macros.hpp>)
#include <catch2/catch_approx.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
using Catch::Approx;
#else
#include <catch2/catch.hpp>
#endif
