// SPDX-License-Identifier: Apache-2.0
/// @file
/// Internal: the project's own compiled kernel instantiations (4 presets x 4 output types x 5
/// head dims) behind a host-only interface, shared by the GPU tests, the demo's CUDA backend and
/// the benchmark's C API so that each kernel is compiled once. Not installed: a downstream
/// project instantiates `qflash::device::flash_attention` in its own .cu files.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "qflash/attention/problem.hpp"
#include "qflash/core/status.hpp"
#include "qflash/policy/calibrate.hpp"
#include "qflash/reference/equivalence_case.hpp"

namespace qflash::instances {

enum class Preset : int { paper = 0, precise = 1, precise_cubic = 2, fast = 3, fast_long = 4 };
inline constexpr int kPresetCount = static_cast<int>(Preset::fast_long) + 1;

/// A Z x H x N x D attention shape (self-attention: Nq = Nkv = N).
struct Workload {
  const char* name;
  std::int64_t z, h, n, d;
};
/// The QFlash paper's workloads A1-A7 at batch 1 (ViT-S/B heads at N = 197, Swin windows at
/// N = 49); the GPU tests and the kernel timer multiply Z by the batch.
inline constexpr Workload kPaperWorkloads[] = {
    {"A1", 1, 3, 197, 64}, {"A2", 1, 6, 197, 64}, {"A3", 1, 12, 197, 64}, {"A4", 64, 3, 49, 32},
    {"A5", 16, 6, 49, 32}, {"A6", 4, 12, 49, 32}, {"A7", 1, 24, 49, 32}};
enum class OutputType : int { s8 = 0, s16 = 1, s32 = 2, f16 = 3 };

const char* name(Preset p);
const char* name(OutputType o);
std::size_t element_size(OutputType o);

/// The visible CUDA device, if any.
struct GpuInfo {
  bool available = false;
  std::string name;
  int major = 0, minor = 0;
};
GpuInfo gpu_info();

/// Device memory of the fp16 pipeline (quantize -> calibrate on device -> attention): int8 Q, K, V
/// in BHND (Q: Z*H*Nq*D bytes, K and V: Z*H*Nkv*D bytes each), 3 * count scale floats and as
/// many amax floats, `count` head-parameter sets (params_size bytes each) and statuses.
struct HalfPipelineWorkspace {
  std::int8_t *q8 = nullptr, *k8 = nullptr, *v8 = nullptr;
  float *scales = nullptr, *amax = nullptr;
  void* params = nullptr;
  Status* statuses = nullptr;
  std::int64_t count = 1;  ///< 1: per-tensor scales; H: per-head scales
};

/// One (preset, output type) pair, type-erased. `params` always points to an array of
/// HeadParams<Cfg, OutputFor<Cfg, OutT>> of the pair, of length `count` (1 or H).
struct Ops {
  std::size_t params_size;  ///< sizeof(HeadParams) of the pair
  reference::EquivalenceReport (*check)(const reference::EquivalenceCase& c);
  Status (*calibrate)(const QuantScales& scales, int head_dim, void* params, std::int64_t count);
  /// Field-by-field equality of two parameter arrays (padding bytes ignored).
  bool (*params_equal)(const void* a, const void* b, std::int64_t count);
  /// Host reference into a [Z, H, Nq, D] tensor at `out` with the given element strides.
  Status (*reference)(const AttentionProblem& host_problem, const void* params, std::int64_t count,
                      void* out, const std::int64_t (&out_strides)[4]);
  /// Device launch (device pointers in problem/out, host params), asynchronous on `stream`.
  Status (*launch)(const AttentionProblem& device_problem, const void* params, std::int64_t count,
                   void* out, const std::int64_t (&out_strides)[4], void* stream);
  /// fp16 Q/K/V (binary16 bit patterns, device) -> quantize_qkv -> calibrate_on_device ->
  /// attention with device-resident parameters: four stream-ordered launches, no host sync.
  /// `bias` (Q16 octaves) and `mask` are device views as in AttentionProblem ({} for none).
  Status (*launch_from_half)(const Tensor4<const std::uint16_t>& q,
                             const Tensor4<const std::uint16_t>& k,
                             const Tensor4<const std::uint16_t>& v, const AttentionBias& bias,
                             const AttentionMask& mask, void* out,
                             const std::int64_t (&out_strides)[4], const HalfPipelineWorkspace& ws,
                             void* stream);
  /// Quantize + calibrate only (for tests): fills ws.q8/k8/v8, ws.scales, ws.params, statuses.
  Status (*quantize_half)(const Tensor4<const std::uint16_t>& q,
                          const Tensor4<const std::uint16_t>& k,
                          const Tensor4<const std::uint16_t>& v, const HalfPipelineWorkspace& ws,
                          void* stream);
};

const Ops& ops(Preset p, OutputType o);

/// Copies a host problem to the device, runs the kernel `warmup + repeats` times (CUDA events
/// around each launch; with `flush_bytes` > 0, a cudaMemsetAsync of that many bytes before each
/// launch evicts L2, outside the timed interval), copies the last output back into `host_out`
/// (BHND contiguous) and returns the median time per call in microseconds.
Status time_on_device(Preset p, OutputType o, const AttentionProblem& host_problem,
                      const void* params, std::int64_t count, void* host_out, int warmup,
                      int repeats, double* median_us, std::size_t flush_bytes = 0);

}  // namespace qflash::instances
