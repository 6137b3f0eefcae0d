// SPDX-License-Identifier: Apache-2.0
/// @file
/// Device-side quantization for callers that hold fp16/fp32 Q, K, V: an amax reduction, the
/// symmetric scales, int8 codes in any strided layout the kernel accepts, and calibration of the
/// head parameters on the device -- all stream-ordered, with no host synchronisation.
///
/// The arithmetic is that of reference/quantize.hpp, so the results equal the host helpers bit
/// for bit (a GPU test checks it): amax = max |x| ignoring NaN; scale = amax / 127 (binary32
/// division; 1 when amax == 0); code = clamp(rint(x / scale), -127, 127) with x / scale a binary32
/// division rounded to nearest even and a NaN quotient giving 0. Calibration runs
/// `calibrate_head`, whose double arithmetic is IEEE multiplication and division only.
/// These kernels compute in floating point by design; the attention kernel never does.
#pragma once

#if !defined(__CUDACC__)
#error "qflash/device/*.cuh needs nvcc (CUDA C++)"
#endif

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "qflash/attention/problem.hpp"
#include "qflash/core/concepts.hpp"
#include "qflash/core/float16.hpp"
#include "qflash/core/int8_quantize.hpp"
#include "qflash/core/status.hpp"
#include "qflash/policy/calibrate.hpp"

namespace qflash::device {

enum class ScaleGranularity : std::uint8_t { per_tensor, per_head };

/// Scale slots of one granularity: 1 per tensor, H per head.
inline std::int64_t scale_count(ScaleGranularity g, std::int64_t heads) {
  return g == ScaleGranularity::per_head ? heads : 1;
}

namespace detail {

QFLASH_DEVICE float to_float(float x) { return x; }
QFLASH_DEVICE float to_float(__half x) { return __half2float(x); }

/// Non-negative floats order like their bit patterns, so atomicMax on the bits is a float max.
QFLASH_DEVICE void atomic_max_nonneg(float* address, float value) {
  atomicMax(reinterpret_cast<unsigned int*>(address), __float_as_uint(value));
}

template <class T>
struct QkvViews {
  Tensor4<const T> in[3];
  Tensor4<std::int8_t> out[3];
};

/// Calls visit(n, d) for every element of a [N, D] slice, threads mapped to head-dim lanes
/// (rows_per_pass = blockDim / D rows at a time; D <= 128 < blockDim).
template <class Visit>
QFLASH_DEVICE void for_each_slice_element(std::int64_t seq, std::int64_t dim, Visit&& visit) {
  const auto lanes = static_cast<int>(dim);
  const int rows_per_pass = static_cast<int>(blockDim.x) / lanes;
  const int first_row = static_cast<int>(threadIdx.x) / lanes;
  const int d = static_cast<int>(threadIdx.x) % lanes;
  for (std::int64_t n = first_row < rows_per_pass ? first_row : seq; n < seq; n += rows_per_pass) {
    visit(n, d);
  }
}

/// Block (zh, t): max |x| over the (z, h) slice of tensor t, folded into amax[t * count + slot].
template <class T>
__global__ void amax_kernel(const QkvViews<T> views, float* amax, std::int64_t count) {
  const int t = static_cast<int>(blockIdx.y);
  const Tensor4<const T>& x = views.in[t];
  const std::int64_t z = blockIdx.x / x.heads, h = blockIdx.x % x.heads;
  float local = 0.0f;
  const T* slice = x.data + z * x.stride_batch + h * x.stride_head;
  for_each_slice_element(x.seq, x.dim, [&](std::int64_t n, int d) {
    local = fmaxf(local, fabsf(to_float(slice[n * x.stride_seq + d * x.stride_dim])));  // drops NaN
  });
  for (int offset = 16; offset > 0; offset /= 2) {
    local = fmaxf(local, __shfl_xor_sync(0xffffffffu, local, offset));
  }
  __shared__ float warp_max[32];
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = local;
  __syncthreads();
  if (threadIdx.x == 0) {
    float block_max = 0.0f;
    for (unsigned w = 0; w < blockDim.x / 32; ++w) block_max = fmaxf(block_max, warp_max[w]);
    atomic_max_nonneg(&amax[t * count + (count == 1 ? 0 : h)], block_max);
  }
}

/// Block (zh, t): int8 codes of the (z, h) slice of tensor t; the z == 0 blocks also publish the
/// scale of their slot.
template <class T>
__global__ void quantize_kernel(const QkvViews<T> views, const float* amax, float* scales,
                                std::int64_t count) {
  const int t = static_cast<int>(blockIdx.y);
  const Tensor4<const T>& x = views.in[t];
  const Tensor4<std::int8_t>& out = views.out[t];
  const std::int64_t z = blockIdx.x / x.heads, h = blockIdx.x % x.heads;
  const std::int64_t slot = t * count + (count == 1 ? 0 : h);
  const float scale = symmetric_scale(amax[slot]);
  const T* slice = x.data + z * x.stride_batch + h * x.stride_head;
  std::int8_t* out_slice = out.data + z * out.stride_batch + h * out.stride_head;
  for_each_slice_element(x.seq, x.dim, [&](std::int64_t n, int d) {
    out_slice[n * out.stride_seq + d * out.stride_dim] =
        quantize_value(to_float(slice[n * x.stride_seq + d * x.stride_dim]), scale);
  });
  if (threadIdx.x == 0 && z == 0 && (count != 1 || h == 0)) scales[slot] = scale;
}

template <KernelConfig Cfg, OutputPolicy Output>
__global__ void calibrate_kernel(const float* scales, const float* out_scales, std::int64_t count,
                                 double softmax_scale, int head_dim,
                                 HeadParams<Cfg, Output>* params, Status* statuses) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= count) return;
  HeadParams<Cfg, Output> result{};
  const double out_scale = out_scales != nullptr ? static_cast<double>(out_scales[i]) : 0.0;
  const Status s = calibrate_head<Cfg, Output>(scales[i], scales[count + i], scales[2 * count + i],
                                               out_scale, softmax_scale, head_dim, result);
  if (s != Status::ok) {
    // A rejected head must not run on stale bytes: it gets valid parameters (sm_scale = 2^-10
    // octaves per unit, V scale 1, which every preset accepts) with a zero output multiplier,
    // so its integer outputs are 0, and a NaN float scale, so its binary16 outputs are NaN.
    const double qk = sqrt(1.0 / 1024.0 / (kLog2e * softmax_scale));
    if (calibrate_head<Cfg, Output>(qk, qk, 1.0, 0.0, softmax_scale, head_dim, result) !=
        Status::ok) {
      result = HeadParams<Cfg, Output>{};  // all-zero parameters are defined too (t = 0)
    }
    if constexpr (std::is_same_v<typename Output::value_type, qflash::Float16>) {
      result.output.scale = __int_as_float(0x7fc00000);  // quiet NaN
    } else {
      result.output.multiplier = 0;
    }
  }
  params[i] = result;
  if (statuses != nullptr) statuses[i] = s;
}

template <class T>
Status check_views(const Tensor4<const T>& x, const Tensor4<std::int8_t>& out,
                   const Tensor4<const T>& q) {
  if (x.data == nullptr || out.data == nullptr) return Status::null_pointer;
  if (x.batch <= 0 || x.heads <= 0 || x.seq <= 0 || x.dim <= 0) return Status::empty_problem;
  if (!is_supported_head_dim(x.dim)) return Status::unsupported_head_dim;
  if (out.batch != x.batch || out.heads != x.heads || out.seq != x.seq || out.dim != x.dim ||
      x.batch != q.batch || x.heads != q.heads || x.dim != q.dim) {
    return Status::shape_mismatch;
  }
  if (x.stride_batch < 0 || x.stride_head < 0 || x.stride_seq < 0 || x.stride_dim < 0 ||
      out.stride_batch < 0 || out.stride_head < 0 || out.stride_seq < 0 || out.stride_dim < 0) {
    return Status::invalid_stride;
  }
  return Status::ok;
}

}  // namespace detail

/// Quantizes Q, K and V (fp16 `__half` or `float`) to int8 with symmetric scales.
/// - `scales`: device memory for 3 * scale_count(g, H) floats: the Q scales, then K, then V.
/// - `amax_workspace`: device memory for as many floats (overwritten).
/// - `q8`, `k8`, `v8`: int8 outputs, any strides (use 16-byte rows for the attention kernel).
/// Stream-ordered: a memset and two kernels, no host synchronisation. K and V may have another
/// sequence length than Q.
template <class T>
Status quantize_qkv(const Tensor4<const T>& q, const Tensor4<const T>& k, const Tensor4<const T>& v,
                    ScaleGranularity granularity, float* scales, float* amax_workspace,
                    const Tensor4<std::int8_t>& q8, const Tensor4<std::int8_t>& k8,
                    const Tensor4<std::int8_t>& v8, cudaStream_t stream = 0) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, __half>,
                "quantize_qkv: inputs must be float or __half");
  if (scales == nullptr || amax_workspace == nullptr) return Status::null_pointer;
  for (Status s : {detail::check_views(q, q8, q), detail::check_views(k, k8, q),
                   detail::check_views(v, v8, q)}) {
    if (s != Status::ok) return s;
  }
  if (k.seq != v.seq) return Status::shape_mismatch;
  const std::int64_t count = scale_count(granularity, q.heads);
  const std::int64_t slices = q.batch * q.heads;
  if (slices > 0x7fffffff) return Status::too_many_heads;
  const detail::QkvViews<T> views{{q, k, v}, {q8, k8, v8}};
  if (cudaMemsetAsync(amax_workspace, 0, static_cast<std::size_t>(3 * count) * sizeof(float),
                      stream) != cudaSuccess) {
    return Status::cuda_error;
  }
  const dim3 grid(static_cast<unsigned>(slices), 3);
  detail::amax_kernel<T><<<grid, 256, 0, stream>>>(views, amax_workspace, count);
  detail::quantize_kernel<T><<<grid, 256, 0, stream>>>(views, amax_workspace, scales, count);
  return cudaPeekAtLastError() == cudaSuccess ? Status::ok : Status::cuda_error;
}

/// Calibrates `count` head-parameter sets on the device from scales laid out as quantize_qkv
/// writes them (3 * count floats). `out_scales` (nullable: the output type's default) holds
/// `count` floats. Each head's Status goes to `statuses` (nullable). A head whose status is not
/// ok (e.g. logit_range_exceeded for q/k ranges the preset cannot serve) gets parameters that
/// make a launch write NaN for binary16 outputs and 0 for integer outputs, never a plausible
/// wrong value from stale bytes; check `statuses` to learn which heads and why.
/// `softmax_scale` 0 means 1 / sqrt(head_dim).
template <KernelConfig Cfg, OutputPolicy Output>
Status calibrate_on_device(const float* scales, const float* out_scales, std::int64_t count,
                           int head_dim, double softmax_scale, HeadParams<Cfg, Output>* params,
                           Status* statuses, cudaStream_t stream = 0) {
  if (scales == nullptr || params == nullptr) return Status::null_pointer;
  if (count <= 0) return Status::param_count_mismatch;
  if (!is_supported_head_dim(head_dim)) return Status::unsupported_head_dim;
  const double resolved = softmax_scale != 0.0 ? softmax_scale : 1.0 / std::sqrt(double(head_dim));
  const auto blocks = static_cast<unsigned>((count + 127) / 128);
  detail::calibrate_kernel<Cfg, Output>
      <<<blocks, 128, 0, stream>>>(scales, out_scales, count, resolved, head_dim, params, statuses);
  return cudaPeekAtLastError() == cudaSuccess ? Status::ok : Status::cuda_error;
}

}  // namespace qflash::device
