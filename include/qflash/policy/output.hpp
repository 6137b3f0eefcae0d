// SPDX-License-Identifier: Apache-2.0
/// @file
/// Output policies: the final normalisation O = acc / l, scaled into the output's quantization.
///
/// The accumulator holds sum_j P_j V_j (V in its int8 units, P in [0, Pmax]) and the row sum l
/// holds sum_j weight_j = sum_j P_j * 2^sum_bits (approximately). The real output is
/// s_v * acc * 2^sum_bits / l, so in units of s_out it is acc * ratio * 2^sum_bits / l with
/// ratio = s_v / s_out. Calibration writes ratio * 2^sum_bits = M * 2^-shift (M in [2^30, 2^31),
/// shift in [0, 31]); the policy then computes one exact integer division:
///   O = saturate(round(acc * M / (l * 2^shift)))
/// Bounds: |acc| < 2^31 and M < 2^31 give |acc * M| < 2^62; l < 2^31 (Nkv within the
/// configuration's bound) and shift <= 31 give l * 2^shift < 2^62. A row with l == 0 (every key
/// masked) outputs 0.
#pragma once

#include <concepts>
#include <cstdint>

#include "qflash/core/config.hpp"
#include "qflash/core/dyadic.hpp"
#include "qflash/core/fixed_point.hpp"
#include "qflash/core/float16.hpp"
#include "qflash/core/int_traits.hpp"
#include "qflash/core/status.hpp"

namespace qflash {

/// Integer output at any scale: s8 (at V's scale or a calibrated one), s16, s32.
/// Rounding: `Mode` (half away from zero by default; the paper truncates toward zero).
template <std::integral OutT, Rounding Mode = Rounding::half_away_from_zero>
struct Requantize {
  using value_type = OutT;
  static constexpr Rounding rounding = Mode;
  struct Params {
    std::int32_t multiplier;  ///< in [2^30, 2^31)
    std::int32_t shift;       ///< in [0, 31]
    friend constexpr bool operator==(const Params&, const Params&) = default;
  };

  /// What one row shares: the divisor l * 2^shift, prepared once (a 64-bit division), and the
  /// multiplier. A row with l <= 0 (no visible key) outputs 0.
  struct Row {
    Reciprocal divisor;
    std::int32_t multiplier;
    bool empty;
  };

  QFLASH_HOST_DEVICE static constexpr Row prepare(std::int64_t row_sum,
                                                  const Params& prm) noexcept {
    if (row_sum <= 0) return Row{Reciprocal{1, 0}, prm.multiplier, true};
    return Row{Reciprocal::of(static_cast<std::uint64_t>(row_sum) << prm.shift), prm.multiplier,
               false};
  }

  /// O = saturate(round(acc * M / (l * 2^shift))): exact, |acc * M| < 2^62.
  QFLASH_HOST_DEVICE static constexpr OutT apply(std::int32_t acc, const Row& row) noexcept {
    if (row.empty) return OutT{0};
    const std::int64_t numerator = static_cast<std::int64_t>(acc) * row.multiplier;
    return saturate_cast<OutT>(row.divisor.divide(numerator, Mode));
  }

  /// One element without a prepared row (the same value as prepare + apply).
  QFLASH_HOST_DEVICE static constexpr OutT apply(std::int32_t acc, std::int64_t row_sum,
                                                 const Params& prm) noexcept {
    return apply(acc, prepare(row_sum, prm));
  }

  /// The default output scale for this type: V's scale for 8-bit outputs, s_v / 2^8 for 16-bit
  /// and s_v / 2^16 for 32-bit ones (|O| <= 128 * 2^16 fits int32).
  QFLASH_HOST_DEVICE static constexpr double default_scale_divisor() noexcept {
    return sizeof(OutT) == 1 ? 1.0 : (sizeof(OutT) == 2 ? 256.0 : 65536.0);
  }

  /// Params for ratio = v_scale / out_scale with `sum_bits` extra fraction bits in l.
  QFLASH_HOST_DEVICE static constexpr Status calibrate(double v_scale, double out_scale,
                                                       int sum_bits, Params& out) noexcept {
    if (!is_positive_finite(v_scale) || !is_positive_finite(out_scale)) {
      return Status::invalid_scale;
    }
    const double ratio = v_scale / out_scale * static_cast<double>(std::int64_t{1} << sum_bits);
    if (!is_positive_finite(ratio)) return Status::scale_out_of_range;
    const Dyadic d = to_dyadic(ratio);
    if (d.shift < 0 || d.shift > 31) return Status::scale_out_of_range;
    out.multiplier = d.multiplier;
    out.shift = d.shift;
    return Status::ok;
  }
};

/// Dequantized binary16 output: the s32 result at scale s_v / 2^16, then one float multiply by
/// that scale and one round-to-nearest-even conversion. The only floating-point instructions of
/// any qflash kernel are these three (int -> float exact since |O| <= 2^23, fmul_rn, f2h_rn).
template <Rounding Mode = Rounding::half_away_from_zero>
struct DequantizeFloat16 {
  using value_type = Float16;
  using Integer = Requantize<std::int32_t, Mode>;
  static constexpr Rounding rounding = Mode;
  static constexpr double integer_scale_divisor = 65536.0;
  struct Params {
    typename Integer::Params integer;
    float scale;  ///< s_v / 2^16
    friend constexpr bool operator==(const Params&, const Params&) = default;
  };

  struct Row {
    typename Integer::Row integer;
    float scale;
  };

  QFLASH_HOST_DEVICE static constexpr Row prepare(std::int64_t row_sum,
                                                  const Params& prm) noexcept {
    return Row{Integer::prepare(row_sum, prm.integer), prm.scale};
  }

  QFLASH_HOST_DEVICE static constexpr Float16 apply(std::int32_t acc, std::int64_t row_sum,
                                                    const Params& prm) noexcept {
    return apply(acc, prepare(row_sum, prm));
  }

  QFLASH_HOST_DEVICE static constexpr Float16 apply(std::int32_t acc, const Row& row) noexcept {
    const std::int32_t value = Integer::apply(acc, row.integer);
#if defined(__CUDA_ARCH__)
    const float product = __fmul_rn(__int2float_rn(value), row.scale);
#else
    const float product = static_cast<float>(value) * row.scale;
#endif
    return Float16{float_to_half_bits(product)};
  }

  QFLASH_HOST_DEVICE static constexpr double default_scale_divisor() noexcept {
    return integer_scale_divisor;
  }

  /// `out_scale` is unused: the float output carries its own scale.
  QFLASH_HOST_DEVICE static constexpr Status calibrate(double v_scale, double /*out_scale*/,
                                                       int sum_bits, Params& out) noexcept {
    const double integer_scale = v_scale / integer_scale_divisor;
    Params result{};
    const Status s = Integer::calibrate(v_scale, integer_scale, sum_bits, result.integer);
    if (s != Status::ok) return s;
    result.scale = static_cast<float>(integer_scale);
    if (!is_positive_finite(static_cast<double>(result.scale))) return Status::scale_out_of_range;
    out = result;  // written only on success
    return Status::ok;
  }
};

}  // namespace qflash
