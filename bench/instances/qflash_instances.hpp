// SPDX-License-Identifier: Apache-2.0
/// @file
/// Internal: the project's own compiled kernel instantiations (3 presets x 4 output types x 5
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

enum class Preset : int { paper = 0, precise = 1, precise_cubic = 2 };
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

/// One (preset, output type) pair, type-erased. `params` always points to an array of
/// HeadParams<Cfg, OutputFor<Cfg, OutT>> of the pair, of length `count` (1 or H).
struct Ops {
  std::size_t params_size;  ///< sizeof(HeadParams) of the pair
  reference::EquivalenceReport (*check)(const reference::EquivalenceCase& c);
  Status (*calibrate)(const QuantScales& scales, int head_dim, void* params, std::int64_t count);
  /// Host reference into a [Z, H, Nq, D] tensor at `out` with the given element strides.
  Status (*reference)(const AttentionProblem& host_problem, const void* params, std::int64_t count,
                      void* out, const std::int64_t (&out_strides)[4]);
  /// Device launch (device pointers in problem/out, host params), asynchronous on `stream`.
  Status (*launch)(const AttentionProblem& device_problem, const void* params, std::int64_t count,
                   void* out, const std::int64_t (&out_strides)[4], void* stream);
};

const Ops& ops(Preset p, OutputType o);

/// Copies a host problem to the device, runs the kernel `warmup + repeats` times (CUDA events,
/// no L2 flush), copies the last output back into `host_out` (BHND contiguous) and returns the
/// median time per call in microseconds.
Status time_on_device(Preset p, OutputType o, const AttentionProblem& host_problem,
                      const void* params, std::int64_t count, void* host_out, int warmup,
                      int repeats, double* median_us);

}  // namespace qflash::instances
