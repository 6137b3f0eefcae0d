// SPDX-License-Identifier: Apache-2.0
// qflash_kernel_timer: the kernel alone on the paper's workloads A1-A7, timed with CUDA events
// around each launch and L2 evicted before each call (a 256 MiB cudaMemsetAsync outside the timed
// interval), median of the timed calls; every output is compared with the host reference.
// This is the harness behind the tuning tables of docs/benchmarks.md. The Python benchmark
// (bench/benchmark.py) is the one that compares against other kernels in the same process.
//
// Usage: qflash_kernel_timer [--preset paper|precise|precise_cubic|all] [--workload A1..A7|all]
//                            [--batch N|all] [--repeats N]
// Defaults: precise, all workloads, batches 1 and 8, 50 timed calls after 10 warm-up calls.
// Exit status: 0, 1 on a mismatch or an error, 2 on bad arguments, 77 without a CUDA device.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "qflash/attention/problem.hpp"
#include "qflash/core/status.hpp"
#include "qflash/policy/calibrate.hpp"
#include "qflash_instances.hpp"

namespace {

using namespace qflash;

using instances::Workload;

struct Options {
  std::vector<instances::Preset> presets{instances::Preset::precise};
  std::string workload = "all";
  std::vector<std::int64_t> batches{1, 8};
  int repeats = 50;
};

bool parse(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) return false;
    const std::string value = argv[++i];
    if (arg == "--preset") {
      if (value == "all") {
        o.presets = {instances::Preset::paper, instances::Preset::precise,
                     instances::Preset::precise_cubic};
      } else if (value == "paper") {
        o.presets = {instances::Preset::paper};
      } else if (value == "precise") {
        o.presets = {instances::Preset::precise};
      } else if (value == "precise_cubic") {
        o.presets = {instances::Preset::precise_cubic};
      } else {
        return false;
      }
    } else if (arg == "--workload") {
      o.workload = value;
    } else if (arg == "--batch") {
      if (value == "all") continue;
      const long b = std::strtol(value.c_str(), nullptr, 10);
      if (b < 1 || b > 4096) return false;
      o.batches = {b};
    } else if (arg == "--repeats") {
      o.repeats = static_cast<int>(std::strtol(value.c_str(), nullptr, 10));
      if (o.repeats < 1 || o.repeats > 100000) return false;
    } else {
      return false;
    }
  }
  return true;
}

/// Times one (preset, workload, batch) and compares with the reference; false on any failure.
bool run_one(instances::Preset preset, const Workload& w, std::int64_t batch, int repeats) {
  const std::int64_t z = w.z * batch, h = w.h, n = w.n, d = w.d;
  const auto elements = static_cast<std::size_t>(z * h * n * d);
  std::vector<std::int8_t> q(elements), k(elements), v(elements);
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> code(-127, 127);
  for (auto* t : {&q, &k, &v}) {
    for (auto& x : *t) x = static_cast<std::int8_t>(code(rng));
  }
  const float scale = 4.0f / 127.0f;  // inputs in [-4, 4]
  const instances::Ops& ops = instances::ops(preset, instances::OutputType::s8);
  std::vector<unsigned char> params(ops.params_size);
  Status s = ops.calibrate(QuantScales{{&scale, 1}, {&scale, 1}, {&scale, 1}}, static_cast<int>(d),
                           params.data(), 1);
  const AttentionProblem problem{bhnd<const std::int8_t>(q.data(), z, h, n, d),
                                 bhnd<const std::int8_t>(k.data(), z, h, n, d),
                                 bhnd<const std::int8_t>(v.data(), z, h, n, d)};
  const std::int64_t strides[4] = {h * n * d, n * d, d, 1};
  std::vector<std::int8_t> expected(elements), got(elements);
  if (s == Status::ok) s = ops.reference(problem, params.data(), 1, expected.data(), strides);
  double median_us = 0;
  constexpr int kWarmup = 10;
  constexpr std::size_t kFlushBytes = std::size_t{256} << 20;
  if (s == Status::ok) {
    s = instances::time_on_device(preset, instances::OutputType::s8, problem, params.data(), 1,
                                  got.data(), kWarmup, repeats, &median_us, kFlushBytes);
  }
  if (s != Status::ok) {
    std::printf("%-14s %s b%lld: %s\n", instances::name(preset), w.name,
                static_cast<long long>(batch), to_string(s));
    return false;
  }
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < elements; ++i) mismatches += got[i] != expected[i] ? 1u : 0u;
  std::printf("%-14s %s b%-4lld %8.1f us   mismatches %zu\n", instances::name(preset), w.name,
              static_cast<long long>(batch), median_us, mismatches);
  return mismatches == 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (!parse(argc, argv, options)) {
    std::fprintf(stderr,
                 "usage: qflash_kernel_timer [--preset paper|precise|precise_cubic|all] "
                 "[--workload A1..A7|all] [--batch N|all] [--repeats N]\n");
    return 2;
  }
  const instances::GpuInfo gpu = instances::gpu_info();
  if (!gpu.available) {
    std::puts("qflash_kernel_timer: no CUDA device, nothing to time");
    return 77;
  }
  std::printf(
      "# %s (sm_%d%d); kernel only, int8 in, s8 out; L2 evicted before each call; "
      "median of %d calls after 10 warm-up calls\n",
      gpu.name.c_str(), gpu.major, gpu.minor, options.repeats);
  bool ok = true, any = false;
  for (const std::int64_t batch : options.batches) {
    for (const instances::Preset preset : options.presets) {
      for (const Workload& w : instances::kPaperWorkloads) {
        if (options.workload != "all" && options.workload != w.name) continue;
        any = true;
        ok = run_one(preset, w, batch, options.repeats) && ok;
      }
    }
  }
  if (!any) {
    std::fprintf(stderr, "qflash_kernel_timer: no workload named %s\n", options.workload.c_str());
    return 2;
  }
  return ok ? 0 : 1;
}
