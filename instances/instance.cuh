// SPDX-License-Identifier: Apache-2.0
/// @file
/// Internal: defines the type-erased `Ops` of one (preset, output type) pair. Each
/// instances/<preset>_<output>.cu includes this once, so the kernels compile in parallel.
#pragma once

#include <span>

#include "qflash/device/launch.cuh"
#include "qflash/device/quantize.cuh"
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
  static bool params_equal(const void* a, const void* b, std::int64_t count) {
    const auto* pa = static_cast<const Params*>(a);
    const auto* pb = static_cast<const Params*>(b);
    for (std::int64_t i = 0; i < count; ++i) {
      if (!(pa[i] == pb[i])) return false;
    }
    return true;
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
  static Tensor4<const __half> as_half(const Tensor4<const std::uint16_t>& t) {
    return Tensor4<const __half>{reinterpret_cast<const __half*>(t.data),
                                 t.batch,
                                 t.heads,
                                 t.seq,
                                 t.dim,
                                 t.stride_batch,
                                 t.stride_head,
                                 t.stride_seq,
                                 t.stride_dim};
  }
  static Status quantize_half(const Tensor4<const std::uint16_t>& q,
                              const Tensor4<const std::uint16_t>& k,
                              const Tensor4<const std::uint16_t>& v,
                              const HalfPipelineWorkspace& ws, void* stream) {
    const auto st = static_cast<cudaStream_t>(stream);
    const auto granularity =
        ws.count == 1 ? device::ScaleGranularity::per_tensor : device::ScaleGranularity::per_head;
    Status s = device::quantize_qkv(as_half(q), as_half(k), as_half(v), granularity, ws.scales,
                                    ws.amax, bhnd(ws.q8, q.batch, q.heads, q.seq, q.dim),
                                    bhnd(ws.k8, k.batch, k.heads, k.seq, k.dim),
                                    bhnd(ws.v8, v.batch, v.heads, v.seq, v.dim), st);
    if (s != Status::ok) return s;
    return device::calibrate_on_device<Cfg, Output>(
        ws.scales, nullptr, ws.count, static_cast<int>(q.dim), 0.0, static_cast<Params*>(ws.params),
        ws.statuses, st);
  }
  static Status launch_from_half(const Tensor4<const std::uint16_t>& q,
                                 const Tensor4<const std::uint16_t>& k,
                                 const Tensor4<const std::uint16_t>& v, const AttentionBias& bias,
                                 const AttentionMask& mask, void* out, const std::int64_t (&s)[4],
                                 const HalfPipelineWorkspace& ws, void* stream) {
    Status status = quantize_half(q, k, v, ws, stream);
    if (status != Status::ok) return status;
    AttentionProblem p{bhnd<const std::int8_t>(ws.q8, q.batch, q.heads, q.seq, q.dim),
                       bhnd<const std::int8_t>(ws.k8, k.batch, k.heads, k.seq, k.dim),
                       bhnd<const std::int8_t>(ws.v8, v.batch, v.heads, v.seq, v.dim), bias, mask};
    return device::flash_attention<Cfg, Output>(p, static_cast<const Params*>(ws.params), ws.count,
                                                out_view(p, out, s),
                                                static_cast<cudaStream_t>(stream));
  }
  static constexpr Ops ops{sizeof(Params), &check,  &calibrate_params, &params_equal,
                           &run_reference, &launch, &launch_from_half, &quantize_half};
};

}  // namespace qflash::instances::detail

/// Defines `const Ops& ops_<preset>_<output>()` for one pair.
#define QFLASH_DEFINE_INSTANCE(preset_name, out_name, Cfg, OutT)                   \
  namespace qflash::instances::detail {                                            \
  const Ops& ops_##preset_name##_##out_name() { return Instance<Cfg, OutT>::ops; } \
  }
