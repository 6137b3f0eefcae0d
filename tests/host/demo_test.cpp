// SPDX-License-Identifier: Apache-2.0
// The demo's machinery (examples/demo_runner.hpp) in process: input generation, masks and biases
// reaching both oracles and the integer reference, .npy inputs, thread-count independence, the
// backend hook, the JSON / table writers and the command line (examples/demo_cli.hpp). The demo
// binary itself is checked by the CTest test demo.accuracy_floors (examples/demo_check.cmake).
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <limits>
#include <sstream>
#include <string>
#include <variant>
#include <vector>

#include "demo_cli.hpp"
#include "demo_runner.hpp"
#include "support/catch.hpp"

namespace {

using namespace qflash;
using namespace qflash::demo;
namespace fs = std::filesystem;

FloatWorkload small_workload(std::int64_t batch, std::int64_t heads, std::int64_t seq,
                             std::uint32_t seed) {
  return generate_workload(WorkloadSpec{"small", batch, heads, seq, 32, 4.0f}, seed);
}

/// The reference output of row `index` of reference_rows() (0 Paper/s8, 1 Precise/s8, ...).
template <class T>
std::vector<T> reference_output(const DemoResults& r, std::size_t row) {
  std::vector<T> out;
  std::visit(
      [&](const auto& typed) {
        using V = typename std::decay_t<decltype(typed)>::value_type;
        if constexpr (std::is_same_v<V, T>) out = typed.reference;
      },
      r.cases[0][row].data);
  REQUIRE(!out.empty());
  return out;
}

/// The same file for q, k and v; no bias, no mask.
NpyPaths qkv_from(const fs::path& file) {
  NpyPaths paths;
  paths.q = paths.k = paths.v = file;
  return paths;
}

class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = fs::temp_directory_path() /
            ("qflash_demo_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

/// parse_options on `args`.
DemoOptions parse(std::initializer_list<std::string> args) { return parse_options(args); }

/// What one run_cli call printed and returned.
struct CliRun {
  int status;
  std::string out, err;
};

CliRun run(std::initializer_list<std::string> args) {
  std::ostringstream out, err;
  const int status = run_cli(args, out, err, {});
  return {status, out.str(), err.str()};
}

}  // namespace

TEST_CASE("demo: generated inputs are seeded, in range and fp16 values", "[demo]") {
  const WorkloadSpec spec{"x", 1, 2, 50, 32, 4.0f};
  const FloatWorkload a = generate_workload(spec, 199), b = generate_workload(spec, 199);
  const FloatWorkload c = generate_workload(spec, 200);
  CHECK(a.q == b.q);
  CHECK(a.v == b.v);
  CHECK(a.q != c.q);
  CHECK(a.q != a.k);
  float biggest = 0.0f;
  for (const auto* t : {&a.q, &a.k, &a.v}) {
    REQUIRE(t->size() == 2u * 50u * 32u);
    for (const float x : *t) {
      REQUIRE(x >= -4.0f);
      REQUIRE(x <= 4.0f);
      REQUIRE(reference::round_through_half(x) == x);
      biggest = std::max(biggest, std::fabs(x));
    }
  }
  CHECK(biggest > 3.9f);
  const FloatWorkload flat = generate_workload(WorkloadSpec{"f", 1, 1, 64, 32, 1.0f}, 1);
  for (const float x : flat.q) REQUIRE(std::fabs(x) <= 1.0f);
}

TEST_CASE("demo: a diagonal mask makes every query see only its own key", "[demo][mask]") {
  FloatWorkload w = small_workload(2, 2, 40, 5);
  w.mask.assign(40 * 40, 0);
  for (std::size_t i = 0; i < 40; ++i) w.mask[i * 40 + i] = 1;
  w.mask_windows = 1;
  const DemoResults r = run_demo({w}, 2, {});
  const DemoWorkload& d = r.workloads[0];
  // Float oracle: softmax over one key is exactly 1.
  for (std::size_t i = 0; i < w.v.size(); ++i) REQUIRE(d.oracle[i] == static_cast<double>(w.v[i]));
  // Integer reference: the int8 output at V's scale is V's own codes (Paper and Precise).
  CHECK(reference_output<std::int8_t>(r, 0) == d.v);
  CHECK(reference_output<std::int8_t>(r, 1) == d.v);
  // Without the mask the result differs (the mask was really applied).
  const DemoResults unmasked = run_demo({small_workload(2, 2, 40, 5)}, 2, {});
  CHECK(reference_output<std::int8_t>(unmasked, 1) != d.v);
}

TEST_CASE("demo: a bias in nats steers the oracle and the integer reference alike",
          "[demo][bias]") {
  FloatWorkload w = small_workload(1, 2, 33, 6);
  // Key 7 gets +0, every other key -40 nats: attention picks key 7 (exp(-40) ~ 4e-18).
  w.bias_nats.assign(33 * 33, -40.0f);
  for (std::size_t i = 0; i < 33; ++i) w.bias_nats[i * 33 + 7] = 0.0f;
  w.bias_heads = 1;
  // Nearly equal scores (a tiny q; an all-zero q would get a default scale large enough that
  // Precise rejects it by name): only the bias decides.
  w.q.assign(w.q.size(), 1e-3f);
  const DemoResults r = run_demo({w}, 1, {});
  const DemoWorkload& d = r.workloads[0];
  CHECK(d.bias_q16[0] == reference::quantize_bias(-40.0f));
  const auto precise = reference_output<std::int8_t>(r, 1);
  for (std::int64_t h = 0; h < 2; ++h) {
    for (std::int64_t i = 0; i < 33; ++i) {
      for (std::int64_t c = 0; c < 32; ++c) {
        const auto out = static_cast<std::size_t>(((h * 33) + i) * 32 + c);
        const auto key7 = static_cast<std::size_t>(((h * 33) + 7) * 32 + c);
        REQUIRE(d.oracle[out] == Approx(static_cast<double>(w.v[key7])).margin(1e-12));
        REQUIRE(precise[out] == d.v[key7]);
      }
    }
  }

  // An all-zero bias changes nothing.
  FloatWorkload zero_bias = small_workload(1, 2, 33, 6);
  const DemoResults plain = run_demo({zero_bias}, 1, {});
  zero_bias.bias_nats.assign(2 * 33 * 33, 0.0f);
  zero_bias.bias_heads = 2;
  const DemoResults with_zero = run_demo({zero_bias}, 1, {});
  for (std::size_t row = 0; row < plain.rows.size(); ++row) {
    CHECK(plain.rows[row].sqnr_db == with_zero.rows[row].sqnr_db);
  }
}

TEST_CASE("demo: results do not depend on the number of threads", "[demo]") {
  const std::vector<FloatWorkload> w = {small_workload(1, 3, 49, 7), small_workload(2, 1, 70, 8)};
  const DemoResults one = run_demo(w, 1, {}), three = run_demo(w, 3, {});
  REQUIRE(one.rows.size() == 2 * reference_rows().size());
  REQUIRE(one.rows.size() == three.rows.size());
  for (std::size_t i = 0; i < one.rows.size(); ++i) {
    CHECK(one.rows[i].workload == three.rows[i].workload);
    CHECK(one.rows[i].output == three.rows[i].output);
    CHECK(one.rows[i].sqnr_db == three.rows[i].sqnr_db);
    CHECK(one.rows[i].ceiling_db == three.rows[i].ceiling_db);
  }
  // Sanity of the numbers themselves: every integer row is below its ceiling plus a margin and
  // far above noise; wider outputs are at least as good as s8.
  for (const DemoRow& row : one.rows) {
    CHECK(row.sqnr_db > 25.0);
    CHECK(row.sqnr_db < row.ceiling_db + 0.5);
  }
  CHECK(one.rows[3].sqnr_db >= one.rows[1].sqnr_db);  // Precise s16 vs s8
}

TEST_CASE("demo: .npy inputs with bias and mask round-trip through files", "[demo][npy]") {
  const TempDir dir;
  FloatWorkload w = small_workload(2, 2, 17, 9);
  w.name = "rt";
  w.bias_nats.resize(2 * 17 * 17);
  for (std::size_t i = 0; i < w.bias_nats.size(); ++i) {
    w.bias_nats[i] = 0.125f * static_cast<float>(i % 11);
  }
  w.bias_heads = 2;
  w.mask.resize(2 * 17 * 17);
  for (std::size_t i = 0; i < w.mask.size(); ++i) w.mask[i] = i % 5 != 0 ? 1 : 0;
  w.mask_windows = 2;
  save_npy_workload(w, dir.path());

  NpyPaths paths{dir.path() / "rt_q.npy", dir.path() / "rt_k.npy", dir.path() / "rt_v.npy",
                 dir.path() / "rt_bias.npy", dir.path() / "rt_mask.npy"};
  const FloatWorkload back = load_npy_workload(paths);
  CHECK(back.name == "npy");
  CHECK(back.batch == 2);
  CHECK(back.heads == 2);
  CHECK(back.seq_q == 17);
  CHECK(back.seq_kv == 17);
  CHECK(back.dim == 32);
  CHECK(back.q == w.q);
  CHECK(back.k == w.k);
  CHECK(back.v == w.v);
  CHECK(back.bias_nats == w.bias_nats);
  CHECK(back.bias_heads == 2);
  CHECK(back.mask == w.mask);
  CHECK(back.mask_windows == 2);
  CHECK(run_demo({back}, 2, {}).rows[1].sqnr_db == run_demo({w}, 2, {}).rows[1].sqnr_db);

  // [N, D] inputs are Z = H = 1.
  const std::vector<float> nd(17 * 64, 0.5f);
  npy::write_npy(dir.path() / "nd.npy", npy::make_npy(std::span<const float>(nd), {17, 64}));
  const FloatWorkload two_d = load_npy_workload(qkv_from(dir.path() / "nd.npy"));
  CHECK(two_d.batch == 1);
  CHECK(two_d.heads == 1);
  CHECK(two_d.dim == 64);

  // Shape errors name the offending file.
  paths.k = dir.path() / "nd.npy";
  QFLASH_CHECK_THROWS_CONTAINING(load_npy_workload(paths), "nd.npy", "does not match q");
  paths.k = dir.path() / "rt_k.npy";
  paths.bias = dir.path() / "rt_mask.npy";
  QFLASH_CHECK_THROWS_CONTAINING(load_npy_workload(paths), "rt_mask.npy", "expected a float array");
  paths.bias.clear();
  const std::vector<std::uint8_t> three_windows(3 * 17 * 17, 1);
  npy::write_npy(dir.path() / "m3.npy",
                 npy::make_npy(std::span<const std::uint8_t>(three_windows), {3, 17, 17}));
  paths.mask = dir.path() / "m3.npy";
  QFLASH_CHECK_THROWS_CONTAINING(load_npy_workload(paths), "m3.npy", "do not divide the batch");
  const std::vector<float> odd_dim(17 * 48, 0.0f);
  npy::write_npy(dir.path() / "d48.npy", npy::make_npy(std::span<const float>(odd_dim), {17, 48}));
  QFLASH_CHECK_THROWS_CONTAINING(load_npy_workload(qkv_from(dir.path() / "d48.npy")),
                                 "head dim 48");
}

TEST_CASE("demo: a backend adds rows with bit_exact and time_us", "[demo][backend]") {
  int calls = 0;
  // A stand-in backend that "recomputes" each case by copying the reference output.
  const DemoBackend echo{"echo", [&](const DemoWorkload& w, std::span<const DemoCase> cases) {
                           ++calls;
                           std::vector<DemoRow> rows;
                           for (const DemoCase& c : cases) {
                             std::visit(
                                 [&](const auto& typed) {
                                   using T = typename std::decay_t<decltype(typed)>::value_type;
                                   const std::vector<T> mine = typed.reference;
                                   DemoRow row = make_row(w, c, "echo", std::span<const T>(mine));
                                   row.bit_exact = true;
                                   row.time_us = 12.5;
                                   rows.push_back(row);
                                 },
                                 c.data);
                           }
                           return rows;
                         }};
  const DemoResults r = run_demo({small_workload(1, 2, 49, 10)}, 2, {echo});
  CHECK(calls == 1);
  const std::size_t n = reference_rows().size();
  REQUIRE(r.rows.size() == 2 * n);
  for (std::size_t i = 0; i < n; ++i) {
    CHECK(r.rows[n + i].backend == "echo");
    CHECK(r.rows[n + i].sqnr_db == r.rows[i].sqnr_db);  // same output, same SQNR
    CHECK(r.rows[n + i].output == r.rows[i].output);
  }

  std::ostringstream json, table;
  write_json(json, r.rows);
  write_table(table, r.rows);
  CHECK(json.str().find("\"backend\": \"echo\"") != std::string::npos);
  CHECK(json.str().find("\"bit_exact\": true, \"time_us\": 12.500}") != std::string::npos);
  CHECK(json.str().find("\"backend\": \"reference\", \"sqnr_db\": ") != std::string::npos);
  CHECK(table.str().find("bit_exact") != std::string::npos);
  CHECK(table.str().find("12.5") != std::string::npos);
}

TEST_CASE("demo: JSON escapes strings and writes null for infinite SQNR", "[demo][json]") {
  DemoRow row{"we\"ird\\name\n",
              "P",
              "s8",
              "reference",
              std::numeric_limits<double>::infinity(),
              37.25,
              std::nullopt,
              std::nullopt};
  std::ostringstream json;
  write_json(json, {row});
  CHECK(json.str() ==
        "[\n  {\"workload\": \"we\\\"ird\\\\name\\u000a\", \"preset\": \"P\", \"output\": \"s8\", "
        "\"backend\": \"reference\", \"sqnr_db\": null, \"ceiling_db\": 37.2500}\n]\n");
  std::ostringstream empty;
  write_json(empty, {});
  CHECK(empty.str() == "[\n]\n");
}

TEST_CASE("demo: non-finite inputs are reported by file name and fail the run", "[demo][npy]") {
  const TempDir dir;
  FloatWorkload w = small_workload(1, 1, 17, 11);
  w.name = "nf";
  save_npy_workload(w, dir.path());
  const fs::path q = dir.path() / "nf_q.npy", k = dir.path() / "nf_k.npy";
  const fs::path v = dir.path() / "nf_v.npy";
  const auto write_floats = [&](const std::string& name, std::vector<float> values,
                                std::vector<std::int64_t> shape) {
    npy::write_npy(dir.path() / name,
                   npy::make_npy(std::span<const float>(values), std::move(shape)));
    return dir.path() / name;
  };
  std::vector<float> bad = w.q;
  bad[3 * 32 + 5] = std::numeric_limits<float>::quiet_NaN();
  bad[4 * 32] = std::numeric_limits<float>::quiet_NaN();
  const fs::path q_nan = write_floats("q_nan.npy", bad, {17, 32});
  bad = w.k;
  bad[7] = std::numeric_limits<float>::infinity();
  const fs::path k_inf = write_floats("k_inf.npy", bad, {1, 1, 17, 32});
  std::vector<float> bias(17 * 17, 0.0f);
  bias[17 + 2] = -std::numeric_limits<float>::infinity();
  const fs::path bias_inf = write_floats("bias_inf.npy", bias, {17, 17});

  NpyPaths paths{q_nan, k, v, {}, {}};
  QFLASH_CHECK_THROWS_CONTAINING(load_npy_workload(paths), q_nan.string(),
                                 "holds 2 non-finite values (first: nan at [3, 5])");
  paths.q = q;
  paths.k = k_inf;
  QFLASH_CHECK_THROWS_CONTAINING(load_npy_workload(paths), k_inf.string(),
                                 "holds 1 non-finite value (first: inf at [0, 0, 0, 7])");
  paths.k = k;
  paths.bias = bias_inf;
  QFLASH_CHECK_THROWS_CONTAINING(load_npy_workload(paths), bias_inf.string(), "-inf at [1, 2]",
                                 "--mask");

  // The command line: exit status 1, the file named on stderr, nothing on stdout.
  const CliRun cli = run({"--npy", q_nan.string(), k.string(), v.string(), "--json"});
  CHECK(cli.status == 1);
  CHECK(cli.err.find(q_nan.string() + ": holds 2 non-finite values") != std::string::npos);
  CHECK(cli.out.empty());

  // A workload built in memory is checked too, by workload and tensor.
  w.v[0] = -std::numeric_limits<float>::infinity();
  QFLASH_CHECK_THROWS_CONTAINING(run_demo({w}, 1, {}), "workload nf, tensor v",
                                 "-inf at [0, 0, 0, 0]");
}

TEST_CASE("demo: options are parsed strictly, with messages that name the option",
          "[demo][options]") {
  for (const std::string bad :
       {" -1", "-1", "+3", "3x", "", "0", "4294967296", "99999999999999999999999", "0x10"}) {
    INFO("--threads '" << bad << "'");
    QFLASH_CHECK_THROWS_AS_CONTAINING(
        (parse({"--threads", bad})), UsageError,
        "--threads needs an integer from 1 to 4294967295, got '" + bad + "'");
  }
  CHECK(parse({"--threads", "3"}).threads == 3u);
  CHECK(parse({"--threads", "4294967295"}).threads == 4294967295u);
  QFLASH_CHECK_THROWS_AS_CONTAINING((parse({"--seed", "4294967296"})), UsageError,
                                    "--seed needs an integer from 0 to 4294967295");
  QFLASH_CHECK_THROWS_AS_CONTAINING((parse({"--seed", "-0"})), UsageError, "--seed");
  CHECK(parse({"--seed", "0"}).seed == 0u);
  CHECK(parse({"--seed", "4294967295"}).seed == 4294967295u);

  QFLASH_CHECK_THROWS_AS_CONTAINING((parse({"--workloads", ""})), UsageError,
                                    "--workloads needs at least one workload name");
  for (const std::string bad : {",A2", "A2,,A7", "A2,"}) {
    INFO("--workloads '" << bad << "'");
    QFLASH_CHECK_THROWS_AS_CONTAINING((parse({"--workloads", bad})), UsageError,
                                      "--workloads: empty workload name in '" + bad + "'");
  }
  QFLASH_CHECK_THROWS_AS_CONTAINING((parse({"--workloads", "A2,A7,A2"})), UsageError,
                                    "'A2' is listed twice");
  CHECK(parse({"--workloads", "A2,A7"}).workloads == std::vector<std::string>{"A2", "A7"});

  QFLASH_CHECK_THROWS_AS_CONTAINING((parse({"--npy", "a"})), UsageError,
                                    "--npy needs three files (Q K V), got 1");
  QFLASH_CHECK_THROWS_AS_CONTAINING((parse({"--npy", "a", "b"})), UsageError,
                                    "--npy needs three files (Q K V), got 2");
  QFLASH_CHECK_THROWS_AS_CONTAINING((parse({"--npy", "a", "b", "--json"})), UsageError,
                                    "--npy needs three files (Q K V), got 2");
  const DemoOptions npy = parse({"--npy", "a", "b", "c", "--bias", "d", "--json"});
  REQUIRE(npy.npy.has_value());
  CHECK(npy.npy->v == fs::path("c"));
  CHECK(npy.npy->bias == fs::path("d"));
  CHECK(npy.json);
  QFLASH_CHECK_THROWS_AS_CONTAINING((parse({"--save-npy", "--json"})), UsageError,
                                    "--save-npy needs a value");
  QFLASH_CHECK_THROWS_AS_CONTAINING((parse({"--mask"})), UsageError, "--mask needs a value");

  // The command line: usage errors exit with 2 and print nothing on stdout.
  const CliRun bad = run({"--threads", " -1", "--workloads", "A7"});
  CHECK(bad.status == 2);
  CHECK(bad.err.find("--threads needs an integer") != std::string::npos);
  CHECK(bad.out.empty());
  const CliRun help = run({"--help"});
  CHECK(help.status == 0);
  CHECK(help.out.find("usage: qflash_demo") != std::string::npos);
  const CliRun good = run({"--workloads", "A7", "--threads", "2", "--json"});
  CHECK(good.status == 0);
  CHECK(good.out.find("{\"workload\": \"A7\", \"preset\": \"Paper\"") != std::string::npos);
}
