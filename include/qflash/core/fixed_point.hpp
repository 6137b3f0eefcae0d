// SPDX-License-Identifier: Apache-2.0
/// @file
/// Fixed-point primitives with defined results for every input.
///
/// C++ leaves `x >> s` undefined for s >= width, and x86 masks the count while the GPU clamps it
/// (x >> 32 is x on the host, 0 or -1 on an H100). Every data-dependent shift in qflash therefore
/// goes through one of these helpers, which state their result for every count. Products that can
/// exceed 31 bits are formed in 64 bits. One rounding rule is used throughout: round half away
/// from zero, unless a function's name says otherwise (the online softmax's accumulator rescale
/// rounds half up, policy/online_softmax.hpp).
#pragma once

#include <bit>
#include <cstdint>

#include "qflash/core/config.hpp"
#include "qflash/core/int_traits.hpp"

namespace qflash {

/// How a quotient or a right shift is rounded to an integer.
enum class Rounding : std::uint8_t {
  half_away_from_zero,  ///< 2.5 -> 3, -2.5 -> -3 (qflash's default)
  toward_zero,          ///< truncation, as C++ integer division (the published QFlash output)
};

/// floor(x / 2^s) for s >= 0: an arithmetic shift, saturating to 0 or -1 for s >= 32.
QFLASH_HOST_DEVICE constexpr std::int32_t shift_right_floor(std::int32_t x, int s) noexcept {
  return s >= 32 ? (x < 0 ? -1 : 0) : (x >> s);
}

/// floor(x / 2^s) for s >= 0: an arithmetic shift, saturating to 0 or -1 for s >= 64.
QFLASH_HOST_DEVICE constexpr std::int64_t shift_right_floor(std::int64_t x, int s) noexcept {
  return s >= 64 ? (x < 0 ? -1 : 0) : (x >> s);
}

/// round(x / 2^s), half away from zero, for 0 <= x < 2^31 and s >= 0 (0 for s >= 32).
/// The hot-path form: two shifts, one add, no branch but the count clamp.
QFLASH_HOST_DEVICE constexpr std::uint32_t round_shift_nonneg(std::uint32_t x, int s) noexcept {
  // ((2x >> s) + 1) >> 1 == floor(x / 2^s + 1/2); 2x fits in 32 bits because x < 2^31.
  return s >= 32 ? 0u : ((((x << 1) >> s) + 1u) >> 1);
}

/// round(x / 2^s), half away from zero, for every int64 x and every s >= 0.
QFLASH_HOST_DEVICE constexpr std::int64_t round_shift(std::int64_t x, int s) noexcept {
  if (s <= 0) return x;
  // Work on the magnitude in uint64 so that INT64_MIN and the +half cannot overflow.
  const std::uint64_t mag =
      x < 0 ? std::uint64_t{0} - static_cast<std::uint64_t>(x) : static_cast<std::uint64_t>(x);
  const std::uint64_t floor_part = s >= 64 ? 0u : (mag >> s);
  const std::uint64_t half_bit = s > 64 ? 0u : ((mag >> (s - 1)) & 1u);
  const std::uint64_t rounded = floor_part + half_bit;  // <= 2^63, fits after negation
  return x < 0 ? static_cast<std::int64_t>(std::uint64_t{0} - rounded)
               : static_cast<std::int64_t>(rounded);
}

/// round(x / 2^s), half away from zero, for every int32 x and every s >= 0.
QFLASH_HOST_DEVICE constexpr std::int32_t round_shift(std::int32_t x, int s) noexcept {
  return static_cast<std::int32_t>(round_shift(static_cast<std::int64_t>(x), s));
}

/// round(a * b / 2^s), half away from zero. The product is exact in 64 bits for int32 inputs.
QFLASH_HOST_DEVICE constexpr std::int64_t mul_round_shift(std::int32_t a, std::int32_t b,
                                                          int s) noexcept {
  return round_shift(static_cast<std::int64_t>(a) * static_cast<std::int64_t>(b), s);
}

/// round(a * b / 2^s) for an int64 `a`; requires |a * b| < 2^63 (callers state the bound).
QFLASH_HOST_DEVICE constexpr std::int64_t mul_round_shift(std::int64_t a, std::int32_t b,
                                                          int s) noexcept {
  return round_shift(a * static_cast<std::int64_t>(b), s);
}

/// round(x / 2^s), half away from zero, for |x| <= 2^62 and 0 <= s <= 62: the branch-free hot
/// path, floor((x + 2^(s-1) - [x < 0]) / 2^s). Equals `round_shift` on that domain (tested).
QFLASH_HOST_DEVICE constexpr std::int64_t round_shift_bounded(std::int64_t x, int s) noexcept {
  const std::int64_t half = (std::int64_t{1} << s) >> 1;  // 2^(s-1), or 0 for s == 0
  const std::int64_t negative = s > 0 ? (x >> 63) : 0;    // -1 for x < 0 (C++20: arithmetic)
  return (x + half + negative) >> s;
}

/// The exact 64-bit product of two int32 values. On the device one `mul.wide.s32` (ptxas does
/// not always find it in the C++ form, and falls back to a four-instruction 64 x 64 multiply).
QFLASH_HOST_DEVICE constexpr std::int64_t mul_wide(std::int32_t a, std::int32_t b) noexcept {
#if defined(__CUDA_ARCH__)
  if (!__builtin_is_constant_evaluated()) {  // std::is_constant_evaluated is host-only
    std::int64_t product;
    asm("mul.wide.s32 %0, %1, %2;" : "=l"(product) : "r"(a), "r"(b));
    return product;
  }
#endif
  return static_cast<std::int64_t>(a) * static_cast<std::int64_t>(b);
}

/// x itself, opaque to the device compiler: keeps a 32-bit intermediate such as the high word of
/// a 64-bit product in a 32-bit register. Without it NVVM folds zext(trunc(x >> 32)) into a 64-bit
/// shift, the next multiply becomes 64 x 64, and ptxas adds a zero cross term per use.
QFLASH_HOST_DEVICE constexpr std::uint32_t opaque_u32(std::uint32_t x) noexcept {
#if defined(__CUDA_ARCH__)
  if (!__builtin_is_constant_evaluated()) asm("" : "+r"(x));
#endif
  return x;
}

/// round(a * b / 2^s) half away from zero for int32 a, b (|a * b| <= 2^62) and 0 <= s <= 62.
QFLASH_HOST_DEVICE constexpr std::int64_t mul_round_shift_bounded(std::int32_t a, std::int32_t b,
                                                                  int s) noexcept {
  return round_shift_bounded(mul_wide(a, b), s);
}

/// round(a * b / 2^s) half away from zero for |a * b| <= 2^62 and 0 <= s <= 62.
QFLASH_HOST_DEVICE constexpr std::int64_t mul_round_shift_bounded(std::int64_t a, std::int32_t b,
                                                                  int s) noexcept {
  return round_shift_bounded(a * static_cast<std::int64_t>(b), s);
}

/// The high 32 bits of the 64-bit product a * b.
QFLASH_HOST_DEVICE constexpr std::uint32_t mul_high(std::uint32_t a, std::uint32_t b) noexcept {
#if defined(__CUDA_ARCH__)
  return __umulhi(a, b);
#else
  return static_cast<std::uint32_t>((static_cast<std::uint64_t>(a) * b) >> 32);
#endif
}

/// floor(a * b / 2^32) for signed a, b: the high half of the 64-bit product.
QFLASH_HOST_DEVICE constexpr std::int32_t mul_high(std::int32_t a, std::int32_t b) noexcept {
#if defined(__CUDA_ARCH__)
  return __mulhi(a, b);
#else
  return static_cast<std::int32_t>((static_cast<std::int64_t>(a) * b) >> 32);
#endif
}

/// The high 64 bits of the 128-bit product a * b.
QFLASH_HOST_DEVICE constexpr std::uint64_t mul_high(std::uint64_t a, std::uint64_t b) noexcept {
#if defined(__CUDA_ARCH__)
  return __umul64hi(a, b);
#else
  __extension__ using Wide = unsigned __int128;  // g++/clang++ extension (x86-64, aarch64)
  return static_cast<std::uint64_t>((static_cast<Wide>(a) * b) >> 64);
#endif
}

/// The number of significant bits of x (0 for x == 0): std::bit_width, also on the device.
QFLASH_HOST_DEVICE constexpr int bit_width(std::uint64_t x) noexcept {
#if defined(__CUDA_ARCH__)
  return 64 - __clzll(static_cast<long long>(x));
#else
  return static_cast<int>(std::bit_width(x));
#endif
}
/// The 32-bit form: one FLO on the device.
QFLASH_HOST_DEVICE constexpr int bit_width(std::uint32_t x) noexcept {
#if defined(__CUDA_ARCH__)
  return 32 - __clz(static_cast<int>(x));
#else
  return static_cast<int>(std::bit_width(x));
#endif
}

/// x clamped to the range of OutT.
template <std::integral OutT, std::integral InT>
QFLASH_HOST_DEVICE constexpr OutT saturate_cast(InT x) noexcept {
  using Wide = std::conditional_t<std::is_signed_v<InT>, std::int64_t, std::uint64_t>;
  static_assert(sizeof(InT) <= 8, "saturate_cast: at most 64-bit inputs");
  if constexpr (std::is_signed_v<InT> == std::is_signed_v<OutT> && sizeof(OutT) >= sizeof(InT)) {
    return static_cast<OutT>(x);
  } else if constexpr (std::is_signed_v<InT>) {
    const auto wide = static_cast<std::int64_t>(x);
    constexpr auto lo = static_cast<std::int64_t>(IntTraits<OutT>::min);
    constexpr auto hi = std::is_signed_v<OutT> || sizeof(OutT) < 8
                            ? static_cast<std::int64_t>(IntTraits<OutT>::max)
                            : IntTraits<std::int64_t>::max;
    return static_cast<OutT>(clamp(wide, lo, hi));
  } else {
    const auto wide = static_cast<Wide>(x);
    constexpr auto hi = static_cast<std::uint64_t>(IntTraits<OutT>::max);
    return static_cast<OutT>(wide > hi ? hi : wide);
  }
}

/// num / den rounded as `mode` says, for den > 0 and every int64 num.
/// Works on magnitudes in uint64: no intermediate can overflow.
QFLASH_HOST_DEVICE constexpr std::int64_t divide_rounded(std::int64_t num, std::int64_t den,
                                                         Rounding mode) noexcept {
  const bool negative = num < 0;
  const std::uint64_t mag = negative ? std::uint64_t{0} - static_cast<std::uint64_t>(num)
                                     : static_cast<std::uint64_t>(num);
  const auto uden = static_cast<std::uint64_t>(den);
  std::uint64_t quotient = mag / uden;
  if (mode == Rounding::half_away_from_zero) {
    const std::uint64_t remainder = mag - quotient * uden;
    if (remainder >= uden - remainder) ++quotient;  // 2r >= den without overflow
  }
  return negative ? static_cast<std::int64_t>(std::uint64_t{0} - quotient)
                  : static_cast<std::int64_t>(quotient);
}

}  // namespace qflash
