// SPDX-License-Identifier: Apache-2.0
/// @file
/// Argument validation shared by the host reference and the CUDA launcher: every problem that
/// can be seen without reading tensor data is reported as a named `Status` before anything runs.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>

#include "qflash/attention/problem.hpp"
#include "qflash/core/concepts.hpp"
#include "qflash/core/status.hpp"

namespace qflash {

namespace detail {

/// The most bytes one view may span, from its first element to one past its last: 2^48 (256 TiB,
/// the whole 48-bit virtual address space of x86-64 with 4-level paging, far above any GPU's
/// memory). No real tensor is larger, and under this bound every element offset and byte offset
/// is exact in int64; view_range also checks that data + span does not wrap uintptr_t. A view that
/// claims more describes no memory that exists: it is rejected, never indexed.
inline constexpr std::int64_t kMaxViewBytes = std::int64_t{1} << 48;

/// The bytes [begin, end) that one view reads or writes.
struct ByteRange {
  std::uintptr_t begin = 0, end = 0;

  /// True when the two ranges share a byte (an empty range shares none).
  constexpr bool intersects(const ByteRange& other) const noexcept {
    return begin < other.end && other.begin < end;
  }
};

/// A view's extent along one dimension and the element stride between its entries.
struct StridedDim {
  std::int64_t stride = 0, extent = 1;
};

/// The bytes of a view at `data` with elements of `elem_bytes` bytes, from its first element to
/// one past the element at the largest offset sum((extent - 1) * stride). nullopt for an extent
/// below 1 or a negative stride, and when the span exceeds kMaxViewBytes, or int64 or uintptr_t
/// on the way.
inline std::optional<ByteRange> view_range(const void* data, std::size_t elem_bytes,
                                           std::initializer_list<StridedDim> dims) {
  std::int64_t last = 0;  // the largest element offset
  for (const StridedDim& dim : dims) {
    std::int64_t step = 0;
    if (dim.extent < 1 || dim.stride < 0 ||
        __builtin_mul_overflow(dim.stride, dim.extent - 1, &step) ||
        __builtin_add_overflow(last, step, &last)) {
      return std::nullopt;
    }
  }
  std::int64_t bytes = 0;
  if (__builtin_add_overflow(last, 1, &bytes) ||
      __builtin_mul_overflow(bytes, static_cast<std::int64_t>(elem_bytes), &bytes) ||
      bytes > kMaxViewBytes) {
    return std::nullopt;
  }
  const auto begin = reinterpret_cast<std::uintptr_t>(data);
  std::uintptr_t end = 0;
  if (__builtin_add_overflow(begin, static_cast<std::uintptr_t>(bytes), &end)) return std::nullopt;
  return ByteRange{begin, end};
}

/// The bytes of a contiguous array of the given extents at `data`; nullopt as for view_range
/// (the element count itself is overflow-checked).
inline std::optional<ByteRange> array_range(const void* data, std::size_t elem_bytes,
                                            std::initializer_list<std::int64_t> extents) {
  std::int64_t count = 1;
  for (const std::int64_t extent : extents) {
    if (extent < 1 || __builtin_mul_overflow(count, extent, &count)) return std::nullopt;
  }
  return view_range(data, elem_bytes, {{1, count}});
}

/// The bytes of a [Z, H, N, D] view (see view_range).
template <class T>
std::optional<ByteRange> tensor_range(const Tensor4<T>& t) {
  return view_range(t.data, sizeof(T),
                    {{t.stride_batch, t.batch},
                     {t.stride_head, t.heads},
                     {t.stride_seq, t.seq},
                     {t.stride_dim, t.dim}});
}

/// True when the [Z, H, N, D] view addresses every element at a distinct offset: with the
/// extents sorted by stride, each stride is at least the span of the smaller ones.
template <class T>
bool is_non_overlapping(const Tensor4<T>& t) {
  std::array<std::array<std::int64_t, 2>, 4> dims = {{{t.stride_batch, t.batch},
                                                      {t.stride_head, t.heads},
                                                      {t.stride_seq, t.seq},
                                                      {t.stride_dim, t.dim}}};
  std::sort(dims.begin(), dims.end());
  std::int64_t span = 1;  // elements covered by the dims placed so far
  for (const auto& [stride, extent] : dims) {
    if (extent == 1) continue;
    if (stride < span) return false;
    // A view whose span exceeds int64 addresses no real memory: reject it as overlapping.
    if (__builtin_mul_overflow(stride, extent, &span)) return false;
  }
  return true;
}

template <class T>
bool has_negative_stride(const Tensor4<T>& t) {
  return t.stride_batch < 0 || t.stride_head < 0 || t.stride_seq < 0 || t.stride_dim < 0;
}

/// Checks a bias layout against H heads, Nq queries and Nkv keys (all >= 1) and stores the bytes
/// it reads: the values (dense [heads, Nq, Nkv], or the relative table, whose largest offset is
/// stride_head * (heads - 1) + stride_entry * (table_size - 1)) and, for a relative table, the
/// index map [Nq, Nkv]. bias_shape_mismatch for wrong extents or strides, and for a layout that
/// spans more than kMaxViewBytes.
template <class T>
Status check_bias_layout(const BiasView<T>& b, std::int64_t h, std::int64_t nq, std::int64_t nkv,
                         ByteRange* values, ByteRange* index) {
  if (b.kind == BiasKind::none) return Status::ok;
  if ((b.heads != 1 && b.heads != h) || b.rows != nq || b.cols != nkv) {
    return Status::bias_shape_mismatch;
  }
  std::optional<ByteRange> value_bytes, index_bytes = ByteRange{};
  if (b.kind == BiasKind::dense) {
    value_bytes = array_range(b.values, sizeof(T), {b.heads, nq, nkv});
  } else {
    if (b.table_size <= 0 || b.stride_head < 0 || b.stride_entry < 0) {
      return Status::bias_shape_mismatch;
    }
    value_bytes =
        view_range(b.values, sizeof(T), {{b.stride_head, b.heads}, {b.stride_entry, b.table_size}});
    index_bytes = array_range(b.index, sizeof(*b.index), {nq, nkv});
  }
  if (!value_bytes || !index_bytes) return Status::bias_shape_mismatch;
  *values = *value_bytes;
  *index = *index_bytes;
  return Status::ok;
}

/// Checks a mask against Z batch elements, Nq queries and Nkv keys (all >= 1) and stores the
/// bytes it reads, [windows, Nq, Nkv] (none without a mask). mask_shape_mismatch for wrong
/// extents, Z % windows != 0, or more than kMaxViewBytes.
inline Status check_mask_layout(const AttentionMask& m, std::int64_t z, std::int64_t nq,
                                std::int64_t nkv, ByteRange* bytes) {
  if (m.windows == 0) return Status::ok;
  if (m.windows < 0 || m.rows != nq || m.cols != nkv || z % m.windows != 0) {
    return Status::mask_shape_mismatch;
  }
  const std::optional<ByteRange> mask_bytes =
      array_range(m.data, sizeof(*m.data), {m.windows, nq, nkv});
  if (!mask_bytes) return Status::mask_shape_mismatch;
  *bytes = *mask_bytes;
  return Status::ok;
}

/// True when `out` shares a byte with any of `inputs`.
inline bool overlaps_any(const ByteRange& out, std::initializer_list<ByteRange> inputs) {
  return std::any_of(inputs.begin(), inputs.end(),
                     [&](const ByteRange& input) { return out.intersects(input); });
}

}  // namespace detail

/// Checks shapes, strides, bias, mask, sequence bound, parameter count and output placement of
/// one call, without reading any tensor data, in this order: null_pointer, empty_problem,
/// unsupported_head_dim, shape_mismatch, invalid_stride (a negative stride, an output whose
/// elements overlap, or a Q, K, V or O view spanning more than detail::kMaxViewBytes),
/// bias_shape_mismatch and mask_shape_mismatch (also for layouts above that bound),
/// sequence_too_long, param_count_mismatch, output_overlaps_input.
///
/// The output overlap check is conservative: it compares byte ranges, from each view's first
/// element to one past its last, so an output interleaved with an input without sharing an
/// element (e.g. Q's and O's heads alternating in one buffer) is rejected too. Inputs may overlap
/// each other (self-attention can pass one buffer as Q, K and V).
///
/// Once validate returns ok, every element offset of every view, and Z * H * Nq * D (at most the
/// output's non-overlapping span), are below 2^48: indexing cannot overflow.
template <KernelConfig Cfg, class OutT>
Status validate(const AttentionProblem& p, const Tensor4<OutT>& out, const void* params,
                std::int64_t param_count) {
  if (p.q.data == nullptr || p.k.data == nullptr || p.v.data == nullptr || out.data == nullptr ||
      params == nullptr) {
    return Status::null_pointer;
  }
  if (p.bias.kind != BiasKind::none &&
      (p.bias.values == nullptr ||
       (p.bias.kind == BiasKind::relative_table && p.bias.index == nullptr))) {
    return Status::null_pointer;
  }
  if (p.mask.windows != 0 && p.mask.data == nullptr) return Status::null_pointer;

  const std::int64_t z = p.q.batch, h = p.q.heads, nq = p.q.seq, nkv = p.k.seq, d = p.q.dim;
  if (z <= 0 || h <= 0 || nq <= 0 || nkv <= 0 || d <= 0) return Status::empty_problem;
  if (!is_supported_head_dim(d)) return Status::unsupported_head_dim;
  const auto same_zhd = [&](auto const& t) { return t.batch == z && t.heads == h && t.dim == d; };
  if (!same_zhd(p.k) || !same_zhd(p.v) || !same_zhd(out) || p.v.seq != nkv || out.seq != nq) {
    return Status::shape_mismatch;
  }
  if (detail::has_negative_stride(p.q) || detail::has_negative_stride(p.k) ||
      detail::has_negative_stride(p.v) || detail::has_negative_stride(out) ||
      !detail::is_non_overlapping(out)) {
    return Status::invalid_stride;
  }
  const auto q_bytes = detail::tensor_range(p.q), k_bytes = detail::tensor_range(p.k),
             v_bytes = detail::tensor_range(p.v), out_bytes = detail::tensor_range(out);
  if (!q_bytes || !k_bytes || !v_bytes || !out_bytes) return Status::invalid_stride;

  detail::ByteRange bias_bytes, index_bytes, mask_bytes;
  Status s = detail::check_bias_layout(p.bias, h, nq, nkv, &bias_bytes, &index_bytes);
  if (s != Status::ok) return s;
  s = detail::check_mask_layout(p.mask, z, nq, nkv, &mask_bytes);
  if (s != Status::ok) return s;
  if (nkv > Cfg::Softmax::max_keys) return Status::sequence_too_long;
  if (param_count != 1 && param_count != h) return Status::param_count_mismatch;
  if (detail::overlaps_any(*out_bytes,
                           {*q_bytes, *k_bytes, *v_bytes, bias_bytes, index_bytes, mask_bytes})) {
    return Status::output_overlaps_input;
  }
  return Status::ok;
}

/// Checks the relative-position index map (host memory) against the table size: null_pointer
/// without a map, bias_shape_mismatch for negative extents or a map above detail::kMaxViewBytes,
/// bias_index_out_of_range for an index outside [0, table_size).
inline Status validate_bias_indices(const AttentionBias& b) {
  if (b.kind != BiasKind::relative_table) return Status::ok;
  if (b.index == nullptr) return Status::null_pointer;
  if (b.rows < 0 || b.cols < 0) return Status::bias_shape_mismatch;
  if (b.rows == 0 || b.cols == 0) return Status::ok;  // no entries
  if (!detail::array_range(b.index, sizeof(*b.index), {b.rows, b.cols})) {
    return Status::bias_shape_mismatch;
  }
  const std::int64_t entries = b.rows * b.cols;  // exact: checked by array_range
  for (std::int64_t i = 0; i < entries; ++i) {
    if (b.index[i] < 0 || b.index[i] >= b.table_size) return Status::bias_index_out_of_range;
  }
  return Status::ok;
}

}  // namespace qflash
