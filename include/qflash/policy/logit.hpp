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

#include "qflash/core/concepts.hpp"
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

/// log2(e), the factor that turns a natural-log softmax into base 2.
inline constexpr double kLog2e = 1.4426950408889634;

/// A bias in nats -> Q16 octaves, the format of AttentionBias:
/// round_half_away_from_zero((double)nats * log2(e) * 65536), saturated to
/// [-kLogitHalfRange, kLogitHalfRange] = [-2^28, 2^28] (4096 octaves: any saturated bias already
/// drives a probability to 0). -inf gives -2^28 (a saturated, not a masked, key: use a mask to
/// hide keys), +inf gives 2^28, NaN gives 0. The double product rounds once (x 65536 is exact).
/// One definition for the host reference's quantize_bias and device-side conversions.
QFLASH_HOST_DEVICE constexpr std::int32_t bias_to_q16_octaves(float nats) noexcept {
  const double octaves_q16 = static_cast<double>(nats) * kLog2e * 65536.0;
  const auto limit = static_cast<double>(kLogitHalfRange);
  if (octaves_q16 != octaves_q16) return 0;  // NaN
  if (octaves_q16 >= limit) return kLogitHalfRange;
  if (octaves_q16 <= -limit) return -kLogitHalfRange;
  return static_cast<std::int32_t>(round_to_int64(octaves_q16));
}
/// Largest |Q K^T| for int8 inputs: 128 * 128 per head-dim element.
QFLASH_HOST_DEVICE constexpr std::int64_t max_abs_score(int head_dim) noexcept {
  return std::int64_t{128} * 128 * head_dim;
}

namespace detail {

/// A Q16-octave bias saturated at +-2^28 (the one-multiply logits' bias form).
QFLASH_HOST_DEVICE constexpr std::int32_t saturate_bias_q16(std::int32_t bias) noexcept {
  return clamp(bias, -kLogitHalfRange, kLogitHalfRange);
}

/// The multiplier round(sm_scale * 2^exponent) of the one-multiply logits, for a positive
/// finite sm_scale, by exact power-of-two multiplications: logit_range_exceeded from 2^31 - 1/2
/// on, scale_out_of_range where it rounds to 0.
QFLASH_HOST_DEVICE constexpr Status scaled_multiplier(double sm_scale, int exponent,
                                                      std::int32_t& out) noexcept {
  double m = sm_scale;
  for (int i = 0; i < exponent; ++i) m *= 2.0;
  if (!(m < 2147483647.5)) return Status::logit_range_exceeded;
  const std::int64_t rounded = round_to_int64(m);
  if (rounded < 1) return Status::scale_out_of_range;
  out = static_cast<std::int32_t>(rounded);
  return Status::ok;
}

}  // namespace detail

/// Scores into Q(F) octaves with one 32-bit high multiply:
///   t = floor(((sat(S) + L) << a) * M / 2^(32 + c)) + bias,   M * 2^a / 2^(32 + c) ~ sm_scale *
///   2^F
///
/// - In: S, exact int32 Q K^T (|S| <= 2^14 * D); bias in Q16 octaves.
/// - Params (from `calibrate(sm_scale)`, sm_scale = log2(e) * softmax_scale * s_q * s_k octaves
///   per Q K^T unit): the score limit L in [0, 2^22], a pre-shift a that makes (2L << a) < 2^32,
///   the 32-bit multiplier M (full precision: in [2^31, 2^32) unless the scale is tiny) and a
///   post-shift c in [0, 31].
/// - Range: S is clamped to +-L, L = min(2^22, floor(2^28 / (sm_scale * 2^F))), so that the
///   logit domain [0, 2^29] holds 2L units. The clamp is fixed, not relative to the row maximum,
///   so a saturated score would be wrong near the maximum too; `calibrate` therefore requires
///   L >= max_abs_score(D) (no int8 score can saturate) and returns logit_range_exceeded
///   otherwise: sm_scale * 2^F * 2^15 * D <= 2^29, i.e. sm_scale <= 1 / (4 D) octaves per unit
///   at F = 16, a largest possible |logit| of 2^12 octaves (2,839 nats).
/// - Out: t in [0, 2^29] (+ the bias), in Q(F) octaves up to the constant L * sm_scale * 2^F,
///   which every softmax ratio cancels. Rounding: floor (the multiply's discarded low word).
/// - Cost: a clamp, a shift, IMAD.HI and a shift per score -- the paper spends a multiply too.
/// - Because every tile lands in the same domain, per-head scales and tile-local maxima compose.
template <int F = 16>
struct Log2Logit {
  static_assert(F >= 8 && F <= 20, "Log2Logit: F (fraction bits) must be in [8, 20]");
  struct Params {
    std::uint32_t multiplier;  ///< M
    std::int32_t pre_shift;    ///< a in [0, 31]
    std::int32_t post_shift;   ///< c in [0, 31]
    std::int32_t score_limit;  ///< L in [0, 2^22]
    friend constexpr bool operator==(const Params&, const Params&) = default;
  };
  static constexpr int fraction_bits = F;
  static constexpr std::int32_t max_score_limit = std::int32_t{1} << 22;

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
    // clamp(S, -L, L) + L as max(min(S, L) + L, 0): no overflow for any int32 S (min(S, L) + L
    // <= 2L), and two min/max instructions on the GPU (the add folds into one of them).
    const std::int32_t offset = max(min(score, prm.score_limit) + prm.score_limit, 0);
    const std::uint32_t x = static_cast<std::uint32_t>(offset) << prm.pre_shift;  // < 2^32
    const std::uint32_t scaled = mul_high(x, prm.multiplier) >> prm.post_shift;   // <= 2^29
    return static_cast<std::int32_t>(scaled) + convert_bias(bias);
  }

  /// invalid_params unless `prm` lies in the ranges `calibrate` produces for head dim D: shifts
  /// in [0, 31], L in [max_abs_score(D), 2^22] (no score saturates), (2L << a) < 2^32 and a
  /// scaled range floor((2L << a) * M / 2^(32 + c)) <= 2^29 (distances fit int32).
  QFLASH_HOST_DEVICE static constexpr Status validate(const Params& prm, int head_dim) noexcept {
    if (prm.pre_shift < 0 || prm.pre_shift > 31 || prm.post_shift < 0 || prm.post_shift > 31 ||
        head_dim <= 0 || prm.score_limit < max_abs_score(head_dim) ||
        prm.score_limit > max_score_limit) {
      return Status::invalid_params;
    }
    const std::uint64_t span = std::uint64_t{2} * static_cast<std::uint32_t>(prm.score_limit)
                               << prm.pre_shift;
    if (span >> 32 != 0) return Status::invalid_params;
    const std::uint64_t top = (span * prm.multiplier) >> (32 + prm.post_shift);
    return top <= (std::uint64_t{1} << 29) ? Status::ok : Status::invalid_params;
  }

  /// The parameters for sm_scale and head dim D: invalid_scale for zero, negative, NaN or
  /// infinite sm_scale; scale_out_of_range when sm_scale * 2^F is not finite;
  /// logit_range_exceeded when some int8 score (|S| <= 2^14 D) would saturate (see Range).
  QFLASH_HOST_DEVICE static constexpr Status calibrate(double sm_scale, int head_dim,
                                                       Params& out) noexcept {
    if (!is_positive_finite(sm_scale)) return Status::invalid_scale;
    const double per_unit = sm_scale * static_cast<double>(std::int32_t{1} << F);
    if (!is_positive_finite(per_unit)) return Status::scale_out_of_range;
    Params prm{0, 0, 0, max_score_limit};
    if (!(per_unit * static_cast<double>(2 * max_score_limit) <=
          static_cast<double>(2 * kLogitHalfRange))) {
      // floor(2^28 / per_unit) in [0, 2^22); 0 once one unit spans more than 2^28 (every score
      // saturates to the same logit).
      prm.score_limit = per_unit > static_cast<double>(kLogitHalfRange)
                            ? 0
                            : static_cast<std::int32_t>(round_to_int64(
                                  static_cast<double>(kLogitHalfRange) / per_unit - 0.5));
    }
    if (head_dim <= 0 || prm.score_limit < max_abs_score(head_dim)) {
      return Status::logit_range_exceeded;
    }
    int bits = 0;  // bit width of 2L
    while ((std::int64_t{2} * prm.score_limit) >> bits) ++bits;
    prm.pre_shift = 32 - bits;
    const Dyadic d = to_dyadic(per_unit);  // per_unit ~ m * 2^-shift, m in [2^30, 2^31)
    std::uint64_t multiplier = std::uint64_t{2} * static_cast<std::uint32_t>(d.multiplier);
    int post = d.shift + 1 + prm.pre_shift - 32;
    if (post < 0) {  // keep the scaled range inside 32 bits (not reached: L bounds the range)
      multiplier >>= -post;
      post = 0;
    } else if (post > 31) {  // tiny scales: fewer significant bits
      multiplier = post - 31 >= 64 ? 0 : multiplier >> (post - 31);
      post = 31;
    }
    prm.multiplier = static_cast<std::uint32_t>(multiplier);
    prm.post_shift = post;
    out = prm;
    return Status::ok;
  }
};

/// Scores into Q16 octaves with one signed 32-bit high multiply, no clamp:
///   t = floor((S << a) * M / 2^32) + bias,   M * 2^a / 2^32 ~ sm_scale * 2^16
///
/// - In: S, exact int32 Q K^T (|S| <= 2^14 * D); bias in Q16 octaves (saturated at +-2^28).
/// - Params (from `calibrate`): a pre-shift a, the largest with 2^14 D * 2^a < 2^31 (so S << a
///   cannot overflow: a = 10 at D = 64, 9 at D = 128), and M = round(sm_scale * 2^(48 - a)) in
///   [1, 2^31). M's rounding moves a logit by at most 2^30 * 0.5 / 2^32 = 1/8 of a Q16 unit.
/// - Range: `calibrate` requires |t - bias| <= 2^29 for every int8 score, the range that
///   `Log2Logit` accepts (sm_scale <= 1 / (4 D) octaves per unit), else logit_range_exceeded;
///   so |t| <= 2^29 + 2^28 and every distance below a row maximum is below 2^31.
/// - Rounding: floor (the discarded low word). t is non-decreasing in S, so without a bias the
///   largest logit of a row is the logit of its largest score (one max on raw scores).
/// - Offset form: `apply_offset(S, c)` = t + c for a bias-free score, one IMAD.HI with addend
///   on the GPU after the shift: the in-place kernel adds (headroom - row maximum) there.
struct ScaledLog2Logit {
  struct Params {
    std::int32_t multiplier;  ///< M in [1, 2^31)
    std::int32_t pre_shift;   ///< a in [0, 16]
    friend constexpr bool operator==(const Params&, const Params&) = default;
  };
  static constexpr int fraction_bits = 16;

  /// A Q16-octave bias, saturated at +-2^28.
  QFLASH_HOST_DEVICE static constexpr std::int32_t convert_bias(std::int32_t bias) noexcept {
    return detail::saturate_bias_q16(bias);
  }

  /// floor((S << a) * M / 2^32) + offset. S << a wraps (defined) outside |S| <= 2^14 D.
  QFLASH_HOST_DEVICE static constexpr std::int32_t apply_offset(std::int32_t score,
                                                                std::int32_t offset,
                                                                const Params& prm) noexcept {
    const auto shifted =
        static_cast<std::int32_t>(static_cast<std::uint32_t>(score) << prm.pre_shift);
    return mul_high(shifted, prm.multiplier) + offset;
  }

  QFLASH_HOST_DEVICE static constexpr std::int32_t apply(std::int32_t score, std::int32_t bias,
                                                         const Params& prm) noexcept {
    return apply_offset(score, convert_bias(bias), prm);
  }

  /// The pre-shift for head dim D: the largest a with 2^14 D * 2^a < 2^31.
  QFLASH_HOST_DEVICE static constexpr std::int32_t pre_shift_for(int head_dim) noexcept {
    std::int32_t a = 0;
    while ((max_abs_score(head_dim) << (a + 1)) < (std::int64_t{1} << 31)) ++a;
    return a;
  }

  /// The largest |t - bias| over int8 scores: floor(2^14 D * 2^a * M / 2^32) + 1 (the floor
  /// of a negative product rounds away from zero).
  QFLASH_HOST_DEVICE static constexpr std::int64_t logit_bound(const Params& prm,
                                                               int head_dim) noexcept {
    return ((max_abs_score(head_dim) << prm.pre_shift) * prm.multiplier >> 32) + 1;
  }

  /// invalid_params unless a = pre_shift_for(D), M in [1, 2^31) and |t - bias| <= 2^29.
  QFLASH_HOST_DEVICE static constexpr Status validate(const Params& prm, int head_dim) noexcept {
    if (head_dim <= 0 || head_dim > 1024 || prm.pre_shift != pre_shift_for(head_dim) ||
        prm.multiplier < 1) {
      return Status::invalid_params;
    }
    return logit_bound(prm, head_dim) <= (std::int64_t{1} << 29) ? Status::ok
                                                                 : Status::invalid_params;
  }

  /// invalid_scale for zero, negative, NaN or infinite sm_scale; scale_out_of_range when M
  /// rounds to 0 (sm_scale < 2^-(49 - a): every logit of a row within 1/8 unit of the others is
  /// not what the caller asked for); logit_range_exceeded when some int8 score would leave
  /// |t| <= 2^29.
  QFLASH_HOST_DEVICE static constexpr Status calibrate(double sm_scale, int head_dim,
                                                       Params& out) noexcept {
    if (!is_positive_finite(sm_scale)) return Status::invalid_scale;
    if (head_dim <= 0 || head_dim > 1024) return Status::logit_range_exceeded;
    Params prm{0, pre_shift_for(head_dim)};
    const Status s = detail::scaled_multiplier(sm_scale, 48 - prm.pre_shift, prm.multiplier);
    if (s != Status::ok) return s;
    if (logit_bound(prm, head_dim) > (std::int64_t{1} << 29)) return Status::logit_range_exceeded;
    out = prm;
    return Status::ok;
  }
};

/// A wide logit (LogitTraits::has_wide_form) as the executors keep it: its Q16 floor t, which
/// maxima and frames use, and the 16 fraction bits below t (t_wide = t * 2^16 + fraction).
struct WideLogitParts {
  std::int32_t t;
  std::uint32_t fraction;  ///< in [0, 2^16)
};
/// t_wide split at 2^16 (floor), for |t_wide| < 2^47.
QFLASH_HOST_DEVICE constexpr WideLogitParts split_wide_logit(std::int64_t t_wide) noexcept {
  return {static_cast<std::int32_t>(t_wide >> 16), static_cast<std::uint32_t>(t_wide) & 0xFFFFu};
}
/// reference * 2^16 - t_wide in Q32, from the parts: the distance `Exp::apply_wide` takes
/// (>= -(2^16 - 1) where reference >= t).
QFLASH_HOST_DEVICE constexpr std::int64_t wide_distance(std::int32_t reference,
                                                        const WideLogitParts& x) noexcept {
  return static_cast<std::int64_t>(reference - x.t) * 65536 - x.fraction;
}

/// Scores into Q32 octaves with one 32 x 32 -> 64 multiply-add, no clamp, and their Q16 floor:
///   t_wide = S * M + bias * 2^16,   t = floor(t_wide / 2^16) = floor(S * M / 2^16) + bias,
///   M = round(sm_scale * 2^32)
///
/// - In: S, exact int32 Q K^T (|S| <= 2^14 * D); bias in Q16 octaves (saturated at +-2^28).
/// - Params (from `calibrate`): M in [1, 2^31). M's rounding moves a logit by at most |S| / 2
///   Q32 units, i.e. |S| * 2^-33 octaves (2^-13 at D = 64), and the distance between two
///   logits by |S_i - S_j| * 2^-33 octaves: a relative error of 1 / (2 M) (class comment of
///   reference/accuracy_bound.hpp's model).
/// - Range: `calibrate` requires |t - bias| <= 2^29 for every int8 score, as ScaledLog2Logit;
///   |t_wide| < 2^45 + 2^44 fits int64.
/// - Rounding: none in t_wide; floor in t. Both are non-decreasing in S, so without a bias the
///   largest logit of a row is the logit of its largest score.
/// - Wide form (LogitTraits::has_wide_form): probabilities take t_wide, 16 more fraction bits
///   than t; `apply_wide_offset(S, c)` = S * M + c is one IMAD.WIDE on the GPU, into which the
///   in-place kernel folds (headroom - row frame) * 2^16. Frames and maxima stay in t.
struct WideLog2Logit {
  struct Params {
    std::int32_t multiplier;  ///< M in [1, 2^31)
    friend constexpr bool operator==(const Params&, const Params&) = default;
  };
  static constexpr int fraction_bits = 16;

  /// A Q16-octave bias, saturated at +-2^28.
  QFLASH_HOST_DEVICE static constexpr std::int32_t convert_bias(std::int32_t bias) noexcept {
    return detail::saturate_bias_q16(bias);
  }

  /// S * M + offset (Q32), exact for |S| <= 2^31 and |offset| < 2^62.
  QFLASH_HOST_DEVICE static constexpr std::int64_t apply_wide_offset(std::int32_t score,
                                                                     std::int64_t offset,
                                                                     const Params& prm) noexcept {
    return static_cast<std::int64_t>(score) * prm.multiplier + offset;
  }
  QFLASH_HOST_DEVICE static constexpr std::int64_t apply_wide(std::int32_t score, std::int32_t bias,
                                                              const Params& prm) noexcept {
    return apply_wide_offset(score, static_cast<std::int64_t>(convert_bias(bias)) * 65536, prm);
  }
  /// floor(S * M / 2^16) + offset: t + offset for a bias-free score (the quotient fits int32
  /// for params that `validate` accepts: |t - bias| <= 2^29).
  QFLASH_HOST_DEVICE static constexpr std::int32_t apply_offset(std::int32_t score,
                                                                std::int32_t offset,
                                                                const Params& prm) noexcept {
    return split_wide_logit(apply_wide_offset(score, 0, prm)).t + offset;
  }
  QFLASH_HOST_DEVICE static constexpr std::int32_t apply(std::int32_t score, std::int32_t bias,
                                                         const Params& prm) noexcept {
    return apply_offset(score, convert_bias(bias), prm);
  }

  /// The largest |t - bias| over int8 scores: floor(2^14 D * M / 2^16) + 1.
  QFLASH_HOST_DEVICE static constexpr std::int64_t logit_bound(const Params& prm,
                                                               int head_dim) noexcept {
    return (max_abs_score(head_dim) * prm.multiplier >> 16) + 1;
  }

  /// invalid_params unless M >= 1 and |t - bias| <= 2^29 for every int8 score of head dim D
  /// (which also keeps M below 2^31 for D >= 1).
  QFLASH_HOST_DEVICE static constexpr Status validate(const Params& prm, int head_dim) noexcept {
    if (head_dim <= 0 || head_dim > 1024 || prm.multiplier < 1) return Status::invalid_params;
    return logit_bound(prm, head_dim) <= (std::int64_t{1} << 29) ? Status::ok
                                                                 : Status::invalid_params;
  }

  /// invalid_scale for zero, negative, NaN or infinite sm_scale; scale_out_of_range when M
  /// rounds to 0 (sm_scale < 2^-33); logit_range_exceeded when some int8 score would leave
  /// |t - bias| <= 2^29.
  QFLASH_HOST_DEVICE static constexpr Status calibrate(double sm_scale, int head_dim,
                                                       Params& out) noexcept {
    if (!is_positive_finite(sm_scale)) return Status::invalid_scale;
    if (head_dim <= 0 || head_dim > 1024) return Status::logit_range_exceeded;
    Params prm{0};
    const Status s = detail::scaled_multiplier(sm_scale, 32, prm.multiplier);
    if (s != Status::ok) return s;
    if (logit_bound(prm, head_dim) > (std::int64_t{1} << 29)) return Status::logit_range_exceeded;
    out = prm;
    return Status::ok;
  }
};
template <>
struct LogitTraits<WideLog2Logit> : LogitTraitsDefaults {
  static constexpr bool has_wide_form = true;
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
    const std::int64_t converted = mul_round_shift_bounded(bias, prm.r, kBiasFractionBits);
    return score + static_cast<std::int32_t>(
                       clamp<std::int64_t>(converted, -kLogitHalfRange, kLogitHalfRange));
  }

  /// invalid_params unless r lies in [1, 2^24], the range `calibrate` produces.
  QFLASH_HOST_DEVICE static constexpr Status validate(const Params& prm,
                                                      int /*head_dim*/) noexcept {
    return prm.r >= 1 && prm.r <= (std::int32_t{1} << 24) ? Status::ok : Status::invalid_params;
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
