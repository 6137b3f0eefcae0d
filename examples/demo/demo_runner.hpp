// SPDX-License-Identifier: Apache-2.0
/// @file
/// The demo's machinery, kept apart from its command line so that tests can drive it: workload
/// generation, .npy inputs, the float oracle and ceiling, the integer reference rows, the
/// backends, and the table / JSON writers.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <functional>
#include <iomanip>
#include <limits>
#include <optional>
#include <ostream>
#include <qflash/qflash.hpp>
#include <qflash/reference/attention_float.hpp>
#include <qflash/reference/flash_attention_int.hpp>
#include <qflash/reference/metrics.hpp>
#include <qflash/reference/quantize.hpp>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "demo_backend.hpp"
#include "npy.hpp"

namespace qflash::demo {

// ---------------------------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------------------------

/// The seed of the default run.
inline constexpr std::uint32_t kDefaultSeed = 199;

/// A generated workload: shape and the half-width of the uniform distribution of q and k
/// (v is always U[-4, 4]).
struct WorkloadSpec {
  std::string name;
  std::int64_t batch, heads, seq, dim;
  float qk_range;
};

/// The QFlash paper's benchmark shapes A1-A7 (Z, H, N, D), a long sequence and "flat" attention.
inline std::vector<WorkloadSpec> builtin_workloads() {
  return {
      {"A1", 1, 3, 197, 64, 4.0f}, {"A2", 1, 6, 197, 64, 4.0f},     {"A3", 1, 12, 197, 64, 4.0f},
      {"A4", 64, 3, 49, 32, 4.0f}, {"A5", 16, 6, 49, 32, 4.0f},     {"A6", 4, 12, 49, 32, 4.0f},
      {"A7", 1, 24, 49, 32, 4.0f}, {"N4096", 1, 1, 4096, 64, 4.0f}, {"flat", 1, 6, 197, 64, 1.0f}};
}

/// The float inputs of one workload, contiguous [Z, H, N, D]; optional dense bias (nats) and mask.
struct FloatWorkload {
  std::string name;
  std::int64_t batch = 0, heads = 0, seq_q = 0, seq_kv = 0, dim = 0;
  std::vector<float> q, k, v;
  std::vector<float> bias_nats;  ///< [bias_heads, seq_q, seq_kv]; empty: no bias
  std::int64_t bias_heads = 0;
  std::vector<std::uint8_t> mask;  ///< [mask_windows, seq_q, seq_kv]; empty: no mask
  std::int64_t mask_windows = 0;
};

/// x uniform in [-range, range): 24 random bits of one mt19937 draw, scaled exactly. Written out
/// (instead of std::uniform_real_distribution, whose algorithm is implementation-defined) so that
/// every standard library produces the same inputs for a seed.
inline float uniform_symmetric(std::mt19937& rng, float range) {
  const auto bits = static_cast<float>(rng() >> 8);  // [0, 2^24)
  return (bits * 0x1p-23f - 1.0f) * range;
}

/// The inputs of `spec` for `seed`: one mt19937 seeded with `seed` draws q, then k, then v in
/// [Z, H, N, D] order; every value is rounded through fp16 (the paper benchmarks fp16 tensors).
inline FloatWorkload generate_workload(const WorkloadSpec& spec, std::uint32_t seed) {
  FloatWorkload w;
  w.name = spec.name;
  w.batch = spec.batch;
  w.heads = spec.heads;
  w.seq_q = w.seq_kv = spec.seq;
  w.dim = spec.dim;
  std::mt19937 rng(seed);
  const auto count = static_cast<std::size_t>(spec.batch * spec.heads * spec.seq * spec.dim);
  const auto fill = [&](std::vector<float>& values, float range) {
    values.resize(count);
    for (float& x : values) x = reference::round_through_half(uniform_symmetric(rng, range));
  };
  fill(w.q, spec.qk_range);
  fill(w.k, spec.qk_range);
  fill(w.v, 4.0f);
  return w;
}

// ---------------------------------------------------------------------------------------------
// .npy inputs
// ---------------------------------------------------------------------------------------------

/// Where the tensors of an `--npy` run come from. Empty bias / mask paths: none.
struct NpyPaths {
  std::filesystem::path q, k, v, bias, mask;
};

namespace detail {

inline std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    s += std::to_string(shape[i]);
    if (i + 1 < shape.size() || shape.size() == 1) s += ",";
    if (i + 1 < shape.size()) s += " ";
  }
  return s + ")";
}

/// A [Z, H, N, D], [H, N, D] or [N, D] array as its four extents (missing leading ones are 1).
inline std::array<std::int64_t, 4> as_zhnd(const npy::NpyArray& a) {
  if (a.shape.size() < 2 || a.shape.size() > 4) {
    throw std::runtime_error(a.source +
                             ": expected a [Z, H, N, D], [H, N, D] or [N, D] array, got shape " +
                             shape_string(a.shape));
  }
  std::array<std::int64_t, 4> e = {1, 1, 1, 1};
  std::copy(a.shape.begin(), a.shape.end(), e.end() - static_cast<std::ptrdiff_t>(a.shape.size()));
  for (const std::int64_t x : e) {
    if (x <= 0) throw std::runtime_error(a.source + ": empty shape " + shape_string(a.shape));
  }
  return e;
}

/// The position of element `flat` of a C-order array of `shape`, e.g. "[0, 2, 5]".
inline std::string index_string(const std::vector<std::int64_t>& shape, std::int64_t flat) {
  std::vector<std::int64_t> index(shape.size(), 0);
  for (std::size_t axis = shape.size(); axis-- > 0;) {
    index[axis] = flat % shape[axis];
    flat /= shape[axis];
  }
  std::string s = "[";
  for (std::size_t axis = 0; axis < index.size(); ++axis) {
    s += (axis == 0 ? "" : ", ") + std::to_string(index[axis]);
  }
  return s + "]";
}

/// Throws std::runtime_error "<what>: holds N non-finite values (first: nan at [i, j, ...])..."
/// when `values` (C order, of `shape`) holds a NaN or an infinity: the float oracle would give
/// NaN and every SQNR would be meaningless.
inline void require_finite(const std::vector<float>& values, const std::vector<std::int64_t>& shape,
                           const std::string& what, const std::string& hint = "") {
  std::size_t count = 0, first = 0;
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i]) && count++ == 0) first = i;
  }
  if (count == 0) return;
  const float x = values[first];
  const std::string value = std::isnan(x) ? "nan" : (x > 0 ? "inf" : "-inf");
  throw std::runtime_error(what + ": holds " + std::to_string(count) + " non-finite value" +
                           (count == 1 ? "" : "s") + " (first: " + value + " at " +
                           index_string(shape, static_cast<std::int64_t>(first)) +
                           "); the demo needs finite inputs" + hint);
}

inline npy::NpyArray read_floating(const std::filesystem::path& path) {
  npy::NpyArray a = npy::read_npy(path);
  if (!a.is_floating()) {
    throw std::runtime_error(a.source + ": expected a float array (<f2, <f4 or <f8), got '" +
                             npy::npy_descr(a.dtype) + "'");
  }
  return a;
}

}  // namespace detail

/// Loads q, k, v ([Z, H, N, D], [H, N, D] or [N, D] float arrays; k and v share N, which may
/// differ from q's), an optional dense float bias in nats ([H or 1, Nq, Nkv], or [Nq, Nkv]) and
/// an optional bool / uint8 mask ([windows, Nq, Nkv], or [Nq, Nkv]; Z % windows == 0). Throws
/// std::runtime_error (NpyError for unreadable files) whose message names the file and problem,
/// also for a NaN or an infinity in q, k, v or the bias (an f8 value beyond the float range
/// counts as infinite).
inline FloatWorkload load_npy_workload(const NpyPaths& paths) {
  const npy::NpyArray q = detail::read_floating(paths.q);
  const npy::NpyArray k = detail::read_floating(paths.k);
  const npy::NpyArray v = detail::read_floating(paths.v);
  const auto eq = detail::as_zhnd(q), ek = detail::as_zhnd(k), ev = detail::as_zhnd(v);
  const auto mismatch = [&](const npy::NpyArray& a, const std::string& why) {
    return std::runtime_error(a.source + ": shape " + detail::shape_string(a.shape) + " " + why +
                              " (q " + q.source + ": " + detail::shape_string(q.shape) + ")");
  };
  for (const auto* other : {&k, &v}) {
    const auto& e = other == &k ? ek : ev;
    if (e[0] != eq[0] || e[1] != eq[1] || e[3] != eq[3]) {
      throw mismatch(*other, "does not match q in Z, H or D");
    }
  }
  if (ev[2] != ek[2]) throw mismatch(v, "does not match k's sequence length");
  if (!is_supported_head_dim(eq[3])) {
    throw std::runtime_error(q.source + ": head dim " + std::to_string(eq[3]) +
                             " is not supported (use 32, 64, 80, 96 or 128)");
  }

  FloatWorkload w;
  w.name = "npy";
  w.batch = eq[0];
  w.heads = eq[1];
  w.seq_q = eq[2];
  w.seq_kv = ek[2];
  w.dim = eq[3];
  w.q = q.to_float();
  w.k = k.to_float();
  w.v = v.to_float();
  detail::require_finite(w.q, q.shape, q.source);
  detail::require_finite(w.k, k.shape, k.source);
  detail::require_finite(w.v, v.shape, v.source);

  const auto leading = [&](const npy::NpyArray& a, const char* what) {
    const std::size_t rank = a.shape.size();
    if ((rank != 2 && rank != 3) || a.shape[rank - 2] != w.seq_q || a.shape[rank - 1] != w.seq_kv) {
      throw std::runtime_error(a.source + ": " + what + " shape " + detail::shape_string(a.shape) +
                               " does not fit [*, " + std::to_string(w.seq_q) + ", " +
                               std::to_string(w.seq_kv) + "]");
    }
    return rank == 3 ? a.shape[0] : std::int64_t{1};
  };
  if (!paths.bias.empty()) {
    const npy::NpyArray bias = detail::read_floating(paths.bias);
    w.bias_heads = leading(bias, "bias");
    if (w.bias_heads != 1 && w.bias_heads != w.heads) {
      throw std::runtime_error(bias.source + ": bias has " + std::to_string(w.bias_heads) +
                               " heads; expected 1 or " + std::to_string(w.heads));
    }
    w.bias_nats = bias.to_float();
    detail::require_finite(w.bias_nats, bias.shape, bias.source,
                           " (hide keys with --mask, not with an infinite bias)");
  }
  if (!paths.mask.empty()) {
    const npy::NpyArray mask = npy::read_npy(paths.mask);
    if (mask.dtype != npy::NpyDtype::boolean && mask.dtype != npy::NpyDtype::uint8) {
      throw std::runtime_error(mask.source + ": expected a bool or uint8 mask, got '" +
                               npy::npy_descr(mask.dtype) + "'");
    }
    w.mask_windows = leading(mask, "mask");
    if (w.batch % w.mask_windows != 0) {
      throw std::runtime_error(mask.source + ": " + std::to_string(w.mask_windows) +
                               " mask windows do not divide the batch of " +
                               std::to_string(w.batch));
    }
    w.mask = mask.to_uint8();
  }
  return w;
}

/// Writes the float inputs of `w` as <f4 [Z, H, N, D] files <dir>/<name>_q.npy, _k.npy, _v.npy
/// (and _bias.npy, _mask.npy when present), the format that `--npy` reads.
inline void save_npy_workload(const FloatWorkload& w, const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  const auto save = [&](const char* suffix, const std::vector<float>& values, std::int64_t seq) {
    npy::write_npy(dir / (w.name + suffix),
                   npy::make_npy(std::span<const float>(values), {w.batch, w.heads, seq, w.dim}));
  };
  save("_q.npy", w.q, w.seq_q);
  save("_k.npy", w.k, w.seq_kv);
  save("_v.npy", w.v, w.seq_kv);
  if (!w.bias_nats.empty()) {
    npy::write_npy(dir / (w.name + "_bias.npy"), npy::make_npy(std::span<const float>(w.bias_nats),
                                                               {w.bias_heads, w.seq_q, w.seq_kv}));
  }
  if (!w.mask.empty()) {
    npy::write_npy(
        dir / (w.name + "_mask.npy"),
        npy::make_npy(std::span<const std::uint8_t>(w.mask), {w.mask_windows, w.seq_q, w.seq_kv}));
  }
}

// ---------------------------------------------------------------------------------------------
// Computation
// ---------------------------------------------------------------------------------------------

/// Runs task(0) ... task(count - 1) on up to `threads` threads (at least one). Each task writes
/// only its own results, so the outcome does not depend on the thread count. The first exception
/// (by task index) is rethrown after all threads have joined.
inline void run_parallel(std::size_t count, unsigned threads,
                         const std::function<void(std::size_t)>& task) {
  std::vector<std::exception_ptr> errors(count);
  std::atomic<std::size_t> next{0};
  const auto worker = [&] {
    for (std::size_t i = next++; i < count; i = next++) {
      try {
        task(i);
      } catch (...) {
        errors[i] = std::current_exception();
      }
    }
  };
  const std::size_t extra = std::min<std::size_t>(threads > 0 ? threads - 1 : 0, count);
  std::vector<std::thread> pool;
  pool.reserve(extra);
  for (std::size_t t = 0; t < extra; ++t) pool.emplace_back(worker);
  worker();
  for (std::thread& t : pool) t.join();
  for (const std::exception_ptr& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

namespace detail {

inline void require_ok(Status s, const std::string& what) {
  if (s != Status::ok) throw std::runtime_error(what + ": " + to_string(s));
}

/// The workload's float bias as a FloatBias (kind none when it has none).
inline reference::FloatBias float_bias(const FloatWorkload& w) {
  if (w.bias_nats.empty()) return {};
  return reference::FloatBias{BiasKind::dense, w.bias_nats.data(), w.bias_heads, w.seq_q, w.seq_kv};
}

inline AttentionMask mask_view(const FloatWorkload& w) {
  if (w.mask.empty()) return {};
  return AttentionMask{w.mask.data(), w.mask_windows, w.seq_q, w.seq_kv};
}

/// The float oracle on q, k, v (each [Z, H, N, D] contiguous) with the workload's bias and mask.
inline std::vector<double> oracle(const FloatWorkload& w, const std::vector<float>& q,
                                  const std::vector<float>& k, const std::vector<float>& v,
                                  double softmax_scale) {
  std::vector<double> out(static_cast<std::size_t>(w.batch * w.heads * w.seq_q * w.dim));
  require_ok(reference::attention_float(
                 bhnd<const float>(q.data(), w.batch, w.heads, w.seq_q, w.dim),
                 bhnd<const float>(k.data(), w.batch, w.heads, w.seq_kv, w.dim),
                 bhnd<const float>(v.data(), w.batch, w.heads, w.seq_kv, w.dim), float_bias(w),
                 mask_view(w), softmax_scale, bhnd(out.data(), w.batch, w.heads, w.seq_q, w.dim)),
             w.name + ": float oracle");
  return out;
}

/// Per-tensor int8 codes and scale of one input tensor.
inline std::vector<std::int8_t> quantize_tensor(const std::vector<float>& x, std::int64_t batch,
                                                std::int64_t heads, std::int64_t seq,
                                                std::int64_t dim, float& scale) {
  const auto view = bhnd<const float>(x.data(), batch, heads, seq, dim);
  scale = reference::symmetric_scale(reference::amax(view));
  std::vector<std::int8_t> codes(x.size());
  require_ok(reference::quantize(view, std::span<const float>(&scale, 1),
                                 bhnd(codes.data(), batch, heads, seq, dim)),
             "quantize");
  return codes;
}

inline std::vector<float> dequantize_tensor(const std::vector<std::int8_t>& codes,
                                            std::int64_t batch, std::int64_t heads,
                                            std::int64_t seq, std::int64_t dim, float scale) {
  std::vector<float> x(codes.size());
  require_ok(reference::dequantize(bhnd<const std::int8_t>(codes.data(), batch, heads, seq, dim),
                                   std::span<const float>(&scale, 1),
                                   bhnd(x.data(), batch, heads, seq, dim)),
             "dequantize");
  return x;
}

}  // namespace detail

/// Quantizes a float workload (per-tensor symmetric int8, the bias to Q16 octaves); the oracle
/// and ceiling are filled in by `compute_oracle` and `compute_ceiling`.
inline DemoWorkload quantize_workload(const FloatWorkload& w) {
  DemoWorkload d;
  d.name = w.name;
  d.batch = w.batch;
  d.heads = w.heads;
  d.seq_q = w.seq_q;
  d.seq_kv = w.seq_kv;
  d.dim = w.dim;
  d.softmax_scale = 1.0 / std::sqrt(static_cast<double>(w.dim));
  d.q = detail::quantize_tensor(w.q, w.batch, w.heads, w.seq_q, w.dim, d.q_scale);
  d.k = detail::quantize_tensor(w.k, w.batch, w.heads, w.seq_kv, w.dim, d.k_scale);
  d.v = detail::quantize_tensor(w.v, w.batch, w.heads, w.seq_kv, w.dim, d.v_scale);
  if (!w.bias_nats.empty()) {
    d.bias_q16.resize(w.bias_nats.size());
    detail::require_ok(reference::quantize_bias(w.bias_nats, d.bias_q16), w.name + ": bias");
    d.bias_heads = w.bias_heads;
  }
  d.mask = w.mask;
  d.mask_windows = w.mask_windows;
  return d;
}

/// The float oracle on the float inputs.
inline std::vector<double> compute_oracle(const FloatWorkload& w, const DemoWorkload& d) {
  return detail::oracle(w, w.q, w.k, w.v, d.softmax_scale);
}

/// Exact attention on the dequantized int8 inputs (same bias and mask, in float).
inline std::vector<double> compute_ceiling(const FloatWorkload& w, const DemoWorkload& d) {
  return detail::oracle(
      w, detail::dequantize_tensor(d.q, d.batch, d.heads, d.seq_q, d.dim, d.q_scale),
      detail::dequantize_tensor(d.k, d.batch, d.heads, d.seq_kv, d.dim, d.k_scale),
      detail::dequantize_tensor(d.v, d.batch, d.heads, d.seq_kv, d.dim, d.v_scale),
      d.softmax_scale);
}

/// The calibrated int8 output scale: symmetric_scale(max |oracle|) (per tensor).
inline float calibrated_output_scale(const DemoWorkload& d) {
  double biggest = 0.0;
  for (const double x : d.oracle) biggest = std::max(biggest, std::fabs(x));
  return reference::symmetric_scale(static_cast<float>(biggest));
}

/// One reference case: calibrate Cfg with OutputFor<Cfg, OutT> from the workload's per-tensor
/// scales (`out_scale` > 0: that int8 output scale; else the output type's default), run the
/// integer reference and score it against the oracle.
template <KernelConfig Cfg, class OutT>
DemoCase run_reference_case(const DemoWorkload& d, const std::string& preset,
                            const std::string& output, float out_scale) {
  using Output = OutputFor<Cfg, OutT>;
  const std::string what = d.name + " " + preset + "/" + output;
  TypedCase<Cfg, Output> typed;
  typed.params.resize(1);
  const QuantScales scales{
      std::span<const float>(&d.q_scale, 1), std::span<const float>(&d.k_scale, 1),
      std::span<const float>(&d.v_scale, 1),
      out_scale > 0.0f ? std::span<const float>(&out_scale, 1) : std::span<const float>(),
      d.softmax_scale};
  const Status calibrated = calibrate<Cfg, Output>(
      scales, static_cast<int>(d.dim), std::span<HeadParams<Cfg, Output>>(typed.params));
  if (calibrated == Status::logit_range_exceeded || calibrated == Status::scale_out_of_range) {
    // The preset cannot serve these scales accurately: a row that says so, not a number.
    typed.params.clear();
    return DemoCase{preset,
                    output,
                    0.0,
                    CaseData(std::move(typed)),
                    std::numeric_limits<double>::quiet_NaN(),
                    calibrated};
  }
  detail::require_ok(calibrated, what + ": calibrate");
  typed.reference.resize(static_cast<std::size_t>(d.output_size()));
  detail::require_ok(reference::flash_attention<Cfg, Output>(
                         d.problem(), std::span<const HeadParams<Cfg, Output>>(typed.params),
                         bhnd(typed.reference.data(), d.batch, d.heads, d.seq_q, d.dim)),
                     what + ": reference");

  double output_scale = 1.0;  // f16 values are real values
  if constexpr (!std::is_same_v<OutT, Float16>) {
    output_scale = out_scale > 0.0f
                       ? static_cast<double>(out_scale)
                       : static_cast<double>(d.v_scale) / Output::default_scale_divisor();
  }
  const std::vector<double> real =
      output_to_real(std::span<const OutT>(typed.reference), output_scale);
  const double sqnr = reference::compare(d.oracle, real).sqnr_db;
  return DemoCase{preset, output, output_scale, CaseData(std::move(typed)), sqnr};
}

/// One row of every workload: its name and how to compute its case.
struct ReferenceRow {
  std::string preset, output;
  DemoCase (*run)(const DemoWorkload&);
};

/// The rows of the demo, in table order.
inline std::vector<ReferenceRow> reference_rows() {
  using presets::Fast, presets::FastLong, presets::Paper, presets::Precise, presets::PreciseCubic;
  return {
      {"Paper", "s8",
       [](const DemoWorkload& d) {
         return run_reference_case<Paper, std::int8_t>(d, "Paper", "s8", 0.0f);
       }},
      {"Precise", "s8",
       [](const DemoWorkload& d) {
         return run_reference_case<Precise, std::int8_t>(d, "Precise", "s8", 0.0f);
       }},
      {"Precise", "s8-calibrated",
       [](const DemoWorkload& d) {
         return run_reference_case<Precise, std::int8_t>(d, "Precise", "s8-calibrated",
                                                         calibrated_output_scale(d));
       }},
      {"Precise", "s16",
       [](const DemoWorkload& d) {
         return run_reference_case<Precise, std::int16_t>(d, "Precise", "s16", 0.0f);
       }},
      {"Precise", "s32",
       [](const DemoWorkload& d) {
         return run_reference_case<Precise, std::int32_t>(d, "Precise", "s32", 0.0f);
       }},
      {"Precise", "f16",
       [](const DemoWorkload& d) {
         return run_reference_case<Precise, Float16>(d, "Precise", "f16", 0.0f);
       }},
      {"PreciseCubic", "s8",
       [](const DemoWorkload& d) {
         return run_reference_case<PreciseCubic, std::int8_t>(d, "PreciseCubic", "s8", 0.0f);
       }},
      {"Fast", "s8",
       [](const DemoWorkload& d) {
         return run_reference_case<Fast, std::int8_t>(d, "Fast", "s8", 0.0f);
       }},
      {"Fast", "s16",
       [](const DemoWorkload& d) {
         return run_reference_case<Fast, std::int16_t>(d, "Fast", "s16", 0.0f);
       }},
      {"Fast", "f16",
       [](const DemoWorkload& d) {
         return run_reference_case<Fast, Float16>(d, "Fast", "f16", 0.0f);
       }},
      {"FastLong", "s8",
       [](const DemoWorkload& d) {
         return run_reference_case<FastLong, std::int8_t>(d, "FastLong", "s8", 0.0f);
       }},
  };
}

/// Everything a demo run computed: per workload its quantized form (with oracle and ceiling) and
/// its reference cases, and the rows of the table.
struct DemoResults {
  std::vector<DemoWorkload> workloads;
  std::vector<std::vector<DemoCase>> cases;  ///< [workload][row of reference_rows()]
  std::vector<DemoRow> rows;                 ///< table order: per workload, reference rows first
};

/// Runs every workload: quantization, oracle and ceiling, every reference row (independent
/// tasks on `threads` threads), then each backend in turn, workload by workload. Throws
/// std::runtime_error naming the workload and tensor when q, k, v or the bias holds a NaN or an
/// infinity.
inline DemoResults run_demo(const std::vector<FloatWorkload>& workloads, unsigned threads,
                            const std::vector<DemoBackend>& backends) {
  for (const FloatWorkload& w : workloads) {
    const auto check = [&](const std::vector<float>& values, const char* tensor,
                           const std::vector<std::int64_t>& shape) {
      detail::require_finite(values, shape, "workload " + w.name + ", tensor " + tensor);
    };
    check(w.q, "q", {w.batch, w.heads, w.seq_q, w.dim});
    check(w.k, "k", {w.batch, w.heads, w.seq_kv, w.dim});
    check(w.v, "v", {w.batch, w.heads, w.seq_kv, w.dim});
    check(w.bias_nats, "bias", {w.bias_heads, w.seq_q, w.seq_kv});
  }
  const std::size_t n = workloads.size();
  std::vector<DemoWorkload> prepared(n);
  run_parallel(n, threads, [&](std::size_t i) { prepared[i] = quantize_workload(workloads[i]); });

  std::vector<std::vector<double>> ceilings(n);
  run_parallel(2 * n, threads, [&](std::size_t t) {
    const std::size_t i = t / 2;
    if (t % 2 == 0) {
      prepared[i].oracle = compute_oracle(workloads[i], prepared[i]);
    } else {
      ceilings[i] = compute_ceiling(workloads[i], prepared[i]);
    }
  });
  for (std::size_t i = 0; i < n; ++i) {
    prepared[i].ceiling_db = reference::compare(prepared[i].oracle, ceilings[i]).sqnr_db;
  }

  const std::vector<ReferenceRow> specs = reference_rows();
  std::vector<std::vector<DemoCase>> cases(n, std::vector<DemoCase>(specs.size()));
  // Longest tasks first: workloads in order of decreasing size, so that N4096 starts at once.
  std::vector<std::size_t> order(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    const auto cost = [&](std::size_t i) {
      return prepared[i].batch * prepared[i].heads * prepared[i].seq_q * prepared[i].seq_kv;
    };
    return cost(a) > cost(b);
  });
  run_parallel(n * specs.size(), threads, [&](std::size_t t) {
    const std::size_t i = order[t / specs.size()], r = t % specs.size();
    cases[i][r] = specs[r].run(prepared[i]);
  });

  std::vector<DemoRow> rows;
  for (std::size_t i = 0; i < n; ++i) {
    for (const DemoCase& c : cases[i]) {
      rows.push_back(DemoRow{prepared[i].name, c.preset, c.output, "reference", c.reference_sqnr_db,
                             prepared[i].ceiling_db, std::nullopt, std::nullopt, c.status});
    }
    for (const DemoBackend& backend : backends) {
      const std::vector<DemoRow> extra = backend.run(prepared[i], cases[i]);
      rows.insert(rows.end(), extra.begin(), extra.end());
    }
  }
  return DemoResults{std::move(prepared), std::move(cases), std::move(rows)};
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

namespace detail {

/// A JSON string literal.
inline std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buffer[8];
      std::snprintf(buffer, sizeof buffer, "\\u%04x", static_cast<unsigned>(c));
      out += buffer;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

/// A JSON number with `digits` decimals; null for NaN and infinities (JSON has neither).
inline std::string json_number(double x, int digits) {
  if (!std::isfinite(x)) return "null";
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << x;
  return s.str();
}

inline std::string table_number(double x, int digits) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << x;
  return s.str();
}

}  // namespace detail

/// The rows as a JSON array, one object per row: workload, preset, output, backend, sqnr_db and
/// ceiling_db (dB, 4 decimals; null when infinite), plus bit_exact and time_us where present.
inline void write_json(std::ostream& os, const std::vector<DemoRow>& rows) {
  os << "[\n";
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const DemoRow& r = rows[i];
    os << "  {\"workload\": " << detail::json_string(r.workload)
       << ", \"preset\": " << detail::json_string(r.preset)
       << ", \"output\": " << detail::json_string(r.output)
       << ", \"backend\": " << detail::json_string(r.backend)
       << ", \"sqnr_db\": " << detail::json_number(r.sqnr_db, 4)
       << ", \"ceiling_db\": " << detail::json_number(r.ceiling_db, 4);
    if (r.status != Status::ok)
      os << ", \"rejected\": " << detail::json_string(to_string(r.status));
    if (r.bit_exact) os << ", \"bit_exact\": " << (*r.bit_exact ? "true" : "false");
    if (r.time_us) os << ", \"time_us\": " << detail::json_number(*r.time_us, 3);
    os << "}" << (i + 1 < rows.size() ? "," : "") << "\n";
  }
  os << "]\n";
}

/// The rows as an aligned text table; the bit_exact and time_us columns appear when any row has
/// them.
inline void write_table(std::ostream& os, const std::vector<DemoRow>& rows) {
  bool with_backend_columns = false;
  for (const DemoRow& r : rows)
    with_backend_columns |= r.bit_exact.has_value() || r.time_us.has_value();
  std::vector<std::vector<std::string>> cells;
  std::vector<std::string> header = {"workload", "preset",  "output",
                                     "backend",  "sqnr_db", "ceiling_db"};
  if (with_backend_columns) {
    header.push_back("bit_exact");
    header.push_back("time_us");
  }
  cells.push_back(header);
  for (const DemoRow& r : rows) {
    std::vector<std::string> line = {r.workload,
                                     r.preset,
                                     r.output,
                                     r.backend,
                                     r.status != Status::ok
                                         ? "rejected: " + std::string(to_string(r.status))
                                         : detail::table_number(r.sqnr_db, 2),
                                     detail::table_number(r.ceiling_db, 2)};
    if (with_backend_columns) {
      line.push_back(r.bit_exact ? (*r.bit_exact ? "yes" : "NO") : "-");
      line.push_back(r.time_us ? detail::table_number(*r.time_us, 1) : "-");
    }
    cells.push_back(line);
  }
  std::vector<std::size_t> width(header.size(), 0);
  for (const auto& line : cells) {
    for (std::size_t c = 0; c < line.size(); ++c) width[c] = std::max(width[c], line[c].size());
  }
  for (std::size_t l = 0; l < cells.size(); ++l) {
    for (std::size_t c = 0; c < cells[l].size(); ++c) {
      const bool numeric = c >= 4;  // numbers right-aligned, names left-aligned
      os << (c == 0 ? "" : "  ") << (numeric ? std::right : std::left)
         << std::setw(static_cast<int>(width[c])) << cells[l][c];
    }
    os << "\n";
    if (l == 0) {
      std::size_t total = 0;
      for (const std::size_t w : width) total += w + 2;
      os << std::string(total - 2, '-') << "\n";
    }
  }
}

}  // namespace qflash::demo
