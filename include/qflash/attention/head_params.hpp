// SPDX-License-Identifier: Apache-2.0
/// @file
/// `HeadParams`: the integer runtime constants of one attention head (one Params aggregate per
/// policy), and their validation. What a kernel needs of the parameters, without the host
/// calibration code (policy/calibrate.hpp makes them from float scales).
#pragma once

#include <cstdint>
#include <span>
#include <type_traits>

#include "qflash/attention/problem.hpp"
#include "qflash/core/concepts.hpp"
#include "qflash/core/config.hpp"
#include "qflash/core/status.hpp"
#include "qflash/policy/exp2.hpp"
#include "qflash/policy/logit.hpp"

namespace qflash {

/// All runtime constants of one head: one Params aggregate per policy.
template <KernelConfig Cfg, OutputPolicy Output>
struct HeadParams {
  typename Cfg::Logit::Params logit;
  typename Cfg::Exp::Params exp;
  typename Output::Params output;
  friend constexpr bool operator==(const HeadParams&, const HeadParams&) = default;
};

/// Status::ok when every policy accepts its part of `prm` for head dim D (`validate` of the
/// logit, exp and output policies), else the first failure (invalid_params for the presets'
/// policies). Entry points that take HeadParams they did not make call this first.
template <KernelConfig Cfg, OutputPolicy Output>
QFLASH_HOST_DEVICE constexpr Status validate_head(const HeadParams<Cfg, Output>& prm,
                                                  int head_dim) noexcept {
  Status s = Cfg::Logit::validate(prm.logit, head_dim);
  if (s == Status::ok) s = Cfg::Exp::validate(prm.exp);
  if constexpr (std::is_same_v<typename Cfg::Logit, PaperLogit> &&
                std::is_same_v<typename Cfg::Exp, PaperShiftExp2>) {
    // Both convert with R = round(1 / sm_scale): one scale, one R.
    if (s == Status::ok && prm.logit.r != prm.exp.r) s = Status::invalid_params;
  }
  if (s == Status::ok) s = Output::validate(prm.output, Cfg::Exp::sum_bits);
  return s;
}

/// validate_head over 1 or H parameter sets (the count itself is checked by `validate`).
template <KernelConfig Cfg, OutputPolicy Output>
Status validate_heads(std::span<const HeadParams<Cfg, Output>> params, std::int64_t head_dim) {
  if (!is_supported_head_dim(head_dim)) return Status::unsupported_head_dim;
  for (const HeadParams<Cfg, Output>& prm : params) {
    const Status s = validate_head<Cfg, Output>(prm, static_cast<int>(head_dim));
    if (s != Status::ok) return s;
  }
  return Status::ok;
}

}  // namespace qflash
