// SPDX-License-Identifier: Apache-2.0
/// @file
/// The demo's command line, kept apart from main() so that tests can drive it: the usage text,
/// strict option parsing, and one run that writes to the streams it is given and returns the
/// exit status.
#pragma once

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <iomanip>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "demo_backend.hpp"
#include "demo_runner.hpp"

namespace qflash::demo {

inline constexpr const char* kUsage = R"(usage: qflash_demo [options]

Integer-only attention (the qflash reference) against float64 attention, by SQNR in dB.

  --workloads A,B,...   run only these workloads (default: all of
                        A1 A2 A3 A4 A5 A6 A7 N4096 flat)
  --seed N              seed of the generated inputs (default 199)
  --npy Q K V           use these float arrays ([Z,H,N,D], [H,N,D] or [N,D]) as workload "npy"
  --bias FILE           with --npy: dense float bias in nats, [H or 1, Nq, Nkv]
  --mask FILE           with --npy: bool/uint8 mask [windows, Nq, Nkv], nonzero = visible
  --save-npy DIR        also write each generated workload's q, k, v to DIR/<name>_{q,k,v}.npy
  --threads N           worker threads, N >= 1 (default: the number of cores)
  --json                print a JSON array of rows (and nothing else) on stdout
  -h, --help            this text

Workloads (Z x H x N x D; A1-A7 are the QFlash paper's benchmark shapes):
  A1 1x3x197x64   A2 1x6x197x64   A3 1x12x197x64   (ViT-Ti/S/B: 196 patches + class token)
  A4 64x3x49x32   A5 16x6x49x32   A6 4x12x49x32   A7 1x24x49x32   (Swin 7x7 windows)
  N4096 1x1x4096x64 (a long sequence)   flat 1x6x197x64 with q, k ~ U[-1,1] (flat attention)

Rows: preset / output type.
  Paper         the published QFlash numerics with their defects fixed (the baseline)
  Precise       log2-domain logits, quadratic exp2, 8-bit P per KV tile (the one to deploy)
  PreciseCubic  Precise with a cubic exp2
  Fast          Q32 log2 logits, P against a per-row frame per 64 keys (the in-place kernel)
  FastLong      Fast with one frame per 128 keys (fewer frame moves on long rows)
  s8, s16, s32  integer output at V's scale (s8), V/2^8 (s16), V/2^16 (s32); f16 = binary16
  s8-calibrated s8 at an output scale fitted to the result (amax / 127)
  "rejected: ..." the preset cannot serve these scales accurately (a named status)

Inputs: q, k, v ~ U[-4,4] ("flat": q, k ~ U[-1,1]) from mt19937(seed), rounded through fp16;
per-tensor symmetric int8 (scale = amax / 127). ceiling_db: exact attention on the dequantized
int8 inputs. Inputs from .npy files must be finite. Exit status: 0 on success, 1 on an error,
2 on a usage error.
)";

/// The options of one run.
struct DemoOptions {
  std::uint32_t seed = kDefaultSeed;
  std::vector<std::string> workloads;  ///< empty: all built-in workloads
  std::optional<NpyPaths> npy;
  std::filesystem::path bias, mask, save_dir;
  unsigned threads = 0;  ///< 0: the number of cores
  bool json = false;
  bool help = false;
};

/// A bad command line; what() names the option and the problem.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// The decimal integer `text` (digits only: no sign, space or other character) in [min, max].
/// Throws UsageError naming `option` otherwise.
inline std::uint64_t parse_integer(const std::string& text, const std::string& option,
                                   std::uint64_t min, std::uint64_t max) {
  const std::string range = "an integer from " + std::to_string(min) + " to " + std::to_string(max);
  const bool digits_only = !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
    return c >= '0' && c <= '9';
  });
  if (!digits_only) throw UsageError(option + " needs " + range + ", got '" + text + "'");
  std::uint64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || value < min || value > max) {
    throw UsageError(option + " needs " + range + ", got '" + text + "'");
  }
  return value;
}

/// The workload names of a comma-separated `list`; throws UsageError for an empty list, an empty
/// name (",A2", "A2,,A7", "A2,") or a name given twice.
inline std::vector<std::string> parse_workload_list(const std::string& list) {
  if (list.empty()) throw UsageError("--workloads needs at least one workload name, got ''");
  std::vector<std::string> names;
  std::size_t start = 0;
  while (true) {
    const std::size_t end = std::min(list.find(',', start), list.size());
    const std::string name = list.substr(start, end - start);
    if (name.empty()) throw UsageError("--workloads: empty workload name in '" + list + "'");
    if (std::find(names.begin(), names.end(), name) != names.end()) {
      throw UsageError("--workloads: '" + name + "' is listed twice");
    }
    names.push_back(name);
    if (end == list.size()) return names;
    start = end + 1;
  }
}

/// Parses the arguments (without the program name). Throws UsageError for an unknown option, a
/// missing or malformed value, or options that do not go together.
inline DemoOptions parse_options(const std::vector<std::string>& args) {
  DemoOptions o;
  std::size_t i = 0;
  // The argument after option args[i]; an argument that starts with "--" is the next option.
  const auto has_value = [&] { return i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0; };
  const auto value = [&](const std::string& option) -> std::string {
    if (!has_value()) throw UsageError(option + " needs a value");
    return args[++i];
  };
  for (; i < args.size(); ++i) {
    const std::string arg = args[i];
    if (arg == "-h" || arg == "--help") {
      o.help = true;
    } else if (arg == "--json") {
      o.json = true;
    } else if (arg == "--seed") {
      o.seed = static_cast<std::uint32_t>(parse_integer(value(arg), arg, 0, 0xffffffffu));
    } else if (arg == "--threads") {
      o.threads = static_cast<unsigned>(parse_integer(value(arg), arg, 1, 0xffffffffu));
    } else if (arg == "--workloads") {
      o.workloads = parse_workload_list(value(arg));
    } else if (arg == "--npy") {
      std::vector<std::string> files;
      while (files.size() < 3 && has_value()) files.push_back(args[++i]);
      if (files.size() < 3) {
        throw UsageError("--npy needs three files (Q K V), got " + std::to_string(files.size()));
      }
      NpyPaths paths;
      paths.q = files[0];
      paths.k = files[1];
      paths.v = files[2];
      o.npy = paths;
    } else if (arg == "--bias") {
      o.bias = value(arg);
    } else if (arg == "--mask") {
      o.mask = value(arg);
    } else if (arg == "--save-npy") {
      o.save_dir = value(arg);
    } else {
      throw UsageError("unknown option '" + arg + "'");
    }
  }
  if (o.npy) {
    if (!o.workloads.empty()) throw UsageError("--npy and --workloads exclude each other");
    o.npy->bias = o.bias;
    o.npy->mask = o.mask;
  } else if (!o.bias.empty() || !o.mask.empty()) {
    throw UsageError("--bias and --mask need --npy");
  }
  return o;
}

/// The float inputs the options ask for: the --npy files, or the named (default: all) built-in
/// workloads. Throws UsageError for an unknown workload name.
inline std::vector<FloatWorkload> select_workloads(const DemoOptions& o) {
  if (o.npy) return {load_npy_workload(*o.npy)};
  const std::vector<WorkloadSpec> all = builtin_workloads();
  std::vector<FloatWorkload> selected;
  if (o.workloads.empty()) {
    for (const WorkloadSpec& spec : all) selected.push_back(generate_workload(spec, o.seed));
    return selected;
  }
  for (const std::string& name : o.workloads) {
    const auto it =
        std::find_if(all.begin(), all.end(), [&](const WorkloadSpec& s) { return s.name == name; });
    if (it == all.end()) {
      std::string known;
      for (const WorkloadSpec& s : all) known += " " + s.name;
      throw UsageError("unknown workload '" + name + "' (known:" + known + ")");
    }
    selected.push_back(generate_workload(*it, o.seed));
  }
  return selected;
}

/// One run of the demo on `args` (without the program name): the table or JSON on `out`, the
/// timing line and errors on `err`, `backends` besides the reference. Returns the exit status:
/// 0 on success, 1 on an error (nothing is then written on `out`), 2 on a usage error.
inline int run_cli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err,
                   const std::vector<DemoBackend>& backends) {
  const auto usage_error = [&](const UsageError& e) {
    err << "qflash_demo: " << e.what() << "\n(run qflash_demo --help for the options)\n";
    return 2;
  };
  DemoOptions options;
  try {
    options = parse_options(args);
  } catch (const UsageError& e) {
    return usage_error(e);
  }
  if (options.help) {
    out << kUsage;
    return 0;
  }
  try {
    const auto start = std::chrono::steady_clock::now();
    const unsigned threads =
        options.threads > 0 ? options.threads : std::max(1u, std::thread::hardware_concurrency());
    const std::vector<FloatWorkload> workloads = select_workloads(options);
    if (!options.save_dir.empty()) {
      for (const FloatWorkload& w : workloads) save_npy_workload(w, options.save_dir);
    }
    const std::vector<DemoRow> rows = run_demo(workloads, threads, backends).rows;
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    if (options.json) {
      write_json(out, rows);
    } else {
      if (options.npy) {
        out << "qflash demo: inputs from " << options.npy->q.string() << ", "
            << options.npy->k.string() << ", " << options.npy->v.string() << "\n";
      } else {
        out << "qflash demo: seed " << options.seed
            << "; q, k, v ~ U[-4,4] (flat: q, k ~ U[-1,1]) rounded through fp16\n";
      }
      out << "per-tensor int8 Q/K/V; SQNR in dB against float64 attention; ceiling = exact "
             "attention on the int8 inputs\n"
             "workloads: A1-A3 ViT shapes (N 197), A4-A7 Swin windows (N 49), N4096 one long "
             "sequence, flat q, k ~ U[-1,1]; presets and outputs: qflash_demo --help\n\n";
      write_table(out, rows);
    }
    out.flush();
    err << "qflash_demo: " << rows.size() << " rows in " << std::fixed << std::setprecision(2)
        << seconds << " s on " << threads << " thread" << (threads == 1 ? "" : "s") << "\n";
  } catch (const UsageError& e) {
    return usage_error(e);
  } catch (const std::exception& e) {
    err << "qflash_demo: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace qflash::demo
