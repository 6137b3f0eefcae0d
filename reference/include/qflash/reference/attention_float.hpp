// SPDX-License-Identifier: Apache-2.0
/// @file
/// The float oracle: softmax attention in double precision on float inputs, with Eigen.
///
/// It is the accuracy target of every integer configuration (compared by SQNR, never for
/// equality). It takes the same bias layouts and the same mask as the integer entry points, so one
/// problem description serves both: the bias in nats (FloatBias), the mask as an AttentionMask.
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <limits>

#include "qflash/attention/problem.hpp"
#include "qflash/attention/validate.hpp"
#include "qflash/core/dyadic.hpp"
#include "qflash/core/status.hpp"
#include "qflash/reference/quantize.hpp"

namespace qflash::reference {

/// The most elements of any one double buffer that `attention_float` allocates per (z, h): K and
/// V as [Nkv, D], a block of up to 256 queries and its result as [min(Nq, 256), D], its scores and
/// weights as [min(Nq, 256), Nkv]. 2^28 elements: 2 GiB of double per buffer, at most 12 GiB for
/// the six together. It admits Nkv up to 2^20 keys for any Nq (more when Nq < 256), far above the
/// max_keys of the presets' softmax (about 2^16 for Pmax = 255, 2^17 for Pmax = 127), with D up to
/// 2^28 / max(Nkv, min(Nq, 256)). A view with a zero stride spans few bytes however long it is:
/// this bound, not the byte bound of the views, caps what the oracle allocates.
inline constexpr std::int64_t kMaxFloatOracleElements = std::int64_t{1} << 28;

/// Checks the arguments of `attention_float` in the order `qflash::validate` uses, with the same
/// Status codes and the same layout checks: null_pointer, empty_problem, shape_mismatch,
/// invalid_stride (negative strides, an output whose elements overlap, a view spanning more than
/// qflash::detail::kMaxViewBytes), bias_shape_mismatch, mask_shape_mismatch (also for layouts
/// above that bound), sequence_too_long (Nkv * D, min(Nq, 256) * D or min(Nq, 256) * Nkv above
/// kMaxFloatOracleElements: the oracle's buffers would not fit), invalid_scale (softmax_scale not
/// finite and positive), output_overlaps_input (the output's byte range meets that of Q, K, V,
/// the bias values or index map, or the mask: conservative, as in `validate`),
/// bias_index_out_of_range. Unlike the integer entry points, any head dim D >= 1 is accepted and
/// the number of keys is bounded only through kMaxFloatOracleElements.
inline Status validate_float_attention(const Tensor4<const float>& q, const Tensor4<const float>& k,
                                       const Tensor4<const float>& v, const FloatBias& bias,
                                       const AttentionMask& mask, double softmax_scale,
                                       const Tensor4<double>& out) {
  if (q.data == nullptr || k.data == nullptr || v.data == nullptr || out.data == nullptr) {
    return Status::null_pointer;
  }
  if (bias.kind != BiasKind::none &&
      (bias.values == nullptr ||
       (bias.kind == BiasKind::relative_table && bias.index == nullptr))) {
    return Status::null_pointer;
  }
  if (mask.windows != 0 && mask.data == nullptr) return Status::null_pointer;

  const std::int64_t z = q.batch, h = q.heads, nq = q.seq, nkv = k.seq, d = q.dim;
  if (z <= 0 || h <= 0 || nq <= 0 || nkv <= 0 || d <= 0) return Status::empty_problem;
  const auto same_zhd = [&](auto const& t) { return t.batch == z && t.heads == h && t.dim == d; };
  if (!same_zhd(k) || !same_zhd(v) || !same_zhd(out) || v.seq != nkv || out.seq != nq) {
    return Status::shape_mismatch;
  }
  if (qflash::detail::has_negative_stride(q) || qflash::detail::has_negative_stride(k) ||
      qflash::detail::has_negative_stride(v) || qflash::detail::has_negative_stride(out) ||
      !qflash::detail::is_non_overlapping(out)) {
    return Status::invalid_stride;
  }
  const auto q_bytes = qflash::detail::tensor_range(q), k_bytes = qflash::detail::tensor_range(k),
             v_bytes = qflash::detail::tensor_range(v),
             out_bytes = qflash::detail::tensor_range(out);
  if (!q_bytes || !k_bytes || !v_bytes || !out_bytes) return Status::invalid_stride;

  qflash::detail::ByteRange bias_bytes, index_bytes, mask_bytes;
  Status s = qflash::detail::check_bias_layout(bias, h, nq, nkv, &bias_bytes, &index_bytes);
  if (s != Status::ok) return s;
  s = qflash::detail::check_mask_layout(mask, z, nq, nkv, &mask_bytes);
  if (s != Status::ok) return s;
  const std::int64_t block_rows = nq < 256 ? nq : 256;  // attention_float's query block
  constexpr std::int64_t kLimit = kMaxFloatOracleElements;
  if (nkv > kLimit / d || block_rows > kLimit / d || nkv > kLimit / block_rows) {
    return Status::sequence_too_long;
  }
  if (!is_positive_finite(softmax_scale)) return Status::invalid_scale;
  if (qflash::detail::overlaps_any(
          *out_bytes, {*q_bytes, *k_bytes, *v_bytes, bias_bytes, index_bytes, mask_bytes})) {
    return Status::output_overlaps_input;
  }
  return validate_bias_indices(bias.layout());
}

/// Exact softmax attention in double precision:
///   out[z, h, i, :] = sum_j softmax_j(softmax_scale * q_i . k_j + bias(h, i, j)) v_j
/// over the keys j visible to query i under `mask` (nonzero = visible; batch element z uses
/// window z % mask.windows; no mask when windows == 0). Units: the bias is in nats, added to the
/// scaled logits. Every product, sum and exp is in double; the softmax subtracts the row maximum.
/// A row with no visible key (or whose visible logits are all -inf) outputs 0, the integer
/// kernels' convention. Non-finite inputs propagate; hidden keys are never read:
///  - a NaN or infinity in q_i, or in k_j of a visible key j, makes the logit undefined (NaN), and
///    so does a NaN bias; an undefined or +inf logit makes the whole output row i NaN;
///  - a -inf bias hides the key, as the mask does;
///  - a NaN or infinity in v_j[c] of a visible key j makes out_i[c] NaN or infinite.
/// Q, K, V and O may have any strides (O must not overlap itself); Nq may differ from Nkv.
/// Returns the Status of `validate_float_attention` and writes nothing unless it is Status::ok.
inline Status attention_float(const Tensor4<const float>& q, const Tensor4<const float>& k,
                              const Tensor4<const float>& v, const FloatBias& bias,
                              const AttentionMask& mask, double softmax_scale,
                              const Tensor4<double>& out) {
  const Status status = validate_float_attention(q, k, v, bias, mask, softmax_scale, out);
  if (status != Status::ok) return status;

  using Matrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const std::int64_t nq = q.seq, nkv = k.seq, dim = q.dim;
  // Query rows are processed in blocks so that the score matrix stays small for long sequences.
  constexpr std::int64_t kRowBlock = 256;
  constexpr double kInfinity = std::numeric_limits<double>::infinity();
  constexpr double kMinusInfinity = -kInfinity;
  constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  Matrix keys(nkv, dim), values(nkv, dim), queries, scores, weights, result;

  for (std::int64_t z = 0; z < q.batch; ++z) {
    for (std::int64_t h = 0; h < q.heads; ++h) {
      for (std::int64_t j = 0; j < nkv; ++j) {
        for (std::int64_t c = 0; c < dim; ++c) {
          keys(j, c) = static_cast<double>(k(z, h, j, c));
          values(j, c) = static_cast<double>(v(z, h, j, c));
        }
      }
      const bool values_finite = values.allFinite();
      for (std::int64_t row0 = 0; row0 < nq; row0 += kRowBlock) {
        const std::int64_t rows = nq - row0 < kRowBlock ? nq - row0 : kRowBlock;
        queries.resize(rows, dim);
        for (std::int64_t i = 0; i < rows; ++i) {
          for (std::int64_t c = 0; c < dim; ++c) {
            queries(i, c) = static_cast<double>(q(z, h, row0 + i, c));
          }
        }
        scores.noalias() = queries * keys.transpose();
        weights.resize(rows, nkv);
        for (std::int64_t i = 0; i < rows; ++i) {
          const std::int64_t row = row0 + i;
          double row_max = kMinusInfinity;
          bool undefined = false;  // a NaN or +inf logit: no softmax exists
          for (std::int64_t j = 0; j < nkv; ++j) {
            double logit = kMinusInfinity;  // a hidden key
            if (mask.visible(z, row, j)) {
              // In double, products and sums of finite floats cannot overflow, so a non-finite
              // q_i . k_j means that q_i or k_j holds a NaN or an infinity.
              const double dot = scores(i, j);
              logit = std::isfinite(dot)
                          ? softmax_scale * dot + static_cast<double>(bias.at(h, row, j))
                          : kNaN;
            }
            scores(i, j) = logit;
            // Comparisons with NaN are false: test for it, or max() would skip it.
            if (std::isnan(logit) || logit == kInfinity) undefined = true;
            if (logit > row_max) row_max = logit;
          }
          if (undefined) {
            weights.row(i).setConstant(kNaN);
            continue;
          }
          double row_sum = 0.0;
          for (std::int64_t j = 0; j < nkv; ++j) {
            // exp(-inf - finite) is exactly 0: hidden keys get no weight.
            const double w = row_max == kMinusInfinity ? 0.0 : std::exp(scores(i, j) - row_max);
            weights(i, j) = w;
            row_sum += w;
          }
          if (row_sum > 0.0) weights.row(i) /= row_sum;
        }
        if (values_finite) {
          result.noalias() = weights * values;
        } else {
          // The product would multiply hidden keys' zero weights by their values (0 * inf and
          // 0 * NaN are NaN): sum over the keys that are not hidden (logit above -inf) only.
          result.setZero(rows, dim);
          for (std::int64_t i = 0; i < rows; ++i) {
            for (std::int64_t j = 0; j < nkv; ++j) {
              if (scores(i, j) != kMinusInfinity) result.row(i) += weights(i, j) * values.row(j);
            }
          }
        }
        for (std::int64_t i = 0; i < rows; ++i) {
          for (std::int64_t c = 0; c < dim; ++c) out(z, h, row0 + i, c) = result(i, c);
        }
      }
    }
  }
  return Status::ok;
}

}  // namespace qflash::reference
