// SPDX-License-Identifier: Apache-2.0
/// @file
/// Symmetric per-tensor int8 quantization of one value: the single definition that the host
/// quantizer (reference/quantize.hpp) and the device quantize pass (device/quantize.cuh) both
/// call, so the two produce the same codes and scales by construction (a GPU test still checks).
///
/// Float arithmetic by nature (it maps real values to codes); no integer kernel calls it. Every
/// operation is one IEEE binary32 operation rounded to nearest even, spelled so that nvcc cannot
/// contract or approximate it on the device.
#pragma once

#include <cstdint>

#include "qflash/core/config.hpp"

namespace qflash {

/// Largest magnitude of a symmetric int8 code: codes are in [-127, 127] (-128 is never produced).
inline constexpr int kInt8Limit = 127;

namespace detail {

/// x / y, one binary32 division rounded to nearest even (IEEE), on host and device.
QFLASH_HOST_DEVICE float divide_rn(float x, float y) noexcept {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(x, y);
#else
  return x / y;
#endif
}

/// x rounded to an integral value, ties to even (the default floating-point environment on the
/// host; rintf on the device).
QFLASH_HOST_DEVICE float round_to_even(float x) noexcept {
#if defined(__CUDA_ARCH__)
  return rintf(x);
#else
  return __builtin_nearbyintf(x);
#endif
}

}  // namespace detail

/// The scale of a tensor whose largest magnitude is `amax` (real value = scale * code):
/// amax / 127 rounded to nearest even; 1 when amax == 0 (an all-zero tensor quantizes to zeros
/// at any scale). An amax below 127 * 2^-149 underflows to a zero scale, and a NaN or infinite
/// amax gives a NaN or infinite scale: callers reject those (Status::invalid_scale).
QFLASH_HOST_DEVICE float symmetric_scale(float amax) noexcept {
  return amax == 0.0f ? 1.0f : detail::divide_rn(amax, static_cast<float>(kInt8Limit));
}

/// One int8 code: clamp(round_to_even(x / scale), -127, 127), x / scale one binary32 division.
/// +-inf quotients clamp to +-127; a NaN quotient gives 0.
QFLASH_HOST_DEVICE std::int8_t quantize_value(float x, float scale) noexcept {
  const float rounded = detail::round_to_even(detail::divide_rn(x, scale));
  if (rounded != rounded) return 0;  // NaN
  const float limit = static_cast<float>(kInt8Limit);
  const float clamped = rounded < -limit ? -limit : (rounded > limit ? limit : rounded);
  return static_cast<std::int8_t>(static_cast<int>(clamped));
}

}  // namespace qflash
