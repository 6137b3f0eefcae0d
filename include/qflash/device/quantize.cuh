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
#include <cstring>
#include <type_traits>

#include "qflash/attention/problem.hpp"
#include "qflash/attention/validate.hpp"
#include "qflash/core/concepts.hpp"
#include "qflash/core/fast_divide.hpp"
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

/// Elements per 16-byte load: 8 halves or 4 floats.
template <class T>
inline constexpr int kVectorWidth = static_cast<int>(16 / sizeof(T));

/// The three tensors and how the grid covers them. The rows of head h of a tensor are its
/// (z, n) pairs in z-major order, Z * N of them; block (h * splits + part, t) walks rows
/// [part * rows_per_block, (part + 1) * rows_per_block) of head h of tensor t (so every block
/// folds into one scale slot, per tensor or per head, and short sequences share a block), with
/// 16-byte loads (and kVectorWidth-byte stores) where `vectorized[t]` says the views allow.
template <class T>
struct QkvViews {
  Tensor4<const T> in[3];
  Tensor4<std::int8_t> out[3];
  std::int64_t rows_per_block = 1;  // <= 2^29
  std::int64_t splits = 1;  // min(ceil(max(Z * Nq, Z * Nkv) / rows_per_block), (2^31 - 1) / H)
  FastDivide by_seq[3];     // by N of tensor t (N <= 2^29)
  bool vectorized[3] = {false, false, false};
};

/// This block's share of tensor x: head h, `count` rows from (z0, n0) on (none past Z * N).
struct BlockRows {
  std::int64_t h, z0, n0;
  std::int32_t count;
};

template <class T>
QFLASH_DEVICE BlockRows block_rows(const Tensor4<const T>& x, const QkvViews<T>& views) {
  const std::int64_t h = blockIdx.x / views.splits, part = blockIdx.x % views.splits;
  const std::int64_t first = part * views.rows_per_block, rows = x.batch * x.seq;
  const std::int64_t count =
      first >= rows ? 0
                    : (rows - first < views.rows_per_block ? rows - first : views.rows_per_block);
  return {h, first / x.seq, first % x.seq, static_cast<std::int32_t>(count)};
}

/// Calls visit(z, n, d, values, width) over the block's rows: `width` consecutive elements along
/// D starting at (z, h, n, d), as floats -- kVectorWidth<T> of them from one 16-byte load when
/// `vectorized`, else one. Each thread keeps one lane (vector or element) of the row and steps
/// over rows; consecutive threads take consecutive lanes, so a warp reads contiguous bytes of
/// contiguous rows (the last blockDim % lanes threads idle).
template <class T, class Visit>
QFLASH_DEVICE void for_each_vector(const Tensor4<const T>& x, const BlockRows& rows,
                                   const FastDivide& by_seq, bool vectorized, Visit&& visit) {
  constexpr int kWidth = kVectorWidth<T>;
  constexpr int kRowsInFlight = 2;  // 16-byte loads issued before the first is used
  const T* head = x.data + rows.h * x.stride_head;
  const int lanes = vectorized ? static_cast<int>(x.dim) / kWidth : static_cast<int>(x.dim);
  const int rows_per_pass = static_cast<int>(blockDim.x) / lanes;  // D <= 128 <= blockDim
  const int first_row = static_cast<int>(threadIdx.x) / lanes;
  const int lane = static_cast<int>(threadIdx.x) % lanes;
  if (first_row >= rows_per_pass) return;
  // Row j of the block -> (z, n); n0 + j < N + rows_per_block <= 2^30: FastDivide's domain.
  const auto locate = [&](std::int32_t j, std::int64_t& z, std::int64_t& n) {
    const auto past = static_cast<std::uint32_t>(rows.n0 + j);
    const std::uint32_t dz = by_seq.quotient(past);
    z = rows.z0 + dz;
    n = past - dz * static_cast<std::uint32_t>(x.seq);
    return head + z * x.stride_batch + n * x.stride_seq;
  };
  float values[kWidth];
  if (vectorized) {
    const int d = lane * kWidth;
    for (std::int32_t j = first_row; j < rows.count; j += kRowsInFlight * rows_per_pass) {
      uint4 raw[kRowsInFlight];
      std::int64_t z[kRowsInFlight], n[kRowsInFlight];
      QFLASH_UNROLL
      for (int u = 0; u < kRowsInFlight; ++u) {
        if (j + u * rows_per_pass < rows.count) {
          raw[u] =
              __ldg(reinterpret_cast<const uint4*>(locate(j + u * rows_per_pass, z[u], n[u]) + d));
        }
      }
      QFLASH_UNROLL
      for (int u = 0; u < kRowsInFlight; ++u) {
        if (j + u * rows_per_pass >= rows.count) break;
        T elements[kWidth];
        memcpy(elements, &raw[u], sizeof(raw[u]));
        for (int i = 0; i < kWidth; ++i) values[i] = to_float(elements[i]);
        visit(z[u], n[u], d, values, kWidth);
      }
    }
  } else {
    for (std::int32_t j = first_row; j < rows.count; j += rows_per_pass) {
      std::int64_t z = 0, n = 0;
      values[0] = to_float(locate(j, z, n)[lane * x.stride_dim]);
      visit(z, n, lane, values, 1);
    }
  }
}

/// Block: max |x| over its rows of tensor t, folded into amax[t * count + slot].
template <class T>
__global__ void amax_kernel(const QkvViews<T> views, float* amax, std::int64_t count) {
  const int t = static_cast<int>(blockIdx.y);
  const Tensor4<const T>& x = views.in[t];
  const BlockRows rows = block_rows(x, views);
  float local = 0.0f;
  for_each_vector(x, rows, views.by_seq[t], views.vectorized[t],
                  [&](std::int64_t, std::int64_t, int, const float* values, int width) {
                    for (int j = 0; j < width; ++j)
                      local = fmaxf(local, fabsf(values[j]));  // drops NaN
                  });
  for (int offset = 16; offset > 0; offset /= 2) {
    local = fmaxf(local, __shfl_xor_sync(0xffffffffu, local, offset));
  }
  __shared__ float warp_max[32];
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = local;
  __syncthreads();
  if (threadIdx.x == 0 && rows.count > 0) {
    float block_max = 0.0f;
    for (unsigned w = 0; w < blockDim.x / 32; ++w) block_max = fmaxf(block_max, warp_max[w]);
    atomic_max_nonneg(&amax[t * count + (count == 1 ? 0 : rows.h)], block_max);
  }
}

/// Block: int8 codes of its rows of tensor t; the first block of each scale slot also publishes
/// the slot's scale.
template <class T>
__global__ void quantize_kernel(const QkvViews<T> views, const float* amax, float* scales,
                                std::int64_t count) {
  constexpr int kWidth = kVectorWidth<T>;
  using Packed = std::conditional_t<kWidth == 8, uint2, unsigned>;  // kWidth int8 codes
  static_assert(sizeof(Packed) == kWidth);
  const int t = static_cast<int>(blockIdx.y);
  const Tensor4<const T>& x = views.in[t];
  const Tensor4<std::int8_t>& out = views.out[t];
  const BlockRows rows = block_rows(x, views);
  const std::int64_t slot = t * count + (count == 1 ? 0 : rows.h);
  const float scale = symmetric_scale(amax[slot]);
  std::int8_t* out_head = out.data + rows.h * out.stride_head;
  for_each_vector(
      x, rows, views.by_seq[t], views.vectorized[t],
      [&](std::int64_t z, std::int64_t n, int d, const float* values, int width) {
        std::int8_t* dst =
            out_head + z * out.stride_batch + n * out.stride_seq + d * out.stride_dim;
        if (width == kWidth) {  // vectorized: out has unit D stride and kWidth-byte aligned rows
          std::int8_t codes[kWidth];
          for (int j = 0; j < kWidth; ++j) codes[j] = quantize_value(values[j], scale);
          Packed packed;
          memcpy(&packed, codes, sizeof(packed));
          *reinterpret_cast<Packed*>(dst) = packed;
        } else {
          *dst = quantize_value(values[0], scale);
        }
      });
  const bool first_of_slot = blockIdx.x % views.splits == 0 && (count != 1 || rows.h == 0);
  if (threadIdx.x == 0 && first_of_slot) scales[slot] = scale;
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
  // Negative strides, a view past kMaxViewBytes, or an output whose elements overlap (the
  // blocks would race on them): the launcher's rules for the attention output.
  if (!qflash::detail::tensor_range(x) || !qflash::detail::tensor_range(out) ||
      !qflash::detail::is_non_overlapping(out)) {
    return Status::invalid_stride;
  }
  return Status::ok;
}

/// Whether 16-byte loads of x and kVectorWidth-byte stores of out cover whole D rows: unit D
/// strides, other strides and the base addresses aligned to a vector.
template <class T>
bool vectorizable(const Tensor4<const T>& x, const Tensor4<std::int8_t>& out) {
  constexpr std::int64_t w = kVectorWidth<T>;
  const auto aligned = [](const void* p, std::int64_t bytes) {
    return reinterpret_cast<std::uintptr_t>(p) % static_cast<std::uintptr_t>(bytes) == 0;
  };
  return x.stride_dim == 1 && out.stride_dim == 1 && x.dim % w == 0 && x.stride_seq % w == 0 &&
         x.stride_head % w == 0 && x.stride_batch % w == 0 && out.stride_seq % w == 0 &&
         out.stride_head % w == 0 && out.stride_batch % w == 0 && aligned(x.data, 16) &&
         aligned(out.data, w);
}

}  // namespace detail

/// Quantizes Q, K and V (fp16 `__half` or `float`) to int8 with symmetric scales.
/// - `scales`: device memory for 3 * scale_count(g, H) floats: the Q scales, then K, then V.
/// - `amax_workspace`: device memory for as many floats (overwritten).
/// - `q8`, `k8`, `v8`: int8 outputs, any strides (use 16-byte rows for the attention kernel).
/// Stream-ordered: a memset and two kernels (an amax pass and a quantize pass, each reading the
/// input once, vectorized where the views allow), no host synchronisation. K and V may have
/// another sequence length than Q. Errors, before any device work: null_pointer, empty_problem,
/// unsupported_head_dim, shape_mismatch; invalid_stride (negative strides, a view past 2^48
/// bytes, an output whose elements overlap); output_overlaps_input (codes over an input,
/// another output, the scales or the workspace, or scales over the workspace); too_many_heads
/// (Z, H or Z * H from 2^31); sequence_too_long (N above 2^29).
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
  // Z and H each below 2^31 (H is also the grid's divisor below), then Z * H below 2^31.
  if (q.batch > 0x7fffffff || q.heads > 0x7fffffff || q.batch * q.heads > 0x7fffffff) {
    return Status::too_many_heads;
  }
  // The six views are within kMaxViewBytes (check_views): the codes must not land on an input
  // (read through the non-coherent cache) or on another output, nor on the scales / workspace.
  const qflash::detail::ByteRange in_bytes[3] = {*qflash::detail::tensor_range(q),
                                                 *qflash::detail::tensor_range(k),
                                                 *qflash::detail::tensor_range(v)};
  const qflash::detail::ByteRange out_bytes[3] = {*qflash::detail::tensor_range(q8),
                                                  *qflash::detail::tensor_range(k8),
                                                  *qflash::detail::tensor_range(v8)};
  const std::int64_t count = scale_count(granularity, q.heads);
  const auto scale_bytes = [&](const float* f) {
    const auto begin = reinterpret_cast<std::uintptr_t>(f);
    return qflash::detail::ByteRange{
        begin, begin + static_cast<std::uintptr_t>(3 * count) * sizeof(float)};
  };
  if (scale_bytes(scales).intersects(scale_bytes(amax_workspace))) {
    return Status::output_overlaps_input;
  }
  for (int t = 0; t < 3; ++t) {
    if (qflash::detail::overlaps_any(out_bytes[t],
                                     {in_bytes[0], in_bytes[1], in_bytes[2], scale_bytes(scales),
                                      scale_bytes(amax_workspace)}) ||
        out_bytes[t].intersects(out_bytes[(t + 1) % 3])) {
      return Status::output_overlaps_input;
    }
  }
  detail::QkvViews<T> views;
  const Tensor4<const T> inputs[3] = {q, k, v};
  const Tensor4<std::int8_t> outputs[3] = {q8, k8, v8};
  for (int t = 0; t < 3; ++t) {
    views.in[t] = inputs[t];
    views.out[t] = outputs[t];
  }
  // Each block takes about 16384 elements of one head (eight 16-byte loads per thread of 256);
  // longer blocks only where the grid would pass 2^31 - 1 blocks.
  constexpr std::int64_t kMaxRows = std::int64_t{1} << 29;  // FastDivide needs N + rows < 2^31
  if (q.seq > kMaxRows || k.seq > kMaxRows) return Status::sequence_too_long;
  const std::int64_t head_rows = q.batch * (q.seq > k.seq ? q.seq : k.seq);
  views.rows_per_block = 16384 / q.dim;
  views.splits = (head_rows + views.rows_per_block - 1) / views.rows_per_block;
  if (views.splits > 0x7fffffff / q.heads) {
    views.splits = 0x7fffffff / q.heads;
    views.rows_per_block = (head_rows + views.splits - 1) / views.splits;
    // Unreachable (defensive): Z * H < 2^31 gives splits = floor((2^31 - 1) / H) >= Z, so
    // rows_per_block <= ceil(Z * N / Z) = N <= 2^29.
    if (views.rows_per_block > kMaxRows) return Status::sequence_too_long;
  }
  for (int t = 0; t < 3; ++t) {
    views.by_seq[t] = FastDivide::make(static_cast<std::uint32_t>(views.in[t].seq));
    views.vectorized[t] = detail::vectorizable(views.in[t], views.out[t]);
  }
  if (cudaMemsetAsync(amax_workspace, 0, static_cast<std::size_t>(3 * count) * sizeof(float),
                      stream) != cudaSuccess) {
    return Status::cuda_error;
  }
  const dim3 grid(static_cast<unsigned>(q.heads * views.splits), 3);
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
