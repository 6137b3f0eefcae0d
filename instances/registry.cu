// SPDX-License-Identifier: Apache-2.0
// The (preset, output) -> Ops table, device info and on-device timing (internal).
#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "qflash/core/float16.hpp"
#include "qflash_instances.hpp"

namespace qflash::instances {

namespace detail {
#define QFLASH_DECLARE_INSTANCE(p, o) const Ops& ops_##p##_##o();
#define QFLASH_DECLARE_PRESET(p) \
  QFLASH_DECLARE_INSTANCE(p, s8) \
  QFLASH_DECLARE_INSTANCE(p, s16) QFLASH_DECLARE_INSTANCE(p, s32) QFLASH_DECLARE_INSTANCE(p, f16)
QFLASH_DECLARE_PRESET(paper)
QFLASH_DECLARE_PRESET(precise)
QFLASH_DECLARE_PRESET(precise_cubic)
QFLASH_DECLARE_PRESET(fast)
QFLASH_DECLARE_PRESET(fast_long)
#undef QFLASH_DECLARE_PRESET
#undef QFLASH_DECLARE_INSTANCE
}  // namespace detail

const char* name(Preset p) {
  switch (p) {
    case Preset::paper:
      return "Paper";
    case Preset::precise:
      return "Precise";
    case Preset::precise_cubic:
      return "PreciseCubic";
    case Preset::fast:
      return "Fast";
    case Preset::fast_long:
      return "FastLong";
  }
  return "?";
}

const char* name(OutputType o) {
  switch (o) {
    case OutputType::s8:
      return "s8";
    case OutputType::s16:
      return "s16";
    case OutputType::s32:
      return "s32";
    case OutputType::f16:
      return "f16";
  }
  return "?";
}

std::size_t element_size(OutputType o) {
  switch (o) {
    case OutputType::s8:
      return 1;
    case OutputType::s16:
      return 2;
    case OutputType::s32:
      return 4;
    case OutputType::f16:
      return 2;
  }
  return 0;
}

const Ops& ops(Preset p, OutputType o) {
  using namespace detail;
  static const Ops* const table[kPresetCount][4] = {
      {&ops_paper_s8(), &ops_paper_s16(), &ops_paper_s32(), &ops_paper_f16()},
      {&ops_precise_s8(), &ops_precise_s16(), &ops_precise_s32(), &ops_precise_f16()},
      {&ops_precise_cubic_s8(), &ops_precise_cubic_s16(), &ops_precise_cubic_s32(),
       &ops_precise_cubic_f16()},
      {&ops_fast_s8(), &ops_fast_s16(), &ops_fast_s32(), &ops_fast_f16()},
      {&ops_fast_long_s8(), &ops_fast_long_s16(), &ops_fast_long_s32(), &ops_fast_long_f16()}};
  return *table[static_cast<int>(p)][static_cast<int>(o)];
}

GpuInfo gpu_info() {
  GpuInfo info;
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();
    return info;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
    cudaGetLastError();
    return info;
  }
  info.available = true;
  info.name = prop.name;
  info.major = prop.major;
  info.minor = prop.minor;
  return info;
}

namespace {

template <class T>
struct Buffer {
  T* ptr = nullptr;
  cudaError_t error;
  explicit Buffer(std::size_t bytes)
      : error(cudaMalloc(reinterpret_cast<void**>(&ptr), bytes == 0 ? 1 : bytes)) {}
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() {
    if (ptr != nullptr) cudaFree(ptr);
  }
};

/// Bytes spanned by a tensor view (largest offset + 1 element).
template <class T>
std::size_t span_bytes(const Tensor4<T>& t) {
  const std::int64_t last = (t.batch - 1) * t.stride_batch + (t.heads - 1) * t.stride_head +
                            (t.seq - 1) * t.stride_seq + (t.dim - 1) * t.stride_dim;
  return static_cast<std::size_t>(last + 1) * sizeof(T);
}

}  // namespace

Status time_on_device(Preset p, OutputType o, const AttentionProblem& hp, const void* params,
                      std::int64_t count, void* host_out, int warmup, int repeats,
                      double* median_us, std::size_t flush_bytes) {
  if (params == nullptr || host_out == nullptr || median_us == nullptr || repeats < 1) {
    return Status::null_pointer;
  }
  const Ops& op = ops(p, o);
  const std::size_t qb = span_bytes(hp.q), kb = span_bytes(hp.k), vb = span_bytes(hp.v);
  const std::int64_t out_elems = hp.q.batch * hp.q.heads * hp.q.seq * hp.q.dim;
  const std::size_t ob = static_cast<std::size_t>(out_elems) * element_size(o);
  const std::size_t bias_entries =
      hp.bias.kind == BiasKind::dense
          ? static_cast<std::size_t>(hp.bias.heads * hp.bias.rows * hp.bias.cols)
      : hp.bias.kind == BiasKind::relative_table
          ? static_cast<std::size_t>(hp.bias.table_size *
                                     std::max<std::int64_t>(hp.bias.stride_entry, 1) *
                                     std::max<std::int64_t>(hp.bias.heads, 1))
          : 0;
  const std::size_t index_entries = hp.bias.kind == BiasKind::relative_table
                                        ? static_cast<std::size_t>(hp.bias.rows * hp.bias.cols)
                                        : 0;
  const std::size_t mask_bytes =
      static_cast<std::size_t>(hp.mask.windows * hp.mask.rows * hp.mask.cols);
  Buffer<std::int8_t> dq(qb), dk(kb), dv(vb);
  Buffer<std::uint8_t> dout(ob), dmask(mask_bytes), dflush(flush_bytes);
  Buffer<std::int32_t> dbias(bias_entries * 4), dindex(index_entries * 4);
  for (cudaError_t e : {dq.error, dk.error, dv.error, dout.error, dmask.error, dbias.error,
                        dindex.error, dflush.error}) {
    if (e != cudaSuccess) return Status::cuda_error;
  }
  cudaMemcpy(dq.ptr, hp.q.data, qb, cudaMemcpyHostToDevice);
  cudaMemcpy(dk.ptr, hp.k.data, kb, cudaMemcpyHostToDevice);
  cudaMemcpy(dv.ptr, hp.v.data, vb, cudaMemcpyHostToDevice);
  if (bias_entries > 0)
    cudaMemcpy(dbias.ptr, hp.bias.values, bias_entries * 4, cudaMemcpyHostToDevice);
  if (index_entries > 0)
    cudaMemcpy(dindex.ptr, hp.bias.index, index_entries * 4, cudaMemcpyHostToDevice);
  if (mask_bytes > 0) cudaMemcpy(dmask.ptr, hp.mask.data, mask_bytes, cudaMemcpyHostToDevice);
  if (cudaGetLastError() != cudaSuccess) return Status::cuda_error;

  AttentionProblem dp = hp;
  dp.q.data = dq.ptr;
  dp.k.data = dk.ptr;
  dp.v.data = dv.ptr;
  dp.bias.values = bias_entries > 0 ? dbias.ptr : nullptr;
  dp.bias.index = index_entries > 0 ? dindex.ptr : nullptr;
  dp.mask.data = mask_bytes > 0 ? dmask.ptr : nullptr;
  const std::int64_t d = hp.q.dim, n = hp.q.seq, h = hp.q.heads;
  const std::int64_t strides[4] = {h * n * d, n * d, d, 1};

  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  std::vector<float> times;
  Status s = Status::ok;
  for (int i = 0; i < warmup + repeats && s == Status::ok; ++i) {
    if (flush_bytes > 0) cudaMemsetAsync(dflush.ptr, i & 0xff, flush_bytes);
    cudaEventRecord(start);
    s = op.launch(dp, params, count, dout.ptr, strides, nullptr);
    cudaEventRecord(stop);
    cudaEventSynchronize(stop);
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    if (i >= warmup) times.push_back(ms * 1000.0f);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  if (s != Status::ok) return s;
  if (cudaDeviceSynchronize() != cudaSuccess) return Status::cuda_error;
  if (cudaMemcpy(host_out, dout.ptr, ob, cudaMemcpyDeviceToHost) != cudaSuccess)
    return Status::cuda_error;
  std::sort(times.begin(), times.end());
  *median_us = times[times.size() / 2];
  return Status::ok;
}

}  // namespace qflash::instances
