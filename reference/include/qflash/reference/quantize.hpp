// SPDX-License-Identifier: Apache-2.0
/// @file
/// The float -> integer conventions of qflash: symmetric int8 scales, quantization of Q/K/V,
/// dequantization, the nats -> Q16-octave bias conversion, and rounding through binary16.
///
/// These are the host definitions that a GPU quantize pass must reproduce bit for bit, so every
/// function states its arithmetic exactly: which operations are float (IEEE binary32, round to
/// nearest even) and which are double, and how the result is rounded and clamped.
#pragma once

#include <cmath>
#include <concepts>
#include <cstdint>
#include <limits>
#include <span>
#include <utility>
#include <vector>

#include "qflash/attention/problem.hpp"
#include "qflash/attention/validate.hpp"
#include "qflash/core/dyadic.hpp"
#include "qflash/core/float16.hpp"
#include "qflash/core/int8_quantize.hpp"
#include "qflash/core/int_traits.hpp"
#include "qflash/core/status.hpp"
#include "qflash/policy/calibrate.hpp"
#include "qflash/policy/logit.hpp"

namespace qflash::reference {

// ---------------------------------------------------------------------------------------------
// Scales
// ---------------------------------------------------------------------------------------------

/// The int8 code limit and the scale of a tensor: qflash::kInt8Limit and qflash::symmetric_scale
/// (core/int8_quantize.hpp, shared with the device quantize pass).
using qflash::kInt8Limit;
using qflash::symmetric_scale;

/// max |x| over every element of `x` (binary32, exact). NaN elements are ignored; 0 for an empty
/// tensor (an extent of 0 or below). NaN, which no tensor yields otherwise, for a view that is not
/// read: a null pointer, a negative stride, or a span above qflash::detail::kMaxViewBytes (or past
/// int64), as `quantize` checks. symmetric_scale(NaN) is NaN, which `quantize` rejects with
/// Status::invalid_scale.
inline float amax(const Tensor4<const float>& x) noexcept {
  if (x.batch <= 0 || x.heads <= 0 || x.seq <= 0 || x.dim <= 0) return 0.0f;
  if (x.data == nullptr || !qflash::detail::tensor_range(x)) {
    return std::numeric_limits<float>::quiet_NaN();
  }
  float result = 0.0f;
  for (std::int64_t z = 0; z < x.batch; ++z) {
    for (std::int64_t h = 0; h < x.heads; ++h) {
      for (std::int64_t n = 0; n < x.seq; ++n) {
        for (std::int64_t d = 0; d < x.dim; ++d) {
          const float magnitude = std::fabs(x(z, h, n, d));
          if (magnitude > result) result = magnitude;
        }
      }
    }
  }
  return result;
}

/// max |x| for each head h over z, n and d: H values. NaN elements are ignored. No values (an
/// empty vector, which `quantize` rejects with Status::param_count_mismatch) for an empty tensor
/// (an extent of 0 or below) and for a view that is not read: a null pointer, a negative stride,
/// or a span above qflash::detail::kMaxViewBytes (or past int64), as `quantize` checks, and H
/// floats that would exceed that bound themselves (a zero head stride).
inline std::vector<float> amax_per_head(const Tensor4<const float>& x) {
  if (x.data == nullptr || !qflash::detail::tensor_range(x) ||
      !qflash::detail::array_range(nullptr, sizeof(float), {x.heads})) {
    return {};
  }
  std::vector<float> result(static_cast<std::size_t>(x.heads), 0.0f);
  for (std::int64_t z = 0; z < x.batch; ++z) {
    for (std::int64_t h = 0; h < x.heads; ++h) {
      float& head_max = result[static_cast<std::size_t>(h)];
      for (std::int64_t n = 0; n < x.seq; ++n) {
        for (std::int64_t d = 0; d < x.dim; ++d) {
          const float magnitude = std::fabs(x(z, h, n, d));
          if (magnitude > head_max) head_max = magnitude;
        }
      }
    }
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// Quantize / dequantize
// ---------------------------------------------------------------------------------------------

/// One int8 code: qflash::quantize_value (core/int8_quantize.hpp, shared with the device).
using qflash::quantize_value;

namespace detail {

/// Same Z, H, N and D.
template <class A, class B>
bool same_extents(const Tensor4<A>& a, const Tensor4<B>& b) noexcept {
  return a.batch == b.batch && a.heads == b.heads && a.seq == b.seq && a.dim == b.dim;
}

/// The bytes [data, data + size_bytes) of a contiguous array (a span addresses real memory, so
/// this neither overflows nor wraps).
template <class T>
qflash::detail::ByteRange span_range(std::span<T> s) noexcept {
  const auto begin = reinterpret_cast<std::uintptr_t>(s.data());
  return qflash::detail::ByteRange{begin, begin + s.size_bytes()};
}

/// Checks shared by quantize and dequantize, with the Status codes and view checks of
/// qflash::validate, in this order: null_pointer, empty_problem, shape_mismatch, invalid_stride
/// (a negative stride, an output whose elements overlap, or an input or output view spanning more
/// than qflash::detail::kMaxViewBytes or past int64), param_count_mismatch, invalid_scale,
/// output_overlaps_input (the output's byte range meets the input's or the scales': conservative,
/// as in validate). Once it returns ok, every element offset of both views is exact in int64.
template <class In, class Out>
Status validate_elementwise(const Tensor4<In>& in, std::span<const float> scales,
                            const Tensor4<Out>& out) {
  if (in.data == nullptr || out.data == nullptr) return Status::null_pointer;
  if (in.batch <= 0 || in.heads <= 0 || in.seq <= 0 || in.dim <= 0) return Status::empty_problem;
  if (!same_extents(in, out)) return Status::shape_mismatch;
  if (qflash::detail::has_negative_stride(in) || qflash::detail::has_negative_stride(out) ||
      !qflash::detail::is_non_overlapping(out)) {
    return Status::invalid_stride;
  }
  const auto in_bytes = qflash::detail::tensor_range(in);
  const auto out_bytes = qflash::detail::tensor_range(out);
  if (!in_bytes || !out_bytes) return Status::invalid_stride;
  if (scales.size() != 1 && scales.size() != static_cast<std::size_t>(in.heads)) {
    return Status::param_count_mismatch;
  }
  for (const float s : scales) {
    if (!is_positive_finite(static_cast<double>(s))) return Status::invalid_scale;
  }
  if (qflash::detail::overlaps_any(*out_bytes, {*in_bytes, span_range(scales)})) {
    return Status::output_overlaps_input;
  }
  return Status::ok;
}

}  // namespace detail

/// Quantizes `x` into `out` with one scale per tensor (scales.size() == 1) or per head
/// (scales.size() == H): out = quantize_value(x, scale of the element's head).
/// Returns null_pointer, empty_problem, shape_mismatch (extents differ), invalid_stride (negative
/// strides, an overlapping output, or a view spanning more than qflash::detail::kMaxViewBytes),
/// param_count_mismatch, invalid_scale (a scale that is not finite and positive), or
/// output_overlaps_input (`out` shares a byte with `x` or `scales`); writes nothing unless it
/// returns Status::ok.
inline Status quantize(const Tensor4<const float>& x, std::span<const float> scales,
                       const Tensor4<std::int8_t>& out) {
  const Status s = detail::validate_elementwise(x, scales, out);
  if (s != Status::ok) return s;
  for (std::int64_t z = 0; z < x.batch; ++z) {
    for (std::int64_t h = 0; h < x.heads; ++h) {
      const float scale = scales[scales.size() == 1 ? 0 : static_cast<std::size_t>(h)];
      for (std::int64_t n = 0; n < x.seq; ++n) {
        for (std::int64_t d = 0; d < x.dim; ++d)
          out(z, h, n, d) = quantize_value(x(z, h, n, d), scale);
      }
    }
  }
  return Status::ok;
}

/// The real values of int8 codes: out = scale * code, the product of a binary32 scale and a small
/// integer formed exactly in double and rounded once to OutT (float: to nearest even, which equals
/// a binary32 multiply; double: exact). Scales: 1 or H, as for `quantize`; same Status codes.
template <class OutT>
requires std::same_as<OutT, float> || std::same_as<OutT, double> Status
dequantize(const Tensor4<const std::int8_t>& codes, std::span<const float> scales,
           const Tensor4<OutT>& out) {
  const Status s = detail::validate_elementwise(codes, scales, out);
  if (s != Status::ok) return s;
  for (std::int64_t z = 0; z < codes.batch; ++z) {
    for (std::int64_t h = 0; h < codes.heads; ++h) {
      const double scale =
          static_cast<double>(scales[scales.size() == 1 ? 0 : static_cast<std::size_t>(h)]);
      for (std::int64_t n = 0; n < codes.seq; ++n) {
        for (std::int64_t d = 0; d < codes.dim; ++d) {
          out(z, h, n, d) = static_cast<OutT>(scale * static_cast<double>(codes(z, h, n, d)));
        }
      }
    }
  }
  return Status::ok;
}

/// Real values of a contiguous array of integer outputs at one scale: scale * value, in double
/// (exact for |value| < 2^53 up to the one rounding of the product).
template <std::integral IntT>
std::vector<double> dequantize(std::span<const IntT> values, double scale) {
  std::vector<double> result(values.size());
  for (std::size_t i = 0; i < values.size(); ++i) {
    result[i] = scale * static_cast<double>(values[i]);
  }
  return result;
}

/// Real values of binary16 outputs (the DequantizeFloat16 policy's), exact.
inline std::vector<double> dequantize(std::span<const Float16> values) {
  std::vector<double> result(values.size());
  for (std::size_t i = 0; i < values.size(); ++i) {
    result[i] = static_cast<double>(half_bits_to_float(values[i].bits));
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// Bias
// ---------------------------------------------------------------------------------------------

/// An additive attention bias in natural-log units (nats, added to the logits before the
/// softmax): the float counterpart of `qflash::AttentionBias`, with the same layouts.
/// - dense: values[(h * rows + i) * cols + j], contiguous [heads, Nq, Nkv].
/// - relative_table: values[h * stride_head + index[i * cols + j] * stride_entry] (Swin).
/// `heads` is H, or 1 to broadcast over heads. Shared by every batch element and window.
using FloatBias = BiasView<float>;

/// A bias in nats -> Q16 octaves (qflash::bias_to_q16_octaves: round half away from zero of
/// nats * log2(e) * 65536, saturated at +-2^28, NaN -> 0; the same function converts on the
/// device).
inline std::int32_t quantize_bias(float nats) noexcept { return bias_to_q16_octaves(nats); }

/// Element-wise `quantize_bias` of a contiguous array (a dense [heads, Nq, Nkv] bias, or one
/// contiguous relative-position table). Returns shape_mismatch when the sizes differ, and
/// output_overlaps_input when `q16` shares a byte with `nats` (in place included); writes nothing
/// unless it returns Status::ok.
inline Status quantize_bias(std::span<const float> nats, std::span<std::int32_t> q16) {
  if (nats.size() != q16.size()) return Status::shape_mismatch;
  if (detail::span_range(q16).intersects(detail::span_range(nats))) {
    return Status::output_overlaps_input;
  }
  for (std::size_t i = 0; i < nats.size(); ++i) q16[i] = quantize_bias(nats[i]);
  return Status::ok;
}

/// An integer bias that owns its values: `view()` is the AttentionBias to pass to an integer
/// attention call (valid while this object lives and is not modified; the relative-table `index`
/// pointer is borrowed from the FloatBias it came from).
class QuantizedBias {
 public:
  QuantizedBias() = default;

  /// The AttentionBias over the owned values (kind none for a default-constructed object).
  AttentionBias view() const noexcept {
    AttentionBias b = layout_;
    b.values = values_.empty() ? nullptr : values_.data();
    return b;
  }
  /// The Q16-octave values: dense [heads, Nq, Nkv], or a contiguous [heads, table_size] table.
  std::span<const std::int32_t> values() const noexcept { return values_; }

 private:
  friend Status quantize_bias(const FloatBias& bias, QuantizedBias& out);
  std::vector<std::int32_t> values_;
  AttentionBias layout_{};
};

/// Converts a dense or relative-table FloatBias to Q16 octaves. A dense bias keeps its layout; a
/// relative table is gathered into a contiguous [heads, table_size] table (stride_head =
/// table_size, stride_entry = 1) that shares the index map. A `none` bias gives a `none` view.
/// Returns null_pointer, or bias_shape_mismatch for non-positive extents (heads, rows, cols or
/// table_size), a negative table stride, and a layout that fails the size checks of
/// qflash::validate (qflash::detail::check_bias_layout): a dense array, table view or [rows, cols]
/// index map whose element count or largest offset overflows int64 or spans more than
/// qflash::detail::kMaxViewBytes; likewise when the gathered [heads, table_size] int32 table would
/// (a zero table stride repeats entries). Writes nothing on error. Index values are checked where
/// the bias is used.
inline Status quantize_bias(const FloatBias& bias, QuantizedBias& out) {
  if (bias.kind == BiasKind::none) {
    out = QuantizedBias{};
    return Status::ok;
  }
  if (bias.values == nullptr || (bias.kind == BiasKind::relative_table && bias.index == nullptr)) {
    return Status::null_pointer;
  }
  if (bias.heads <= 0 || bias.rows <= 0 || bias.cols <= 0) return Status::bias_shape_mismatch;
  // The layout against itself (H = heads, Nq = rows, Nkv = cols): the checks of validate.
  qflash::detail::ByteRange value_bytes, index_bytes;
  const Status layout = qflash::detail::check_bias_layout(bias, bias.heads, bias.rows, bias.cols,
                                                          &value_bytes, &index_bytes);
  if (layout != Status::ok) return layout;
  // The gathered table (a table view with a zero stride spans fewer bytes than it gathers).
  if (bias.kind == BiasKind::relative_table &&
      !qflash::detail::array_range(nullptr, sizeof(std::int32_t), {bias.heads, bias.table_size})) {
    return Status::bias_shape_mismatch;
  }
  QuantizedBias result;
  result.layout_ = bias.layout();
  if (bias.kind == BiasKind::dense) {
    // Exact, and at most kMaxViewBytes / 4 elements: checked by check_bias_layout.
    const std::int64_t count = bias.heads * bias.rows * bias.cols;
    result.values_.resize(static_cast<std::size_t>(count));
    const Status s = quantize_bias(std::span<const float>(bias.values, result.values_.size()),
                                   std::span<std::int32_t>(result.values_));
    if (s != Status::ok) return s;
  } else {
    result.values_.resize(static_cast<std::size_t>(bias.heads * bias.table_size));
    for (std::int64_t h = 0; h < bias.heads; ++h) {
      for (std::int64_t e = 0; e < bias.table_size; ++e) {
        result.values_[static_cast<std::size_t>(h * bias.table_size + e)] =
            quantize_bias(bias.values[h * bias.stride_head + e * bias.stride_entry]);
      }
    }
    result.layout_.stride_head = bias.table_size;
    result.layout_.stride_entry = 1;
  }
  out = std::move(result);
  return Status::ok;
}

// ---------------------------------------------------------------------------------------------
// binary16
// ---------------------------------------------------------------------------------------------

/// x rounded to the nearest binary16 value (ties to even; beyond 65504 -> +-inf) and back to
/// float: what storing x in an fp16 tensor keeps.
inline float round_through_half(float x) noexcept {
  return half_bits_to_float(float_to_half_bits(x));
}

/// `round_through_half` on every element, in place.
inline void round_through_half(std::span<float> values) noexcept {
  for (float& x : values) x = round_through_half(x);
}

}  // namespace qflash::reference
