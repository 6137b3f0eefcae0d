// SPDX-License-Identifier: Apache-2.0
/// @file
/// Accuracy floors: a proven bound on every output element of an integer configuration against
/// exact attention on the same int8 inputs, and the check of a computed output against it.
///
/// Exact attention: o_i = sum_j 2^lambda_ij v_j / sum_j 2^lambda_ij over the visible keys, with
/// lambda_ij = S_ij * sm_scale + bias_ij / 2^16 in octaves (S exact, the bias in the integer
/// pipeline's Q16 octaves) and sm_scale the octaves per Q K^T unit that `calibrate` derived from
/// the scales. Everything below is in units of V's int8 codes.
///
/// The bound follows the integer algorithm step by step (docs/numerics.md, "Accuracy floors"):
///  - each probability P_j of a tile, against the tile's reference maximum, satisfies
///      |P_j - Pmax 2^-(lambda_ref - lambda_j)| <= rel_j * Pmax 2^-(...) + abs_j
///    with rel_j and abs_j from the exp policy's error model (`ExpErrorModel`), its row-sum
///    weight likewise in weight units;
///  - each rescale factor F (Q1.30) satisfies |F - 2^-d| <= factor_rel * 2^-d + factor_abs;
///  - each merge rounds an accumulator element by at most 1/2 unit and the row sum by 1/2 weight
///    unit;
///  - the numerator N and denominator L so perturbed give |N'/L' - N/L| <= (eN + |o| eL) /
///    (L - eL);
///  - the output adds its own rounding (1/2 output unit, 1 when truncating), the row
///    multiplier's 2^-30, saturation at the output type's range, and binary16's 2^-11.
/// The simulation uses the exact maxima; where the integer pipeline picks another maximum (logits
/// within rounding of each other), the difference is a factor 2^(+-2 e) covered by widening every
/// relative error by that factor, and every merge is charged a rounding.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <type_traits>
#include <vector>

#include "qflash/attention/presets.hpp"
#include "qflash/attention/problem.hpp"
#include "qflash/core/concepts.hpp"
#include "qflash/policy/calibrate.hpp"
#include "qflash/policy/exp2.hpp"
#include "qflash/policy/logit.hpp"
#include "qflash/policy/output.hpp"

namespace qflash::reference {

/// Per-head constants of a configuration's error model (docs/numerics.md, "Accuracy floors").
/// Distances are taken between the pipeline's ideal logits lambda' = lambda + kappa * lambda_s
/// (lambda_s: the score part of lambda), so a systematic scale error (Paper's rounded R) is
/// computed exactly, not bounded; what remains is rounding.
struct HeadErrorModel {
  double kappa = 0.0;         ///< systematic relative scale error of score octaves
  double logit_fixed = 0.0;   ///< octaves of rounding in a distance between two logits
  double bias_fixed = 0.0;    ///< ... more with a bias (converted biases round)
  double logit_rel = 0.0;     ///< ... plus this fraction of the distance
  double p_high = 0.0;        ///< P / exact - 1 <= p_high (visible keys)
  double sliver_delta = 0.0;  ///< octave k loses up to 1 - (1 - s) 2^s, s = (k + 1) delta
  double scale_rel = 0.0;     ///< common relative scale error of P and factors
  double p_abs = 0.0;         ///< absolute error of P (P units), every visible key
  double weight_abs = 0.0;    ///< absolute error of a row-sum weight (weight units)
  double factor_high = 0.0;   ///< F / exact - 1 <= factor_high
  double factor_abs = 0.0;    ///< absolute error of a Q1.30 factor (of 1)
  double visible_octaves = std::numeric_limits<double>::infinity();  ///< beyond: far_* bounds
  double far_p_abs = 0.0;       ///< |P - exact| beyond visible_octaves (P units)
  double far_factor_abs = 0.0;  ///< |F - exact| beyond visible_octaves

  /// Relative error bound of a probability or factor at `octaves` below its reference.
  double relative(double octaves, double high) const {
    const double k = std::floor(octaves < 0 ? 0 : octaves);
    const double s = std::fmin(1.0, (k + 1.0) * sliver_delta);
    const double low = sliver_delta > 0 ? std::fmax(1.0 - (1.0 - s) * std::exp2(s),
                                                    1.0 - (1.0 + s / 2) * std::exp2(-s))
                                        : high;
    return std::fmax((1.0 + high) * (1.0 + scale_rel) - 1.0, 1.0 - (1.0 - low) * (1.0 - scale_rel));
  }
};

namespace detail {

/// max over f in [0, 2^F) of |mantissa(f) / scale - 2^-f| / 2^-f, by exhaustive evaluation.
template <class Mantissa>
double max_mantissa_error(int fraction_bits, double scale, Mantissa mantissa) {
  double worst = 0.0;
  for (std::int32_t f = 0; f < (std::int32_t{1} << fraction_bits); ++f) {
    const double exact = std::exp2(-static_cast<double>(f) / (1 << fraction_bits));
    worst = std::fmax(worst, std::fabs(static_cast<double>(mantissa(f)) / scale - exact) / exact);
  }
  return worst;
}

}  // namespace detail

/// The error model of an exp policy for one head (sm_scale in octaves per Q K^T unit).
template <class Exp>
struct ExpErrorModel;

/// PolyExp2 with Log2Logit: t = floor((S + L) * M / 2^k) with M / 2^k within 2^-30 of
/// sm_scale 2^F, so a distance carries less than one unit of floors plus 2^-30 of itself (the
/// Q16 bias is exact); E lies within the polynomial's relative error of Pmax 2^G 2^-f (found
/// exhaustively, Horner floors included); P and the weight round by 1/2; a Q1.30 factor is the
/// Q1.30 polynomial (its own exhaustive error) rounded by 2^-31.
template <int Degree, int Pmax, int SumBits, int F>
struct ExpErrorModel<PolyExp2<Degree, Pmax, SumBits, F>> {
  using Exp = PolyExp2<Degree, Pmax, SumBits, F>;
  static double mantissa_error() {
    static const double value =
        detail::max_mantissa_error(F, static_cast<double>(std::int64_t{Pmax} << Exp::guard_bits),
                                   [](std::int32_t f) { return Exp::mantissa(f); });
    return value;
  }
  static double q30_error() {
    static const double value = detail::max_mantissa_error(
        F, 1073741824.0, [](std::int32_t f) { return Exp::mantissa_q30(f); });
    return value;
  }
  template <class LogitParams, class ExpParams>
  static HeadErrorModel make(double /*sm_scale*/, const LogitParams&, const ExpParams&) {
    HeadErrorModel m;
    m.logit_fixed = std::ldexp(1.0, -F);
    m.bias_fixed = std::ldexp(1.0, -18 - (F - 16));  // the multiplier's error on a score gap
                                                     // that a bias cancels: 1/4 unit
    m.logit_rel = std::ldexp(1.0, -30);
    m.p_high = mantissa_error();
    m.sliver_delta = 0.0;
    m.p_abs = 0.5;
    m.weight_abs = 0.5;
    m.factor_high = q30_error();
    m.factor_abs = std::ldexp(1.0, -31);
    return m;
  }
};

/// AscendingPolyExp2 with WideLog2Logit (the Fast preset): as below with kappa = M / (sm_scale
/// 2^32) - 1 (t_wide = S M exactly) and one Q16 unit of rounding (the frame's floor).
/// AscendingPolyExp2 with ScaledLog2Logit:
///  - t = floor(S 2^a M / 2^32) + bias with |M - sm_scale 2^(48-a)| <= 1/2 and |S 2^a| < 2^31:
///    each logit lies in (exact - 1.25, exact + 0.25] Q16 units, a distance within 1.5 units
///    (no relative term; the Q16 bias is exact);
///  - E lies within the ascending polynomial's relative error of A0 2^x (found exhaustively,
///    floors included); p = floor(y + 1/2 + 2^-(SumBits+1)) and weight = floor(2^SumBits y + 1/2)
///    for y = E 2^w / 2^(32 + SumBits), so |p - y| <= 1/2 + 2^-(SumBits+1), |weight - ...| <= 1/2;
///  - a Q1.30 factor is the cubic `rescale_mantissa` on 2^30 rounded by 2^-31; a move of the
///    frame down applies it with a smaller shift, the same relative error (FrameSoftmax).
/// FrameSoftmax quantizes P against a frame at or below the running maximum and rescales every
/// merge: the running-maximum simulation below charges at least that (a larger reference, a
/// factor error and a rounding at every merge; docs/numerics.md).
template <int Pmax, int SumBits>
struct ExpErrorModel<AscendingPolyExp2<Pmax, SumBits>> {
  using Exp = AscendingPolyExp2<Pmax, SumBits>;
  /// max over f of |c0 2^(f / 2^16) - mantissa(f << 16)| / (c0 2^(f / 2^16)).
  template <class Mantissa>
  static double ascending_error(std::uint32_t c0, Mantissa mantissa) {
    double worst = 0.0;
    for (std::uint32_t f = 0; f < (1u << 16); ++f) {
      const double exact = static_cast<double>(c0) * std::exp2(static_cast<double>(f) / 65536.0);
      const double e = static_cast<double>(mantissa(f << 16));
      worst = std::fmax(worst, std::fabs(e - exact) / exact);
    }
    return worst;
  }
  static double mantissa_error() {
    static const double value = ascending_error(
        Exp::a0, [](std::uint32_t f) { return Exp::mantissa(f, Exp::a0, Exp::a1, Exp::a2); });
    return value;
  }
  static double q30_error() {
    static const double value =
        ascending_error(Exp::r0, [](std::uint32_t f) { return Exp::rescale_mantissa(f); });
    return value;
  }
  template <class LogitParams, class ExpParams>
  static HeadErrorModel make(double sm_scale, const LogitParams& logit, const ExpParams&) {
    HeadErrorModel m;
    if constexpr (std::is_same_v<LogitParams, WideLog2Logit::Params>) {
      // Q32 logits: the slope M / 2^32 is sm_scale (1 + kappa) exactly, and a distance from
      // the Q16 frame rounds only in the frame (< 2^-16 octave).
      m.kappa = static_cast<double>(logit.multiplier) / std::ldexp(sm_scale, 32) - 1.0;
      m.logit_fixed = std::ldexp(1.0, -16);
    } else {
      m.logit_fixed = 1.5 * std::ldexp(1.0, -16);
    }
    m.p_high = mantissa_error();
    m.p_abs = 0.5 + std::ldexp(1.0, -(SumBits + 1));
    m.weight_abs = 0.5;
    m.factor_high = q30_error();
    m.factor_abs = std::ldexp(1.0, -31);
    return m;
  }
};

/// PaperShiftExp2 with PaperLogit:
///  - a score distance is counted in units of R = round(1 / sm_scale): kappa = 1 / (R sm) - 1;
///    each converted bias rounds by 1/2 unit (1/R octaves per distance);
///  - the linear fraction R (1 - f / 2) lies in [1, 1.0615] times R 2^-f;
///  - the 16-bit octave estimate is off by one on a sliver of octave k of width at most
///    s = (k + 1) delta, delta = | |exp_m| R - 2^16 | / 2^16 < 1/8 (`octave_estimate_holds`),
///    where the value falls by at most 1 - (1 - s) 2^s (or 1 - (1 + s/2) 2^-s);
///  - req_m R lies within (req_m + R) / 2 + 1 of 127 2^16 (a common scale of every P);
///  - p's floor is 1 unit of R (Pmax / R in P), P rounds by 1/2; l_m = round(2^30 / R).
/// From 8 octaves on P = 0 and F <= 2^-7 (docs/numerics.md).
template <>
struct ExpErrorModel<PaperShiftExp2> {
  template <class LogitParams>
  static HeadErrorModel make(double sm_scale, const LogitParams& /*logit*/,
                             const PaperShiftExp2::Params& prm) {
    const double r = prm.r;
    HeadErrorModel m;
    m.kappa = 1.0 / (r * sm_scale) - 1.0;
    m.bias_fixed = 1.0 / r;
    m.p_high = 0.0615;
    m.sliver_delta = std::fabs(static_cast<double>(-prm.exp_m) * r - 65536.0) / 65536.0;
    const double req_miss = std::fabs(static_cast<double>(prm.req_m) * r - 127.0 * 65536.0);
    m.scale_rel = std::fmax(req_miss, (prm.req_m + r) / 2.0 + 1.0) / (127.0 * 65536.0) +
                  r / 2.0 / 1073741824.0;
    m.p_abs = 0.5 + 127.0 / r * (1.0 + m.scale_rel);
    m.weight_abs = m.p_abs;  // the row sum is P itself
    m.factor_high = 0.0615;
    m.factor_abs = 1.0 / r + std::ldexp(1.0, -30);
    m.visible_octaves = PaperShiftExp2::kVisibleOctaves;
    m.far_p_abs = 0.0;  // from octave 8 on P rounds to 0 (docs/numerics.md)
    m.far_factor_abs = std::ldexp(1.0, -7);
    return m;
  }
};

/// What `check_accuracy` found.
struct AccuracyReport {
  std::int64_t elements = 0;          ///< output elements checked
  std::int64_t violations = 0;        ///< elements whose error exceeds their bound
  std::int64_t unbounded = 0;         ///< elements whose bound is infinite (no guarantee)
  double worst_ratio = 0.0;           ///< max over elements of error / bound (<= 1 passes)
  double signal = 0.0;                ///< sum of exact o^2 (V units)
  double noise = 0.0;                 ///< sum of (computed - exact)^2
  double bound_energy = 0.0;          ///< sum of bound^2
  std::int64_t first_violation = -1;  ///< flat index (z, h, i, d order) of the first violation
  /// SQNR of the output against exact attention, in dB (inf when exact).
  double sqnr_db() const { return 10.0 * std::log10(signal / noise); }
  /// The floor this case guarantees: SQNR computed with every error at its bound.
  double floor_db() const { return 10.0 * std::log10(signal / bound_energy); }
};

/// Scales of one head as `calibrate` saw them.
struct HeadScales {
  double sm_scale;   ///< octaves per Q K^T unit: log2(e) * softmax_scale * s_q * s_k
  double v_scale;    ///< real value of one V unit
  double out_scale;  ///< real value of one output unit (binary16 output: s_v / 2^16)
};

namespace detail {

/// Sums of one row, normalised so that the current maximum has weight 1: per d the numerator
/// sum w v, sum w |v| and the numerator's error bound; the denominator and its error bound.
struct BoundSums {
  std::vector<double> num, num_abs, num_err;
  double den = 0.0, den_err = 0.0;
  void reset(std::size_t dim) {
    num.assign(dim, 0.0);
    num_abs.assign(dim, 0.0);
    num_err.assign(dim, 0.0);
    den = den_err = 0.0;
  }
};

/// One row's bound state while its KV blocks are merged.
struct RowBound {
  BoundSums sums;
  double max = 0.0;  ///< the pipeline's ideal running maximum (octaves)
  bool started = false;
};

}  // namespace detail

/// Checks `out` (computed by the integer pipeline of Cfg with `params`) element by element
/// against exact attention and the bound above. `scales` holds 1 or H entries.
template <KernelConfig Cfg, OutputPolicy Output>
AccuracyReport check_accuracy(const AttentionProblem& p,
                              std::span<const HeadParams<Cfg, Output>> params,
                              std::span<const HeadScales> scales,
                              const Tensor4<typename Output::value_type>& out) {
  using OutT = typename Output::value_type;
  constexpr double kInf = std::numeric_limits<double>::infinity();
  constexpr double pmax = Cfg::Exp::pmax;
  constexpr double weight_unit = pmax * static_cast<double>(1 << Cfg::Exp::sum_bits);
  constexpr bool tile_local = Cfg::Softmax::max_mode == MaxMode::tile_local;
  constexpr std::int64_t block = Cfg::block_n;
  const std::int64_t nq = p.q.seq, nkv = p.k.seq, dim = p.q.dim;
  const auto udim = static_cast<std::size_t>(dim);
  const bool has_bias = p.bias.kind != BiasKind::none;
  AccuracyReport report;
  std::vector<double> exact_logit(static_cast<std::size_t>(nkv)), ideal(exact_logit.size());
  std::vector<char> visible(exact_logit.size());
  std::vector<double> exact_num(udim), ideal_num(udim);
  detail::BoundSums tile;

  for (std::int64_t z = 0; z < p.q.batch; ++z) {
    for (std::int64_t h = 0; h < p.q.heads; ++h) {
      const auto& prm = params[params.size() == 1 ? 0 : static_cast<std::size_t>(h)];
      const HeadScales& sc = scales[scales.size() == 1 ? 0 : static_cast<std::size_t>(h)];
      const HeadErrorModel m =
          ExpErrorModel<typename Cfg::Exp>::make(sc.sm_scale, prm.logit, prm.exp);
      // Rounding in a distance of `octaves` between two logits, and the factor 2^(2e) - 1 that a
      // relative bound widens by (either end may be another key within rounding).
      const auto distance_error = [&](double octaves) {
        return m.logit_fixed + (has_bias ? m.bias_fixed : 0.0) + m.logit_rel * std::fabs(octaves);
      };
      const auto widened = [&](double rel, double octaves) {
        return (1.0 + rel) * std::exp2(2.0 * distance_error(octaves)) - 1.0;
      };
      // |computed - exact| of a probability (P / Pmax) or a Q1.30 factor at `octaves` below its
      // reference, exact value 2^-octaves: relative error up to `high` plus `near_abs` while
      // visible, the value itself plus `far_abs` beyond (the larger where rounding straddles).
      const auto error_at = [&](double octaves, double high, double near_abs, double far_abs) {
        const double w = std::exp2(-octaves), e = 2.0 * distance_error(octaves);
        const double near = widened(m.relative(octaves, high), octaves) * w + near_abs;
        const double far = w + far_abs;
        if (octaves + e < m.visible_octaves) return near;
        if (octaves - e >= m.visible_octaves) return far;
        return std::fmax(near, far);
      };
      const auto p_error = [&](double octaves, double abs_units, double unit) {
        return error_at(octaves, m.p_high, abs_units / unit, m.far_p_abs / pmax);
      };
      const auto factor_error = [&](double octaves) {
        return error_at(octaves, m.factor_high, m.factor_abs, m.far_factor_abs);
      };

      for (std::int64_t i = 0; i < nq; ++i) {
        // Exact logits and the pipeline's ideal ones (octaves) of the visible keys.
        double exact_max = -kInf;
        for (std::int64_t j = 0; j < nkv; ++j) {
          const auto uj = static_cast<std::size_t>(j);
          visible[uj] = p.mask.visible(z, i, j) ? 1 : 0;
          if (!visible[uj]) continue;
          std::int64_t score = 0;
          for (std::int64_t d = 0; d < dim; ++d) {
            score += std::int64_t{p.q(z, h, i, d)} * std::int64_t{p.k(z, h, j, d)};
          }
          const double from_score = static_cast<double>(score) * sc.sm_scale;
          const double from_bias =
              has_bias ? static_cast<double>(p.bias.at(h, i, j)) / 65536.0 : 0.0;
          exact_logit[uj] = from_score + from_bias;
          ideal[uj] = from_score * (1.0 + m.kappa) + from_bias;
          exact_max = std::fmax(exact_max, exact_logit[uj]);
        }
        // Exact attention, and the same with the ideal logits (their difference is part of the
        // error, computed rather than bounded).
        double exact_den = 0.0, ideal_den = 0.0, ideal_max = -kInf;
        std::fill(exact_num.begin(), exact_num.end(), 0.0);
        for (std::int64_t j = 0; j < nkv; ++j) {
          if (visible[static_cast<std::size_t>(j)])
            ideal_max = std::fmax(ideal_max, ideal[static_cast<std::size_t>(j)]);
        }
        std::fill(ideal_num.begin(), ideal_num.end(), 0.0);
        for (std::int64_t j = 0; j < nkv; ++j) {
          const auto uj = static_cast<std::size_t>(j);
          if (!visible[uj]) continue;
          const double we = std::exp2(exact_logit[uj] - exact_max);
          const double wi = std::exp2(ideal[uj] - ideal_max);
          exact_den += we;
          ideal_den += wi;
          for (std::size_t d = 0; d < udim; ++d) {
            const double v = p.v(z, h, j, static_cast<std::int64_t>(d));
            exact_num[d] += we * v;
            ideal_num[d] += wi * v;
          }
        }

        // The bound of the integer pipeline against the ideal logits, block by block.
        detail::RowBound row;
        row.sums.reset(udim);
        for (std::int64_t key0 = 0; key0 < nkv; key0 += block) {
          const std::int64_t key1 = key0 + block < nkv ? key0 + block : nkv;
          double tile_max = -kInf;
          for (std::int64_t j = key0; j < key1; ++j) {
            const auto uj = static_cast<std::size_t>(j);
            if (visible[uj]) tile_max = std::fmax(tile_max, ideal[uj]);
          }
          if (tile_max == -kInf) continue;  // no visible key: the row is untouched
          const double new_max = row.started ? std::fmax(row.max, tile_max) : tile_max;
          const double ref = tile_local ? tile_max : new_max;
          tile.reset(udim);
          for (std::int64_t j = key0; j < key1; ++j) {
            const auto uj = static_cast<std::size_t>(j);
            if (!visible[uj]) continue;
            const double octaves = ref - ideal[uj];
            const double w = std::exp2(-octaves);
            const double perr = p_error(octaves, m.p_abs, pmax);
            tile.den += w;
            tile.den_err += p_error(octaves, m.weight_abs, weight_unit);
            for (std::size_t d = 0; d < udim; ++d) {
              const double v = p.v(z, h, j, static_cast<std::int64_t>(d));
              tile.num[d] += w * v;
              tile.num_abs[d] += w * std::fabs(v);
              tile.num_err[d] += perr * std::fabs(v);
            }
          }
          // Merge: the state moves from row.max to new_max, the tile from ref to new_max; each
          // side may be rescaled (factor and its error) and rounded (1/2 unit).
          const double state_f = row.started ? std::exp2(row.max - new_max) : 0.0;
          const double state_ferr = row.started ? factor_error(new_max - row.max) : 0.0;
          const double tile_f = std::exp2(ref - new_max);
          const double tile_ferr = factor_error(new_max - ref);
          detail::BoundSums& st = row.sums;
          for (std::size_t d = 0; d < udim; ++d) {
            st.num_err[d] = st.num_err[d] * (state_f + state_ferr) + st.num_abs[d] * state_ferr +
                            tile.num_err[d] * (tile_f + tile_ferr) + tile.num_abs[d] * tile_ferr +
                            1.0 / pmax;
            st.num[d] = st.num[d] * state_f + tile.num[d] * tile_f;
            st.num_abs[d] = st.num_abs[d] * state_f + tile.num_abs[d] * tile_f;
          }
          st.den_err = st.den_err * (state_f + state_ferr) + st.den * state_ferr +
                       tile.den_err * (tile_f + tile_ferr) + tile.den * tile_ferr +
                       1.0 / weight_unit;
          st.den = st.den * state_f + tile.den * tile_f;
          row.max = new_max;
          row.started = true;
        }

        // Output: compare element by element.
        const double ratio = sc.v_scale / sc.out_scale;  // output units per V unit
        for (std::int64_t d = 0; d < dim; ++d) {
          const auto ud = static_cast<std::size_t>(d);
          const double exact = row.started ? exact_num[ud] / exact_den : 0.0;
          double bound = 0.0;
          if (row.started) {
            const detail::BoundSums& st = row.sums;
            const double ideal_o = ideal_num[ud] / ideal_den;
            const double margin = st.den - st.den_err;
            bound =
                std::fabs(ideal_o - exact) +
                (margin > 0.0 ? (st.num_err[ud] + std::fabs(ideal_o) * st.den_err) / margin : kInf);
          }
          double computed, limit_hi = kInf;
          if constexpr (std::is_same_v<OutT, Float16>) {
            computed = static_cast<double>(half_bits_to_float(out(z, h, i, d).bits)) / sc.v_scale;
          } else {
            limit_hi = static_cast<double>(IntTraits<OutT>::max);
            computed = static_cast<double>(out(z, h, i, d)) / ratio;
          }
          // Output rounding (1/2 unit, 1 truncating), the row multiplier (2^-29 of the value),
          // saturation at the type's range, binary16's 2^-11 of max(|o|, one V unit).
          const double exact_out = exact * ratio, reach = bound * ratio;
          // (|min| >= max for every signed type: max is the nearer limit on both sides.)
          const double saturation = std::fmax(0.0, std::fabs(exact_out) + reach - limit_hi);
          const double rounding = Cfg::output_rounding == Rounding::toward_zero ? 1.0 : 0.5;
          bound += (rounding + saturation + (std::fabs(exact_out) + reach) * std::ldexp(1.0, -29)) /
                   ratio;
          if constexpr (std::is_same_v<OutT, Float16>) {
            bound += std::ldexp(1.0, -11) * (std::fabs(exact) + bound + 1.0);
          }
          bound = bound * (1.0 + 1e-9) + 1e-12;  // the double arithmetic of the bound itself
          const double error = computed - exact;
          ++report.elements;
          report.signal += exact * exact;
          report.noise += error * error;
          report.bound_energy += bound * bound;
          if (bound == kInf) ++report.unbounded;
          const double r = std::fabs(error) / bound;
          if (!(r <= 1.0)) {
            if (report.violations == 0) report.first_violation = report.elements - 1;
            ++report.violations;
          }
          if (r > report.worst_ratio || r != r) report.worst_ratio = r;
        }
      }
    }
  }
  return report;
}

}  // namespace qflash::reference
