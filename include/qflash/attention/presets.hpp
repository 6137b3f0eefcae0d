// SPDX-License-Identifier: Apache-2.0
/// @file
/// Named kernel configurations: policy bundles plus the KV block size.
///
/// The block size is part of the numerics (the online softmax rounds once per KV block), so the
/// reference and the CUDA kernel both take it from here.
#pragma once

#include "qflash/core/concepts.hpp"
#include "qflash/core/fixed_point.hpp"
#include "qflash/policy/exp2.hpp"
#include "qflash/policy/logit.hpp"
#include "qflash/policy/online_softmax.hpp"
#include "qflash/policy/output.hpp"

namespace qflash::presets {

/// The published QFlash numerics (raw Q K^T units, linear-fraction shift exp, 7-bit P, running
/// max, truncating division, BLOCK_N = 32), with its defects fixed: the accuracy baseline.
struct Paper {
  using Logit = PaperLogit;
  using Exp = PaperShiftExp2;
  using Softmax = OnlineSoftmax<Exp, MaxMode::running>;
  static constexpr Rounding output_rounding = Rounding::toward_zero;
  static constexpr int block_n = 32;
};

/// The "R+" numerics: Q16 log2-domain logits, polynomial exp2 with Pmax = 255 (u8 P), row sum
/// with 6 extra fraction bits, P quantized against the tile-local max, rounding division.
/// BLOCK_N = 32: with tile-local maxima a smaller block keeps more P resolution (kernel-only
/// SQNR on A2: 54.2 dB at 32 against 51.6 dB at 64 and 49.5 dB at 128, docs/numerics.md).
template <int Degree>
struct PreciseT {
  using Logit = Log2Logit<16>;
  using Exp = PolyExp2<Degree, 255, 6, 16>;
  using Softmax = OnlineSoftmax<Exp, MaxMode::tile_local>;
  static constexpr Rounding output_rounding = Rounding::half_away_from_zero;
  static constexpr int block_n = 32;
};

/// The in-place numerics: log2 logits in Q32 from one multiply-add (no clamp; frames and maxima
/// in their Q16 floor, P from all 32 fraction bits), an ascending quadratic exp2 (0.268 % max
/// error) whose octave is one multiply, P against a per-row frame that follows the tile maxima
/// in whole octaves (FrameSoftmax: about the P resolution of tile-local maxima, with P V
/// accumulated in place), P itself as the row-sum weight. The CUDA kernel for it sums P with
/// the tensor cores (device/in_place_kernel.cuh).
template <int BlockN>
struct FastT {
  using Logit = WideLog2Logit;
  using Exp = AscendingPolyExp2<255>;
  using Softmax = FrameSoftmax<Exp>;
  static constexpr Rounding output_rounding = Rounding::half_away_from_zero;
  static constexpr int block_n = BlockN;
};
using Fast = FastT<64>;
/// Fast with one frame per 128 keys: half the frame moves of Fast per key, for long rows at
/// D <= 64 (the in-place kernel holds S 64 keys at a time and computes the second half twice).
/// Its own numerics: P is quantized against the frame of 128 keys (SQNR in docs/numerics.md).
using FastLong = FastT<128>;

using Precise = PreciseT<2>;       ///< quadratic exp2 (0.27 % max error)
using PreciseCubic = PreciseT<3>;  ///< cubic exp2 (0.012 % max error)

static_assert(KernelConfig<Paper>);
static_assert(KernelConfig<Precise>);
static_assert(KernelConfig<PreciseCubic>);
static_assert(InPlaceConfig<Fast>);
static_assert(InPlaceConfig<FastLong>);
static_assert(!InPlaceConfig<Precise> && !InPlaceConfig<Paper>);

}  // namespace qflash::presets

namespace qflash {

namespace detail {
template <Rounding Mode, class OutT>
struct OutputForImpl {
  using type = Requantize<OutT, Mode>;
};
template <Rounding Mode>
struct OutputForImpl<Mode, Float16> {
  using type = DequantizeFloat16<Mode>;
};
}  // namespace detail

/// The output policy a configuration uses for element type OutT (an integer type or Float16).
template <KernelConfig Cfg, class OutT>
using OutputFor = typename detail::OutputForImpl<Cfg::output_rounding, OutT>::type;

}  // namespace qflash
