// SPDX-License-Identifier: Apache-2.0
// qflash_demo: how close integer-only attention gets to float attention.
//
// For each workload (the QFlash paper's A1-A7, a 4096-token sequence, "flat" attention, or your
// own tensors from .npy files) it prints the SQNR against a float64 oracle of every preset and
// output type of the bit-exact integer reference, next to the ceiling: exact attention on the
// same int8 inputs. Run `qflash_demo --help` for the options.
#include <chrono>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "demo_backend.hpp"
#include "demo_runner.hpp"

namespace {

using namespace qflash::demo;

constexpr const char* kUsage = R"(usage: qflash_demo [options]

Integer-only attention (the qflash reference) against float64 attention, by SQNR in dB.

  --workloads A,B,...   run only these workloads (default: all of
                        A1 A2 A3 A4 A5 A6 A7 N4096 flat)
  --seed N              seed of the generated inputs (default 199)
  --npy Q K V           use these float arrays ([Z,H,N,D], [H,N,D] or [N,D]) as workload "npy"
  --bias FILE           with --npy: dense float bias in nats, [H or 1, Nq, Nkv]
  --mask FILE           with --npy: bool/uint8 mask [windows, Nq, Nkv], nonzero = visible
  --save-npy DIR        also write each generated workload's q, k, v to DIR/<name>_{q,k,v}.npy
  --threads N           worker threads (default: the number of cores)
  --json                print a JSON array of rows (and nothing else) on stdout
  -h, --help            this text

Inputs: q, k, v ~ U[-4,4] ("flat": q, k ~ U[-1,1]) from mt19937(seed), rounded through fp16;
per-tensor symmetric int8 (scale = amax / 127). ceiling_db: exact attention on the dequantized
int8 inputs. Exit status: 0 on success, 1 on an error, 2 on a usage error.
)";

struct Options {
  std::uint32_t seed = kDefaultSeed;
  std::vector<std::string> workloads;
  std::optional<NpyPaths> npy;
  std::filesystem::path bias, mask, save_dir;
  unsigned threads = 0;
  bool json = false;
};

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::vector<std::string> split_commas(const std::string& list) {
  std::vector<std::string> items;
  std::size_t start = 0;
  while (start <= list.size()) {
    const std::size_t end = std::min(list.find(',', start), list.size());
    if (end > start) items.push_back(list.substr(start, end - start));
    start = end + 1;
  }
  return items;
}

unsigned long parse_unsigned(const std::string& text, const std::string& option) {
  std::size_t used = 0;
  unsigned long value = 0;
  try {
    value = std::stoul(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size() || text[0] == '-') {
    throw UsageError(option + " needs a non-negative integer, got '" + text + "'");
  }
  return value;
}

Options parse_options(int argc, char** argv) {
  Options o;
  const auto value = [&](int& i, const std::string& option) -> std::string {
    if (i + 1 >= argc) throw UsageError(option + " needs a value");
    return argv[++i];
  };
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::cout << kUsage;
      std::exit(0);
    } else if (arg == "--json") {
      o.json = true;
    } else if (arg == "--seed") {
      const unsigned long seed = parse_unsigned(value(i, arg), arg);
      if (seed > 0xffffffffUL) throw UsageError("--seed must fit 32 bits");
      o.seed = static_cast<std::uint32_t>(seed);
    } else if (arg == "--threads") {
      o.threads = static_cast<unsigned>(parse_unsigned(value(i, arg), arg));
    } else if (arg == "--workloads") {
      o.workloads = split_commas(value(i, arg));
    } else if (arg == "--npy") {
      NpyPaths paths;
      paths.q = value(i, arg);
      paths.k = value(i, arg);
      paths.v = value(i, arg);
      o.npy = paths;
    } else if (arg == "--bias") {
      o.bias = value(i, arg);
    } else if (arg == "--mask") {
      o.mask = value(i, arg);
    } else if (arg == "--save-npy") {
      o.save_dir = value(i, arg);
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

std::vector<FloatWorkload> select_workloads(const Options& o) {
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

// ---- Backend registry ------------------------------------------------------------------------
// Every backend besides the reference. A backend adds rows with "bit_exact" and "time_us"
// (see demo_backend.hpp for the interface and how a CUDA build defines QFLASH_DEMO_WITH_CUDA).
std::vector<DemoBackend> registered_backends() {
  std::vector<DemoBackend> backends;
#if defined(QFLASH_DEMO_WITH_CUDA)
  backends.push_back(make_cuda_demo_backend());
#endif
  return backends;
}
// ---- end of backend registry -----------------------------------------------------------------

}  // namespace

int main(int argc, char** argv) {
  Options options;
  try {
    options = parse_options(argc, argv);
  } catch (const UsageError& e) {
    std::cerr << "qflash_demo: " << e.what() << "\n(run qflash_demo --help for the options)\n";
    return 2;
  }
  try {
    const auto start = std::chrono::steady_clock::now();
    const unsigned threads =
        options.threads > 0 ? options.threads : std::max(1u, std::thread::hardware_concurrency());
    const std::vector<FloatWorkload> workloads = select_workloads(options);
    if (!options.save_dir.empty()) {
      for (const FloatWorkload& w : workloads) save_npy_workload(w, options.save_dir);
    }
    const std::vector<DemoRow> rows = run_demo(workloads, threads, registered_backends()).rows;
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    if (options.json) {
      write_json(std::cout, rows);
    } else {
      if (options.npy) {
        std::cout << "qflash demo: inputs from " << options.npy->q.string() << ", "
                  << options.npy->k.string() << ", " << options.npy->v.string() << "\n";
      } else {
        std::cout << "qflash demo: seed " << options.seed
                  << "; q, k, v ~ U[-4,4] (flat: q, k ~ U[-1,1]) rounded through fp16\n";
      }
      std::cout << "per-tensor int8 Q/K/V; SQNR in dB against float64 attention; ceiling = exact "
                   "attention on the int8 inputs\n\n";
      write_table(std::cout, rows);
    }
    std::cout.flush();
    std::cerr << "qflash_demo: " << rows.size() << " rows in " << std::fixed << std::setprecision(2)
              << seconds << " s on " << threads << " thread" << (threads == 1 ? "" : "s") << "\n";
  } catch (const UsageError& e) {
    std::cerr << "qflash_demo: " << e.what() << "\n(run qflash_demo --help for the options)\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "qflash_demo: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
