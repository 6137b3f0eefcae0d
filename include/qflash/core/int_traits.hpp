// SPDX-License-Identifier: Apache-2.0
/// @file
/// Integer limits and min/max/clamp usable in device code.
///
/// `std::numeric_limits<T>::max()` and `std::min` are host functions to nvcc (they need
/// `--expt-relaxed-constexpr` in kernels); these replacements are plain constexpr values and
/// `QFLASH_HOST_DEVICE` functions, so users need no extra compiler flags.
#pragma once

#include <concepts>
#include <cstdint>
#include <type_traits>

#include "qflash/core/config.hpp"

namespace qflash {

/// Width and range of a built-in integer type. Two's complement is guaranteed by C++20.
template <std::integral IntT>
struct IntTraits {
  static constexpr bool is_signed = std::is_signed_v<IntT>;
  static constexpr int bits = static_cast<int>(sizeof(IntT) * 8);
  static constexpr int digits = is_signed ? bits - 1 : bits;  ///< value bits, sign excluded
  static constexpr IntT max =
      static_cast<IntT>(is_signed ? static_cast<IntT>((std::uint64_t{1} << (bits - 1)) - 1u)
                                  : static_cast<IntT>(~IntT{0}));
  static constexpr IntT min = is_signed ? static_cast<IntT>(-max - 1) : IntT{0};
};

template <class T>
QFLASH_HOST_DEVICE constexpr T min(T a, T b) noexcept {
  return b < a ? b : a;
}

template <class T>
QFLASH_HOST_DEVICE constexpr T max(T a, T b) noexcept {
  return a < b ? b : a;
}

/// `lo` if x < lo, `hi` if x > hi, else x. Requires lo <= hi (then min-then-max is the same
/// function, and compiles to two min/max instructions on the GPU instead of compare-and-select).
template <class T>
QFLASH_HOST_DEVICE constexpr T clamp(T x, T lo, T hi) noexcept {
  return max(min(x, hi), lo);
}

}  // namespace qflash
