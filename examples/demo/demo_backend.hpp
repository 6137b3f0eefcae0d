// SPDX-License-Identifier: Apache-2.0
/// @file
/// The demo's backend interface: what a second implementation (the CUDA kernel) receives for each
/// workload, and the rows it hands back.
///
/// The demo computes, for every workload, the float oracle, per-tensor int8 Q/K/V and one
/// `DemoCase` per (preset, output) row with the integer reference (`backend` "reference"). It then
/// calls each registered `DemoBackend` once per workload with all of that workload's cases. A
/// backend runs the same configurations on its own hardware and returns one `DemoRow` per case it
/// ran, with `backend` set to its name, `bit_exact` (its output equals `DemoCase`'s reference
/// output element for element) and `time_us` (its time per call, in microseconds).
///
/// Adding the CUDA backend:
///  1. define `qflash::demo::DemoBackend qflash::demo::make_cuda_demo_backend()` in its own
///     translation unit (.cpp or .cu; it may include this header; it must not write to stdout,
///     which carries the JSON);
///  2. add that file to the `qflash_demo` target and define QFLASH_DEMO_WITH_CUDA for it
///     (examples/CMakeLists.txt);
///  3. qflash_demo.cpp then registers it (see "Backend registry" there).
/// A backend that cannot run (no device) returns no rows and says why on stderr; one that fails
/// throws std::exception, and the demo exits non-zero with the message.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <qflash/qflash.hpp>
#include <qflash/reference/metrics.hpp>
#include <qflash/reference/quantize.hpp>
#include <span>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

namespace qflash::demo {

/// One workload as every backend sees it. All tensors are contiguous [Z, H, N, D] (BHND).
struct DemoWorkload {
  std::string name;  ///< "A2", "N4096", "flat", "npy", ...
  std::int64_t batch = 0, heads = 0, seq_q = 0, seq_kv = 0, dim = 0;
  std::vector<std::int8_t> q, k, v;  ///< per-tensor symmetric int8 codes, in [-127, 127]
  float q_scale = 1.0f, k_scale = 1.0f, v_scale = 1.0f;  ///< real value = scale * code
  double softmax_scale = 0.0;                            ///< 1 / sqrt(D)
  /// Dense bias [bias_heads, seq_q, seq_kv] in Q16 octaves (quantize_bias of the float bias);
  /// empty when the workload has none.
  std::vector<std::int32_t> bias_q16;
  std::int64_t bias_heads = 0;
  /// Mask [mask_windows, seq_q, seq_kv], nonzero = visible; empty when the workload has none.
  std::vector<std::uint8_t> mask;
  std::int64_t mask_windows = 0;
  /// The float oracle's output (double attention on the float inputs), [Z, H, seq_q, D].
  std::vector<double> oracle;
  /// SQNR (dB) against the oracle of exact attention on the dequantized int8 inputs: the best any
  /// int8-input kernel can do.
  double ceiling_db = 0.0;

  /// Elements of one output tensor: Z * H * seq_q * D.
  std::int64_t output_size() const noexcept { return batch * heads * seq_q * dim; }

  /// Views of the integer inputs, bias and mask (valid while this object is unchanged).
  AttentionProblem problem() const noexcept {
    AttentionProblem p{bhnd<const std::int8_t>(q.data(), batch, heads, seq_q, dim),
                       bhnd<const std::int8_t>(k.data(), batch, heads, seq_kv, dim),
                       bhnd<const std::int8_t>(v.data(), batch, heads, seq_kv, dim)};
    if (!bias_q16.empty()) {
      p.bias = AttentionBias{BiasKind::dense, bias_q16.data(), bias_heads, seq_q, seq_kv};
    }
    if (!mask.empty()) p.mask = AttentionMask{mask.data(), mask_windows, seq_q, seq_kv};
    return p;
  }
};

/// One (configuration, output policy) case with its calibrated parameters and the integer
/// reference's output, typed. `params` has one entry (per-tensor scales, shared by all heads).
template <KernelConfig Cfg, OutputPolicy Output>
struct TypedCase {
  using config = Cfg;
  using output = Output;
  using value_type = typename Output::value_type;
  std::vector<HeadParams<Cfg, Output>> params;
  std::vector<value_type> reference;  ///< [Z, H, seq_q, D]
};

/// Every typed case the demo produces (the calibrated s8 row shares Precise's s8 type).
using CaseData =
    std::variant<TypedCase<presets::Paper, OutputFor<presets::Paper, std::int8_t>>,
                 TypedCase<presets::Precise, OutputFor<presets::Precise, std::int8_t>>,
                 TypedCase<presets::Precise, OutputFor<presets::Precise, std::int16_t>>,
                 TypedCase<presets::Precise, OutputFor<presets::Precise, std::int32_t>>,
                 TypedCase<presets::Precise, OutputFor<presets::Precise, Float16>>,
                 TypedCase<presets::PreciseCubic, OutputFor<presets::PreciseCubic, std::int8_t>>,
                 TypedCase<presets::Fast, OutputFor<presets::Fast, std::int8_t>>,
                 TypedCase<presets::Fast, OutputFor<presets::Fast, std::int16_t>>,
                 TypedCase<presets::Fast, OutputFor<presets::Fast, Float16>>,
                 TypedCase<presets::FastLong, OutputFor<presets::FastLong, std::int8_t>>>;

/// One row of the demo, as a backend receives it.
struct DemoCase {
  std::string preset;        ///< "Paper", "Precise", "PreciseCubic", "Fast", "FastLong"
  std::string output;        ///< "s8", "s8-calibrated", "s16", "s32", "f16"
  double output_scale;       ///< real value per output unit (1 for f16, whose values are real)
  CaseData data;             ///< the typed parameters and the reference output
  double reference_sqnr_db;  ///< the reference output's SQNR against the oracle
  /// ok, or the named status with which `calibrate` rejected the workload's scales for this
  /// preset (then `data` is empty, the SQNR NaN, and backends skip the case).
  Status status = Status::ok;
};

/// One line of the demo's table / one object of its JSON output.
struct DemoRow {
  std::string workload, preset, output, backend;
  double sqnr_db = 0.0;           ///< dB against the float oracle
  double ceiling_db = 0.0;        ///< the workload's ceiling, dB
  std::optional<bool> bit_exact;  ///< backends other than the reference: equal to the reference
  std::optional<double> time_us;  ///< backends other than the reference: microseconds per call
  Status status = Status::ok;     ///< not ok: the preset rejected the scales (named status)
};

/// Real values of an output tensor: value * output_scale for integers, the binary16 value for f16.
template <class T>
std::vector<double> output_to_real(std::span<const T> values, double output_scale) {
  if constexpr (std::is_same_v<T, Float16>) {
    return reference::dequantize(values);
  } else {
    return reference::dequantize(values, output_scale);
  }
}

/// The row for `values`, an output of `c` computed by `backend` on `w` (SQNR against the oracle).
template <class T>
DemoRow make_row(const DemoWorkload& w, const DemoCase& c, const std::string& backend,
                 std::span<const T> values) {
  const std::vector<double> real = output_to_real(values, c.output_scale);
  return DemoRow{
      w.name,       c.preset,     c.output,    backend, reference::compare(w.oracle, real).sqnr_db,
      w.ceiling_db, std::nullopt, std::nullopt};
}

/// A second implementation of the demo's cases. `run` is called once per workload with all its
/// cases and returns the rows it produced (possibly none); see the file comment for the contract.
struct DemoBackend {
  std::string name;  ///< the JSON "backend" value, e.g. "cuda"
  std::function<std::vector<DemoRow>(const DemoWorkload&, std::span<const DemoCase>)> run;
};

#if defined(QFLASH_DEMO_WITH_CUDA)
/// Defined by the CUDA backend's translation unit.
DemoBackend make_cuda_demo_backend();
#endif

}  // namespace qflash::demo
