// SPDX-License-Identifier: Apache-2.0
/// @file
/// Exact integer matrix products on Tiles (scalar loops; the reference path).
///
/// Integer accumulation is exact and associative, so any summation order (these loops, a tensor
/// core's) gives the same int32 result as long as no partial sum overflows. The callers state
/// the bounds: |S| <= 128 * 128 * D < 2^22 for D <= 128, and |P V| <= 255 * 128 * N.
#pragma once

#include <cstdint>

#include "qflash/core/config.hpp"
#include "qflash/core/tile.hpp"

namespace qflash {

/// out(i, j) = sum_d a(i, d) * b(j, d): A times B transposed (Q K^T), products widened to AccT.
template <class AccT, class AT, class BT, int M, int N, int K>
QFLASH_HOST_DEVICE constexpr void matmul_abt(const Tile<AT, M, K>& a, const Tile<BT, N, K>& b,
                                             Tile<AccT, M, N>& out) noexcept {
  for (int i = 0; i < M; ++i) {
    for (int j = 0; j < N; ++j) {
      AccT sum = 0;
      for (int d = 0; d < K; ++d) sum += static_cast<AccT>(a(i, d)) * static_cast<AccT>(b(j, d));
      out(i, j) = sum;
    }
  }
}

/// out(i, d) = sum_j a(i, j) * b(j, d): A times B (P V), products widened to AccT.
template <class AccT, class AT, class BT, int M, int N, int K>
QFLASH_HOST_DEVICE constexpr void matmul_ab(const Tile<AT, M, K>& a, const Tile<BT, K, N>& b,
                                            Tile<AccT, M, N>& out) noexcept {
  for (int i = 0; i < M; ++i) {
    for (int d = 0; d < N; ++d) out(i, d) = 0;
    for (int j = 0; j < K; ++j) {
      const auto aij = static_cast<AccT>(a(i, j));
      if (aij == 0) continue;  // exact: skipping a zero product changes no sum
      for (int d = 0; d < N; ++d) out(i, d) += aij * static_cast<AccT>(b(j, d));
    }
  }
}

}  // namespace qflash
