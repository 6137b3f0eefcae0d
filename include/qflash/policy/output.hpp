// SPDX-License-Identifier: Apache-2.0
/// @file
/// Output policies: the final normalisation O = acc / l, scaled into the output's quantization.
///
/// The accumulator holds sum_j P_j V_j (V in its int8 units, P in [0, Pmax]) and the row sum l
/// holds sum_j weight_j = sum_j P_j * 2^sum_bits (approximately). The real output is
/// s_v * acc * 2^sum_bits / l, so in units of s_out it is acc * ratio * 2^sum_bits / l with
/// ratio = s_v / s_out. Calibration writes ratio * 2^sum_bits = M * 2^-shift (M in [2^30, 2^31),
/// shift in [0, 31]).
///
/// The division by l happens once per row, as a dyadic row multiplier (one 64-bit division):
///   r  = ceil(M * 2^32 / l)                          (M * 2^32 < 2^63; r >= 2^31 for l < 2^31)
///   r' = ceil(r / 2^e), e = max(0, bit_width(r) - 31), so r' in [2^30, 2^31) (31 bits; a carry
///        to 2^31 becomes 2^30 with e + 1)
///   k  = 32 + shift - e                             (the row's total right shift, in [0, 63])
/// and every element costs one 32 x 32 -> 64-bit product and one rounding shift:
///   O = saturate(round(acc * r' / 2^k))             (|acc * r'| < 2^62; k = 63 gives 0)
/// The last rounding is half away from zero, or toward zero in `toward_zero` mode. Both ceilings
/// make r' / 2^k at least the exact ratio M / (l * 2^shift) and at most 2^-30 above it
/// (relatively), so |acc * r' / 2^k| is the exact quotient's magnitude or slightly more: integer
/// quotients (a row whose weight sits on one key, equal rows of V) and exact ties come out
/// exactly, with truncation too. O differs from the exactly rounded quotient only where that
/// quotient lies within |O| * 2^-30 below a rounding boundary (in magnitude), by one unit
/// (tests/host/output_test.cpp). A row with l <= 0 (every key masked) outputs 0.
#pragma once

#include <bit>
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

  /// What one row shares: its dyadic multiplier r' (0 for a row that outputs 0) and shift k.
  struct Row {
    std::int32_t multiplier;  ///< r' in [2^30, 2^31), or 0
    std::int32_t shift;       ///< k in [0, 62]
  };

  QFLASH_HOST_DEVICE static constexpr Row prepare(std::int64_t row_sum,
                                                  const Params& prm) noexcept {
    if (row_sum <= 0) return Row{0, 0};
    const auto l = static_cast<std::uint64_t>(row_sum);
    const std::uint64_t r = ((static_cast<std::uint64_t>(prm.multiplier) << 32) + (l - 1)) / l;
    const int width = bit_width(r);  // <= 63
    int e = width > 31 ? width - 31 : 0;
    std::uint64_t normalised = (r + ((std::uint64_t{1} << e) - 1)) >> e;  // ceil(r / 2^e)
    if (normalised >> 31 != 0) {  // the ceiling carried into bit 31: 2^31 -> 2^30, one more shift
      normalised >>= 1;
      ++e;
    }
    const int k = 32 + prm.shift - e;
    if (normalised == 0 || k > 62) return Row{0, 0};  // |acc * r'| < 2^62: rounds to 0 at k = 63
    return Row{static_cast<std::int32_t>(normalised), k};
  }

  static_assert(sizeof(OutT) <= 4, "Requantize: outputs of at most 32 bits");
  /// OutT's largest magnitude on each side: max, and |min| (0 for unsigned types).
  static constexpr auto kPositiveLimit = static_cast<std::uint32_t>(IntTraits<OutT>::max);
  static constexpr auto kNegativeLimit =
      static_cast<std::uint32_t>(-static_cast<std::int64_t>(IntTraits<OutT>::min));

  /// Bits of the larger limit: every |O| <= 2^kLimitBits - 1.
  static constexpr int kLimitBits = static_cast<int>(
      std::bit_width(kPositiveLimit > kNegativeLimit ? kPositiveLimit : kNegativeLimit));

  /// O = saturate(round(acc * r' / 2^k)), computed on the magnitude m = |acc| <= 2^31:
  /// |O| = min((m * r' + h) >> k, limit) with h = 2^(k-1) (half away from zero; 0 for k = 0 and
  /// for toward zero) and limit = kPositiveLimit, or kNegativeLimit for a negative acc. Rounding
  /// the magnitude and restoring the sign is exactly half away from zero (or truncation) of the
  /// signed quotient. m * r' + h < 2^62 + 2^61 fits uint64: one unsigned multiply-add.
  /// Outputs of at most 16 bits (B = kLimitBits <= 16) first cap m at C = 2^c,
  /// c = min(max(0, B + k - 30), 31). A cap below |acc|'s bound 2^31 means c <= 30, and then,
  /// since r' >= 2^30, every m >= C has a quotient of at least 2^B > limit (c = B + k - 30, or
  /// at c = 0, k <= 30 - B: 2^(30-k) >= 2^B), so capping changes no saturated result; a capped
  /// quotient is below 2^(B+2) <= 2^18 (at c = 0, at most 2^31): its low word is all of it, so
  /// one funnel shift and a 32-bit min finish it (tests/host/output_test.cpp checks it against
  /// the uncapped form at every k).
  QFLASH_HOST_DEVICE static constexpr OutT apply(std::int32_t acc, const Row& row) noexcept {
    const std::uint32_t sign = acc < 0 ? ~std::uint32_t{0} : 0;  // all ones for a negative acc
    std::uint32_t magnitude = (static_cast<std::uint32_t>(acc) ^ sign) - sign;
    const std::uint64_t half = Mode == Rounding::half_away_from_zero
                                   ? (std::uint64_t{1} << row.shift) >> 1
                                   : std::uint64_t{0};
    const std::uint32_t limit = sign != 0 ? kNegativeLimit : kPositiveLimit;
    if constexpr (kLimitBits <= 16) {                             // the cap C = 2^c
      const std::int32_t cap_bits = kLimitBits + row.shift - 30;  // in [B - 30, B + 32]
      const std::uint32_t cap = cap_bits <= 0    ? 1u
                                : cap_bits >= 31 ? std::uint32_t{1} << 31
                                                 : std::uint32_t{1} << cap_bits;
      magnitude = magnitude < cap ? magnitude : cap;
    }
    const std::uint64_t rounded =
        (std::uint64_t{magnitude} * static_cast<std::uint32_t>(row.multiplier) + half) >> row.shift;
    // Capped, the quotient is its low word: a 32-bit min; uncapped, a 64-bit compare.
    std::uint32_t clamped;
    if constexpr (kLimitBits <= 16) {
      const auto low = static_cast<std::uint32_t>(rounded);
      clamped = low < limit ? low : limit;
    } else {
      clamped = rounded > limit ? limit : static_cast<std::uint32_t>(rounded);
    }
    return static_cast<OutT>(static_cast<std::int32_t>((clamped ^ sign) - sign));
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

  /// invalid_params unless multiplier in [2^30, 2^31) and shift in [0, 31] (what `calibrate`
  /// produces; every such pair is a valid output scale).
  QFLASH_HOST_DEVICE static constexpr Status validate(const Params& prm,
                                                      int /*sum_bits*/) noexcept {
    return prm.multiplier >= (std::int32_t{1} << 30) && prm.shift >= 0 && prm.shift <= 31
               ? Status::ok
               : Status::invalid_params;
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

  /// Smallest V scale: one unit of V (and every output of at least one unit) is a normal
  /// binary16 number, so the conversion's error is at most 2^-11 * max(|O|, s_v) (subnormals
  /// are spaced 2^-24 = 2^-10 * 2^-14 apart).
  static constexpr double min_v_scale = 1.0 / 16384.0;
  /// Largest V scale: |O| <= 128 units of V (2^23 at the integer scale) must convert to a finite
  /// binary16 (below 65520, where rounding reaches infinity): s_v < 65520 / 128 = 511.875.
  static constexpr double max_v_scale_exclusive = 65520.0 / 128.0;

  /// invalid_params unless the integer part is exactly calibrate's (ratio 2^(16 + sum_bits):
  /// multiplier 2^30, shift 14 - sum_bits) and the float scale is s_v / 2^16 for an s_v in
  /// [min_v_scale, max_v_scale_exclusive).
  QFLASH_HOST_DEVICE static constexpr Status validate(const Params& prm, int sum_bits) noexcept {
    const double v_scale = static_cast<double>(prm.scale) * integer_scale_divisor;
    const bool scale_ok = v_scale >= min_v_scale && v_scale < max_v_scale_exclusive;
    return prm.integer.multiplier == (std::int32_t{1} << 30) &&
                   prm.integer.shift == 14 - sum_bits && scale_ok
               ? Status::ok
               : Status::invalid_params;
  }

  /// `out_scale` is unused: the float output carries its own scale. scale_out_of_range when
  /// s_v lies outside [min_v_scale, max_v_scale_exclusive): outputs would overflow to infinity
  /// or lose their precision in subnormals.
  QFLASH_HOST_DEVICE static constexpr Status calibrate(double v_scale, double /*out_scale*/,
                                                       int sum_bits, Params& out) noexcept {
    if (is_positive_finite(v_scale) &&
        !(v_scale >= min_v_scale && v_scale < max_v_scale_exclusive)) {
      return Status::scale_out_of_range;
    }
    const double integer_scale = v_scale / integer_scale_divisor;
    Params result{};
    const Status s = Integer::calibrate(v_scale, integer_scale, sum_bits, result.integer);
    if (s != Status::ok) return s;
    result.scale = static_cast<float>(integer_scale);
    if (validate(result, sum_bits) != Status::ok) return Status::scale_out_of_range;
    out = result;  // written only on success
    return Status::ok;
  }
};

}  // namespace qflash
