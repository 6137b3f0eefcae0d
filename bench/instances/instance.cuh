// SPDX-License-Identifier: Apache-2.0
/// @file
/// Internal: defines the type-erased `Ops` of one (preset, output type) pair. Each
/// instances/<preset>_<output>.cu includes this once, so the kernels compile in parallel.
#pragma once

#include <span>

#include "qflash/device/launch.cuh"
#include "qflash/qflash.hpp"
#include "qflash/reference/equivalence.cuh"
#include "qflash/reference/flash_attention_int.hpp"
#include "qflash_instances.hpp"

namespace qflash::instances::detail {

template <KernelConfig Cfg, class OutT>
struct Instance {
  using Output = OutputFor<Cfg, OutT>;
  using Params = HeadParams<Cfg, Output>;

  static Tensor4<OutT> out_view(const AttentionProblem& p, void* out, const std::int64_t (&s)[4]) {
    return Tensor4<OutT>{
        static_cast<OutT*>(out), p.q.batch, p.q.heads, p.q.seq, p.q.dim, s[0], s[1], s[2], s[3]};
  }
  static std::span<const Params> params_span(const void* params, std::int64_t count) {
    return {static_cast<const Params*>(params), static_cast<std::size_t>(count < 0 ? 0 : count)};
  }

  static reference::EquivalenceReport check(const reference::EquivalenceCase& c) {
    return reference::check_equivalence<Cfg, Output>(c);
  }
  static Status calibrate_params(const QuantScales& scales, int head_dim, void* params,
                                 std::int64_t count) {
    return qflash::calibrate<Cfg, Output>(
        scales, head_dim,
        std::span<Params>(static_cast<Params*>(params), static_cast<std::size_t>(count)));
  }
  static Status run_reference(const AttentionProblem& p, const void* params, std::int64_t count,
                              void* out, const std::int64_t (&s)[4]) {
    return reference::flash_attention<Cfg, Output>(p, params_span(params, count),
                                                   out_view(p, out, s));
  }
  static Status launch(const AttentionProblem& p, const void* params, std::int64_t count, void* out,
                       const std::int64_t (&s)[4], void* stream) {
    return device::flash_attention<Cfg, Output>(p, params_span(params, count), out_view(p, out, s),
                                                static_cast<cudaStream_t>(stream));
  }
  static constexpr Ops ops{sizeof(Params), &check, &calibrate_params, &run_reference, &launch};
};

}  // namespace qflash::instances::detail

/// Defines `const Ops& ops_<preset>_<output>()` for one pair.
#define QFLASH_DEFINE_INSTANCE(preset_name, out_name, Cfg, OutT)                   \
  namespace qflash::instances::detail {                                            \
  const Ops& ops_##preset_name##_##out_name() { return Instance<Cfg, OutT>::ops; } \
  }
