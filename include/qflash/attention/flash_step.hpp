// SPDX-License-Identifier: Apache-2.0
/// @file
/// `flash_step`: ONE KV block of integer FlashAttention on Tiles -- the single source of truth.
///
/// The host reference calls it for every (query block, KV block). The CUDA kernel performs the
/// same steps in the same order on mma fragments, calling the same policy functions for every
/// score, row and accumulator element; only data movement and the order of exact integer sums
/// differ. tests/device holds the two equal, bit for bit.
///
/// Steps for each query row i of the block (j runs over the BN keys of the block):
///   1. S = Q K^T                          exact int32, |S| <= 2^14 * D
///   2. t_ij = Logit(S_ij, bias_ij)        visible keys only (mask and padding are predicates);
///      a wide logit (LogitTraits) keeps t_wide, t = floor(t_wide / 2^16), for step 4
///   3. tile_max_i = max_j t_ij            rows with no visible key skip steps 4-6 entirely
///   4. ref_i = Softmax::reference_max(row_i, tile_max_i)
///      (P_ij, w_ij) = Exp(ref_i - t_ij)  P in [0, Pmax]; P = 0 for hidden keys (wide:
///                                         Exp::apply_wide(ref_i * 2^16 - t_wide_ij))
///      tile_sum_i = sum_j w_ij
///   5. PV = P V                           exact int32 (u8 x s8)
///   6. f = Softmax::merge_row(row_i, tile_max_i, tile_sum_i)
///      acc_id = Softmax::merge_element(acc_id, PV_id, f)
#pragma once

#include <cstdint>

#include "qflash/core/concepts.hpp"
#include "qflash/core/config.hpp"
#include "qflash/core/int_traits.hpp"
#include "qflash/core/tile.hpp"
#include "qflash/core/tile_ops.hpp"
#include "qflash/policy/logit.hpp"
#include "qflash/policy/online_softmax.hpp"

namespace qflash {

/// The per-block inputs besides Q, K, V: the bias (Q16 octaves, 0 where there is none) and the
/// visibility predicate (1 = key j takes part for query i; 0 for masked and padded keys).
template <int BM, int BN>
struct BlockExtras {
  Tile<std::int32_t, BM, BN> bias;
  Tile<std::uint8_t, BM, BN> visible;
};

/// One KV block for BM query rows: updates `rows` (online-softmax state) and `acc` (BM x D).
template <KernelConfig Cfg, int BM, int BN, int D>
QFLASH_HOST_DEVICE constexpr void flash_step(
    const Tile<std::int8_t, BM, D>& q, const Tile<std::int8_t, BN, D>& k,
    const Tile<std::int8_t, BN, D>& v, const BlockExtras<BM, BN>& extras,
    const typename Cfg::Logit::Params& logit_params, const typename Cfg::Exp::Params& exp_params,
    Array<RowState, BM>& rows, Tile<std::int32_t, BM, D>& acc) noexcept {
  using Softmax = typename Cfg::Softmax;
  using Logit = typename Cfg::Logit;
  constexpr bool kWide = LogitTraits<Logit>::has_wide_form;

  // 1. S = Q K^T, then 2. logits in place (with a wide logit, t = floor(t_wide / 2^16) there and
  // the 16 fraction bits below it, t_wide mod 2^16, beside them).
  Tile<std::int32_t, BM, BN> logits{};
  Tile<std::uint16_t, BM, (kWide ? BN : 1)> wide_fraction{};
  matmul_abt(q, k, logits);

  Tile<std::uint8_t, BM, BN> p{};
  Array<std::int32_t, BM> tile_max = {};
  Array<std::int64_t, BM> tile_sum = {};
  Array<bool, BM> any_visible = {};
  for (int i = 0; i < BM; ++i) {
    for (int j = 0; j < BN; ++j) {
      if (!extras.visible(i, j)) continue;
      std::int32_t t;
      if constexpr (kWide) {
        const WideLogitParts x =
            split_wide_logit(Logit::apply_wide(logits(i, j), extras.bias(i, j), logit_params));
        t = x.t;
        wide_fraction(i, j) = static_cast<std::uint16_t>(x.fraction);
      } else {
        t = Logit::apply(logits(i, j), extras.bias(i, j), logit_params);
      }
      logits(i, j) = t;
      // 3. the row's tile maximum over visible keys
      tile_max[i] = any_visible[i] ? max(tile_max[i], t) : t;
      any_visible[i] = true;
    }
    if (!any_visible[i]) continue;
    // 4. probabilities against the reference maximum, and the row sum
    const std::int32_t reference = Softmax::reference_max(rows[i], tile_max[i]);
    for (int j = 0; j < BN; ++j) {
      if (!extras.visible(i, j)) continue;
      Exp2Value e{};
      if constexpr (kWide) {  // u = reference - t_wide in Q32 (>= -(2^16 - 1): reference >= t)
        e = Cfg::Exp::apply_wide(
            wide_distance(reference, WideLogitParts{logits(i, j), wide_fraction(i, j)}),
            exp_params);
      } else {
        e = Cfg::Exp::apply(reference - logits(i, j), exp_params);
      }
      p(i, j) = static_cast<std::uint8_t>(e.p);
      tile_sum[i] += e.weight;
    }
  }

  // 5. PV = P V
  Tile<std::int32_t, BM, D> pv{};
  matmul_ab(p, v, pv);

  // 6. merge into the running state
  for (int i = 0; i < BM; ++i) {
    if (!any_visible[i]) continue;
    const MergeFactors f = Softmax::merge_row(rows[i], tile_max[i], tile_sum[i], exp_params);
    for (int d = 0; d < D; ++d) acc(i, d) = Softmax::merge_element(acc(i, d), pv(i, d), f);
  }
}

/// The per-row part of the output policy on a row's final state (once per row).
template <OutputPolicy Output>
QFLASH_HOST_DEVICE constexpr typename Output::Row finalize_row(
    const RowState& row, const typename Output::Params& prm) noexcept {
  return Output::prepare(row.started ? row.sum : 0, prm);
}

/// One output element from a row's final state (finalize_row + apply, for single elements).
template <OutputPolicy Output>
QFLASH_HOST_DEVICE constexpr typename Output::value_type finalize(
    std::int32_t acc, const RowState& row, const typename Output::Params& prm) noexcept {
  return Output::apply(acc, finalize_row<Output>(row, prm));
}

}  // namespace qflash
