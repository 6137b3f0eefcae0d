// SPDX-License-Identifier: Apache-2.0
// GPU output == host reference, bit for bit: the paper's workloads, edge sets, Swin-shaped bias
// and masks, and seeded random configurations. Every mismatch report names the seed, the count
// and the first and last differing indices.
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <iterator>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "qflash_instances.hpp"
#include "support/catch.hpp"

namespace {

using qflash::BiasKind;
using qflash::Status;
using qflash::instances::OutputType;
using qflash::instances::Preset;
using qflash::reference::EquivalenceCase;
using qflash::reference::InputPattern;
using qflash::reference::Layout;

constexpr Preset kPresets[] = {Preset::paper, Preset::precise, Preset::precise_cubic, Preset::fast,
                               Preset::fast_long};
constexpr OutputType kOutputs[] = {OutputType::s8, OutputType::s16, OutputType::s32,
                                   OutputType::f16};

using qflash::instances::kPaperWorkloads;
using qflash::instances::Workload;

struct Job {
  Preset preset;
  OutputType output;
  EquivalenceCase c;
  std::string label;
};

/// True for a job that `calibrate` rejected with a named range status: the preset cannot serve
/// those scales accurately (docs/numerics.md), which is the correct answer, not a failure.
bool rejected_by_calibrate(const qflash::reference::EquivalenceReport& r) {
  return std::string_view(r.failed_step) == "calibrate" &&
         (r.status == Status::logit_range_exceeded || r.status == Status::scale_out_of_range);
}

/// Runs every job (host reference + GPU kernel) on a pool of threads -- the host reference
/// dominates the time -- then checks each report on this thread (Catch2 is single-threaded).
/// Returns the number of failing jobs; `rejected` (nullable) counts jobs rejected by calibrate.
int run_jobs(const std::vector<Job>& jobs, int* rejected = nullptr) {
  std::vector<qflash::reference::EquivalenceReport> reports(jobs.size());
  std::atomic<std::size_t> next{0};
  // QFLASH_TEST_THREADS=1 under compute-sanitizer's racecheck, which tracks one launch at a time.
  const char* env = std::getenv("QFLASH_TEST_THREADS");
  const unsigned workers = env != nullptr
                               ? static_cast<unsigned>(std::max(1, std::atoi(env)))
                               : std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (unsigned w = 0; w < workers; ++w) {
    pool.emplace_back([&] {
      for (std::size_t i = next++; i < jobs.size(); i = next++) {
        reports[i] = qflash::instances::ops(jobs[i].preset, jobs[i].output).check(jobs[i].c);
      }
    });
  }
  for (auto& t : pool) t.join();
  int failures = 0;
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    const Job& j = jobs[i];
    const auto& report = reports[i];
    INFO(j.label << " preset " << qflash::instances::name(j.preset) << " output "
                 << qflash::instances::name(j.output) << ": " << report.describe());
    if (rejected_by_calibrate(report)) {
      if (rejected != nullptr) ++*rejected;
      continue;
    }
    CHECK(report.status == Status::ok);
    CHECK(report.mismatches == 0);
    CHECK(report.elements == j.c.batch * j.c.heads * j.c.seq_q * j.c.head_dim);
    failures += report.passed() ? 0 : 1;
  }
  return failures;
}

/// Count of random configurations, overridable (e.g. smaller under compute-sanitizer).
int random_case_count() {
  const char* env = std::getenv("QFLASH_RANDOM_CASES");
  return env != nullptr ? std::atoi(env) : 1200;
}

}  // namespace

TEST_CASE("gpu == reference: A1-A7 at batch 1 and 8, every preset and output", "[gpu][paper]") {
  std::vector<Job> jobs;
  for (const Workload& w : kPaperWorkloads) {
    for (const std::int64_t batch : {1, 8}) {
      for (const Preset p : kPresets) {
        for (const OutputType o : kOutputs) {
          EquivalenceCase c;
          c.batch = w.z * batch;
          c.heads = w.h;
          c.seq_q = c.seq_kv = w.n;
          c.head_dim = w.d;
          c.seed = 199 + static_cast<std::uint64_t>(batch);
          jobs.push_back({p, o, c, std::string(w.name) + " b" + std::to_string(batch)});
        }
      }
    }
  }
  CHECK(run_jobs(jobs) == 0);
}

TEST_CASE("gpu == reference: edge sets", "[gpu][edge]") {
  struct Edge {
    std::string name;
    EquivalenceCase c;
  };
  std::vector<Edge> edges;
  const auto add = [&edges](std::string name, auto&& tweak) {
    EquivalenceCase c;
    c.heads = 2;
    c.seq_q = c.seq_kv = 197;
    tweak(c);
    edges.push_back({std::move(name), c});
  };
  add("all 127", [](EquivalenceCase& c) {
    c.pattern = InputPattern::all_max;
    c.head_dim = 128;
  });
  add("all -128", [](EquivalenceCase& c) {
    c.pattern = InputPattern::all_min;
    c.head_dim = 128;
  });
  add("dominant logit", [](EquivalenceCase& c) { c.pattern = InputPattern::dominant_logit; });
  add("flat attention", [](EquivalenceCase& c) { c.pattern = InputPattern::small_range; });
  add("fully masked rows", [](EquivalenceCase& c) {
    c.mask_windows = 1;
    c.masked_rows = true;
  });
  add("N = 1", [](EquivalenceCase& c) { c.seq_q = c.seq_kv = 1; });
  add("N = 33", [](EquivalenceCase& c) { c.seq_q = c.seq_kv = 33; });
  add("N = 129 (no block multiple)", [](EquivalenceCase& c) { c.seq_q = c.seq_kv = 129; });
  add("Nq 65, Nkv 300", [](EquivalenceCase& c) {
    c.seq_q = 65;
    c.seq_kv = 300;
  });
  add("D = 128", [](EquivalenceCase& c) { c.head_dim = 128; });
  add("D = 80", [](EquivalenceCase& c) { c.head_dim = 80; });
  add("D = 96", [](EquivalenceCase& c) { c.head_dim = 96; });
  // The in-place kernel's CTA width above D = 64: 4 warps when Nq <= 64, 8 otherwise.
  add("D = 96, Nq 64 (in-place: one CTA of 4 warps)", [](EquivalenceCase& c) {
    c.head_dim = 96;
    c.seq_q = 64;
    c.seq_kv = 100;
  });
  add("D = 128, Nq 65, Nkv 300 (in-place: 8 warps, 3 idle)", [](EquivalenceCase& c) {
    c.head_dim = 128;
    c.seq_q = 65;
    c.seq_kv = 300;
  });
  add("D = 80, Nq 300 (in-place: 8-warp CTAs, ragged last)", [](EquivalenceCase& c) {
    c.head_dim = 80;
    c.seq_q = 300;
    c.seq_kv = 150;
  });
  // The in-place kernel's ragged last step runs after its loop on its live n8 tiles (one
  // variant per count of live tiles, 1 to 8): last-step key counts of 1, 9, ..., 57 open each
  // count with one key in its last tile; 8, 16, 40 and 63 fill a tile (or nearly: 63).
  for (const int head_dim : {32, 64, 128}) {
    for (const int last : {1, 8, 9, 16, 17, 25, 33, 40, 41, 49, 57, 63}) {
      add("D = " + std::to_string(head_dim) + ", Nkv 64 + " + std::to_string(last) +
              " (ragged last step)",
          [head_dim, last](EquivalenceCase& c) {
            c.head_dim = head_dim;
            c.seq_q = 70;
            c.seq_kv = 64 + last;
          });
    }
  }
  // A single ragged step (no loop), the Swin window shape: 49 keys, 7 live tiles.
  add("D = 32, N = 49 (one ragged step)", [](EquivalenceCase& c) {
    c.head_dim = 32;
    c.seq_q = c.seq_kv = 49;
  });
  add("BNHD layout", [](EquivalenceCase& c) { c.layout = Layout::bnhd; });
  add("padded rows", [](EquivalenceCase& c) {
    c.layout = Layout::padded;
    c.head_dim = 80;
  });
  add("per-head params", [](EquivalenceCase& c) {
    c.heads = 5;
    c.per_head_params = true;
  });
  add("device params", [](EquivalenceCase& c) {
    c.heads = 3;
    c.per_head_params = true;
    c.device_params = true;
  });
  add("calibrated output scale", [](EquivalenceCase& c) { c.out_scale_factor = 0.3; });
  add("odd output stride (unpaired stores)", [](EquivalenceCase& c) {
    c.odd_output_stride = true;
    c.seq_q = c.seq_kv = 49;
    c.head_dim = 32;
  });
  add("1/sm_scale = 30", [](EquivalenceCase& c) { c.inv_sm_scale = 30; });
  add("1/sm_scale = 101 (paper wraps P)", [](EquivalenceCase& c) { c.inv_sm_scale = 101; });
  add("1/sm_scale = 162 (paper gives P = -1)", [](EquivalenceCase& c) { c.inv_sm_scale = 162; });
  add("1/sm_scale = 1e6", [](EquivalenceCase& c) { c.inv_sm_scale = 1e6; });
  add("long sequence 4096", [](EquivalenceCase& c) {
    c.heads = 1;
    c.seq_q = 64;
    c.seq_kv = 4096;
  });
  std::vector<Job> jobs;
  for (const Edge& e : edges) {
    for (const Preset p : kPresets) {
      for (const OutputType o : kOutputs) jobs.push_back({p, o, e.c, e.name});
    }
  }
  CHECK(run_jobs(jobs) == 0);
}

TEST_CASE("gpu == reference: Swin-sized D = 32 launches on both in-place instances",
          "[gpu][large]") {
  // launch.cuh: a launch of at least 8 waves of 4 CTAs per SM (one CTA per head at N = 49)
  // runs the 6-CTA instance (kInPlaceLargeLaunchMinBlocksPerSm), smaller ones the default. The
  // large case has twice that many CTAs, the small one under half as many.
  int device = 0, sms = 0;
  REQUIRE(cudaGetDevice(&device) == cudaSuccess);
  REQUIRE(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) == cudaSuccess);
  std::vector<Job> jobs;
  for (const std::int64_t ctas : {std::int64_t{64} * sms, std::int64_t{15} * sms}) {
    EquivalenceCase c;
    c.heads = 4;
    c.batch = ctas / c.heads;
    c.seq_q = c.seq_kv = 49;
    c.head_dim = 32;
    c.seed = 11;
    for (const Preset p : {Preset::fast, Preset::fast_long}) {
      for (const OutputType o : kOutputs) {
        jobs.push_back({p, o, c, std::to_string(c.batch * c.heads) + " CTAs"});
      }
    }
  }
  CHECK(run_jobs(jobs) == 0);
}

namespace {

/// Jobs of one preset on 2 heads x 70 query rows (two CTAs of 4 warps at D <= 64, the second
/// with 6 rows) for every head dim and key count, s8 and f16 outputs; seed `seed_base + keys`.
std::vector<Job> head_dim_key_sweep(Preset preset, std::initializer_list<std::int64_t> head_dims,
                                    std::initializer_list<std::int64_t> key_counts,
                                    std::uint64_t seed_base) {
  std::vector<Job> jobs;
  for (const std::int64_t d : head_dims) {
    for (const std::int64_t keys : key_counts) {
      EquivalenceCase c;
      c.heads = 2;
      c.seq_q = 70;
      c.seq_kv = keys;
      c.head_dim = d;
      c.seed = seed_base + static_cast<std::uint64_t>(keys);
      for (const OutputType o : {OutputType::s8, OutputType::f16}) {
        jobs.push_back({preset, o, c, "D " + std::to_string(d) + ", Nkv " + std::to_string(keys)});
      }
    }
  }
  return jobs;
}

}  // namespace

TEST_CASE("gpu == reference: FastLong's two score chunks per step at every head dim",
          "[gpu][fast_long]") {
  // FastLong's step is 128 keys: the in-place kernel holds S 64 keys at a time and computes the
  // second chunk twice (maxima, then softmax). Key counts on both sides of each chunk and step
  // boundary, including steps whose second chunk holds no key.
  CHECK(run_jobs(head_dim_key_sweep(Preset::fast_long, {32, 64, 80, 96, 128},
                                    {1, 8, 63, 64, 65, 127, 128, 129, 191, 192, 200, 257, 577},
                                    300)) == 0);
}

TEST_CASE("gpu == reference: Fast's two V^T buffers (P V deferred a step) at D = 64",
          "[gpu][deferred_pv]") {
  // At D = 64 Fast runs a step's P V at the top of the next step, from V^T buffers that
  // alternate between steps (the second in the Q tile's bytes): odd and even step counts, a
  // ragged last step, a query tile whose last warps hold no row, and D = 32 / 128 beside it
  // (two barriers per step there).
  CHECK(run_jobs(head_dim_key_sweep(Preset::fast, {32, 64, 128},
                                    {1, 63, 64, 65, 128, 129, 192, 255, 320, 577, 1024}, 700)) ==
        0);
}

TEST_CASE("gpu == reference: Swin bias tables and shifted-window masks", "[gpu][swin]") {
  std::vector<Job> jobs;
  for (const Preset p : kPresets) {
    for (const OutputType o : kOutputs) {
      EquivalenceCase c;
      c.batch = 2 * 4;  // 2 images x 4 windows
      c.heads = 3;
      c.seq_q = c.seq_kv = 49;
      c.head_dim = 32;
      c.bias = BiasKind::relative_table;
      c.mask_windows = 4;
      c.seed = 7;
      jobs.push_back({p, o, c, "swin table + mask"});
      c.bias = BiasKind::dense;
      c.bias_shared_by_heads = true;
      jobs.push_back({p, o, c, "dense shared bias + mask"});
    }
  }
  CHECK(run_jobs(jobs) == 0);
}

TEST_CASE("gpu == reference: both sides of the paired pass (Nkv 32 to 65)", "[gpu][paired]") {
  // Precise and PreciseCubic compute Nkv in (32, 64] with the paired pass at D = 32 and 64 and
  // the loop otherwise; Paper always loops. Nq = 100 with Nkv = 49: two query tiles.
  std::vector<Job> jobs;
  std::uint64_t seed = 500;
  for (const Preset p : kPresets) {
    for (const std::int64_t d : {32, 64, 80}) {
      for (const std::int64_t nkv : {32, 33, 49, 64, 65}) {
        for (const bool extras : {false, true}) {
          EquivalenceCase c;
          c.batch = 2;
          c.heads = 3;
          c.seq_kv = nkv;
          c.seq_q = nkv == 49 ? 100 : nkv;
          c.head_dim = d;
          if (extras) {
            c.bias = BiasKind::relative_table;
            c.mask_windows = 2;
            c.masked_rows = true;
          }
          c.layout = nkv == 33 ? Layout::bnhd : Layout::bhnd;
          c.seed = seed++;
          const OutputType o = kOutputs[seed % 4];
          jobs.push_back({p, o, c, "Nkv " + std::to_string(nkv) + (extras ? " bias+mask" : "")});
        }
      }
    }
  }
  CHECK(run_jobs(jobs) == 0);
}

TEST_CASE("gpu == reference: seeded random configurations", "[gpu][random]") {
  const int count = random_case_count();
  std::mt19937_64 rng(20261127);
  const auto pick = [&rng](std::int64_t lo, std::int64_t hi) {
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
  };
  constexpr std::int64_t kDims[] = {32, 64, 80, 96, 128};
  std::vector<Job> jobs;
  for (int i = 0; i < count; ++i) {
    EquivalenceCase c;
    c.seed = 1000 + static_cast<std::uint64_t>(i);
    c.heads = pick(1, 4);
    c.seq_q = pick(1, 260);
    c.seq_kv = pick(0, 3) == 0 ? c.seq_q : pick(1, 300);
    c.head_dim = kDims[pick(0, 4)];
    c.layout = static_cast<Layout>(pick(0, 2));
    c.pattern = pick(0, 9) == 0 ? InputPattern::small_range : InputPattern::uniform;
    c.bias = static_cast<BiasKind>(pick(0, 2));
    c.bias_shared_by_heads = pick(0, 1) == 1;
    c.mask_windows = pick(0, 2) == 0 ? pick(1, 3) : 0;
    c.batch = c.mask_windows > 0 ? c.mask_windows * pick(1, 2) : pick(1, 3);
    c.masked_rows = pick(0, 1) == 1;
    c.per_head_params = pick(0, 1) == 1;
    c.device_params = pick(0, 3) == 0;
    // 1/sm_scale log-uniform in [30, 1e6]: the regime where the released kernel breaks.
    c.inv_sm_scale =
        std::exp(std::uniform_real_distribution<double>(std::log(30.0), std::log(1e6))(rng));
    if (pick(0, 4) == 0)
      c.out_scale_factor = std::uniform_real_distribution<double>(0.05, 2.0)(rng);
    const auto p = kPresets[pick(0, static_cast<std::int64_t>(std::size(kPresets)) - 1)];
    const auto o = kOutputs[pick(0, 3)];
    c.odd_output_stride = pick(0, 7) == 0;
    jobs.push_back({p, o, c, "random case " + std::to_string(i)});
  }
  INFO(count << " random configurations");
  int rejected = 0;
  CHECK(run_jobs(jobs, &rejected) == 0);
  std::printf("random configurations: %d run, %d rejected by calibrate (range statuses)\n",
              count - rejected, rejected);
  CHECK(rejected < count / 2);  // most configurations must reach the kernel
}
