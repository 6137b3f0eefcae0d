// SPDX-License-Identifier: Apache-2.0
/// @file
/// Exact conversion of a positive double into a dyadic multiplier M * 2^-shift.
///
/// Calibration turns float scales into integer multipliers. Doing that with `std::frexp` and
/// `std::llround` would tie the result to the host's libm; here it is done on the IEEE-754 bit
/// pattern with integer operations only, so the host and the device produce the same integers.
#pragma once

#include <bit>
#include <cstdint>

#include "qflash/core/config.hpp"
#include "qflash/core/fixed_point.hpp"

namespace qflash {

/// The IEEE-754 bits of a double, on host and device.
QFLASH_HOST_DEVICE constexpr std::uint64_t double_bits(double x) noexcept {
#if defined(__CUDA_ARCH__)
  return static_cast<std::uint64_t>(__double_as_longlong(x));
#else
  return std::bit_cast<std::uint64_t>(x);
#endif
}

/// True for finite, strictly positive doubles (rejects 0, negatives, NaN and infinities).
QFLASH_HOST_DEVICE constexpr bool is_positive_finite(double x) noexcept {
  const std::uint64_t bits = double_bits(x);
  const bool negative = (bits >> 63) != 0;
  const auto exponent_field = static_cast<int>((bits >> 52) & 0x7ffu);
  const bool zero = (bits & ~(std::uint64_t{1} << 63)) == 0;
  return !negative && !zero && exponent_field != 0x7ff;
}

/// x = multiplier * 2^-shift with multiplier in [2^30, 2^31) (31 significant bits).
struct Dyadic {
  std::int32_t multiplier;
  int shift;  ///< may be negative for x >= 2^31
};

/// The dyadic form of a positive finite double, the 53-bit significand rounded half away from
/// zero to 31 bits. Precondition: is_positive_finite(x).
QFLASH_HOST_DEVICE constexpr Dyadic to_dyadic(double x) noexcept {
  const std::uint64_t bits = double_bits(x);
  const auto exponent_field = static_cast<int>((bits >> 52) & 0x7ffu);
  std::uint64_t significand = bits & ((std::uint64_t{1} << 52) - 1u);
  int exponent;               // x = significand * 2^(exponent - 52), significand in [2^52, 2^53)
  if (exponent_field == 0) {  // subnormal: normalise
    exponent = -1022;
    while ((significand & (std::uint64_t{1} << 52)) == 0) {
      significand <<= 1;
      --exponent;
    }
  } else {
    significand |= std::uint64_t{1} << 52;
    exponent = exponent_field - 1023;
  }
  auto multiplier = round_shift(static_cast<std::int64_t>(significand), 22);  // [2^30, 2^31]
  if (multiplier == (std::int64_t{1} << 31)) {
    multiplier >>= 1;
    ++exponent;
  }
  // x ~= multiplier * 2^(exponent - 30)
  return Dyadic{static_cast<std::int32_t>(multiplier), 30 - exponent};
}

/// round(x), half away from zero, for |x| < 2^62 (exact, integer operations on the bits).
QFLASH_HOST_DEVICE constexpr std::int64_t round_to_int64(double x) noexcept {
  const std::uint64_t bits = double_bits(x);
  const bool negative = (bits >> 63) != 0;
  const auto exponent_field = static_cast<int>((bits >> 52) & 0x7ffu);
  if (exponent_field == 0) return 0;  // zero or subnormal: |x| < 0.5
  const auto significand = static_cast<std::int64_t>((bits & ((std::uint64_t{1} << 52) - 1u)) |
                                                     (std::uint64_t{1} << 52));
  const int exponent = exponent_field - 1023;  // |x| = significand * 2^(exponent - 52)
  const std::int64_t magnitude =
      exponent >= 52 ? (significand << (exponent - 52)) : round_shift(significand, 52 - exponent);
  return negative ? -magnitude : magnitude;
}

}  // namespace qflash
