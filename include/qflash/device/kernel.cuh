// SPDX-License-Identifier: Apache-2.0
/// @file
/// The fused integer FlashAttention kernel: mma.sync m16n8k32 (s8 x s8 for Q K^T, u8 x s8 for
/// P V), cp.async double-buffered K/V tiles, P kept in registers between the two products.
///
/// It performs `flash_step` (attention/flash_step.hpp) on fragments: every score, row and
/// accumulator element goes through the same policy functions in the same order, so its output
/// equals `qflash::reference::flash_attention` bit for bit (tests/device hold it to that).
///
/// CTA: `Warps` warps, each owning 16 query rows (BM = 16 * Warps); the CTA walks the KV sequence
/// in blocks of BN = Cfg::block_n keys from key 0, as the reference does.
/// Shared memory (bytes; every row padded by 16 bytes so ldmatrix is free of bank conflicts):
///   q_s  [BM][DP + 16]         s8   DP = D rounded up to 32 (columns D..DP-1 are zero)
///   k_s  [2][BN][DP + 16]      s8   two stages
///   vn_s [2][BN][D + 16]       s8   two stages, V as stored (token-major)
///   vt_s [D][BN + 16]          s8   V transposed, keys permuted within each 16-key group so that
///                                   the Q K^T accumulator registers are directly the A operand
///                                   of P V (position 4q+i holds key {2q, 2q+1, 2q+8, 2q+9}[i])
#pragma once

#if !defined(__CUDACC__)
#error "qflash/device/*.cuh needs nvcc (CUDA C++)"
#endif

#include <cstdint>

#include "qflash/attention/flash_step.hpp"
#include "qflash/attention/problem.hpp"
#include "qflash/core/concepts.hpp"
#include "qflash/core/config.hpp"
#include "qflash/core/int_traits.hpp"
#include "qflash/device/mma.cuh"
#include "qflash/policy/calibrate.hpp"
#include "qflash/policy/online_softmax.hpp"

namespace qflash::device {

/// Head parameters carried by value in the launch (no device allocation, graph-capturable).
inline constexpr int kMaxInlineHeads = 64;

/// Everything one launch needs; passed as a __grid_constant__ kernel parameter.
template <KernelConfig Cfg, OutputPolicy Output>
struct KernelArgs {
  AttentionProblem problem;                      ///< device pointers
  Tensor4<typename Output::value_type> out;      ///< device pointer
  const HeadParams<Cfg, Output>* device_params;  ///< nullptr: use inline_params
  std::int64_t param_count;                      ///< 1 (shared) or H
  std::int32_t q_tiles;                          ///< ceil(Nq / BM)
  HeadParams<Cfg, Output> inline_params[kMaxInlineHeads];
};

/// Compile-time geometry of one kernel instantiation.
template <KernelConfig Cfg, int D, int Warps>
struct KernelShape {
  static_assert(is_supported_head_dim(D), "qflash kernel: head dim must be 32, 64, 80, 96 or 128");
  static_assert(Cfg::Exp::pmax <= 255, "qflash kernel: P is a u8 tensor-core operand");
  static constexpr int warps = Warps;
  static constexpr int threads = 32 * Warps;
  static constexpr int block_m = 16 * Warps;
  static constexpr int block_n = Cfg::block_n;
  static constexpr int d_padded = (D + 31) / 32 * 32;  ///< k extent of Q K^T (zero padded)
  static constexpr int qk_stride = d_padded + 16;      ///< bytes per row of q_s and k_s
  static constexpr int vn_stride = D + 16;             ///< bytes per row of vn_s
  static constexpr int vt_stride = block_n + 16;       ///< bytes per row of vt_s
  static constexpr int q_bytes = block_m * qk_stride;
  static constexpr int k_bytes = block_n * qk_stride;   ///< one stage
  static constexpr int vn_bytes = block_n * vn_stride;  ///< one stage
  static constexpr int vt_bytes = D * vt_stride;
  static constexpr int smem_bytes = q_bytes + 2 * k_bytes + 2 * vn_bytes + vt_bytes;
  static constexpr int chunks_per_row = D / 16;  ///< 16-byte cp.async chunks per token row
  static constexpr int n_tiles = block_n / 8;    ///< n8 tiles of S per warp
  static constexpr int k_chunks_qk = d_padded / 32;
  static constexpr int k_chunks_pv = block_n / 32;
  static constexpr int d_tiles = D / 8;  ///< n8 tiles of the output per warp
  static_assert(block_n % 32 == 0 && d_tiles % 2 == 0, "qflash kernel: tile shape");
};

namespace detail {

/// Byte i of the result is byte `sel[i]` of {x, y} (x bytes 0-3, y bytes 4-7).
QFLASH_DEVICE std::uint32_t byte_perm(std::uint32_t x, std::uint32_t y, std::uint32_t sel) {
  return __byte_perm(x, y, sel);
}

/// Visibility of (row, key): inside the problem and not masked.
QFLASH_DEVICE bool is_visible(const AttentionProblem& p, std::int64_t z, std::int64_t row,
                              std::int64_t key) {
  return row < p.q.seq && key < p.k.seq && p.mask.visible(z, row, key);
}

/// Issues the cp.async copies of `rows` token rows (D bytes each) of t(z, h, first .. ) into
/// `smem` (row stride `smem_stride`); rows at or past `limit` are zero-filled.
template <int D, int Threads>
QFLASH_DEVICE void copy_rows_async(std::uint8_t* smem, int smem_stride, int rows,
                                   const Tensor4<const std::int8_t>& t, std::int64_t z,
                                   std::int64_t h, std::int64_t first, std::int64_t limit) {
  constexpr int chunks = D / 16;
  const std::int8_t* head = t.data + z * t.stride_batch + h * t.stride_head;
  for (int i = static_cast<int>(threadIdx.x); i < rows * chunks; i += Threads) {
    const int row = i / chunks, chunk = i % chunks;
    const std::int64_t token = first + row;
    const bool valid = token < limit;
    const std::int8_t* src = valid ? head + token * t.stride_seq + chunk * 16 : t.data;
    cp_async_16(smem + row * smem_stride + chunk * 16, src, valid);
  }
}

}  // namespace detail

/// One CTA computes BM query rows of one (batch, head) pair over the whole KV sequence.
template <KernelConfig Cfg, OutputPolicy Output, int D, int Warps>
__global__ void __launch_bounds__(32 * Warps)
    flash_attention_kernel(const __grid_constant__ KernelArgs<Cfg, Output> args) {
  using Shape = KernelShape<Cfg, D, Warps>;
  using Softmax = typename Cfg::Softmax;
  constexpr int BM = Shape::block_m;
  constexpr int BN = Shape::block_n;

  extern __shared__ __align__(16) std::uint8_t smem[];
  std::uint8_t* const q_s = smem;
  std::uint8_t* const k_s = q_s + Shape::q_bytes;
  std::uint8_t* const vn_s = k_s + 2 * Shape::k_bytes;
  std::uint8_t* const vt_s = vn_s + 2 * Shape::vn_bytes;

  const AttentionProblem& p = args.problem;
  const std::int64_t heads = p.q.heads;
  const auto block = static_cast<std::int64_t>(blockIdx.x);
  const std::int64_t q_tile = block % args.q_tiles;
  const std::int64_t h = (block / args.q_tiles) % heads;
  const std::int64_t z = block / (args.q_tiles * heads);
  const std::int64_t param_index = args.param_count == 1 ? 0 : h;
  const HeadParams<Cfg, Output> prm = args.device_params != nullptr
                                          ? args.device_params[param_index]
                                          : args.inline_params[param_index];

  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int group = lane / 4;  // fragment row within the 8-row half
  const int quad = lane % 4;   // fragment column pair
  const std::int64_t nq = p.q.seq, nkv = p.k.seq;
  const std::int64_t row0 = q_tile * BM;
  const std::int64_t warp_row0 = row0 + warp * 16;
  const bool warp_active = warp_row0 < nq;
  const bool plain = p.bias.kind == BiasKind::none && p.mask.windows == 0;

  // Zero the head-dim padding once (D = 80 pads to 96); cp.async never writes it.
  if constexpr (Shape::d_padded > D) {
    for (int r = static_cast<int>(threadIdx.x); r < BM + 2 * BN; r += Shape::threads) {
      std::uint8_t* row = r < BM ? q_s + r * Shape::qk_stride : k_s + (r - BM) * Shape::qk_stride;
      *reinterpret_cast<uint4*>(row + D) = make_uint4(0, 0, 0, 0);
    }
  }

  // Prologue: Q and the first K/V block.
  detail::copy_rows_async<D, Shape::threads>(q_s, Shape::qk_stride, BM, p.q, z, h, row0, nq);
  detail::copy_rows_async<D, Shape::threads>(k_s, Shape::qk_stride, BN, p.k, z, h, 0, nkv);
  detail::copy_rows_async<D, Shape::threads>(vn_s, Shape::vn_stride, BN, p.v, z, h, 0, nkv);
  cp_async_commit();

  std::uint32_t q_frag[Shape::k_chunks_qk][4];
  std::int32_t acc[Shape::d_tiles][4] = {};
  RowState rows[2] = {};  // rows group and group + 8 of this warp

  const auto kv_blocks = static_cast<int>((nkv + BN - 1) / BN);
  for (int kv = 0; kv < kv_blocks; ++kv) {
    const int stage = kv & 1;
    const std::int64_t key0 = static_cast<std::int64_t>(kv) * BN;
    cp_async_wait<0>();
    __syncthreads();  // (A) block kv (and Q) visible to all; block kv-1 fully consumed

    if (kv + 1 < kv_blocks) {  // prefetch block kv+1 into the other stage
      detail::copy_rows_async<D, Shape::threads>(k_s + (stage ^ 1) * Shape::k_bytes,
                                                 Shape::qk_stride, BN, p.k, z, h, key0 + BN, nkv);
      detail::copy_rows_async<D, Shape::threads>(vn_s + (stage ^ 1) * Shape::vn_bytes,
                                                 Shape::vn_stride, BN, p.v, z, h, key0 + BN, nkv);
      cp_async_commit();
    }

    // V -> vt_s: 4 keys x 4 head-dim bytes per item, transposed with byte permutes.
    {
      const std::uint8_t* vn = vn_s + stage * Shape::vn_bytes;
      constexpr int words = D / 4;
      for (int i = static_cast<int>(threadIdx.x); i < (BN / 16) * 4 * words; i += Shape::threads) {
        const int c = i % words, q4 = (i / words) % 4, grp = i / (words * 4);
        const int key = grp * 16 + 2 * q4;  // keys key, key+1, key+8, key+9
        const auto r0 =
            *reinterpret_cast<const std::uint32_t*>(vn + key * Shape::vn_stride + 4 * c);
        const auto r1 =
            *reinterpret_cast<const std::uint32_t*>(vn + (key + 1) * Shape::vn_stride + 4 * c);
        const auto r2 =
            *reinterpret_cast<const std::uint32_t*>(vn + (key + 8) * Shape::vn_stride + 4 * c);
        const auto r3 =
            *reinterpret_cast<const std::uint32_t*>(vn + (key + 9) * Shape::vn_stride + 4 * c);
        const std::uint32_t lo01 = detail::byte_perm(r0, r1, 0x5140);
        const std::uint32_t hi01 = detail::byte_perm(r0, r1, 0x7362);
        const std::uint32_t lo23 = detail::byte_perm(r2, r3, 0x5140);
        const std::uint32_t hi23 = detail::byte_perm(r2, r3, 0x7362);
        std::uint8_t* dst = vt_s + (4 * c) * Shape::vt_stride + grp * 16 + 4 * q4;
        *reinterpret_cast<std::uint32_t*>(dst) = detail::byte_perm(lo01, lo23, 0x5410);
        *reinterpret_cast<std::uint32_t*>(dst + Shape::vt_stride) =
            detail::byte_perm(lo01, lo23, 0x7632);
        *reinterpret_cast<std::uint32_t*>(dst + 2 * Shape::vt_stride) =
            detail::byte_perm(hi01, hi23, 0x5410);
        *reinterpret_cast<std::uint32_t*>(dst + 3 * Shape::vt_stride) =
            detail::byte_perm(hi01, hi23, 0x7632);
      }
    }

    // Steps 1-4 of flash_step: S = Q K^T, logits, tile maxima, probabilities.
    std::uint32_t p_frag[Shape::k_chunks_pv][4] = {};
    std::int32_t tile_max[2] = {IntTraits<std::int32_t>::min, IntTraits<std::int32_t>::min};
    std::int32_t tile_sum[2] = {0, 0};
    if (warp_active) {
      if (kv == 0) {
        QFLASH_UNROLL
        for (int kc = 0; kc < Shape::k_chunks_qk; ++kc) {
          const int r = warp * 16 + (lane % 8) + 8 * ((lane / 8) % 2);
          ldmatrix_x4(q_frag[kc], q_s + r * Shape::qk_stride + 32 * kc + 16 * (lane / 16));
        }
      }
      std::int32_t s[Shape::n_tiles][4] = {};
      const std::uint8_t* ks = k_s + stage * Shape::k_bytes;
      QFLASH_UNROLL
      for (int kc = 0; kc < Shape::k_chunks_qk; ++kc) {
        QFLASH_UNROLL
        for (int nt = 0; nt < Shape::n_tiles; nt += 2) {
          std::uint32_t b[4];
          const int key = 8 * nt + (lane % 8) + 8 * (lane / 16);
          ldmatrix_x4(b, ks + key * Shape::qk_stride + 32 * kc + 16 * ((lane / 8) % 2));
          mma_s8s8(s[nt], q_frag[kc], {b[0], b[1]});
          mma_s8s8(s[nt + 1], q_frag[kc], {b[2], b[3]});
        }
      }

      // 2. logits of visible entries; 3. row maxima (quad reduction; INT32_MIN = none visible,
      // never a logit since |t| <= 2^29 + 1).
      bool visible[Shape::n_tiles][4];
      QFLASH_UNROLL
      for (int nt = 0; nt < Shape::n_tiles; ++nt) {
        QFLASH_UNROLL
        for (int e = 0; e < 4; ++e) {
          const std::int64_t row = warp_row0 + group + 8 * (e / 2);
          const std::int64_t key = key0 + 8 * nt + 2 * quad + (e % 2);
          visible[nt][e] = plain ? (row < nq && key < nkv) : detail::is_visible(p, z, row, key);
          if (visible[nt][e]) {
            const std::int32_t bias = plain ? 0 : p.bias.at(h, row, key);
            s[nt][e] = Cfg::Logit::apply(s[nt][e], bias, prm.logit);
            tile_max[e / 2] = max(tile_max[e / 2], s[nt][e]);
          }
        }
      }
      QFLASH_UNROLL
      for (int r = 0; r < 2; ++r) {
        tile_max[r] = max(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
        tile_max[r] = max(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
      }
      // 4. probabilities against the reference maximum, packed as the A operand of P V.
      std::int32_t reference[2];
      QFLASH_UNROLL
      for (int r = 0; r < 2; ++r) reference[r] = Softmax::reference_max(rows[r], tile_max[r]);
      QFLASH_UNROLL
      for (int nt = 0; nt < Shape::n_tiles; ++nt) {
        QFLASH_UNROLL
        for (int e = 0; e < 4; ++e) {
          std::uint32_t prob = 0;
          if (visible[nt][e]) {
            const Exp2Value v = Cfg::Exp::apply(reference[e / 2] - s[nt][e], prm.exp);
            prob = static_cast<std::uint32_t>(v.p);
            tile_sum[e / 2] += v.weight;
          }
          // S tile nt, element e -> register (nt / 4, (e / 2) + 2 * ((nt / 2) % 2)),
          // byte (e % 2) + 2 * (nt % 2).
          const int reg = (e / 2) + 2 * ((nt / 2) % 2);
          const int byte = (e % 2) + 2 * (nt % 2);
          p_frag[nt / 4][reg] |= prob << (8 * byte);
        }
      }
      QFLASH_UNROLL
      for (int r = 0; r < 2; ++r) {
        tile_sum[r] += __shfl_xor_sync(0xffffffffu, tile_sum[r], 1);
        tile_sum[r] += __shfl_xor_sync(0xffffffffu, tile_sum[r], 2);
      }
    }
    __syncthreads();  // (B) vt_s complete

    if (warp_active) {
      // 5. PV = P V (u8 x s8), fresh accumulators for this block.
      std::int32_t pv[Shape::d_tiles][4] = {};
      QFLASH_UNROLL
      for (int kc = 0; kc < Shape::k_chunks_pv; ++kc) {
        QFLASH_UNROLL
        for (int dn = 0; dn < Shape::d_tiles; dn += 2) {
          std::uint32_t b[4];
          const int d = 8 * dn + (lane % 8) + 8 * (lane / 16);
          ldmatrix_x4(b, vt_s + d * Shape::vt_stride + 32 * kc + 16 * ((lane / 8) % 2));
          mma_u8s8(pv[dn], p_frag[kc], {b[0], b[1]});
          mma_u8s8(pv[dn + 1], p_frag[kc], {b[2], b[3]});
        }
      }
      // 6. merge into the running state (rows without a visible key are left untouched).
      QFLASH_UNROLL
      for (int r = 0; r < 2; ++r) {
        if (tile_max[r] == IntTraits<std::int32_t>::min) continue;
        const MergeFactors f = Softmax::merge_row(rows[r], tile_max[r], tile_sum[r], prm.exp);
        QFLASH_UNROLL
        for (int dn = 0; dn < Shape::d_tiles; ++dn) {
          acc[dn][2 * r] = Softmax::merge_element(acc[dn][2 * r], pv[dn][2 * r], f);
          acc[dn][2 * r + 1] = Softmax::merge_element(acc[dn][2 * r + 1], pv[dn][2 * r + 1], f);
        }
      }
    }
  }

  // Epilogue: the output policy on every element this thread owns.
  if (warp_active) {
    QFLASH_UNROLL
    for (int r = 0; r < 2; ++r) {
      const std::int64_t row = warp_row0 + group + 8 * r;
      if (row >= nq) continue;
      QFLASH_UNROLL
      for (int dn = 0; dn < Shape::d_tiles; ++dn) {
        QFLASH_UNROLL
        for (int c = 0; c < 2; ++c) {
          args.out(z, h, row, 8 * dn + 2 * quad + c) =
              finalize<Output>(acc[dn][2 * r + c], rows[r], prm.output);
        }
      }
    }
  }
}

}  // namespace qflash::device
