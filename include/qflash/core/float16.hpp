// SPDX-License-Identifier: Apache-2.0
/// @file
/// `Float16`: IEEE binary16 as raw bits, with a bit-exact float -> half conversion on host and
/// device. Used only by the dequantizing output policy, the one place where qflash computes in
/// floating point.
#pragma once

#include <bit>
#include <cstdint>

#include "qflash/core/config.hpp"

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#endif

namespace qflash {

/// An IEEE binary16 value held as its bit pattern (layout-compatible with `__half`).
struct Float16 {
  std::uint16_t bits;
};

/// float -> binary16, round to nearest, ties to even (the `__float2half_rn` rule); overflow gives
/// infinity, NaN stays NaN. Integer operations on the bits, so host and device agree.
QFLASH_HOST_DEVICE constexpr std::uint16_t float_to_half_bits(float value) noexcept {
#if defined(__CUDA_ARCH__)
  return __half_as_ushort(__float2half_rn(value));
#else
  const auto x = std::bit_cast<std::uint32_t>(value);
  const auto sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
  const std::uint32_t magnitude = x & 0x7fffffffu;
  if (magnitude >= 0x7f800000u) {  // inf or NaN
    return static_cast<std::uint16_t>(sign | (magnitude > 0x7f800000u ? 0x7e00u : 0x7c00u));
  }
  if (magnitude >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // >= 65520
  if (magnitude < 0x38800000u) {               // below 2^-14: a half subnormal (or zero)
    if (magnitude < 0x33000000u) return sign;  // at most 2^-25: ties to the even zero
    const std::uint32_t exponent = magnitude >> 23;
    const std::uint32_t significand = (magnitude & 0x7fffffu) | 0x800000u;
    const std::uint32_t shift = 126u - exponent;  // value / 2^-24 = significand >> shift
    std::uint32_t half = significand >> shift;
    const std::uint32_t remainder = significand & ((1u << shift) - 1u);
    const std::uint32_t halfway = 1u << (shift - 1u);
    if (remainder > halfway || (remainder == halfway && (half & 1u) != 0)) ++half;
    return static_cast<std::uint16_t>(sign | half);
  }
  std::uint32_t half = (magnitude - 0x38000000u) >> 13;  // rebias 127 -> 15, drop 13 bits
  const std::uint32_t remainder = magnitude & 0x1fffu;
  if (remainder > 0x1000u || (remainder == 0x1000u && (half & 1u) != 0)) ++half;
  return static_cast<std::uint16_t>(sign | half);
#endif
}

/// binary16 -> float (exact), host and device.
QFLASH_HOST_DEVICE constexpr float half_bits_to_float(std::uint16_t h) noexcept {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(h));
#else
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1fu;
  std::uint32_t significand = h & 0x3ffu;
  if (exponent == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (significand << 13));
  if (exponent == 0) {
    if (significand == 0) return std::bit_cast<float>(sign);
    int e = -1;  // normalise the subnormal
    do {
      significand <<= 1;
      ++e;
    } while ((significand & 0x400u) == 0);
    return std::bit_cast<float>(sign | ((112u - static_cast<std::uint32_t>(e)) << 23) |
                                ((significand & 0x3ffu) << 13));
  }
  return std::bit_cast<float>(sign | ((exponent + 112u) << 23) | (significand << 13));
#endif
}

}  // namespace qflash
