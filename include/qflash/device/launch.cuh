// SPDX-License-Identifier: Apache-2.0
/// @file
/// Host launcher of the fused kernel: validates every argument, then enqueues one kernel on the
/// caller's stream. No host synchronisation and no allocation, so it can be captured in a CUDA
/// graph. Returns a named `Status`; on any error nothing is launched and nothing is written.
///
/// Requirements beyond `qflash::validate` (the reference has none of these):
///  - Q, K, V: unit stride along D; batch, head and token strides multiples of 16 elements;
///    data pointers 16-byte aligned (16-byte cp.async rows). BHND and BNHD tensors from
///    cudaMalloc with D in {32, 64, 80, 96, 128} satisfy this. (unsupported_stride /
///    misaligned_pointer otherwise.)
///  - Host-side parameters: at most kMaxInlineHeads (64) entries, or pass a device pointer.
///    Host-side parameters are checked with `validate_heads` (invalid_params); device-resident
///    ones cannot be read without a sync and are trusted: write them with `calibrate_on_device`
///    and check that every status it wrote is ok (a failed head keeps its old bytes).
///  - A device of compute capability 8.0 or newer (unsupported_device).
///  - Relative-position indices are clamped into the table on the device; validate the index
///    map once on the host with `qflash::validate_bias_indices`.
#pragma once

#if !defined(__CUDACC__)
#error "qflash/device/*.cuh needs nvcc (CUDA C++)"
#endif

#include <cuda_runtime.h>

#include <cstdint>
#include <span>

#include "qflash/attention/validate.hpp"
#include "qflash/device/in_place_kernel.cuh"
#include "qflash/device/kernel.cuh"

namespace qflash::device {

/// Warps per CTA of the general kernel (16 query rows per warp), and of the in-place kernel
/// where launch_in_place does not pick kInPlaceWideWarps<D>.
inline constexpr int kDefaultWarps = 4;

namespace detail {

inline bool is_aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }

inline bool has_cp_async_strides(const Tensor4<const std::int8_t>& t) {
  return t.stride_dim == 1 && t.stride_seq % 16 == 0 && t.stride_head % 16 == 0 &&
         t.stride_batch % 16 == 0;
}

/// Ok on a device of compute capability 8.0 or newer, with its SM count in `sm_count`.
inline Status check_device(int& sm_count) {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    cudaGetLastError();
    return Status::no_cuda_device;
  }
  int major = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
    cudaGetLastError();
    return Status::cuda_error;
  }
  return major >= 8 ? Status::ok : Status::unsupported_device;
}

/// Query tiles of block_m rows per (batch, head).
inline std::int64_t query_tiles(const Tensor4<const std::int8_t>& q, int block_m) {
  return (q.seq + block_m - 1) / block_m;
}

/// The grid of a kernel with block_m query rows per CTA, one CTA per (batch, head, query tile),
/// and the divider block_place splits it with; too_many_heads past 2^31 - 1 CTAs.
template <class Args>
Status set_grid(Args& args, int block_m, std::int64_t& blocks) {
  const Tensor4<const std::int8_t>& q = args.problem.q;
  const std::int64_t q_tiles = query_tiles(q, block_m);
  blocks = q_tiles * q.heads * q.batch;
  if (blocks > 0x7fffffff) return Status::too_many_heads;
  args.by_q_tiles = FastDivide::make(static_cast<std::uint32_t>(q_tiles));
  return Status::ok;
}

/// The in-place kernel (bias- and mask-free launches of an InPlaceConfig) with Warps per CTA,
/// compiled for MinBlocksPerSm resident CTAs per SM.
template <KernelConfig Cfg, OutputPolicy Output, int D, int Warps,
          int MinBlocksPerSm = kInPlaceMinBlocksPerSm<D, Warps>>
Status launch_in_place_with(KernelArgs<Cfg, Output>& args, cudaStream_t stream) {
  using Shape = KernelShape<Cfg, D, Warps>;
  auto kernel = in_place_attention_kernel<Cfg, Output, D, Warps, MinBlocksPerSm>;
  std::int64_t blocks = 0;
  if (const Status s = set_grid(args, Shape::block_m, blocks); s != Status::ok) return s;
  if constexpr (Shape::smem_bytes > 48 * 1024) {  // raised once per instance
    static const cudaError_t configured = cudaFuncSetAttribute(
        kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Shape::smem_bytes);
    if (configured != cudaSuccess) return Status::cuda_error;
  }
  kernel<<<static_cast<unsigned>(blocks), Shape::threads, Shape::smem_bytes, stream>>>(args);
  return cudaPeekAtLastError() == cudaSuccess ? Status::ok : Status::cuda_error;
}

/// Whether a launch of 4-warp CTAs spans at least kInPlaceLargeLaunchWaves waves of
/// kInPlaceMinBlocksPerSm<D, 4> CTAs per SM on a device of `sm_count` SMs.
template <int D>
bool is_large_in_place_launch(const AttentionProblem& p, int sm_count) {
  const std::int64_t ctas = query_tiles(p.q, 16 * kDefaultWarps) * p.q.heads * p.q.batch;
  return ctas >= std::int64_t{kInPlaceLargeLaunchWaves} * kInPlaceMinBlocksPerSm<D, kDefaultWarps> *
                     sm_count;
}

/// The in-place kernel with kInPlaceWideWarps<D> warps per CTA, or 4 when every query row fits
/// one CTA of 4 warps (a wider CTA would only add idle rows); a large launch of 4-warp CTAs
/// takes the kInPlaceLargeLaunchMinBlocksPerSm<D> instance where there is one.
template <KernelConfig Cfg, OutputPolicy Output, int D>
Status launch_in_place(KernelArgs<Cfg, Output>& args, int sm_count, cudaStream_t stream) {
  constexpr int wide = kInPlaceWideWarps<D>;
  constexpr int large_launch_blocks = kInPlaceLargeLaunchMinBlocksPerSm<D>;
  if constexpr (large_launch_blocks != 0 && wide == kDefaultWarps) {
    if (is_large_in_place_launch<D>(args.problem, sm_count)) {
      return launch_in_place_with<Cfg, Output, D, kDefaultWarps, large_launch_blocks>(args, stream);
    }
  }
  if constexpr (wide != kDefaultWarps) {
    if (args.problem.q.seq > 16 * kDefaultWarps) {
      return launch_in_place_with<Cfg, Output, D, wide>(args, stream);
    }
  }
  return launch_in_place_with<Cfg, Output, D, kDefaultWarps>(args, stream);
}

template <KernelConfig Cfg, OutputPolicy Output, int D, bool Extras>
Status launch_instance(KernelArgs<Cfg, Output>& args, int sm_count, cudaStream_t stream) {
  // A softmax that declares in-place accumulation must provide every hook of InPlaceConfig (a
  // missing one is a compile error here, not a silent fallback to the general kernel).
  if constexpr (SoftmaxTraits<typename Cfg::Softmax>::accumulates_in_place && !Extras) {
    static_assert(InPlaceConfig<Cfg>,
                  "qflash: accumulates_in_place declared, InPlaceConfig not met");
    return launch_in_place<Cfg, Output, D>(args, sm_count, stream);
  } else {  // (an else: the general instance is not compiled where it is never launched)
    static_cast<void>(sm_count);
    using Shape = KernelShape<Cfg, D, kDefaultWarps>;
    constexpr bool pairs = kPairsBlocks<Cfg, D, kDefaultWarps>;
    auto kernel = flash_attention_kernel<Cfg, Output, D, kDefaultWarps, Extras>;
    std::int64_t blocks = 0;
    if (const Status s = set_grid(args, Shape::block_m, blocks); s != Status::ok) return s;
    // The limit is raised once per instance, to the paired size if the instance can pair.
    constexpr int max_smem = pairs ? Shape::smem_bytes_paired : Shape::smem_bytes;
    if constexpr (max_smem > 48 * 1024) {
      static const cudaError_t configured =
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, max_smem);
      if (configured != cudaSuccess) return Status::cuda_error;
    }
    args.paired_blocks =
        pairs && (args.problem.k.seq + Shape::step_keys - 1) / Shape::step_keys == 2;
    const auto smem =
        static_cast<std::size_t>(args.paired_blocks ? Shape::smem_bytes_paired : Shape::smem_bytes);
    kernel<<<static_cast<unsigned>(blocks), Shape::threads, smem, stream>>>(args);
    return cudaPeekAtLastError() == cudaSuccess ? Status::ok : Status::cuda_error;
  }
}

/// The instance without bias/mask code unless the launch has a bias or a mask.
template <KernelConfig Cfg, OutputPolicy Output, int D>
Status launch_for_dim(KernelArgs<Cfg, Output>& args, int sm_count, cudaStream_t stream) {
  const bool extras = args.problem.bias.kind != BiasKind::none || args.problem.mask.windows != 0;
  return extras ? launch_instance<Cfg, Output, D, true>(args, sm_count, stream)
                : launch_instance<Cfg, Output, D, false>(args, sm_count, stream);
}

template <KernelConfig Cfg, OutputPolicy Output>
Status launch(const AttentionProblem& problem, const Tensor4<typename Output::value_type>& out,
              const HeadParams<Cfg, Output>* device_params,
              std::span<const HeadParams<Cfg, Output>> host_params, cudaStream_t stream) {
  const void* params_ptr =
      device_params != nullptr ? static_cast<const void*>(device_params) : host_params.data();
  const auto count = static_cast<std::int64_t>(host_params.size());
  Status s = validate<Cfg>(problem, out, params_ptr, count);
  if (s != Status::ok) return s;
  for (const auto* t : {&problem.q, &problem.k, &problem.v}) {
    if (!has_cp_async_strides(*t)) return Status::unsupported_stride;
    if (!is_aligned16(t->data)) return Status::misaligned_pointer;
  }
  if (device_params == nullptr && count > kMaxInlineHeads) return Status::too_many_heads;
  if (device_params == nullptr) {  // device-resident parameters cannot be read without a sync
    s = validate_heads<Cfg, Output>(host_params, problem.q.dim);
    if (s != Status::ok) return s;
  }
  int sm_count = 0;
  s = check_device(sm_count);
  if (s != Status::ok) return s;

  KernelArgs<Cfg, Output> args{};
  args.problem = problem;
  args.out = out;
  args.device_params = device_params;
  args.param_count = count;
  args.by_heads = FastDivide::make(static_cast<std::uint32_t>(problem.q.heads));
  args.paired_output =
      out.stride_dim == 1 && out.stride_seq % 2 == 0 && out.stride_head % 2 == 0 &&
      out.stride_batch % 2 == 0 &&
      reinterpret_cast<std::uintptr_t>(out.data) % (2 * sizeof(typename Output::value_type)) == 0;
  if (device_params == nullptr) {
    for (std::int64_t i = 0; i < count; ++i)
      args.inline_params[i] = host_params[static_cast<std::size_t>(i)];
  }
  switch (problem.q.dim) {
    case 32:
      return launch_for_dim<Cfg, Output, 32>(args, sm_count, stream);
    case 64:
      return launch_for_dim<Cfg, Output, 64>(args, sm_count, stream);
    case 80:
      return launch_for_dim<Cfg, Output, 80>(args, sm_count, stream);
    case 96:
      return launch_for_dim<Cfg, Output, 96>(args, sm_count, stream);
    case 128:
      return launch_for_dim<Cfg, Output, 128>(args, sm_count, stream);
    default:
      return Status::unsupported_head_dim;
  }
}

}  // namespace detail

/// Integer attention on the GPU with host-side head parameters (1 or H entries, at most 64),
/// carried by value in the launch. `problem` and `out` hold device pointers.
template <KernelConfig Cfg, OutputPolicy Output>
Status flash_attention(const AttentionProblem& problem,
                       std::span<const HeadParams<Cfg, Output>> host_params,
                       const Tensor4<typename Output::value_type>& out, cudaStream_t stream = 0) {
  return detail::launch<Cfg, Output>(problem, out, nullptr, host_params, stream);
}

/// Integer attention on the GPU with head parameters already in device memory (`count` = 1 or
/// H), e.g. written by `calibrate_on_device` after a device quantize pass.
template <KernelConfig Cfg, OutputPolicy Output>
Status flash_attention(const AttentionProblem& problem,
                       const HeadParams<Cfg, Output>* device_params, std::int64_t count,
                       const Tensor4<typename Output::value_type>& out, cudaStream_t stream = 0) {
  if (device_params == nullptr) return Status::null_pointer;
  // The span only carries the count; its data pointer is never dereferenced on the host.
  return detail::launch<Cfg, Output>(
      problem, out, device_params,
      std::span<const HeadParams<Cfg, Output>>(device_params, static_cast<std::size_t>(count)),
      stream);
}

}  // namespace qflash::device
