// SPDX-License-Identifier: Apache-2.0
/// @file
/// Argument validation shared by the host reference and the CUDA launcher: every problem that
/// can be seen without reading tensor data is reported as a named `Status` before anything runs.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>

#include "qflash/attention/problem.hpp"
#include "qflash/core/concepts.hpp"
#include "qflash/core/status.hpp"

namespace qflash {

namespace detail {

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

}  // namespace detail

/// Checks shapes, strides, bias, mask, sequence bound and parameter count of one call.
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

  if (p.bias.kind != BiasKind::none) {
    const AttentionBias& b = p.bias;
    if ((b.heads != 1 && b.heads != h) || b.rows != nq || b.cols != nkv) {
      return Status::bias_shape_mismatch;
    }
    if (b.kind == BiasKind::relative_table &&
        (b.table_size <= 0 || b.stride_head < 0 || b.stride_entry < 0)) {
      return Status::bias_shape_mismatch;
    }
  }
  if (p.mask.windows != 0) {
    const AttentionMask& m = p.mask;
    if (m.windows < 0 || m.rows != nq || m.cols != nkv || z % m.windows != 0) {
      return Status::mask_shape_mismatch;
    }
  }
  if (nkv > Cfg::Softmax::max_keys) return Status::sequence_too_long;
  if (param_count != 1 && param_count != h) return Status::param_count_mismatch;
  return Status::ok;
}

/// Checks the relative-position index map (host memory) against the table size.
inline Status validate_bias_indices(const AttentionBias& b) {
  if (b.kind != BiasKind::relative_table) return Status::ok;
  for (std::int64_t i = 0; i < b.rows * b.cols; ++i) {
    if (b.index[i] < 0 || b.index[i] >= b.table_size) return Status::bias_index_out_of_range;
  }
  return Status::ok;
}

}  // namespace qflash
