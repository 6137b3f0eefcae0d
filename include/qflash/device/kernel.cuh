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
///   k_s  [2][STEP][DP + 16]    s8   two stages (STEP = block_n keys per step)
///   vn_s [2][STEP][D + 16]     s8   two stages, V as stored (token-major)
///   vt_s [D][STEP + 16]        s8   V transposed, keys permuted within each 16-key group so that
///                                   the Q K^T accumulator registers are directly the A operand
///                                   of P V (position 4q+i holds key {2q, 2q+1, 2q+8, 2q+9}[i])
///   vt_second [D][STEP + 16]   s8   a second V^T buffer, only for the paired pass
///
/// Paired pass (kPairsBlocks): when the softmax policy quantizes P against tile-local maxima and
/// Nkv is in (block_n, 2 block_n] (e.g. N = 49 with block_n = 32), the two KV blocks are
/// independent up to their merges, so the kernel loads both at once and computes steps 1-4 of
/// both in one basic block (their instruction streams interleave), then P V and the merges in
/// block order.
#pragma once

#if !defined(__CUDACC__)
#error "qflash/device/*.cuh needs nvcc (CUDA C++)"
#endif

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "qflash/attention/flash_step.hpp"
#include "qflash/attention/head_params.hpp"
#include "qflash/attention/problem.hpp"
#include "qflash/core/concepts.hpp"
#include "qflash/core/config.hpp"
#include "qflash/core/fast_divide.hpp"
#include "qflash/core/int_traits.hpp"
#include "qflash/device/mma.cuh"
#include "qflash/policy/online_softmax.hpp"

#if !defined(QFLASH_KERNEL_MIN_BLOCKS)
#define QFLASH_KERNEL_MIN_BLOCKS 4
#endif

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
  FastDivide by_q_tiles;                         ///< by ceil(Nq / BM): block -> (batch, head)
  FastDivide by_heads;                           ///< (batch, head) pair -> batch
  /// Unit stride along D, even token/head/batch strides and a data pointer aligned to two
  /// elements: the epilogue writes each lane's two adjacent columns with one store.
  bool paired_output = false;
  /// The instance has the paired pass (kPairsBlocks) and Nkv is in (block_n, 2 block_n]: the
  /// kernel computes both KV blocks in one pass, with a second V^T buffer, given that the launch
  /// has KernelShape::smem_bytes_paired bytes of dynamic shared memory (the kernel checks).
  bool paired_blocks = false;
  HeadParams<Cfg, Output> inline_params[kMaxInlineHeads];
};

/// Compile-time geometry of one kernel instantiation: one KV block of the configuration
/// (block_n keys) per step of the main loop.
template <KernelConfig Cfg, int D, int Warps>
struct KernelShape {
  static_assert(is_supported_head_dim(D), "qflash kernel: head dim must be 32, 64, 80, 96 or 128");
  static_assert(Cfg::Exp::pmax <= 255, "qflash kernel: P is a u8 tensor-core operand");
  static constexpr int warps = Warps;
  static constexpr int threads = 32 * Warps;
  static constexpr int block_m = 16 * Warps;
  static constexpr int block_n = Cfg::block_n;
  static constexpr int step_keys = block_n;
  static constexpr int d_padded = (D + 31) / 32 * 32;  ///< k extent of Q K^T (zero padded)
  static constexpr int qk_stride = d_padded + 16;      ///< bytes per row of q_s and k_s
  static constexpr int vn_stride = D + 16;             ///< bytes per row of vn_s
  static constexpr int vt_stride = step_keys + 16;     ///< bytes per row of vt_s
  static constexpr int q_bytes = block_m * qk_stride;
  static constexpr int k_bytes = step_keys * qk_stride;   ///< one stage
  static constexpr int vn_bytes = step_keys * vn_stride;  ///< one stage
  static constexpr int vt_bytes = D * vt_stride;
  static constexpr int smem_bytes = q_bytes + 2 * k_bytes + 2 * vn_bytes + vt_bytes;
  /// With KernelArgs::paired_blocks: a second vt buffer after the first.
  static constexpr int smem_bytes_paired = smem_bytes + vt_bytes;
  static constexpr int n_tiles = step_keys / 8;  ///< n8 tiles of S per warp and step
  /// The general kernel's ragged last block computes its live n8 tiles in groups of this many
  /// (4 variants); the in-place kernel uses it only for steps of more than 8 tiles.
  static constexpr int live_granularity = n_tiles / 4;
  static constexpr int k_chunks_qk = d_padded / 32;
  static constexpr int k_chunks_pv = step_keys / 32;  ///< k32 chunks of P V per step
  static constexpr int d_tiles = D / 8;               ///< n8 tiles of the output per warp
  static_assert(block_n % 32 == 0 && d_tiles % 2 == 0, "qflash kernel: tile shape");
};

namespace detail {

/// Byte i of the result is byte `sel[i]` of {x, y} (x bytes 0-3, y bytes 4-7).
QFLASH_DEVICE std::uint32_t byte_perm(std::uint32_t x, std::uint32_t y, std::uint32_t sel) {
  return __byte_perm(x, y, sel);
}

/// The cp.async copies of a Rows x D int8 tile (token rows, D contiguous bytes each) into shared
/// memory with row stride SmemStride. Thread t copies the 16-byte chunks t, t + Threads, ...;
/// their rows and offsets are recomputed per copy from the thread index (constant divisions),
/// which keeps no per-chunk registers alive across the main loop. Rows at or past the end of
/// the sequence are zero-filled and not read.
template <int D, int Rows, int SmemStride, int Threads>
struct TileCopier {
  static constexpr int chunks = D / 16;
  static constexpr int total = Rows * chunks;
  static constexpr int items = (total + Threads - 1) / Threads;
  std::int64_t stride_seq;

  QFLASH_DEVICE explicit TileCopier(std::int64_t stride) : stride_seq(stride) {}

  /// Copies rows [0, Rows) starting at `first` (a pointer to token 0 of the tile); rows at or
  /// past `rows_left` are zero-filled. `Bounded = false`: the caller knows rows_left >= Rows.
  template <bool Bounded = true>
  QFLASH_DEVICE void issue(std::uint8_t* smem, const std::int8_t* first,
                           std::int64_t rows_left) const {
    QFLASH_UNROLL
    for (int k = 0; k < items; ++k) {
      const int i = static_cast<int>(threadIdx.x) + k * Threads;
      if (total % Threads != 0 && i >= total) continue;
      const int row = i / chunks, chunk = i % chunks;
      const bool valid = !Bounded || row < rows_left;
      cp_async_16(smem + row * SmemStride + chunk * 16,
                  valid ? first + row * stride_seq + chunk * 16 : first, valid);
    }
  }

  /// issue(); with `UncheckedWhenFull`, a tile whose rows all exist (rows_left >= Rows) skips
  /// the row tests (a warp-uniform branch).
  template <bool UncheckedWhenFull>
  QFLASH_DEVICE void issue_step(std::uint8_t* smem, const std::int8_t* first,
                                std::int64_t rows_left) const {
    if (UncheckedWhenFull && rows_left >= Rows) {
      issue<false>(smem, first, rows_left);
    } else {
      issue<true>(smem, first, rows_left);
    }
  }
};

/// Two adjacent output elements, written with one store (aligned to their combined size).
template <class T>
struct alignas(2 * sizeof(T)) ElementPair {
  T first;
  T second;
};

/// A trivially copyable value as its 32-bit words (register-resident type punning, an nvcc/GCC
/// extension CUDA code relies on): what the word-by-word helpers below work on.
template <class T>
union WordView {
  static_assert(sizeof(T) % 4 == 0 && std::is_trivially_copyable_v<T>,
                "WordView: a trivially copyable type of whole 32-bit words");
  static constexpr unsigned kWords = sizeof(T) / 4;
  T value;
  std::uint32_t word[kWords];
};

/// `value` of lane `lane ^ mask`, for any trivially copyable type (word by word).
template <class T>
QFLASH_DEVICE T shuffle_xor(const T& value, int mask) {
  WordView<T> w{value};
  QFLASH_UNROLL
  for (unsigned i = 0; i < WordView<T>::kWords; ++i)
    w.word[i] = __shfl_xor_sync(0xffffffffu, w.word[i], mask);
  return w.value;
}

/// `condition ? a : b` word by word, each word opaque to the optimiser afterwards: nvcc otherwise
/// widens a selected 32-bit factor to 64 bits and multiplies by it 64 x 64.
template <class T>
QFLASH_DEVICE T select(bool condition, const T& a, const T& b) {
  WordView<T> x{a}, y{b};
  QFLASH_UNROLL
  for (unsigned i = 0; i < WordView<T>::kWords; ++i)
    x.word[i] = opaque_u32(condition ? x.word[i] : y.word[i]);
  return x.value;
}

/// Whether the softmax policy quantizes P against the tile's own maximum (reference_max needs
/// no row state), known at compile time.
template <class Softmax>
inline constexpr bool reference_is_tile_max = Softmax::max_mode == MaxMode::tile_local;

/// Whether the softmax policy declares merge_element_biased (accumulators kept as x + 2^31).
template <class Softmax>
inline constexpr bool biased_merge = SoftmaxTraits<Softmax>::merges_biased;

/// Whether merge_element_biased with identity factors is the plain sum (declared by the
/// policy's SoftmaxTraits), so that a block in which no row rescales merges with one add.
template <class Softmax>
inline constexpr bool identity_merge_is_sum = SoftmaxTraits<Softmax>::identity_merge_is_sum;

/// Where a CTA works: batch z, head h and query tile, from blockIdx.x in 32-bit arithmetic (the
/// launcher keeps the grid below 2^31) with multiply-high divisions.
struct BlockPlace {
  std::int64_t z, h;
  std::uint32_t q_tile;
};
template <class Args>
QFLASH_DEVICE BlockPlace block_place(const Args& args) {
  const std::uint32_t zh = args.by_q_tiles.quotient(blockIdx.x);
  const std::uint32_t q_tile = blockIdx.x - zh * args.by_q_tiles.divisor;
  const std::uint32_t z32 = args.by_heads.quotient(zh);
  return BlockPlace{z32, zh - z32 * args.by_heads.divisor, q_tile};
}

/// Keys of KV step `step`: `Step`, fewer on a ragged last step.
template <int Step>
QFLASH_DEVICE int step_keys(std::int64_t nkv, int step) {
  const std::int64_t left = nkv - static_cast<std::int64_t>(step) * Step;
  return static_cast<int>(left < Step ? left : Step);
}

/// Calls `f.template operator()<Live, Tested>()` for a ragged step of `keys_left` keys
/// (0 < keys_left < 8 * NTiles): Live = its n8 tiles that hold a key, rounded up to a multiple
/// of G, and Tested = Live - G (the tiles below hold only keys). NTiles / G instantiations.
template <int NTiles, int G, class F>
QFLASH_DEVICE void with_live_tiles(int keys_left, F&& f) {
  static_assert(NTiles % G == 0);
  const int live_groups = (keys_left + 8 * G - 1) / (8 * G);
  [&]<int... I>(std::integer_sequence<int, I...>) {
    (void)((live_groups == I + 1 ? (f.template operator()<(I + 1) * G, I * G>(), true) : false) ||
           ...);
  }
  (std::make_integer_sequence<int, NTiles / G>{});
}

/// f.template operator()<I>() for I = First, ..., Last - 1 (static_for) or Last - 1, ...,
/// First (static_for_down): a loop whose index is a template argument.
template <int First, int Last, class F>
QFLASH_DEVICE void static_for(F&& f) {
  if constexpr (First < Last) {
    f.template operator()<First>();
    static_for<First + 1, Last>(f);
  }
}
template <int First, int Last, class F>
QFLASH_DEVICE void static_for_down(F&& f) {
  if constexpr (First < Last) {
    f.template operator()<Last - 1>();
    static_for_down<First, Last - 1>(f);
  }
}

/// The top of a KV step of the two-stage pipeline: waits for the step's cp.async group (and Q's;
/// on step 0 the group of step 1 may stay in flight) and makes it visible to the CTA. After it,
/// every warp is done with step - 1, so its stage may be refilled.
QFLASH_DEVICE void await_step(int step, int steps) {
  if (step == 0 && steps > 1) {
    cp_async_wait<1>();
  } else {
    cp_async_wait<0>();
  }
  __syncthreads();
}

/// The head parameters of head h (one shared set or one per head; device or inline).
template <class Args>
QFLASH_DEVICE auto head_params(const Args& args, std::int64_t h) {
  const std::int64_t index = args.param_count == 1 ? 0 : h;
  return args.device_params != nullptr ? args.device_params[index] : args.inline_params[index];
}

/// Writes one output row's columns of this lane (2 quad + 8 dn + c, c in {0, 1}) from
/// value(dn, c): one store per column pair when `paired` (unit stride, aligned pairs).
template <int DTiles, class OutT, class Value>
QFLASH_DEVICE void store_row(const Tensor4<OutT>& out, bool paired, std::int64_t z, std::int64_t h,
                             std::int64_t row, int quad, Value value) {
  OutT* const out_row = &out(z, h, row, 2 * quad);
  if (paired) {
    QFLASH_UNROLL
    for (int dn = 0; dn < DTiles; ++dn) {
      *reinterpret_cast<ElementPair<OutT>*>(out_row + 8 * dn) =
          ElementPair<OutT>{value(dn, 0), value(dn, 1)};
    }
  } else {
    QFLASH_UNROLL
    for (int dn = 0; dn < DTiles; ++dn) {
      QFLASH_UNROLL
      for (int c = 0; c < 2; ++c) out_row[(8 * dn + c) * out.stride_dim] = value(dn, c);
    }
  }
}

/// V (token-major, row stride Shape::vn_stride) -> V^T (row stride Shape::vt_stride) for one
/// step, by all threads: 4 keys x 4 head-dim bytes per item, transposed with byte permutes; keys
/// are permuted within each 16-key group so that the Q K^T accumulator registers are directly
/// the A operand of P V (position 4q+i holds key {2q, 2q+1, 2q+8, 2q+9}[i]).
template <class Shape, int D>
QFLASH_DEVICE void transpose_v(const std::uint8_t* vn, std::uint8_t* vt) {
  constexpr int STEP = Shape::step_keys;
  constexpr int words = D / 4;
  constexpr int total = (STEP / 16) * 4 * words;
  QFLASH_UNROLL
  for (int k = 0; k < (total + Shape::threads - 1) / Shape::threads; ++k) {
    const int i = static_cast<int>(threadIdx.x) + k * Shape::threads;
    if (total % Shape::threads != 0 && i >= total) break;
    const int c = i % words, q4 = (i / words) % 4, grp = i / (words * 4);
    const int key = grp * 16 + 2 * q4;  // keys key, key+1, key+8, key+9
    const std::uint8_t* src = vn + key * Shape::vn_stride + 4 * c;
    const auto r0 = *reinterpret_cast<const std::uint32_t*>(src);
    const auto r1 = *reinterpret_cast<const std::uint32_t*>(src + Shape::vn_stride);
    const auto r2 = *reinterpret_cast<const std::uint32_t*>(src + 8 * Shape::vn_stride);
    const auto r3 = *reinterpret_cast<const std::uint32_t*>(src + 9 * Shape::vn_stride);
    const std::uint32_t lo01 = byte_perm(r0, r1, 0x5140);
    const std::uint32_t hi01 = byte_perm(r0, r1, 0x7362);
    const std::uint32_t lo23 = byte_perm(r2, r3, 0x5140);
    const std::uint32_t hi23 = byte_perm(r2, r3, 0x7362);
    std::uint8_t* dst = vt + (4 * c) * Shape::vt_stride + grp * 16 + 4 * q4;
    *reinterpret_cast<std::uint32_t*>(dst) = byte_perm(lo01, lo23, 0x5410);
    *reinterpret_cast<std::uint32_t*>(dst + Shape::vt_stride) = byte_perm(lo01, lo23, 0x7632);
    *reinterpret_cast<std::uint32_t*>(dst + 2 * Shape::vt_stride) = byte_perm(hi01, hi23, 0x5410);
    *reinterpret_cast<std::uint32_t*>(dst + 3 * Shape::vt_stride) = byte_perm(hi01, hi23, 0x7632);
  }
}

/// The A fragments of this warp's 16 query rows (q_s row stride Shape::qk_stride).
template <class Shape>
QFLASH_DEVICE void load_q_fragments(std::uint32_t (&q_frag)[Shape::k_chunks_qk][4],
                                    const std::uint8_t* q_s, int warp, int lane) {
  QFLASH_UNROLL
  for (int kc = 0; kc < Shape::k_chunks_qk; ++kc) {
    const int r = warp * 16 + (lane % 8) + 8 * ((lane / 8) % 2);
    ldmatrix_x4(q_frag[kc], q_s + r * Shape::qk_stride + 32 * kc + 16 * (lane / 16));
  }
}

/// S = Q K^T on the first `Live` n8 tiles of `s` (K from `ks` on, row stride Shape::qk_stride),
/// added to `s` (exact int32).
template <class Shape, int Live, std::size_t Tiles>
QFLASH_DEVICE void qk_scores(std::int32_t (&s)[Tiles][4],
                             const std::uint32_t (&q_frag)[Shape::k_chunks_qk][4],
                             const std::uint8_t* ks, int lane) {
  static_assert(Live >= 0 && static_cast<std::size_t>(Live) <= Tiles);
  QFLASH_UNROLL
  for (int kc = 0; kc < Shape::k_chunks_qk; ++kc) {
    QFLASH_UNROLL
    for (int nt = 0; nt < Live; nt += 2) {
      std::uint32_t b[4];
      const int key = 8 * nt + (lane % 8) + 8 * (lane / 16);
      ldmatrix_x4(b, ks + key * Shape::qk_stride + 32 * kc + 16 * ((lane / 8) % 2));
      mma_s8s8(s[nt], q_frag[kc], {b[0], b[1]});
      if (nt + 1 < Live) mma_s8s8(s[nt + 1], q_frag[kc], {b[2], b[3]});
    }
  }
}

/// Bytes of dynamic shared memory the running launch was given.
QFLASH_DEVICE std::uint32_t dynamic_smem_bytes() {
  std::uint32_t bytes;
  asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(bytes));
  return bytes;
}

/// Exp::apply(u), or Exp::apply_visible(u) when the caller knows u >= 0 and the policy
/// declares it (Exp2Traits).
template <class Exp>
QFLASH_DEVICE Exp2Value exp_of_visible(bool known_nonneg, std::int32_t u,
                                       const typename Exp::Params& prm) {
  if constexpr (Exp2Traits<Exp>::has_apply_visible) {
    if (known_nonneg) return Exp::apply_visible(u, prm);
  }
  return Exp::apply(u, prm);
}

}  // namespace detail

/// Resident CTAs per SM the compiler must allow (register budget): 4 for head dims up to 64
/// (at most 128 registers per thread with 4 warps), 1 above.
template <int D>
inline constexpr int kMinBlocksPerSm = D <= 64 ? QFLASH_KERNEL_MIN_BLOCKS : 1;

/// The smallest shared memory per block that any supported architecture grants on opt-in
/// (sm_86 and sm_89: 99 KiB; sm_80: 163 KiB, sm_90: 227 KiB).
inline constexpr int kSmallestSharedMemoryOptin = 99 * 1024;

/// Whether an instantiation has the paired pass: P quantized against tile-local maxima (so the
/// second block's steps 1-4 do not need the first block's merge); both blocks' score fragments
/// and the accumulators in at most 64 registers (8 per n8 tile of each block, 4 per d8 tile),
/// half the 128 a thread has at 4 CTAs per SM -- above that the paired instances spilled (ptxas,
/// sm_90: 16 bytes at block_n = 32, D = 128; up to 1,214 bytes with 128-key blocks); and a
/// second V^T buffer that fits every supported architecture. The presets pair at D = 32 and 64.
template <KernelConfig Cfg, int D, int Warps>
inline constexpr bool kPairsBlocks =
    detail::reference_is_tile_max<typename Cfg::Softmax> &&
    8 * KernelShape<Cfg, D, Warps>::n_tiles + 4 * KernelShape<Cfg, D, Warps>::d_tiles <= 64 &&
    KernelShape<Cfg, D, Warps>::smem_bytes_paired <= kSmallestSharedMemoryOptin;

/// One CTA computes BM query rows of one (batch, head) pair over the whole KV sequence.
/// `Extras`: the launch has a bias or a mask. The launcher picks the instance, so that launches
/// without either carry no bias/mask code (a smaller kernel, fewer parameter reads).
template <KernelConfig Cfg, OutputPolicy Output, int D, int Warps, bool Extras>
__global__ void __launch_bounds__(32 * Warps, kMinBlocksPerSm<D>)
    flash_attention_kernel(const __grid_constant__ KernelArgs<Cfg, Output> args) {
  using Shape = KernelShape<Cfg, D, Warps>;
  using Softmax = typename Cfg::Softmax;
  constexpr int BM = Shape::block_m;
  constexpr int STEP = Shape::step_keys;
  constexpr std::int32_t kNone = IntTraits<std::int32_t>::min;  // "no visible key" in reductions

  extern __shared__ __align__(16) std::uint8_t smem[];
  std::uint8_t* const q_s = smem;
  std::uint8_t* const k_s = q_s + Shape::q_bytes;
  std::uint8_t* const vn_s = k_s + 2 * Shape::k_bytes;
  std::uint8_t* const vt_s = vn_s + 2 * Shape::vn_bytes;

  const AttentionProblem& p = args.problem;
  const detail::BlockPlace place = detail::block_place(args);
  const std::int64_t z = place.z, h = place.h;
  const std::uint32_t q_tile = place.q_tile;
  const HeadParams<Cfg, Output> prm = detail::head_params(args, h);

  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int group = lane / 4;  // fragment row within the 8-row half
  const int quad = lane % 4;   // fragment column pair
  const std::int64_t nq = p.q.seq, nkv = p.k.seq;
  const std::int64_t row0 = static_cast<std::int64_t>(q_tile) * BM;
  const std::int64_t warp_row0 = row0 + warp * 16;
  const bool warp_active = warp_row0 < nq;
  const std::int64_t mask_window = !Extras || p.mask.windows == 0 ? -1 : z % p.mask.windows;
  const bool row_valid[2] = {warp_row0 + group < nq, warp_row0 + group + 8 < nq};

  // Zero the head-dim padding once (D = 80 pads to 96); cp.async never writes it.
  if constexpr (Shape::d_padded > D) {
    for (int r = static_cast<int>(threadIdx.x); r < BM + 2 * STEP; r += Shape::threads) {
      std::uint8_t* row = r < BM ? q_s + r * Shape::qk_stride : k_s + (r - BM) * Shape::qk_stride;
      *reinterpret_cast<uint4*>(row + D) = make_uint4(0, 0, 0, 0);
    }
  }

  // Prologue: Q and the first two steps of K/V.
  const std::int8_t* const q_head = p.q.data + z * p.q.stride_batch + h * p.q.stride_head;
  const std::int8_t* const k_head = p.k.data + z * p.k.stride_batch + h * p.k.stride_head;
  const std::int8_t* const v_head = p.v.data + z * p.v.stride_batch + h * p.v.stride_head;
  const detail::TileCopier<D, STEP, Shape::qk_stride, Shape::threads> k_copier(p.k.stride_seq);
  const detail::TileCopier<D, STEP, Shape::vn_stride, Shape::threads> v_copier(p.v.stride_seq);
  {
    const detail::TileCopier<D, BM, Shape::qk_stride, Shape::threads> q_copier(p.q.stride_seq);
    q_copier.issue(q_s, q_head + row0 * p.q.stride_seq, nq - row0);
  }
  // K and V of the step starting at key `key0` into `stage`, as one cp.async group.
  const auto issue_step = [&](int stage, std::int64_t key0) {
    k_copier.issue(k_s + stage * Shape::k_bytes, k_head + key0 * p.k.stride_seq, nkv - key0);
    v_copier.issue(vn_s + stage * Shape::vn_bytes, v_head + key0 * p.v.stride_seq, nkv - key0);
    cp_async_commit();
  };
  issue_step(0, 0);  // one group with Q
  // The second step is issued here too (its stage is free), so that a short sequence pays one
  // memory latency, not two; from step 1 on, step s + 1 is issued at the top of step s.
  const auto steps = static_cast<int>((nkv + STEP - 1) / STEP);
  if (steps > 1) issue_step(1, STEP);

  std::uint32_t q_frag[Shape::k_chunks_qk][4];
  // Accumulators, kept biased by 2^31 (x + 2^31 mod 2^32) when the softmax policy can merge
  // them that way (detail::biased_merge); the epilogue removes the bias.
  constexpr std::uint32_t kBias = detail::biased_merge<Softmax> ? 0x80000000u : 0u;
  const auto fill_zero = [](std::int32_t(&frag)[Shape::d_tiles][4]) {  // zero in the bias
    QFLASH_UNROLL
    for (int dn = 0; dn < Shape::d_tiles; ++dn) {
      QFLASH_UNROLL
      for (int i = 0; i < 4; ++i) frag[dn][i] = static_cast<std::int32_t>(kBias);
    }
  };
  const auto unbiased = [](std::int32_t a) {
    return static_cast<std::int32_t>(static_cast<std::uint32_t>(a) ^ kBias);
  };
  std::int32_t acc[Shape::d_tiles][4];
  fill_zero(acc);
  // Each row's online-softmax state is kept (and merged) by the two lanes of its quad pair
  // that own it: lanes with an even quad index keep row `group`, odd ones row `group + 8`.
  const int mine = quad & 1;
  RowState my_state = {};

  // Steps 1-4 of one KV block for one warp: P as the A operand of P V, row maxima and sums.
  struct BlockSoftmax {
    std::uint32_t p_frag[Shape::k_chunks_pv][4];
    std::int32_t tile_max[2];
    std::int32_t tile_sum[2];
  };

  // V -> vt (keys permuted to match the P fragments, see the file comment).
  const auto transpose_v = [&](const std::uint8_t* vn, std::uint8_t* vt) {
    detail::transpose_v<Shape, D>(vn, vt);
  };

  const auto load_q_fragments = [&] { detail::load_q_fragments<Shape>(q_frag, q_s, warp, lane); };

  // Steps 1-4 of flash_step on one KV block (keys key0 .. key0 + keys_left - 1, K in `ks`):
  // S = Q K^T, logits, tile maxima, probabilities packed as the A operand of P V, tile sums.
  // 1. S on the first `Live` n8 tiles (keys at or past 8 * Live are padding of the last
  // block: their tiles are neither computed nor read).
  // 2. logits of visible entries; 3. row maxima (quad reduction); 4. probabilities against
  // the reference maximum. Every entry is computed without branches (logits are defined for
  // every score) and hidden ones are masked out, so the entries of a thread are independent
  // instruction streams. kNone is never a logit: |t| < 2^30. Rows at or past Nq are never
  // written, and no row of an mma influences another, so without a bias or mask their entries
  // count as visible (their garbage stays in their own rows); with one, they are hidden,
  // because the bias and mask rows past Nq must not be read.
  // Variants: `Extras` (bias/mask: every tile, visibility per entry), and without extras
  // the first `Live` n8 tiles with the column test from tile `Tested` on (a full block:
  // Live = Tested = n_tiles; the last, ragged block: Live = the tiles that hold a key).
  // In tiles below `Tested` every entry is visible, so u = reference - t >= 0 there.
  const auto softmax_block = [&]<int Live, int Tested>(BlockSoftmax& out, const std::uint8_t* ks,
                                                       int keys_left, std::int64_t key0) {
    static_assert(!Extras || (Live == Shape::n_tiles && Tested == 0));
    std::int32_t s[Shape::n_tiles][4] = {};
    detail::qk_scores<Shape, Live>(s, q_frag, ks, lane);
    std::int32_t(&tile_max)[2] = out.tile_max;
    std::int32_t(&tile_sum)[2] = out.tile_sum;
    tile_max[0] = tile_max[1] = kNone;
    tile_sum[0] = tile_sum[1] = 0;
    QFLASH_UNROLL
    for (int kc = 0; kc < Shape::k_chunks_pv; ++kc) {
      QFLASH_UNROLL
      for (int i = 0; i < 4; ++i) out.p_frag[kc][i] = 0;
    }
    std::conditional_t<(Shape::n_tiles * 4 > 32), std::uint64_t, std::uint32_t> visible = 0;
    // A wide logit's 16 fraction bits below t (t_wide mod 2^16), two entries to a register.
    constexpr bool kWideLogit = LogitTraits<typename Cfg::Logit>::has_wide_form;
    [[maybe_unused]] std::uint32_t wide_fraction[kWideLogit ? Shape::n_tiles : 1][2] = {};
    QFLASH_UNROLL
    for (int nt = 0; nt < Live; ++nt) {
      QFLASH_UNROLL
      for (int e = 0; e < 4; ++e) {
        const int col = 8 * nt + 2 * quad + (e % 2);
        bool vis = nt < Tested || col < keys_left;
        std::int32_t bias = 0;
        if constexpr (Extras) {
          const std::int64_t row = warp_row0 + group + 8 * (e / 2);
          const std::int64_t key = key0 + col;
          vis = vis && row_valid[e / 2] &&
                (mask_window < 0 || p.mask.window_row(mask_window, row)[key] != 0);
          bias = vis ? p.bias.at(h, row, key) : 0;
        }
        std::int32_t t;
        if constexpr (kWideLogit) {
          const WideLogitParts x =
              split_wide_logit(Cfg::Logit::apply_wide(s[nt][e], bias, prm.logit));
          t = x.t;
          wide_fraction[nt][e / 2] |= x.fraction << (16 * (e % 2));
        } else {
          t = Cfg::Logit::apply(s[nt][e], bias, prm.logit);
        }
        s[nt][e] = t;
        tile_max[e / 2] = vis ? max(tile_max[e / 2], t) : tile_max[e / 2];
        if constexpr (Extras) visible |= static_cast<decltype(visible)>(vis) << (4 * nt + e);
      }
    }
    QFLASH_UNROLL
    for (int r = 0; r < 2; ++r) {
      tile_max[r] = max(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
      tile_max[r] = max(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
    }
    // A row without visible keys uses reference 0, so that reference - t stays in int32.
    // Each lane derives its own row's reference; the other row's comes from its partner
    // lane, unless the policy quantizes against the tile maximum (no state needed).
    std::int32_t reference[2];
    if constexpr (detail::reference_is_tile_max<Softmax>) {
      QFLASH_UNROLL
      for (int r = 0; r < 2; ++r) reference[r] = tile_max[r] == kNone ? 0 : tile_max[r];
    } else {
      const std::int32_t my_tile_max = mine == 0 ? tile_max[0] : tile_max[1];
      const std::int32_t own =
          my_tile_max == kNone ? 0 : Softmax::reference_max(my_state, my_tile_max);
      const std::int32_t partner = __shfl_xor_sync(0xffffffffu, own, 1);
      reference[0] = mine == 0 ? own : partner;
      reference[1] = mine == 0 ? partner : own;
    }
    QFLASH_UNROLL
    for (int nt = 0; nt < Live; ++nt) {
      QFLASH_UNROLL
      for (int e = 0; e < 4; ++e) {
        // Entries of fully visible tiles have u >= 0: the policy's apply_visible, if any. A
        // wide logit's u = (reference - t) * 2^16 - fraction, in Q32 (flash_step's).
        Exp2Value v;
        if constexpr (kWideLogit) {
          const std::uint32_t fraction = (wide_fraction[nt][e / 2] >> (16 * (e % 2))) & 0xFFFFu;
          v = Cfg::Exp::apply_wide(wide_distance(reference[e / 2], {s[nt][e], fraction}), prm.exp);
        } else {
          v = detail::exp_of_visible<typename Cfg::Exp>(nt < Tested, reference[e / 2] - s[nt][e],
                                                        prm.exp);
        }
        // Without extras, visibility is the column test again (cheaper than a bit mask).
        const int col = 8 * nt + 2 * quad + (e % 2);
        const bool vis =
            Extras ? ((visible >> (4 * nt + e)) & 1u) != 0 : nt < Tested || col < keys_left;
        const auto prob = vis ? static_cast<std::uint32_t>(v.p) : 0u;
        tile_sum[e / 2] += vis ? v.weight : 0;
        // S tile nt, element e -> register (nt / 4, (e / 2) + 2 * ((nt / 2) % 2)),
        // byte (e % 2) + 2 * (nt % 2).
        const int reg = (e / 2) + 2 * ((nt / 2) % 2);
        const int byte = (e % 2) + 2 * (nt % 2);
        out.p_frag[nt / 4][reg] |= prob << (8 * byte);
      }
    }
    QFLASH_UNROLL
    for (int r = 0; r < 2; ++r) {
      tile_sum[r] += __shfl_xor_sync(0xffffffffu, tile_sum[r], 1);
      tile_sum[r] += __shfl_xor_sync(0xffffffffu, tile_sum[r], 2);
    }
  };

  // Steps 1-4 on one block (and, WithFirst, on the full first block in k_s stage 0 for the
  // paired pass), in the variant that matches the block: the ragged last block computes its
  // live tiles rounded up to a multiple of G (<= 4 variants). Both calls of a variant are in one
  // basic block, so their instruction streams interleave.
  constexpr int kAll = Shape::n_tiles;
  const auto softmax_of = [&]<bool WithFirst>(BlockSoftmax& first, BlockSoftmax& out,
                                              const std::uint8_t* ks, int keys_left,
                                              std::int64_t key0) {
    const auto run = [&]<int Live, int Tested>() {
      if constexpr (WithFirst) {
        softmax_block.template operator()<kAll, Extras ? 0 : kAll>(first, k_s, STEP, 0);
      }
      softmax_block.template operator()<Live, Tested>(out, ks, keys_left, key0);
    };
    if constexpr (Extras) {
      run.template operator()<kAll, 0>();
    } else if (keys_left == STEP) {
      run.template operator()<kAll, kAll>();
    } else {
      detail::with_live_tiles<kAll, Shape::live_granularity>(keys_left, run);
    }
  };

  // 5. PV = P V (u8 x s8) with fresh accumulators; 6. merge into the running state (rows
  // without a visible key are left untouched): each lane merges its own row's state and takes
  // the other row's factors from its partner.
  const auto pv_and_merge = [&](const BlockSoftmax& b, const std::uint8_t* vt, int keys_left) {
    std::int32_t pv[Shape::d_tiles][4];  // starts from the bias (the mma wraps mod 2^32)
    fill_zero(pv);
    QFLASH_UNROLL
    for (int kc = 0; kc < Shape::k_chunks_pv; ++kc) {
      if (kc > 0 && 32 * kc >= keys_left) break;  // P is zero there (warp-uniform)
      QFLASH_UNROLL
      for (int dn = 0; dn < Shape::d_tiles; dn += 2) {
        std::uint32_t v[4];
        const int d = 8 * dn + (lane % 8) + 8 * (lane / 16);
        ldmatrix_x4(v, vt + d * Shape::vt_stride + 32 * kc + 16 * ((lane / 8) % 2));
        mma_u8s8(pv[dn], b.p_frag[kc], {v[0], v[1]});
        mma_u8s8(pv[dn + 1], b.p_frag[kc], {v[2], v[3]});
      }
    }
    const std::int32_t my_tile_max = mine == 0 ? b.tile_max[0] : b.tile_max[1];
    const std::int32_t my_tile_sum = mine == 0 ? b.tile_sum[0] : b.tile_sum[1];
    const MergeFactors own = my_tile_max == kNone
                                 ? MergeFactors{kOneQ30, kOneQ30}
                                 : Softmax::merge_row(my_state, my_tile_max, my_tile_sum, prm.exp);
    // No row of the warp rescales (always on its first block): acc + pv, one add per element.
    if constexpr (detail::identity_merge_is_sum<Softmax>) {
      if (__all_sync(0xffffffffu, own.state_q30 == kOneQ30 && own.tile_q30 == kOneQ30)) {
        QFLASH_UNROLL
        for (int r = 0; r < 2; ++r) {
          if (b.tile_max[r] == kNone) continue;
          QFLASH_UNROLL
          for (int dn = 0; dn < Shape::d_tiles; ++dn) {
            QFLASH_UNROLL
            for (int c = 0; c < 2; ++c) {
              acc[dn][2 * r + c] = static_cast<std::int32_t>(
                  static_cast<std::uint32_t>(acc[dn][2 * r + c]) +
                  (static_cast<std::uint32_t>(pv[dn][2 * r + c]) ^ kBias));
            }
          }
        }
        return;
      }
    }
    const MergeFactors partner = detail::shuffle_xor(own, 1);
    QFLASH_UNROLL
    for (int r = 0; r < 2; ++r) {
      if (b.tile_max[r] == kNone) continue;
      const MergeFactors f = r == mine ? own : partner;
      QFLASH_UNROLL
      for (int dn = 0; dn < Shape::d_tiles; ++dn) {
        QFLASH_UNROLL
        for (int c = 0; c < 2; ++c) {
          std::int32_t& a = acc[dn][2 * r + c];
          if constexpr (kBias != 0) {
            a = static_cast<std::int32_t>(Softmax::merge_element_biased(
                static_cast<std::uint32_t>(a), static_cast<std::uint32_t>(pv[dn][2 * r + c]), f));
          } else {
            a = Softmax::merge_element(a, pv[dn][2 * r + c], f);
          }
        }
      }
    }
  };

  // Nkv in (STEP, 2 STEP] in an instance with the paired pass: both blocks in one pass. The
  // launcher sets paired_blocks only then and gives such launches the second vt buffer.
  bool paired = false;
  if constexpr (kPairsBlocks<Cfg, D, Warps>) {
    paired = args.paired_blocks && steps == 2 &&
             detail::dynamic_smem_bytes() >= static_cast<std::uint32_t>(Shape::smem_bytes_paired);
  }
  if (paired) {
    // Two KV blocks in one pass (tile-local maxima: the second block's probabilities do not
    // depend on the first block's merge). Same operations per block as the loop below, in the
    // same merge order; the second V transpose goes to the extra vt buffer.
    std::uint8_t* const vt_second = vt_s + Shape::vt_bytes;
    const auto keys_second = static_cast<int>(nkv - STEP);
    cp_async_wait<0>();
    __syncthreads();  // Q and both blocks visible to all
    transpose_v(vn_s, vt_s);
    transpose_v(vn_s + Shape::vn_bytes, vt_second);
    BlockSoftmax first, second;
    if (warp_active) {
      load_q_fragments();
      softmax_of.template operator()<true>(first, second, k_s + Shape::k_bytes, keys_second, STEP);
    }
    __syncthreads();  // both vt buffers complete
    if (warp_active) {
      pv_and_merge(first, vt_s, STEP);
      pv_and_merge(second, vt_second, keys_second);
    }
  } else {
    for (int step = 0; step < steps; ++step) {
      const int stage = step & 1;
      const std::int64_t key0 = static_cast<std::int64_t>(step) * STEP;
      const int keys_left = detail::step_keys<STEP>(nkv, step);
      detail::await_step(step, steps);  // (A) step `step` (and Q) visible; step - 1 consumed

      if (step > 0 && step + 1 < steps) issue_step(stage ^ 1, key0 + STEP);  // the next step
      transpose_v(vn_s + stage * Shape::vn_bytes, vt_s);
      BlockSoftmax block;
      if (warp_active) {
        if (step == 0) load_q_fragments();
        softmax_of.template operator()<false>(block, block, k_s + stage * Shape::k_bytes, keys_left,
                                              key0);
      }
      __syncthreads();  // (B) vt_s complete
      if (warp_active) pv_and_merge(block, vt_s, keys_left);
    }
  }

  // Epilogue: the output policy on every element this thread owns. Each lane prepares the row
  // whose state it keeps, and the two lanes of a quad pair exchange their results. Addresses: one
  // 64-bit row offset per row; with `paired_output` (the common case, a uniform branch) the
  // column offsets are constants folded into one store per pair of adjacent columns.
  if (warp_active) {
    const typename Output::Row prepared = finalize_row<Output>(my_state, prm.output);
    const typename Output::Row other = detail::shuffle_xor(prepared, 1);
    QFLASH_UNROLL
    for (int r = 0; r < 2; ++r) {
      if (!row_valid[r]) continue;
      const std::int64_t row = warp_row0 + group + 8 * r;
      const typename Output::Row output_row = r == mine ? prepared : other;
      detail::store_row<Shape::d_tiles>(
          args.out, args.paired_output, z, h, row, quad,
          [&](int dn, int c) { return Output::apply(unbiased(acc[dn][2 * r + c]), output_row); });
    }
  }
}

}  // namespace qflash::device
