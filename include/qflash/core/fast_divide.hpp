// SPDX-License-Identifier: Apache-2.0
/// @file
/// Division by a run-time constant as one multiply-high and one shift (Granlund and Montgomery,
/// "Division by invariant integers using multiplication", 1994), for dividends below 2^31. The
/// kernel splits its block index into (batch, head, query tile) with it instead of two 32-bit
/// divisions.
///
/// For a divisor d >= 2 with L = ceil(log2 d), p = 31 + L and m = ceil(2^p / d) < 2^32:
/// floor(n * m / 2^p) = floor(n / d) for every n < 2^31, because m = (2^p + e) / d with
/// 0 <= e < d adds less than n * e / (d * 2^p) < 1 / d to n / d, and the fractional part of n / d
/// is at most (d - 1) / d. floor(n * m / 2^p) is the high word of n * m shifted by p - 32 = L - 1.
#pragma once

#include <cstdint>

#include "qflash/core/config.hpp"
#include "qflash/core/fixed_point.hpp"

namespace qflash {

struct FastDivide {
  std::uint32_t divisor = 1;     ///< d in [1, 2^31)
  std::uint32_t multiplier = 0;  ///< m (unused for d = 1)
  std::uint32_t shift = 0;       ///< p - 32

  /// The constants for d in [1, 2^31) (d = 0 is treated as 1).
  QFLASH_HOST_DEVICE static constexpr FastDivide make(std::uint32_t d) noexcept {
    if (d <= 1) return FastDivide{1, 0, 0};
    const int ceil_log2 = bit_width(std::uint64_t{d} - 1);  // L, in [1, 31]
    const int p = 31 + ceil_log2;
    const std::uint64_t m = ((std::uint64_t{1} << p) + d - 1) / d;  // < 2^32
    return FastDivide{d, static_cast<std::uint32_t>(m), static_cast<std::uint32_t>(p - 32)};
  }

  /// floor(n / d) for n < 2^31.
  QFLASH_HOST_DEVICE constexpr std::uint32_t quotient(std::uint32_t n) const noexcept {
    return divisor == 1 ? n : mul_high(n, multiplier) >> shift;
  }
};

}  // namespace qflash
