// SPDX-License-Identifier: Apache-2.0
// saturate_cast narrows between integer types only.
// expect: no matching function for call to .saturate_cast
#include <cstdint>
#include <qflash/core/fixed_point.hpp>

#ifdef QFLASH_SHOULD_FAIL
using To = float;
#else
using To = std::int8_t;
#endif

To narrow(std::int32_t x) { return qflash::saturate_cast<To>(x); }
