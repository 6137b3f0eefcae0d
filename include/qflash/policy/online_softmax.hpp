// SPDX-License-Identifier: Apache-2.0
/// @file
/// Integer online softmax: the per-row state carried across KV tiles and how a tile merges in.
///
/// A row keeps its maximum logit `max`, its row sum `sum` (int64, in weight units: P with the exp
/// policy's `sum_bits` extra fraction bits) and a flag `started` ("a visible key has been seen";
/// no NEG_INF sentinel). Its accumulator row (int32, D values) lives with the caller.
///
/// A tile with at least one visible key merges in three steps:
///  1. `reference_max`: the maximum its probabilities are quantized against.
///  2. the caller computes P = exp(reference - t), the tile's row sum and its P V.
///  3. `merge_row` updates max and sum and returns two Q1.30 factors; `merge_element` applies
///     them: acc = round(acc * state_factor / 2^30) + round(pv * tile_factor / 2^30), rounded
///     half up (floor(v + 1/2): the one place where qflash does not round half away from zero,
///     because half up costs two instructions fewer per accumulator element on the GPU; the
///     two rules differ only on exact ties of negative values). The row sum's rescale rounds
///     half away from zero.
/// A factor of exactly 2^30 is the identity and is skipped (exact), so the accumulator is
/// rescaled only when the maximum grows. A tile with no visible key leaves the row untouched.
///
/// Modes:
///  - running: P against max(previous max, tile max) (FlashAttention-2, the paper).
///  - tile_local: P against the tile's own max, then the tile is scaled into the running max.
///    Tiny probabilities keep their resolution in every tile (+0.6 dB at N = 197 and +2.6 dB at
///    N = 4096 in the numerics study).
/// Overflow: every factor is <= 2^30 and rounding never increases a magnitude, so
/// |acc| <= Pmax * 128 * (keys seen) < 2^31 while Nkv <= max_keys; sum * factor < 2^62.
#pragma once

#include <cstdint>

#include "qflash/core/concepts.hpp"
#include "qflash/core/config.hpp"
#include "qflash/core/fixed_point.hpp"
#include "qflash/core/int_traits.hpp"
#include "qflash/policy/exp2.hpp"

namespace qflash {

/// The online-softmax state of one query row.
struct RowState {
  std::int32_t max = 0;  ///< largest visible logit so far (meaningful once started)
  std::int64_t sum = 0;  ///< row sum in weight units, relative to `max`
  bool started = false;  ///< false until the first visible key
};

/// The two Q1.30 factors of one merge (2^30 = leave unchanged); at most one differs from 2^30.
struct MergeFactors {
  std::int32_t state_q30;  ///< applied to the accumulator carried so far, in [0, 2^30]
  std::int32_t tile_q30;   ///< applied to this tile's P V, in [0, 2^30]
  /// The state's rescale is round(acc * state_q30 / 2^state_shift): 30 for OnlineSoftmax;
  /// FrameSoftmax lowers it for an exact left shift (state_q30 = 2^30, shift 30 - k: acc * 2^k).
  std::int32_t state_shift = 30;
};

template <class Exp, MaxMode Mode>
struct OnlineSoftmax {
  using exp_policy = Exp;
  static constexpr MaxMode max_mode = Mode;

  /// Largest Nkv for which |acc| <= Pmax * 128 * Nkv stays below 2^31.
  static constexpr std::int64_t max_keys =
      (std::int64_t{IntTraits<std::int32_t>::max}) / (std::int64_t{Exp::pmax} * 128);

  /// The maximum that this tile's probabilities are quantized against.
  QFLASH_HOST_DEVICE static constexpr std::int32_t reference_max(const RowState& row,
                                                                 std::int32_t tile_max) noexcept {
    if constexpr (Mode == MaxMode::running) {
      return row.started ? max(row.max, tile_max) : tile_max;
    } else {
      return tile_max;
    }
  }

  /// floor(x * factor / 2^30 + 1/2) (round half up) for factor in [0, 2^30]; x itself when
  /// factor == 2^30. Computed in uint64 arithmetic modulo 2^64 as
  /// ((x + 2^31) * factor + (2^29 - 2^31 * factor)) >> 30: the multiplicand is unsigned and the
  /// addend depends on the factor only, so the GPU does it in one IMAD.WIDE.U32 (with the
  /// addend) and one funnel shift. The true value x * factor + 2^29 lies in (-2^62, 2^62), so
  /// bits 30..61 of its two's complement are the result.
  QFLASH_HOST_DEVICE static constexpr std::int32_t rescale(std::int32_t x,
                                                           std::int32_t factor_q30) noexcept {
    return rescale_biased(static_cast<std::uint32_t>(x) ^ kBias, factor_q30);
  }

  /// The offset of the biased accumulator representation: x_biased = x + 2^31 (mod 2^32), the
  /// bit pattern of x with its top bit flipped.
  static constexpr std::uint32_t kBias = 0x80000000u;

  /// rescale(x, factor) from x_biased = x + 2^31 (mod 2^32): the multiplicand of the unsigned
  /// multiply-add, so a kernel that keeps its accumulators biased saves the flip.
  QFLASH_HOST_DEVICE static constexpr std::int32_t rescale_biased(
      std::uint32_t x_biased, std::int32_t factor_q30) noexcept {
    const auto factor = static_cast<std::uint64_t>(static_cast<std::uint32_t>(factor_q30));
    const std::uint64_t addend = (std::uint64_t{1} << 29) - (factor << 31);  // mod 2^64
    return static_cast<std::int32_t>(
        static_cast<std::uint32_t>((std::uint64_t{x_biased} * factor + addend) >> 30));
  }
  QFLASH_HOST_DEVICE static constexpr std::int64_t rescale(std::int64_t x,
                                                           std::int32_t factor_q30) noexcept {
    return factor_q30 == kOneQ30 ? x : mul_round_shift_bounded(x, factor_q30, 30);  // |x| < 2^32
  }

  /// Folds a tile (its max and its row sum, relative to `reference_max`) into the row state.
  QFLASH_HOST_DEVICE static constexpr MergeFactors merge_row(
      RowState& row, std::int32_t tile_max, std::int64_t tile_sum,
      const typename Exp::Params& exp_params) noexcept {
    if (!row.started) {
      row = RowState{tile_max, tile_sum, true};
      return MergeFactors{kOneQ30, kOneQ30};
    }
    if (tile_max > row.max) {  // the maximum grows: move what we have up to it
      const std::int32_t factor = Exp::rescale_q30(tile_max - row.max, exp_params);
      row.sum = rescale(row.sum, factor) + tile_sum;
      row.max = tile_max;
      return MergeFactors{factor, kOneQ30};
    }
    if constexpr (Mode == MaxMode::tile_local) {
      if (tile_max < row.max) {  // the tile was quantized against its own, smaller max
        const std::int32_t factor = Exp::rescale_q30(row.max - tile_max, exp_params);
        row.sum += rescale(tile_sum, factor);
        return MergeFactors{kOneQ30, factor};
      }
    }
    row.sum += tile_sum;
    return MergeFactors{kOneQ30, kOneQ30};
  }

  /// One accumulator element after the merge: rescale(acc, state) + rescale(pv, tile).
  /// merge_row never returns two non-identity factors, so one rescale per element suffices: the
  /// side whose factor differs from 2^30 (or pv when neither does, where rescale is the identity).
  QFLASH_HOST_DEVICE static constexpr std::int32_t merge_element(std::int32_t acc, std::int32_t pv,
                                                                 MergeFactors f) noexcept {
    return static_cast<std::int32_t>(merge_element_biased(static_cast<std::uint32_t>(acc) ^ kBias,
                                                          static_cast<std::uint32_t>(pv) ^ kBias,
                                                          f) ^
                                     kBias);
  }

  /// merge_element on biased values (acc + 2^31 and pv + 2^31, mod 2^32), returning the biased
  /// result: merge_element_biased(acc ^ 2^31, pv ^ 2^31, f) == merge_element(acc, pv, f) ^ 2^31.
  /// The CUDA kernel keeps its accumulators this way (P V starts from 2^31 in the tensor-core
  /// accumulator, which wraps modulo 2^32), one instruction fewer per element and block.
  QFLASH_HOST_DEVICE static constexpr std::uint32_t merge_element_biased(std::uint32_t acc_biased,
                                                                         std::uint32_t pv_biased,
                                                                         MergeFactors f) noexcept {
    const bool scale_state = f.state_q30 != kOneQ30;
    const std::int32_t scaled = rescale_biased(scale_state ? acc_biased : pv_biased,
                                               scale_state ? f.state_q30 : f.tile_q30);
    return static_cast<std::uint32_t>(scaled) + (scale_state ? pv_biased : acc_biased);
  }
};

/// OnlineSoftmax offers merge_element_biased, and with identity factors (both 2^30) its biased
/// merge is the plain sum acc_b + pv_b - 2^31 (mod 2^32), which a kernel may use directly when no
/// row of a block rescales (both tested in online_softmax_test).
template <class Exp, MaxMode Mode>
struct SoftmaxTraits<OnlineSoftmax<Exp, Mode>> : SoftmaxTraitsDefaults {
  static constexpr bool merges_biased = true;
  static constexpr bool identity_merge_is_sum = true;
};

/// The online softmax of the in-place kernel: P against a per-row *frame* that follows each
/// tile's maximum down as well as up, so that every tile gets the P resolution of tile-local
/// maxima while P V accumulates in place (the accumulators move to the new frame first).
///
/// - Frame F (RowState::max): the reference of this tile's P is F' = max(tile max,
///   F - k_max * 2^16) (the tile max on the first tile), k_max = 20 + sum_bits - bit_width(L)
///   whole octaves of headroom for the row sum L: the tile max whenever L leaves room.
/// - Merge: acc = rescale(acc, F -> F') + P V and L = rescale(L, F -> F') + tile sum. Up
///   (F' > F): factor 2^-(F' - F) in Q1.30, shift 30. Down by d = F - F' > 0: k = ceil(d / 2^16)
///   <= k_max octaves, factor 2^-(k 2^16 - d) in Q1.30, shift 30 - k in [2, 29]. Round half up.
/// - Overflow: a visible P >= 1 has weight >= 2^(sum_bits-1) and P <= 4 weight / 2^sum_bits, so
///   |acc| <= 128 * (4 L / 2^sum_bits + rounding); a move down keeps L 2^k < 2^(20 + sum_bits),
///   i.e. that part below 2^29, and Nkv <= max_keys = 2^23 / Pmax keeps what later keys add
///   below 2^30: |acc| < 2^31. L < 2^(20 + sum_bits) + Pmax 2^sum_bits max_keys < 2^31.
template <class Exp>
struct FrameSoftmax {
  static_assert(Exp::sum_bits >= 1 && Exp::sum_bits <= 8, "FrameSoftmax: sum_bits in [1, 8]");
  static_assert(Exp::rescale_q30(0, typename Exp::Params{}) == kOneQ30,
                "FrameSoftmax: frame_move's identity needs rescale_q30(0) == 2^30 exactly");
  using exp_policy = Exp;
  static constexpr MaxMode max_mode = MaxMode::running;  ///< P depends on the row state
  static constexpr std::int64_t max_keys = (std::int64_t{1} << 23) / Exp::pmax;
  /// A move down keeps L * 2^k below 2^kHeadroomBits.
  static constexpr int kHeadroomBits = 20 + Exp::sum_bits;

  /// Whole octaves the frame may move down for a row sum `sum` (0 when it has no headroom).
  /// A sum of 2^kHeadroomBits or more has none; below, the width is that of a 32-bit value (so
  /// the kernel's int32 sums take 32-bit code).
  QFLASH_HOST_DEVICE static constexpr std::int32_t headroom_octaves(std::int64_t sum) noexcept {
    static_assert(kHeadroomBits < 31);
    if (sum >= (std::int64_t{1} << kHeadroomBits)) return 0;
    return kHeadroomBits - bit_width(static_cast<std::uint32_t>(sum < 0 ? 0 : sum));
  }

  /// The frame this tile's P is quantized against (see the class comment).
  QFLASH_HOST_DEVICE static constexpr std::int32_t reference_max(const RowState& row,
                                                                 std::int32_t tile_max) noexcept {
    if (!row.started) return tile_max;
    // F - k_max 2^16 >= F - 28 * 2^16 > -2^31 (|F| <= 2^29 + 2^28).
    return max(tile_max, row.max - (headroom_octaves(row.sum) << 16));
  }

  /// The rescale from frame `from` to frame `to` (MergeFactors::state_q30 / state_shift):
  /// up (to > from) by 2^-(to - from) in Q1.30; down by 2^k * 2^-(k 2^16 - (from - to)) with
  /// k = ceil((from - to) / 2^16) in [1, 28] whole octaves as the shift 30 - k; the identity
  /// (2^30, 30) when to == from, since rescale_q30(0) is exactly 2^30. One formula for the three
  /// cases, without branches (a warp whose rows move both ways does not run two paths).
  QFLASH_HOST_DEVICE static constexpr MergeFactors frame_move(
      std::int32_t from, std::int32_t to, const typename Exp::Params& exp_params) noexcept {
    const std::int32_t d = to - from;                             // |d| < 2^31: |F| <= 3 * 2^28
    const std::int32_t octaves = d < 0 ? (0xFFFF - d) >> 16 : 0;  // ceil(-d / 2^16), in [0, 28]
    const std::int32_t q30 = Exp::rescale_q30(d < 0 ? (octaves << 16) + d : d, exp_params);
    return MergeFactors{q30, kOneQ30, 30 - octaves};
  }

  /// floor((x * factor + 2^(shift-1)) / 2^shift) for factor in [0, 2^30], shift in [2, 30],
  /// when the result fits int32 (round half up; x itself at factor 2^30, shift 30).
  QFLASH_HOST_DEVICE static constexpr std::int32_t rescale(std::int32_t x, std::int32_t factor,
                                                           std::int32_t shift) noexcept {
    const std::int64_t v = static_cast<std::int64_t>(x) * factor + (std::int64_t{1} << (shift - 1));
    return static_cast<std::int32_t>(v >> shift);
  }

  /// rescale on the biased form x + 2^31 (mod 2^32), returning the biased result: one unsigned
  /// 32x32 -> 64 multiply-add and one funnel shift on the GPU. The addend 2^(s-1) - 2^31 * factor
  /// + 2^(31+s) (mod 2^64) removes the input bias and adds the output's.
  QFLASH_HOST_DEVICE static constexpr std::uint32_t rescale_biased(std::uint32_t x_biased,
                                                                   std::uint64_t addend,
                                                                   std::int32_t factor,
                                                                   std::int32_t shift) noexcept {
    const std::uint64_t v = std::uint64_t{x_biased} * static_cast<std::uint32_t>(factor) + addend;
    return static_cast<std::uint32_t>(v >> shift);
  }
  /// The addend of rescale_biased for (factor, shift): once per row and merge.
  QFLASH_HOST_DEVICE static constexpr std::uint64_t biased_addend(std::int32_t factor,
                                                                  std::int32_t shift) noexcept {
    return (std::uint64_t{1} << (shift - 1)) -
           (static_cast<std::uint64_t>(static_cast<std::uint32_t>(factor)) << 31) +
           (std::uint64_t{1} << (31 + shift));
  }

  QFLASH_HOST_DEVICE static constexpr MergeFactors merge_row(
      RowState& row, std::int32_t tile_max, std::int64_t tile_sum,
      const typename Exp::Params& exp_params) noexcept {
    const std::int32_t frame = reference_max(row, tile_max);
    if (!row.started) {
      row = RowState{frame, tile_sum, true};
      return MergeFactors{kOneQ30, kOneQ30};
    }
    const MergeFactors f = frame_move(row.max, frame, exp_params);
    row.sum = rescale(static_cast<std::int32_t>(row.sum), f.state_q30, f.state_shift) + tile_sum;
    row.max = frame;
    return f;
  }

  /// rescale(acc, state) + pv (the tile factor is always 1).
  QFLASH_HOST_DEVICE static constexpr std::int32_t merge_element(std::int32_t acc, std::int32_t pv,
                                                                 MergeFactors f) noexcept {
    return rescale(acc, f.state_q30, f.state_shift) + pv;
  }
};

/// FrameSoftmax merges as acc = rescale(acc) + P V with its row sum as an accumulator column.
template <class Exp>
struct SoftmaxTraits<FrameSoftmax<Exp>> : SoftmaxTraitsDefaults {
  static constexpr bool accumulates_in_place = true;
};

}  // namespace qflash
