// SPDX-License-Identifier: Apache-2.0
/// @file
/// The in-place integer FlashAttention kernel, for configurations whose softmax accumulates in
/// place (`InPlaceConfig`: presets::Fast). Per KV step and warp (16 query rows):
///
///   load      K, V of the step by cp.async (double-buffered), V^T by byte permutes (with
///             kInPlaceDefersPv: after the step's softmax, into one of two V^T buffers)
///   scores    S = Q K^T                       mma.sync m16n8k32 s8 x s8 -> s32
///   frames    row max of raw S (t is non-decreasing in S) -> tile max logit -> new frame F';
///             the accumulators and row sums move to F' (skipped when no row of the warp moves)
///   softmax   per score: v = t + (H - F') (one multiply-add; with a wide logit v = S M +
///             (H - F') 2^16 in Q32, one IMAD.WIDE), X = exp product; P = X_hi >> SB
///             packed as the A operand of P V, the row sum adds X_hi (the weight plus a constant)
///   P V       acc += P V                       mma.sync m16n8k32 u8 x s8 -> s32, in place;
///             with kInPlaceDefersPv after the next step's barrier, from the step's V^T buffer
///   epilogue  the output policy per element, from the row's frame and sum
///
/// It performs `flash_step` with the same policy functions (Logit::apply_offset, Exp::product, or
/// for a wide logit Logit::apply_wide_offset and Exp::product_wide,
/// Softmax::reference_max / frame_move / rescale), so its output equals the host reference bit
/// for bit (tests/device). Accumulators are kept biased (x + 2^31 mod 2^32): the P V mma adds
/// modulo 2^32 and `rescale_biased` takes and returns that form. Launches with a bias or a mask
/// use the general kernel (device/kernel.cuh), which computes the same function.
#pragma once

#if !defined(__CUDACC__)
#error "qflash/device/*.cuh needs nvcc (CUDA C++)"
#endif

#include <cstdint>

#include "qflash/device/kernel.cuh"

namespace qflash::device {

namespace detail {

/// The online-softmax state of the two rows a lane holds (rows `group` and `group + 8` of the
/// warp's 16), replicated in the four lanes of a quad.
struct RowFrames {
  std::int32_t frame[2];  ///< F, Q16 octaves (meaningful once started)
  std::int32_t sum[2];    ///< L in weight units, relative to F
};

/// One row's frame move: the rescale of its accumulators (factor, shift and the biased addend of
/// FrameSoftmax::rescale_biased) and its row sum already rescaled.
/// Five 32-bit words, so that a shuffle moves five registers.
struct FrameMove {
  std::uint32_t addend_low, addend_high;
  std::int32_t factor;  ///< Q1.30, in [0, 2^30]
  std::int32_t shift;   ///< in [2, 30]
  std::int32_t sum;
  QFLASH_DEVICE std::uint64_t addend() const {
    return (std::uint64_t{addend_high} << 32) | addend_low;
  }
};

/// P of one step as the A operand of P V (u8, keys permuted as in transpose_v).
template <class Shape>
struct ProbabilityFragments {
  std::uint32_t reg[Shape::k_chunks_pv][4];
};

/// Largest value over the quad (the four lanes that hold one row).
QFLASH_DEVICE std::int32_t quad_max(std::int32_t x) {
  x = max(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return max(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
QFLASH_DEVICE std::uint32_t quad_sum(std::uint32_t x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

}  // namespace detail

/// Warps per CTA (16 query rows each) for launches whose query rows span more than one CTA of
/// 4 warps: 4 up to D = 64, 8 above (a K/V step shared by 128 query rows; with the launch bounds
/// below, 16 warps per SM at 128 registers instead of 12 at 168).
template <int D>
inline constexpr int kInPlaceWideWarps = D <= 64 ? 4 : 8;

/// Whether the lanes of a quad split the two rows' frame moves (one each, swapped by a shuffle)
/// instead of each computing both: at every D but 64, where the split made the long rows up to
/// 1.3 % slower (elsewhere from 0.6 % slower to 5.6 % faster; docs/benchmarks.md).
template <int D>
inline constexpr bool kInPlaceSplitFrameMoves = D != 64;

/// Whether a step whose K/V rows all exist copies them without row tests: above D = 64 (for
/// D = 64 and 32 the extra branch made the loop slower; docs/benchmarks.md).
template <int D>
inline constexpr bool kInPlaceUncheckedFullCopies = D > 64;

/// n8 tiles of S the in-place kernel holds at once (8: 64 keys, 32 registers); steps of more
/// tiles compute their scores again per chunk rather than hold them all (see block_softmax).
template <int NTiles>
inline constexpr int kInPlaceChunkTiles = NTiles < 8 ? NTiles : 8;

/// Resident CTAs per SM the register budget must allow: 4 CTAs of 4 warps up to D = 64 (128
/// registers per thread), 3 of 4 above (168: the accumulators of D = 128 alone take 64), 2 of 8.
template <int D, int Warps>
inline constexpr int kInPlaceMinBlocksPerSm = Warps == 8 ? 2 : (D <= 64 ? 4 : 3);

/// Resident CTAs per SM of a second instance for large launches, or 0 for none: at D = 32, 6
/// CTAs of 4 warps (80 registers). Many one-step CTAs (Swin windows: 12,288) run 4-5 % faster
/// with more of them in flight; launches of a few waves run 1-5 % slower at 80 registers, so
/// they keep kInPlaceMinBlocksPerSm (docs/benchmarks.md).
template <int D>
inline constexpr int kInPlaceLargeLaunchMinBlocksPerSm = D == 32 ? 6 : 0;

/// A launch is large from this many waves of kInPlaceMinBlocksPerSm CTAs per SM on.
inline constexpr int kInPlaceLargeLaunchWaves = 8;

/// Whether the in-place kernel defers a step's P V to the top of the next step, after the barrier
/// that makes the next step's K/V visible, which then also completes this step's V^T: one barrier
/// per step instead of two. Steps alternate between two V^T buffers; the second takes the bytes
/// of the Q tile (read only on step 0, into registers), so it needs V^T no larger than Q: Fast
/// at D = 64, the one head dim where it was measured to pay (at D = 32 and 128 slower or no
/// faster in either order of V^T; not measured at 80 and 96; docs/benchmarks.md).
template <class Shape, int D>
inline constexpr bool kInPlaceDefersPv = D == 64 && Shape::vt_bytes <= Shape::q_bytes;

template <InPlaceConfig Cfg, OutputPolicy Output, int D, int Warps,
          int MinBlocksPerSm = kInPlaceMinBlocksPerSm<D, Warps>>
__global__ void __launch_bounds__(32 * Warps, MinBlocksPerSm)
    in_place_attention_kernel(const __grid_constant__ KernelArgs<Cfg, Output> args) {
  using Shape = KernelShape<Cfg, D, Warps>;
  using Logit = typename Cfg::Logit;
  using Exp = typename Cfg::Exp;
  using Softmax = typename Cfg::Softmax;
  constexpr int BM = Shape::block_m;
  constexpr int STEP = Shape::step_keys;
  constexpr std::uint32_t kBias = 0x80000000u;
  constexpr bool kWideLogit = LogitTraits<Logit>::has_wide_form;

  extern __shared__ __align__(16) std::uint8_t smem[];
  std::uint8_t* const q_s = smem;
  std::uint8_t* const k_s = q_s + Shape::q_bytes;
  std::uint8_t* const vn_s = k_s + 2 * Shape::k_bytes;
  std::uint8_t* const vt_s = vn_s + 2 * Shape::vn_bytes;

  const AttentionProblem& p = args.problem;
  const detail::BlockPlace place = detail::block_place(args);
  const HeadParams<Cfg, Output> prm = detail::head_params(args, place.h);
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int quad = lane % 4;
  const std::int64_t nq = p.q.seq, nkv = p.k.seq;
  const std::int64_t row0 = static_cast<std::int64_t>(place.q_tile) * BM;
  const std::int64_t warp_row0 = row0 + warp * 16;
  const bool warp_active = warp_row0 < nq;

  if constexpr (Shape::d_padded > D) {  // zero the head-dim padding once (D = 80 pads to 96)
    for (int r = static_cast<int>(threadIdx.x); r < BM + 2 * STEP; r += Shape::threads) {
      std::uint8_t* row = r < BM ? q_s + r * Shape::qk_stride : k_s + (r - BM) * Shape::qk_stride;
      *reinterpret_cast<uint4*>(row + D) = make_uint4(0, 0, 0, 0);
    }
  }

  // load: Q once, K/V of a step as one cp.async group into a stage.
  const std::int8_t* const k_head =
      p.k.data + place.z * p.k.stride_batch + place.h * p.k.stride_head;
  const std::int8_t* const v_head =
      p.v.data + place.z * p.v.stride_batch + place.h * p.v.stride_head;
  const detail::TileCopier<D, STEP, Shape::qk_stride, Shape::threads> k_copier(p.k.stride_seq);
  const detail::TileCopier<D, STEP, Shape::vn_stride, Shape::threads> v_copier(p.v.stride_seq);
  {
    const detail::TileCopier<D, BM, Shape::qk_stride, Shape::threads> q_copier(p.q.stride_seq);
    q_copier.issue(
        q_s,
        p.q.data + place.z * p.q.stride_batch + place.h * p.q.stride_head + row0 * p.q.stride_seq,
        nq - row0);
  }
  const auto load_step = [&](int stage, std::int64_t key0) {
    k_copier.template issue_step<kInPlaceUncheckedFullCopies<D>>(
        k_s + stage * Shape::k_bytes, k_head + key0 * p.k.stride_seq, nkv - key0);
    v_copier.template issue_step<kInPlaceUncheckedFullCopies<D>>(
        vn_s + stage * Shape::vn_bytes, v_head + key0 * p.v.stride_seq, nkv - key0);
    cp_async_commit();
  };
  const auto steps = static_cast<int>((nkv + STEP - 1) / STEP);
  load_step(0, 0);
  if (steps > 1) load_step(1, STEP);

  std::uint32_t q_frag[Shape::k_chunks_qk][4];
  std::int32_t acc[Shape::d_tiles][4];  // biased: x + 2^31
  QFLASH_UNROLL
  for (int dn = 0; dn < Shape::d_tiles; ++dn) {
    QFLASH_UNROLL
    for (int i = 0; i < 4; ++i) acc[dn][i] = static_cast<std::int32_t>(kBias);
  }
  detail::RowFrames rows{};

  // frames: the new frame of each row from its tile max; accumulators and sums move to it. A
  // row that keeps its frame moves by the identity (2^30, 30), so the warp-uniform test below
  // only skips work: all of it, when no row of the warp moves (no frame moves before step 1).
  // With kInPlaceSplitFrameMoves<D>, even lanes compute row 0's move and odd lanes row 1's, and
  // each pair swaps them (one shuffle of FrameMove); without it, every lane computes both.
  const auto move_frames = [&](const std::int32_t(&tile_max)[2], bool started) {
    std::int32_t frame[2];
    bool moves = false;
    QFLASH_UNROLL
    for (int r = 0; r < 2; ++r) {
      frame[r] = Softmax::reference_max(RowState{rows.frame[r], rows.sum[r], started}, tile_max[r]);
      moves = moves || (started && frame[r] != rows.frame[r]);
    }
    if (__any_sync(0xffffffffu, moves)) {
      const auto move_of = [&](std::int32_t from, std::int32_t to, std::int32_t sum) {
        const MergeFactors move = Softmax::frame_move(from, to, prm.exp);
        const std::uint64_t addend = Softmax::biased_addend(move.state_q30, move.state_shift);
        return detail::FrameMove{static_cast<std::uint32_t>(addend),
                                 static_cast<std::uint32_t>(addend >> 32), move.state_q30,
                                 move.state_shift,
                                 Softmax::rescale(sum, move.state_q30, move.state_shift)};
      };
      detail::FrameMove row_move[2];
      if constexpr (kInPlaceSplitFrameMoves<D>) {
        const bool odd = (lane & 1) != 0;
        const detail::FrameMove own =
            move_of(odd ? rows.frame[1] : rows.frame[0], odd ? frame[1] : frame[0],
                    odd ? rows.sum[1] : rows.sum[0]);
        const detail::FrameMove partner = detail::shuffle_xor(own, 1);
        row_move[0] = detail::select(odd, partner, own);
        row_move[1] = detail::select(odd, own, partner);
      } else {
        QFLASH_UNROLL
        for (int r = 0; r < 2; ++r) row_move[r] = move_of(rows.frame[r], frame[r], rows.sum[r]);
      }
      QFLASH_UNROLL
      for (int r = 0; r < 2; ++r) {
        const detail::FrameMove& move = row_move[r];
        rows.sum[r] = move.sum;
        QFLASH_UNROLL
        for (int dn = 0; dn < Shape::d_tiles; ++dn) {
          QFLASH_UNROLL
          for (int c = 0; c < 2; ++c) {
            std::int32_t& a = acc[dn][2 * r + c];
            a = static_cast<std::int32_t>(Softmax::rescale_biased(
                static_cast<std::uint32_t>(a), move.addend(), move.factor, move.shift));
          }
        }
      }
    }
    rows.frame[0] = frame[0];
    rows.frame[1] = frame[1];
  };

  // scores, frames and softmax of one step on its first `Live` n8 tiles, of which those below
  // `Tested` hold only keys (a full step: Live = Tested = n_tiles); keys at or past keys_left
  // are padding, and tiles from Live on hold none (P = 0 there, also in the second half of the
  // last pair's P register when Live is odd). S is held one chunk of kInPlaceChunkTiles tiles at
  // a time: the maxima take the chunks from the last to the first, so that the first chunk's
  // scores are still there for its softmax; a later chunk's are computed again for its own.
  const auto block_softmax = [&]<int Live, int Tested>(detail::ProbabilityFragments<Shape>& prob,
                                                       const std::uint8_t* ks, int keys_left,
                                                       bool started) {
    static_assert(Tested <= Live && Live <= Shape::n_tiles);
    constexpr int CT = kInPlaceChunkTiles<Shape::n_tiles>;
    constexpr int Chunks = Shape::n_tiles / CT;
    std::int32_t s[CT][4];
    const auto visible = [&](int nt, int e) {
      return nt < Tested || (nt < Live && 8 * nt + 2 * quad + (e % 2) < keys_left);
    };
    // scores: S of chunk C (tiles C CT .. C CT + CT - 1) into s; tiles without a key stay 0.
    const auto scores_of_chunk = [&]<int C>() {
      constexpr int live = qflash::clamp(Live - C * CT, 0, CT);
      QFLASH_UNROLL
      for (int j = 0; j < CT; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0;
      if constexpr (live > 0) {
        detail::qk_scores<Shape, live>(s, q_frag, ks + 8 * C * CT * Shape::qk_stride, lane);
      }
    };
    std::int32_t tile_max[2] = {IntTraits<std::int32_t>::min, IntTraits<std::int32_t>::min};
    detail::static_for_down<0, Chunks>([&]<int C>() {
      scores_of_chunk.template operator()<C>();
      QFLASH_UNROLL
      for (int j = 0; j < CT; ++j) {
        QFLASH_UNROLL
        for (int e = 0; e < 4; ++e) {
          if (visible(C * CT + j, e)) tile_max[e / 2] = max(tile_max[e / 2], s[j][e]);
        }
      }
    });
    QFLASH_UNROLL
    for (int r = 0; r < 2; ++r) {  // the largest score has the largest logit (bias-free launch)
      tile_max[r] = Logit::apply_offset(detail::quad_max(tile_max[r]), 0, prm.logit);
    }
    move_frames(tile_max, started);
    const std::int32_t offset[2] = {Exp::kHeadroom - rows.frame[0], Exp::kHeadroom - rows.frame[1]};
    // A wide logit takes the offset in Q32: v = S * M + (H - F) * 2^16, one IMAD.WIDE.
    [[maybe_unused]] const std::int64_t offset_wide[2] = {std::int64_t{offset[0]} * 65536,
                                                          std::int64_t{offset[1]} * 65536};
    std::uint32_t high_sum[2] = {0, 0};
    // P = high word >> SumBits < 2^8, so the high word is < 2^(8 + SumBits) <= 2^14: two high
    // words share a register (16 bits each), one shift takes P out of both, and a byte permute
    // gathers the four P bytes.
    static_assert(8 + Exp::sum_bits <= 16, "in-place kernel: high words must fit 16 bits");
    // softmax: P of chunk C from s, packed as the A operand of P V; row sums of the high words.
    const auto softmax_of_chunk = [&]<int C>() {
      QFLASH_UNROLL
      for (int r = 0; r < 2; ++r) {  // row by row: the row's offset stays in one register
        QFLASH_UNROLL
        for (int j = 0; j < CT; j += 2) {
          const int nt = C * CT + j;
          if (nt >= Live) {  // no key in tiles nt, nt + 1
            prob.reg[nt / 4][r + 2 * ((nt / 2) % 2)] = 0;
            continue;
          }
          std::uint32_t kept[4];  // keys (nt, 2q), (nt, 2q+1), (nt+1, 2q), (nt+1, 2q+1) of row r
          QFLASH_UNROLL
          for (int i = 0; i < 4; ++i) {
            const int t = j + i / 2, e = 2 * r + i % 2;
            std::uint32_t high;
            if constexpr (kWideLogit) {
              high = static_cast<std::uint32_t>(
                  Exp::product_wide(Logit::apply_wide_offset(s[t][e], offset_wide[r], prm.logit)) >>
                  32);
            } else {
              high = static_cast<std::uint32_t>(
                  Exp::product(Logit::apply_offset(s[t][e], offset[r], prm.logit)) >> 32);
            }
            kept[i] = visible(nt + i / 2, e) ? high : 0u;
            high_sum[r] += kept[i];
          }
          const std::uint32_t p01 = detail::byte_perm(kept[0], kept[1], 0x5410) >> Exp::sum_bits;
          const std::uint32_t p23 = detail::byte_perm(kept[2], kept[3], 0x5410) >> Exp::sum_bits;
          // S tiles nt, nt + 1 (row r) -> register r + 2 ((nt / 2) % 2) of k-chunk nt / 4.
          prob.reg[nt / 4][r + 2 * ((nt / 2) % 2)] = detail::byte_perm(p01, p23, 0x6420);
        }
      }
    };
    softmax_of_chunk.template operator()<0>();
    detail::static_for<1, Chunks>([&]<int C>() {
      scores_of_chunk.template operator()<C>();
      softmax_of_chunk.template operator()<C>();
    });
    // The row sum: sum of weights = sum of high words - (visible keys) * kWeightOffset.
    QFLASH_UNROLL
    for (int r = 0; r < 2; ++r) {
      rows.sum[r] += static_cast<std::int32_t>(detail::quad_sum(high_sum[r]) -
                                               static_cast<std::uint32_t>(keys_left) *
                                                   static_cast<std::uint32_t>(Exp::kWeightOffset));
    }
  };

  // P V into the accumulators from V^T at vt (P is zero past keys_left; whole k-chunks of
  // padding skipped).
  const auto accumulate_pv = [&](const detail::ProbabilityFragments<Shape>& prob,
                                 const std::uint8_t* vt, int keys_left) {
    QFLASH_UNROLL
    for (int kc = 0; kc < Shape::k_chunks_pv; ++kc) {
      if (kc > 0 && 32 * kc >= keys_left) break;  // warp-uniform
      QFLASH_UNROLL
      for (int dn = 0; dn < Shape::d_tiles; dn += 2) {
        std::uint32_t v[4];
        const int d = 8 * dn + (lane % 8) + 8 * (lane / 16);
        ldmatrix_x4(v, vt + d * Shape::vt_stride + 32 * kc + 16 * ((lane / 8) % 2));
        mma_u8s8(acc[dn], prob.reg[kc], {v[0], v[1]});
        mma_u8s8(acc[dn + 1], prob.reg[kc], {v[2], v[3]});
      }
    }
  };

  // One KV step: its K/V visible, the next step's load issued, V^T built, scores and block
  // softmax (`softmax_of(prob, ks, keys_left)`), then P V. `Full`: all STEP keys exist.
  // With kInPlaceDefersPv, the P V of a step runs at the top of the next (and of the last, after
  // the loop), so that the one barrier (A) also completes the step's V^T; P stays in `prob`.
  // V^T is then built after the softmax, so that its shared-memory traffic overlaps the
  // softmax's tail and the next P V rather than delaying the scores.
  constexpr bool kDefersPv = kInPlaceDefersPv<Shape, D>;
  const auto vt_of = [&](int step) { return kDefersPv && (step & 1) != 0 ? q_s : vt_s; };
  detail::ProbabilityFragments<Shape> prob;
  const auto kv_step = [&]<bool Full>(int step, const auto& softmax_of) {
    const int stage = step & 1;
    const std::int64_t key0 = static_cast<std::int64_t>(step) * STEP;
    const int keys_left = Full ? STEP : detail::step_keys<STEP>(nkv, step);
    detail::await_step(step, steps);  // (A) step `step` (and Q) visible; step - 1 consumed
    if (step > 0 && step + 1 < steps) load_step(stage ^ 1, key0 + STEP);
    if constexpr (kDefersPv) {  // the previous step's P V (a full step: only the last is ragged)
      if (warp_active && step > 0) accumulate_pv(prob, vt_of(step - 1), STEP);
    } else {
      detail::transpose_v<Shape, D>(vn_s + stage * Shape::vn_bytes, vt_s);
    }
    if (warp_active) {
      if (step == 0) detail::load_q_fragments<Shape>(q_frag, q_s, warp, lane);
      softmax_of(prob, k_s + stage * Shape::k_bytes, keys_left, step > 0);
    }
    if constexpr (kDefersPv) {
      detail::transpose_v<Shape, D>(vn_s + stage * Shape::vn_bytes, vt_of(step));
    } else {
      __syncthreads();  // (B) vt_s complete
      if (warp_active) accumulate_pv(prob, vt_s, keys_left);
    }
  };

  // The full steps in the loop; a ragged last step after it, computing only its live n8 tiles
  // (one variant per live count for steps of up to 8 tiles, in groups above), so that its
  // variants do not weigh on the loop.
  const auto full_steps = static_cast<int>(nkv / STEP);
  for (int step = 0; step < full_steps; ++step) {
    kv_step.template operator()<true>(
        step, [&](auto& prob, const std::uint8_t* ks, int keys_left, bool started) {
          block_softmax.template operator()<Shape::n_tiles, Shape::n_tiles>(prob, ks, keys_left,
                                                                            started);
        });
  }
  if (full_steps < steps) {
    kv_step.template operator()<false>(
        full_steps, [&](auto& prob, const std::uint8_t* ks, int keys_left, bool started) {
          constexpr int G = Shape::n_tiles <= 8 ? 1 : Shape::live_granularity;
          detail::with_live_tiles<Shape::n_tiles, G>(keys_left, [&]<int Live, int Tested>() {
            block_softmax.template operator()<Live, Tested>(prob, ks, keys_left, started);
          });
        });
  }

  if constexpr (kDefersPv) {  // the last step's P V
    __syncthreads();          // its V^T complete
    if (warp_active && steps > 0) {
      accumulate_pv(prob, vt_of(steps - 1), detail::step_keys<STEP>(nkv, steps - 1));
    }
  }

  // epilogue: each row's output policy from its frame and sum; rows at or past Nq are skipped.
  // The four lanes of a quad hold both rows' states: even lanes prepare row lane / 4, odd lanes
  // row lane / 4 + 8, and each pair swaps its results (one prepare, with its 64-bit division, per
  // lane instead of two).
  if (warp_active) {
    const int mine = quad & 1;
    const typename Output::Row prepared =
        finalize_row<Output>(RowState{mine == 0 ? rows.frame[0] : rows.frame[1],
                                      mine == 0 ? rows.sum[0] : rows.sum[1], steps > 0},
                             prm.output);
    const typename Output::Row other = detail::shuffle_xor(prepared, 1);
    QFLASH_UNROLL
    for (int r = 0; r < 2; ++r) {
      const std::int64_t row = warp_row0 + lane / 4 + 8 * r;
      if (row >= nq) continue;
      const typename Output::Row output_row = r == mine ? prepared : other;
      detail::store_row<Shape::d_tiles>(
          args.out, args.paired_output, place.z, place.h, row, quad, [&](int dn, int c) {
            return Output::apply(
                static_cast<std::int32_t>(static_cast<std::uint32_t>(acc[dn][2 * r + c]) ^ kBias),
                output_row);
          });
    }
  }
}

}  // namespace qflash::device
