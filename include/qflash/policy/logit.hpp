// SPDX-License-Identifier: Apache-2.0
/// @file
/// Logit policies: an exact Q K^T score (plus an optional additive bias) to the integer domain
/// in which the softmax runs.
///
/// Bias values always arrive in one format, Q16 octaves (log2 units times 2^16, i.e.
/// round(bias_in_nats * log2(e) * 2^16)); each policy converts them into its own domain and
/// saturates them at +-2^28 there, so that every logit t satisfies |t| <= 2^29 and every distance
/// m - t below a row maximum fits in int32 (<= 2^30).
#pragma once

#include <cstdint>

#include "qflash/core/config.hpp"
#include "qflash/core/dyadic.hpp"
#include "qflash/core/fixed_point.hpp"
#include "qflash/core/int_traits.hpp"
#include "qflash/core/status.hpp"

namespace qflash {

/// Fraction bits of the bias format shared by all logit policies (Q16 octaves).
inline constexpr int kBiasFractionBits = 16;
/// Saturation bound of a converted bias and of a scaled score, in the policy's own units.
inline constexpr std::int32_t kLogitHalfRange = std::int32_t{1} << 28;
/// Largest |Q K^T| for int8 inputs: 128 * 128 per head-dim element.
QFLASH_HOST_DEVICE constexpr std::int64_t max_abs_score(int head_dim) noexcept {
  return std::int64_t{128} * 128 * head_dim;
}

/// Scores into Q(F) octaves: t = sat(round(S * M / 2^shift)) + bias, M / 2^shift ~ sm_scale * 2^F.
///
/// - In: S, exact int32 Q K^T (|S| <= 2^14 * D); bias in Q16 octaves.
/// - Params: M in [2^30, 2^31), shift in [0, 62], from `calibrate(sm_scale)` where
///   sm_scale = log2(e) * softmax_scale * s_q * s_k (octaves per Q K^T unit).
/// - Out: t in Q(F) octaves. The scaled score saturates at +-2^28 (4096 octaves at F = 16: a
///   probability ratio of 2^-4096, far below any representable P), so |t| <= 2^29 for every
///   int8 input and every representable scale. The product S * M < 2^52 is formed in int64;
///   rounding half away from zero. One multiply per score, like the paper's exp_M multiply.
/// - Because every tile lands in the same domain, per-head scales and tile-local maxima compose.
template <int F = 16>
struct Log2Logit {
  static_assert(F >= 8 && F <= 20, "Log2Logit: F (fraction bits) must be in [8, 20]");
  struct Params {
    std::int32_t multiplier;  ///< in [2^30, 2^31)
    std::int32_t shift;       ///< in [0, 62]
    friend constexpr bool operator==(const Params&, const Params&) = default;
  };
  static constexpr int fraction_bits = F;

  /// A Q16-octave bias in Q(F), saturated at +-2^28.
  QFLASH_HOST_DEVICE static constexpr std::int32_t convert_bias(std::int32_t bias) noexcept {
    if constexpr (F >= kBiasFractionBits) {
      constexpr std::int32_t limit = kLogitHalfRange >> (F - kBiasFractionBits);
      return clamp(bias, -limit, limit) * (std::int32_t{1} << (F - kBiasFractionBits));
    } else {
      return clamp(round_shift(bias, kBiasFractionBits - F), -kLogitHalfRange, kLogitHalfRange);
    }
  }

  QFLASH_HOST_DEVICE static constexpr std::int32_t apply(std::int32_t score, std::int32_t bias,
                                                         const Params& prm) noexcept {
    const std::int64_t scaled = mul_round_shift(score, prm.multiplier, prm.shift);
    const auto saturated =
        static_cast<std::int32_t>(clamp<std::int64_t>(scaled, -kLogitHalfRange, kLogitHalfRange));
    return saturated + convert_bias(bias);
  }

  /// M and shift for sm_scale. Representable: sm_scale * 2^F in [2^-32, 2^31) (shift in
  /// [0, 62]); outside that range the result is Status::scale_out_of_range.
  QFLASH_HOST_DEVICE static constexpr Status calibrate(double sm_scale, int /*head_dim*/,
                                                       Params& out) noexcept {
    if (!is_positive_finite(sm_scale)) return Status::invalid_scale;
    const double per_unit = sm_scale * static_cast<double>(std::int32_t{1} << F);
    if (!is_positive_finite(per_unit)) return Status::scale_out_of_range;
    const Dyadic d = to_dyadic(per_unit);
    if (d.shift < 0 || d.shift > 62) return Status::scale_out_of_range;
    out.multiplier = d.multiplier;
    out.shift = d.shift;
    return Status::ok;
  }
};

/// Raw Q K^T units, as the published QFlash kernel: t = S + round(bias * R / 2^16).
///
/// The bias conversion uses R = round(1 / sm_scale) (units per octave), the same R as
/// `PaperShiftExp2`; the converted bias saturates at +-2^28 units. |t| <= 2^21 + 2^28.
struct PaperLogit {
  struct Params {
    std::int32_t r;  ///< round(1 / sm_scale), in [1, 2^24]
    friend constexpr bool operator==(const Params&, const Params&) = default;
  };

  QFLASH_HOST_DEVICE static constexpr std::int32_t apply(std::int32_t score, std::int32_t bias,
                                                         const Params& prm) noexcept {
    const std::int64_t converted = mul_round_shift(bias, prm.r, kBiasFractionBits);
    return score + static_cast<std::int32_t>(
                       clamp<std::int64_t>(converted, -kLogitHalfRange, kLogitHalfRange));
  }

  QFLASH_HOST_DEVICE static constexpr Status calibrate(double sm_scale, int /*head_dim*/,
                                                       Params& out) noexcept {
    if (!is_positive_finite(sm_scale)) return Status::invalid_scale;
    const double inverse = 1.0 / sm_scale;
    if (!(inverse >= 0.5) || !(inverse < static_cast<double>(std::int32_t{1} << 24) + 0.5)) {
      return Status::scale_out_of_range;
    }
    out.r = static_cast<std::int32_t>(round_to_int64(inverse));
    return Status::ok;
  }
};

}  // namespace qflash
