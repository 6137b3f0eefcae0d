// SPDX-License-Identifier: Apache-2.0
// The device launcher rejects every invalid argument with a named Status before launching, and
// writes nothing: the poisoned output must come back unchanged.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "device/gpu_buffer.hpp"
#include "qflash/core/float16.hpp"
#include "qflash/qflash.hpp"
#include "qflash_instances.hpp"
#include "support/catch.hpp"

namespace {

using namespace qflash;
using instances::OutputType;
using instances::Preset;
using test::GpuBuffer;

constexpr std::int64_t kZ = 2, kH = 2, kN = 64, kD = 64;
constexpr std::int64_t kTwoTo62 = std::int64_t{1} << 62;
/// Bytes past a contiguous Q, K or V: the views edited below (a shifted pointer, token stride
/// kD + 8) stay inside their buffer, so that they never reach `out` (output_overlaps_input).
constexpr std::int64_t kSlack = 1024;

struct Fixture {
  GpuBuffer<std::int8_t> q{kZ * kH * kN * kD + kSlack}, k{kZ * kH * kN * kD + kSlack},
      v{kZ * kH * kN * kD + kSlack}, out{kZ * kH * kN * kD};
  GpuBuffer<std::int32_t> bias{kH * kN * kN}, index{kN * kN};
  GpuBuffer<std::uint8_t> mask{kN * kN};
  const instances::Ops& ops = instances::ops(Preset::precise, OutputType::s8);
  std::vector<unsigned char> params;

  Fixture() {
    for (auto* b : {&q, &k, &v}) b->fill_bytes(3);
    bias.fill_bytes(0);
    index.fill_bytes(0);
    mask.fill_bytes(1);
    params.resize(ops.params_size * kH);
    const float scale = 0.03f;
    REQUIRE(ops.calibrate(QuantScales{{&scale, 1}, {&scale, 1}, {&scale, 1}}, kD, params.data(),
                          1) == Status::ok);
  }
  AttentionProblem problem() const {
    return AttentionProblem{bhnd<const std::int8_t>(q.get(), kZ, kH, kN, kD),
                            bhnd<const std::int8_t>(k.get(), kZ, kH, kN, kD),
                            bhnd<const std::int8_t>(v.get(), kZ, kH, kN, kD)};
  }
  /// Launches with `p` and output strides of a contiguous BHND tensor; returns the status and
  /// whether the output kept its poison.
  Status launch(const AttentionProblem& p, std::int64_t count, bool* untouched,
                void* out_ptr = nullptr) {
    out.fill_bytes(0x7b);
    const std::int64_t strides[4] = {kH * kN * kD, kN * kD, kD, 1};
    const Status s = ops.launch(p, params.data(), count, out_ptr != nullptr ? out_ptr : out.get(),
                                strides, nullptr);
    const auto bytes = out.download();
    *untouched = true;
    for (const auto b : bytes) *untouched = *untouched && b == 0x7b;
    return s;
  }
};

}  // namespace

TEST_CASE("device launcher: every invalid argument has a named status and writes nothing",
          "[gpu][errors]") {
  Fixture f;
  bool untouched = false;
  REQUIRE(f.launch(f.problem(), 1, &untouched) == Status::ok);
  CHECK_FALSE(untouched);  // the valid call does write

  struct Bad {
    const char* what;
    Status expected;
    std::function<void(AttentionProblem&)> edit;
    std::int64_t count = 1;
    bool null_out = false;
  };
  const AttentionBias relative{
      BiasKind::relative_table, f.bias.get(), kH, kN, kN, f.index.get(), kN, kN, 1};
  const std::vector<Bad> cases = {
      {"null Q", Status::null_pointer, [](AttentionProblem& p) { p.q.data = nullptr; }},
      {"null V", Status::null_pointer, [](AttentionProblem& p) { p.v.data = nullptr; }},
      {"null output", Status::null_pointer, [](AttentionProblem&) {}, 1, true},
      {"null bias values", Status::null_pointer,
       [](AttentionProblem& p) {
         p.bias = AttentionBias{BiasKind::dense, nullptr, kH, kN, kN};
       }},
      {"N = 0", Status::empty_problem, [](AttentionProblem& p) { p.q.seq = 0; }},
      {"head dim 48", Status::unsupported_head_dim,
       [](AttentionProblem& p) { p.q.dim = p.k.dim = p.v.dim = 48; }},
      {"K and V lengths differ", Status::shape_mismatch, [](AttentionProblem& p) { p.v.seq = 32; }},
      {"heads differ", Status::shape_mismatch, [](AttentionProblem& p) { p.k.heads = 1; }},
      {"negative stride", Status::invalid_stride,
       [](AttentionProblem& p) { p.q.stride_seq = -kD; }},
      {"unit stride missing along D", Status::unsupported_stride,
       [](AttentionProblem& p) {
         p.k.stride_dim = 2;
         p.k.dim = 32;
         p.q.dim = p.v.dim = 32;
       }},
      {"token stride not a multiple of 16", Status::unsupported_stride,
       [](AttentionProblem& p) { p.v.stride_seq = kD + 8; }},
      {"misaligned pointer", Status::misaligned_pointer,
       [](AttentionProblem& p) { p.q.data = p.q.data + 16 + 8; }},
      {"bias rows", Status::bias_shape_mismatch, [](AttentionProblem& p) { p.bias.rows = kN - 1; }},
      {"mask windows do not divide Z", Status::mask_shape_mismatch,
       [](AttentionProblem& p) { p.mask.windows = 3; }},
      {"sequence beyond the int32 accumulator bound", Status::sequence_too_long,
       [](AttentionProblem& p) {
         p.bias = AttentionBias{};
         p.mask = AttentionMask{};
         p.k.seq = p.v.seq = 1 << 20;  // a view only: validation fails before any read
       }},
      {"three parameter sets for two heads", Status::param_count_mismatch, [](AttentionProblem&) {},
       3},
      // Views past the address space (issue item 4): validate rejects them before the launcher
      // looks at alignment or strides, and before the kernel could form a wrapped address.
      {"Q batch stride 2^62 (Z = 2)", Status::invalid_stride,
       [](AttentionProblem& p) { p.q.stride_batch = kTwoTo62; }},
      {"K strides sum past int64", Status::invalid_stride,
       [](AttentionProblem& p) { p.k.stride_batch = p.k.stride_head = kTwoTo62; }},
      {"V span past 2^48 bytes", Status::invalid_stride,
       [](AttentionProblem& p) { p.v.stride_head = std::int64_t{1} << 48; }},
      {"relative table head stride 2^62", Status::bias_shape_mismatch,
       [&](AttentionProblem& p) {
         p.bias = relative;
         p.bias.stride_head = kTwoTo62;
       }},
      {"relative table span past 2^48 bytes", Status::bias_shape_mismatch,
       [&](AttentionProblem& p) {
         p.bias = relative;
         p.bias.stride_entry = std::int64_t{1} << 44;  // 63 * 2^44 int32 entries
       }},
  };
  for (const Bad& bad : cases) {
    AttentionProblem p = f.problem();
    p.bias = AttentionBias{BiasKind::dense, f.bias.get(), kH, kN, kN};
    p.mask = AttentionMask{f.mask.get(), 1, kN, kN};
    bad.edit(p);
    INFO(bad.what);
    if (bad.null_out) {
      // ops.launch builds the output view from the pointer: pass null through a custom path.
      std::vector<unsigned char> params = f.params;
      const std::int64_t strides[4] = {kH * kN * kD, kN * kD, kD, 1};
      CHECK(f.ops.launch(p, params.data(), bad.count, nullptr, strides, nullptr) == bad.expected);
      continue;
    }
    CHECK(f.launch(p, bad.count, &untouched) == bad.expected);
    CHECK(untouched);
  }
}

// Issue item 5: an output over an input is rejected before the launch, and the input keeps its
// bytes; an output right before or after K in one allocation is served bit-exactly.
TEST_CASE("device launcher: an output that overlaps an input is rejected", "[gpu][errors]") {
  Fixture f;
  const std::int64_t out_bytes = kZ * kH * kN * kD;
  const std::int64_t strides[4] = {kH * kN * kD, kN * kD, kD, 1};
  // Inputs of at least out_bytes, so that a launch that wrongly runs stays in bounds.
  GpuBuffer<std::int32_t> index(static_cast<std::size_t>(out_bytes / 4));
  GpuBuffer<std::uint8_t> mask(static_cast<std::size_t>(out_bytes));
  index.fill_bytes(0);
  mask.fill_bytes(1);
  const AttentionProblem plain = f.problem();
  const auto expect_rejected = [&](const char* what, const AttentionProblem& p, void* input,
                                   const auto& input_buffer) {
    INFO(what);
    const auto before = input_buffer.download();
    CHECK(f.ops.launch(p, f.params.data(), 1, input, strides, nullptr) ==
          Status::output_overlaps_input);
    CHECK(input_buffer.download() == before);
  };
  expect_rejected("out over Q", plain, f.q.get(), f.q);
  expect_rejected("out over K", plain, f.k.get(), f.k);
  expect_rejected("out over V", plain, f.v.get(), f.v);
  AttentionProblem with_bias = plain;
  with_bias.bias = AttentionBias{BiasKind::dense, f.bias.get(), kH, kN, kN};
  expect_rejected("out over the dense bias", with_bias, f.bias.get(), f.bias);
  with_bias.bias =
      AttentionBias{BiasKind::relative_table, f.bias.get(), kH, kN, kN, index.get(), kN, kN, 1};
  expect_rejected("out over the relative table", with_bias, f.bias.get(), f.bias);
  expect_rejected("out over the relative index map", with_bias, index.get(), index);
  AttentionProblem with_mask = plain;
  with_mask.mask = AttentionMask{mask.get(), 1, kN, kN};
  expect_rejected("out over the mask", with_mask, mask.get(), mask);

  // K and the output in one allocation (K's bytes first or last); offsets are multiples of 16.
  bool untouched = false;
  REQUIRE(f.launch(plain, 1, &untouched) == Status::ok);
  const auto separate = f.out.download();
  const auto k_bytes = f.k.download();  // kSlack bytes past K are not read
  GpuBuffer<std::int8_t> shared(static_cast<std::size_t>(2 * out_bytes + 32));
  const auto place = [&](const char* what, std::int64_t out_at, std::int64_t k_at, Status want) {
    INFO(what);
    shared.fill_bytes(0x7b);
    test::cuda_check(cudaMemcpy(shared.get() + k_at, f.k.get(), static_cast<std::size_t>(out_bytes),
                                cudaMemcpyDeviceToDevice),
                     "copy K");
    AttentionProblem p = plain;
    p.k.data = shared.get() + k_at;
    const auto before = shared.download();
    CHECK(f.ops.launch(p, f.params.data(), 1, shared.get() + out_at, strides, nullptr) == want);
    const auto after = shared.download();
    const auto at = [&](std::int64_t offset) { return after.begin() + offset; };
    CHECK(std::equal(at(k_at), at(k_at + out_bytes), k_bytes.begin()));
    if (want == Status::ok) {
      CHECK(std::equal(at(out_at), at(out_at + out_bytes), separate.begin()));
    } else {
      CHECK(after == before);
    }
  };
  place("K right after out", 0, out_bytes, Status::ok);
  place("K's first 16 bytes under out's last", 0, out_bytes - 16, Status::output_overlaps_input);
  place("out right after K", out_bytes, 0, Status::ok);
  place("out's first 16 bytes over K's last", out_bytes - 16, 0, Status::output_overlaps_input);
}

// Issue item 6: host-side parameters that calibrate cannot have made (shifts of 40 or -3, a
// score limit that lets int8 scores saturate) are rejected before the launch.
TEST_CASE("device launcher: hand-made parameters outside calibrate's ranges are rejected",
          "[gpu][errors]") {
  using Params = HeadParams<presets::Precise, OutputFor<presets::Precise, std::int8_t>>;
  Fixture f;
  REQUIRE(f.ops.params_size == sizeof(Params));
  Params good{};
  std::memcpy(&good, f.params.data(), sizeof good);
  REQUIRE(validate_head(good, static_cast<int>(kD)) == Status::ok);
  const std::vector<std::pair<const char*, std::function<void(Params&)>>> edits = {
      {"logit pre-shift 40", [](Params& p) { p.logit.pre_shift = 40; }},
      {"logit post-shift -3", [](Params& p) { p.logit.post_shift = -3; }},
      {"output shift -3", [](Params& p) { p.output.shift = -3; }},
      {"output shift 40", [](Params& p) { p.output.shift = 40; }},
      {"score limit below 2^14 D", [](Params& p) { p.logit.score_limit = 1000; }},
  };
  bool untouched = false;
  for (const auto& [what, edit] : edits) {
    INFO(what);
    Params bad = good;
    edit(bad);
    std::memcpy(f.params.data(), &bad, sizeof bad);
    CHECK(f.launch(f.problem(), 1, &untouched) == Status::invalid_params);
    CHECK(untouched);
  }
  std::memcpy(f.params.data(), &good, sizeof good);
  CHECK(f.launch(f.problem(), 1, &untouched) == Status::ok);
}

TEST_CASE("device launcher: more host parameter sets than a launch can carry", "[gpu][errors]") {
  Fixture f;
  const std::int64_t heads = 65;
  GpuBuffer<std::int8_t> q(heads * 32 * 32), out(heads * 32 * 32);
  out.fill_bytes(0x11);
  std::vector<unsigned char> params(f.ops.params_size * heads);
  const float scale = 0.05f;
  std::vector<float> scales(heads, scale);
  REQUIRE(f.ops.calibrate(QuantScales{scales, scales, scales}, 32, params.data(), heads) ==
          Status::ok);
  const auto t = bhnd<const std::int8_t>(q.get(), 1, heads, 32, 32);
  const std::int64_t strides[4] = {heads * 32 * 32, 32 * 32, 32, 1};
  CHECK(f.ops.launch(AttentionProblem{t, t, t}, params.data(), heads, out.get(), strides,
                     nullptr) == Status::too_many_heads);
  for (const auto b : out.download()) REQUIRE(b == 0x11);
}

TEST_CASE("device launcher: launches captured in a CUDA graph replay bit-exactly", "[gpu][graph]") {
  // No host synchronisation and no allocation inside the launcher: both the int8 kernel and the
  // fp16 pipeline (memset + quantize + calibrate + kernel) can be captured and replayed.
  const std::int64_t z = 2, h = 3, n = 197, d = 64, elems = z * h * n * d;
  std::mt19937 rng(77);
  std::uniform_int_distribution<int> code(-127, 127);
  std::vector<std::int8_t> q(static_cast<std::size_t>(elems)), k(q.size()), v(q.size());
  for (auto* t : {&q, &k, &v}) {
    for (auto& x : *t) x = static_cast<std::int8_t>(code(rng));
  }
  GpuBuffer<std::int8_t> dq(q.size()), dk(k.size()), dv(v.size()), dout(q.size());
  dq.upload(q);
  dk.upload(k);
  dv.upload(v);
  const instances::Ops& ops = instances::ops(Preset::precise, OutputType::s8);
  std::vector<unsigned char> params(ops.params_size);
  const float scale = 4.0f / 127;
  REQUIRE(ops.calibrate(QuantScales{{&scale, 1}, {&scale, 1}, {&scale, 1}}, static_cast<int>(d),
                        params.data(), 1) == Status::ok);
  const std::int64_t strides[4] = {h * n * d, n * d, d, 1};
  std::vector<std::int8_t> expected(q.size());
  const AttentionProblem host{bhnd<const std::int8_t>(q.data(), z, h, n, d),
                              bhnd<const std::int8_t>(k.data(), z, h, n, d),
                              bhnd<const std::int8_t>(v.data(), z, h, n, d)};
  REQUIRE(ops.reference(host, params.data(), 1, expected.data(), strides) == Status::ok);

  cudaStream_t stream = nullptr;
  test::cuda_check(cudaStreamCreate(&stream), "stream");
  test::cuda_check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), "begin capture");
  const AttentionProblem dev{bhnd<const std::int8_t>(dq.get(), z, h, n, d),
                             bhnd<const std::int8_t>(dk.get(), z, h, n, d),
                             bhnd<const std::int8_t>(dv.get(), z, h, n, d)};
  const Status captured = ops.launch(dev, params.data(), 1, dout.get(), strides, stream);
  cudaGraph_t graph = nullptr;
  const cudaError_t end = cudaStreamEndCapture(stream, &graph);
  REQUIRE(captured == Status::ok);
  REQUIRE(end == cudaSuccess);
  cudaGraphExec_t exec = nullptr;
  test::cuda_check(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
  for (const int poison : {0x11, 0x6e}) {  // two replays over different poisons
    dout.fill_bytes(poison);
    test::cuda_check(cudaGraphLaunch(exec, stream), "graph launch");
    test::cuda_check(cudaStreamSynchronize(stream), "synchronize");
    CHECK(dout.download() == expected);
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);

  // The fp16 pipeline: an eager run, then a captured one replayed; both outputs must agree.
  std::vector<std::uint16_t> halves(q.size());
  for (auto& x : halves) x = float_to_half_bits(static_cast<float>(code(rng)) / 32.0f);
  GpuBuffer<std::uint16_t> dh(halves.size());
  dh.upload(halves);
  const instances::Ops& f16 = instances::ops(Preset::precise, OutputType::f16);
  GpuBuffer<std::int8_t> q8(q.size()), k8(q.size()), v8(q.size());
  GpuBuffer<float> scales(3), amax(3);
  GpuBuffer<unsigned char> dparams(f16.params_size);
  GpuBuffer<Status> statuses(1);
  GpuBuffer<std::uint16_t> eager(q.size()), replay(q.size());
  const instances::HalfPipelineWorkspace ws{q8.get(),   k8.get(),      v8.get(),       scales.get(),
                                            amax.get(), dparams.get(), statuses.get(), 1};
  const auto hv = bhnd<const std::uint16_t>(dh.get(), z, h, n, d);
  REQUIRE(f16.launch_from_half(hv, hv, hv, {}, {}, eager.get(), strides, ws, stream) == Status::ok);
  test::cuda_check(cudaStreamSynchronize(stream), "synchronize");
  test::cuda_check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), "begin capture");
  const Status pipeline =
      f16.launch_from_half(hv, hv, hv, {}, {}, replay.get(), strides, ws, stream);
  const cudaError_t end16 = cudaStreamEndCapture(stream, &graph);
  REQUIRE(pipeline == Status::ok);
  REQUIRE(end16 == cudaSuccess);
  test::cuda_check(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
  replay.fill_bytes(0x3c);
  test::cuda_check(cudaGraphLaunch(exec, stream), "graph launch");
  test::cuda_check(cudaStreamSynchronize(stream), "synchronize");
  CHECK(replay.download() == eager.download());
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}
