// SPDX-License-Identifier: Apache-2.0
/// @file
/// Calibration: float scales -> the integer `HeadParams` of every policy in a configuration.
///
/// Data flows one way: float scales -> calibrate -> integer Params (plain structs passed by
/// value) -> flash_step -> output policy. `calibrate_head` is the per-head core; it uses only
/// IEEE double multiplications and divisions (no libm, no additions that could be fused) and
/// integer operations on the bits, so a device-side calibration produces the same integers as
/// the host. `calibrate` is the host entry point with full input validation.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include "qflash/attention/head_params.hpp"
#include "qflash/attention/problem.hpp"
#include "qflash/core/concepts.hpp"
#include "qflash/core/config.hpp"
#include "qflash/core/dyadic.hpp"
#include "qflash/core/float16.hpp"
#include "qflash/core/status.hpp"
#include "qflash/policy/exp2.hpp"
#include "qflash/policy/logit.hpp"

namespace qflash {

/// The largest |output| a configuration can produce, in units of V's int8 codes: 128 for a row
/// sum of P itself (sum_bits = 0). With sum_bits > 0, P and its weight round separately: per key
/// P * 2^SB - weight <= 2^(SB-1) + 1/2, while the tile's maximum key is exact (P = Pmax, weight
/// = Pmax 2^SB), so acc * 2^SB / l exceeds the largest |V| by at most the factor
/// 1 + (block_n - 1) (2^(SB-1) + 1/2) / (Pmax 2^SB) (the merges scale acc and l alike); 2^-20
/// more covers their half-unit roundings and the output's row multiplier. Precise: 135.9.
template <KernelConfig Cfg>
QFLASH_HOST_DEVICE constexpr double max_output_v_units() noexcept {
  constexpr int sb = Cfg::Exp::sum_bits;
  if constexpr (sb == 0) {
    return 128.0 * (1.0 + 1.0 / 1048576.0);
  } else {
    constexpr double unit = static_cast<double>(std::int64_t{1} << sb);
    return 128.0 * (1.0 + (Cfg::block_n - 1) * (unit / 2.0 + 0.5) / (Cfg::Exp::pmax * unit)) *
           (1.0 + 1.0 / 1048576.0);
  }
}

/// Calibrates one head from its scales (real value = scale * integer value).
/// `out_scale` <= 0 selects the output type's default (s_v / Output::default_scale_divisor()).
template <KernelConfig Cfg, OutputPolicy Output>
QFLASH_HOST_DEVICE constexpr Status calibrate_head(double q_scale, double k_scale, double v_scale,
                                                   double out_scale, double softmax_scale,
                                                   int head_dim,
                                                   HeadParams<Cfg, Output>& out) noexcept {
  if (!is_supported_head_dim(head_dim)) return Status::unsupported_head_dim;
  if (!is_positive_finite(q_scale) || !is_positive_finite(k_scale) ||
      !is_positive_finite(v_scale) || !is_positive_finite(softmax_scale)) {
    return Status::invalid_scale;
  }
  if (!(out_scale <= 0.0) && !is_positive_finite(out_scale)) return Status::invalid_scale;
  // Octaves per Q K^T unit, multiplied in a fixed order.
  const double sm_scale = kLog2e * softmax_scale * q_scale * k_scale;
  if (!is_positive_finite(sm_scale)) return Status::scale_out_of_range;
  HeadParams<Cfg, Output> params{};
  Status s = Cfg::Logit::calibrate(sm_scale, head_dim, params.logit);
  if (s != Status::ok) return s;
  s = Cfg::Exp::calibrate(sm_scale, params.exp);
  if (s != Status::ok) return s;
  const double resolved_out =
      out_scale > 0.0 ? out_scale : v_scale / Output::default_scale_divisor();
  s = Output::calibrate(v_scale, resolved_out, Cfg::Exp::sum_bits, params.output);
  if (s != Status::ok) return s;
  if constexpr (std::is_same_v<typename Output::value_type, Float16>) {
    // binary16 reaches infinity from 65520 on: the largest output must stay below it.
    if (!(v_scale * max_output_v_units<Cfg>() < 65520.0)) return Status::scale_out_of_range;
  }
  out = params;
  return Status::ok;
}

/// Per-tensor (1 value) or per-head (H values) float scales of one attention layer.
struct QuantScales {
  std::span<const float> q, k, v;  ///< each of size 1 or H
  std::span<const float> out{};    ///< empty: the output type's default; else size 1 or H
  double softmax_scale = 0.0;      ///< 0: 1 / sqrt(head_dim)
};

/// Fills `out` (size 1 for one set shared by all heads, or H) from `scales`. Every scale must be
/// finite and positive, and every derived multiplier representable; on error nothing is written.
template <KernelConfig Cfg, OutputPolicy Output>
Status calibrate(const QuantScales& scales, int head_dim, std::span<HeadParams<Cfg, Output>> out) {
  if (out.empty()) return Status::param_count_mismatch;
  const std::size_t heads = out.size();
  const auto fits = [heads](std::span<const float> s) {
    return s.size() == 1 || s.size() == heads;
  };
  if (!fits(scales.q) || !fits(scales.k) || !fits(scales.v) ||
      (!scales.out.empty() && !fits(scales.out))) {
    return Status::param_count_mismatch;
  }
  if (!is_supported_head_dim(head_dim)) return Status::unsupported_head_dim;
  const double softmax_scale =
      scales.softmax_scale != 0.0 ? scales.softmax_scale : 1.0 / std::sqrt(double(head_dim));
  const auto pick = [](std::span<const float> s, std::size_t h) {
    return static_cast<double>(s.size() == 1 ? s[0] : s[h]);
  };
  std::vector<HeadParams<Cfg, Output>> result(heads);
  for (std::size_t h = 0; h < heads; ++h) {
    const double out_scale = scales.out.empty() ? 0.0 : pick(scales.out, h);
    if (!scales.out.empty() && !is_positive_finite(out_scale)) return Status::invalid_scale;
    const Status s =
        calibrate_head<Cfg, Output>(pick(scales.q, h), pick(scales.k, h), pick(scales.v, h),
                                    out_scale, softmax_scale, head_dim, result[h]);
    if (s != Status::ok) return s;
  }
  for (std::size_t h = 0; h < heads; ++h) out[h] = result[h];
  return Status::ok;
}

}  // namespace qflash
