// SPDX-License-Identifier: Apache-2.0
// Requantize produces integers; a float output goes through DequantizeFloat16 instead.
// expect: (constraint failure|constraints not satisfied).*Requantize
#include <cstdint>
#include <qflash/policy/output.hpp>

#ifdef QFLASH_SHOULD_FAIL
using Out = qflash::Requantize<float>;
#else
using Out = qflash::Requantize<std::int16_t>;
#endif

Out::Params params{};
