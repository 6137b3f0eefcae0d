// SPDX-License-Identifier: Apache-2.0
/// @file
/// What an attention call reads and writes: strided int8 Q/K/V, an optional bias, an optional
/// mask, and a typed output. Plain aggregates, trivially copyable, usable on host and device.
#pragma once

#include <cstdint>
#include <type_traits>

#include "qflash/core/config.hpp"
#include "qflash/core/int_traits.hpp"

namespace qflash {

/// A [Z, H, N, D] view with element strides (Z: batch or windows, H: heads, N: tokens, D: head
/// dim). `bhnd` and `bnhd` build the two common contiguous layouts.
template <class T>
struct Tensor4 {
  T* data = nullptr;
  std::int64_t batch = 0, heads = 0, seq = 0, dim = 0;
  std::int64_t stride_batch = 0, stride_head = 0, stride_seq = 0, stride_dim = 1;

  QFLASH_HOST_DEVICE constexpr std::int64_t offset(std::int64_t z, std::int64_t h, std::int64_t n,
                                                   std::int64_t d) const noexcept {
    return z * stride_batch + h * stride_head + n * stride_seq + d * stride_dim;
  }
  QFLASH_HOST_DEVICE constexpr T& operator()(std::int64_t z, std::int64_t h, std::int64_t n,
                                             std::int64_t d) const noexcept {
    return data[offset(z, h, n, d)];
  }
  /// The same view with read-only elements.
  template <class U = T>
  requires(!std::is_const_v<U>) QFLASH_HOST_DEVICE constexpr operator Tensor4<const U>()
      const noexcept {
    return Tensor4<const U>{data,         batch,       heads,      seq,       dim,
                            stride_batch, stride_head, stride_seq, stride_dim};
  }
  /// Number of elements Z * H * N * D.
  QFLASH_HOST_DEVICE constexpr std::int64_t size() const noexcept {
    return batch * heads * seq * dim;
  }
};

/// Contiguous [Z, H, N, D] (PyTorch's q.transpose(1, 2) of a [Z, N, H, D] projection, made
/// contiguous; the layout of most attention kernels).
template <class T>
constexpr Tensor4<T> bhnd(T* data, std::int64_t z, std::int64_t h, std::int64_t n,
                          std::int64_t d) noexcept {
  return Tensor4<T>{data, z, h, n, d, h * n * d, n * d, d, 1};
}

/// Contiguous [Z, N, H, D] viewed as [Z, H, N, D] (the output of a fused QKV projection).
template <class T>
constexpr Tensor4<T> bnhd(T* data, std::int64_t z, std::int64_t h, std::int64_t n,
                          std::int64_t d) noexcept {
  return Tensor4<T>{data, z, h, n, d, n * h * d, d, h * d, 1};
}

enum class BiasKind : std::uint8_t {
  none,            ///< no additive bias
  dense,           ///< values[h][i][j], contiguous [heads, Nq, Nkv]
  relative_table,  ///< values[h * stride_head + index[i][j] * stride_entry] (Swin)
};

/// An additive attention bias over elements of type T, shared by every batch element and window:
/// never expanded to [Z, H, N, N]. `heads` is H, or 1 to broadcast over heads. The kernel and the
/// integer reference read `AttentionBias` (Q16 octaves, round(bias_nats * log2(e) * 2^16)); the
/// float oracle reads the same layout in nats (reference::FloatBias).
template <class T>
struct BiasView {
  BiasKind kind = BiasKind::none;
  const T* values = nullptr;
  std::int64_t heads = 0;
  std::int64_t rows = 0, cols = 0;      ///< must equal Nq and Nkv
  const std::int32_t* index = nullptr;  ///< relative_table: contiguous [Nq, Nkv]
  std::int64_t table_size = 0;          ///< relative_table: entries per head
  std::int64_t stride_head = 0;         ///< relative_table: element stride between heads
  std::int64_t stride_entry = 1;        ///< relative_table: element stride between entries

  /// The bias of head h, query i, key j (0 without a bias). Relative-table indices outside
  /// [0, table_size) are clamped (the host reference rejects them; the GPU cannot report them
  /// without a sync).
  QFLASH_HOST_DEVICE constexpr T at(std::int64_t h, std::int64_t i, std::int64_t j) const noexcept {
    const std::int64_t head = heads == 1 ? 0 : h;
    if (kind == BiasKind::dense) return values[(head * rows + i) * cols + j];
    if (kind == BiasKind::relative_table) {
      const std::int64_t entry = clamp<std::int64_t>(index[i * cols + j], 0, table_size - 1);
      return values[head * stride_head + entry * stride_entry];
    }
    return T{0};
  }

  /// The same layout as an integer bias without values: what shape and index checks read.
  constexpr BiasView<std::int32_t> layout() const noexcept {
    return BiasView<std::int32_t>{kind,  nullptr,    heads,       rows,        cols,
                                  index, table_size, stride_head, stride_entry};
  }
};

/// The bias of the integer pipeline, in Q16 octaves.
using AttentionBias = BiasView<std::int32_t>;

/// A boolean mask [windows, Nq, Nkv], contiguous, nonzero = the key is visible to the query.
/// Batch element z uses window z % windows (Swin's shifted windows: batch index b * nW + w).
/// `windows == 0` means no mask.
struct AttentionMask {
  const std::uint8_t* data = nullptr;
  std::int64_t windows = 0, rows = 0, cols = 0;

  QFLASH_HOST_DEVICE constexpr bool visible(std::int64_t z, std::int64_t i,
                                            std::int64_t j) const noexcept {
    return windows == 0 || window_row(z % windows, i)[j] != 0;
  }
  /// The mask row of query i in window w (w = z % windows).
  QFLASH_HOST_DEVICE constexpr const std::uint8_t* window_row(std::int64_t w,
                                                              std::int64_t i) const noexcept {
    return data + (w * rows + i) * cols;
  }
};

/// The inputs of one attention call. Nq = q.seq, Nkv = k.seq = v.seq (cross-attention allowed).
struct AttentionProblem {
  Tensor4<const std::int8_t> q, k, v;
  AttentionBias bias{};
  AttentionMask mask{};
};

/// Head dims with a tuned CUDA instantiation and a reference dispatch.
QFLASH_HOST_DEVICE constexpr bool is_supported_head_dim(std::int64_t d) noexcept {
  return d == 32 || d == 64 || d == 80 || d == 96 || d == 128;
}

}  // namespace qflash
