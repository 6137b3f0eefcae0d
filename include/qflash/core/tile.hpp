// SPDX-License-Identifier: Apache-2.0
/// @file
/// `Tile<IntT, M, N>`: a fixed-size, row-major block of integers, the unit of `flash_step`.
///
/// A Tile is a plain aggregate (trivially copyable, usable in constexpr code) with its shape in
/// the type. The host reference keeps Tiles on the stack; device code may use them for small
/// register tiles or shared-memory staging, always indexed with compile-time-unrolled loops.
#pragma once

#include <concepts>
#include <cstdint>

#include "qflash/core/config.hpp"

namespace qflash {

template <std::integral IntT, int M, int N>
struct Tile {
  static_assert(M > 0 && N > 0, "Tile: both extents must be positive");
  using value_type = IntT;
  static constexpr int rows = M;
  static constexpr int cols = N;
  static constexpr int size = M * N;

  IntT data[static_cast<unsigned>(M * N)];  ///< row-major: element (r, c) is data[r * N + c]

  QFLASH_HOST_DEVICE constexpr IntT& operator()(int r, int c) noexcept { return data[r * N + c]; }
  QFLASH_HOST_DEVICE constexpr const IntT& operator()(int r, int c) const noexcept {
    return data[r * N + c];
  }

  /// Sets every element to `value`.
  QFLASH_HOST_DEVICE constexpr void fill(IntT value) noexcept {
    QFLASH_UNROLL
    for (int i = 0; i < M * N; ++i) data[i] = value;
  }
};

/// A C array of N elements with an `int` extent (spelled once, free of sign-conversion noise).
template <class T, int N>
using Array = T[static_cast<unsigned>(N)];

/// True for every `Tile<IntT, M, N>`.
template <class T>
inline constexpr bool is_tile_v = false;
template <std::integral IntT, int M, int N>
inline constexpr bool is_tile_v<Tile<IntT, M, N>> = true;

/// A `Tile` of any element type and shape.
template <class T>
concept TileType = is_tile_v<T>;

/// A `Tile` whose element type is exactly `IntT`.
template <class T, class IntT>
concept TileOf = TileType<T> && std::same_as<typename T::value_type, IntT>;

}  // namespace qflash
