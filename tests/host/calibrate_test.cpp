// SPDX-License-Identifier: Apache-2.0
// policy/calibrate.hpp: every invalid input gives its named Status and leaves the output span
// byte for byte untouched; per-tensor (size 1) and per-head (size H) scales; the out_scale and
// softmax_scale overrides; calibrate_head against the policies' own calibrate functions.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <qflash/attention/presets.hpp>
#include <qflash/policy/calibrate.hpp>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "support/catch.hpp"
#include "support/compare.hpp"

namespace {

using qflash::HeadParams;
using qflash::OutputFor;
using qflash::QuantScales;
using qflash::Status;
namespace presets = qflash::presets;

/// The high-multiply Log2Logit (work in progress) has these parameters.
template <class P>
concept HighMulParams = requires(P p) {
  p.pre_shift;
  p.post_shift;
  p.score_limit;
};

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

template <class Cfg, class Out>
struct Fixture {
  using Params = HeadParams<Cfg, Out>;
  std::vector<Params> out;
  std::vector<unsigned char> before;

  // One spare element past the span, so that an empty span still has storage to watch.
  explicit Fixture(std::size_t heads) : out(heads + 1), heads_(heads) {
    std::memset(static_cast<void*>(out.data()), 0xA5, out.size() * sizeof(Params));
    before.resize(out.size() * sizeof(Params));
    std::memcpy(before.data(), static_cast<const void*>(out.data()), before.size());
  }
  Status run(const QuantScales& s, int head_dim) {
    return qflash::calibrate<Cfg, Out>(s, head_dim, std::span<Params>(out.data(), heads_));
  }
  bool untouched() const {
    return std::memcmp(before.data(), static_cast<const void*>(out.data()), before.size()) == 0;
  }
  std::size_t heads_;
};

std::span<const float> one(const float& x) { return {&x, 1}; }

/// Checks the Status of calibrate() with `s` and that nothing was written on error.
template <class Cfg, class Out>
void expect_error(const QuantScales& s, int head_dim, std::size_t heads, Status want,
                  const std::string& what) {
  INFO(what);
  Fixture<Cfg, Out> f(heads);
  const Status got = f.run(s, head_dim);
  CHECK(qflash::to_string(got) == std::string(qflash::to_string(want)));
  CHECK(f.untouched());
}

template <class Cfg, class Out>
void check_errors() {
  const std::vector<float> good4 = {0.05f, 0.06f, 0.07f, 0.08f};
  const float g = 0.05f;
  const std::size_t h = 4;
  auto with = [&](auto mutate) {
    QuantScales s{good4, good4, good4};
    mutate(s);
    return s;
  };
  // Parameter counts.
  expect_error<Cfg, Out>(with([](QuantScales&) {}), 64, 0, Status::param_count_mismatch,
                         "empty output span");
  const std::vector<float> two = {0.05f, 0.05f};
  const std::vector<float> five = {0.05f, 0.05f, 0.05f, 0.05f, 0.05f};
  expect_error<Cfg, Out>(with([&](QuantScales& s) { s.q = two; }), 64, h,
                         Status::param_count_mismatch, "q has 2 of 4");
  expect_error<Cfg, Out>(with([&](QuantScales& s) { s.k = five; }), 64, h,
                         Status::param_count_mismatch, "k has 5 of 4");
  expect_error<Cfg, Out>(with([&](QuantScales& s) { s.v = {}; }), 64, h,
                         Status::param_count_mismatch, "v is empty");
  expect_error<Cfg, Out>(with([&](QuantScales& s) { s.q = {}; }), 64, h,
                         Status::param_count_mismatch, "q is empty");
  expect_error<Cfg, Out>(with([&](QuantScales& s) { s.out = two; }), 64, h,
                         Status::param_count_mismatch, "out has 2 of 4");
  // Head dims.
  for (const int d : {0, -64, 16, 48, 100, 127, 129, 256}) {
    expect_error<Cfg, Out>(with([](QuantScales&) {}), d, h, Status::unsupported_head_dim,
                           "head dim " + std::to_string(d));
  }
  // Invalid scales in every position, in the first or only the last head.
  for (const float bad : {0.0f, -0.0f, -0.05f, kNaN, kInf, -kInf}) {
    std::ostringstream os;
    os << bad;
    const std::vector<float> last_bad = {0.05f, 0.05f, 0.05f, bad};
    const std::vector<float> only_bad = {bad};
    expect_error<Cfg, Out>(with([&](QuantScales& s) { s.q = last_bad; }), 64, h,
                           Status::invalid_scale, "q[3] = " + os.str());
    expect_error<Cfg, Out>(with([&](QuantScales& s) { s.k = last_bad; }), 64, h,
                           Status::invalid_scale, "k[3] = " + os.str());
    expect_error<Cfg, Out>(with([&](QuantScales& s) { s.v = only_bad; }), 64, h,
                           Status::invalid_scale, "v = " + os.str());
    expect_error<Cfg, Out>(with([&](QuantScales& s) { s.out = last_bad; }), 64, h,
                           Status::invalid_scale, "out[3] = " + os.str());
    if (bad != 0.0f) {  // softmax_scale 0 means "the default"
      expect_error<Cfg, Out>(with([&](QuantScales& s) { s.softmax_scale = bad; }), 64, h,
                             Status::invalid_scale, "softmax_scale = " + os.str());
    }
  }
  expect_error<Cfg, Out>(with([&](QuantScales& s) { s.softmax_scale = -1e-300; }), 64, h,
                         Status::invalid_scale, "softmax_scale = -1e-300");
  // Scales whose multipliers cannot be represented. (The high-multiply Log2Logit in progress
  // represents every finite scale, and hangs on huge ones -- see logit_test.cpp -- so these
  // cases run for the rounding-multiply Log2Logit and the paper preset only.)
  if constexpr (!HighMulParams<typename Cfg::Logit::Params>) {
    const float huge = 3.0e38f, tiny = 1.0e-30f;
    const std::vector<float> last_huge = {g, g, g, huge};
    expect_error<Cfg, Out>(with([&](QuantScales& s) {
                             s.q = last_huge;
                             s.k = last_huge;
                           }),
                           64, h, Status::scale_out_of_range, "q = k = 3e38 in the last head");
    expect_error<Cfg, Out>(with([&](QuantScales& s) {
                             s.q = one(tiny);
                             s.k = one(tiny);
                           }),
                           64, h, Status::scale_out_of_range, "q = k = 1e-30");
    expect_error<Cfg, Out>(with([&](QuantScales& s) { s.softmax_scale = 1e-300; }), 64, h,
                           Status::scale_out_of_range,
                           "softmax_scale = 1e-300 (sm_scale underflows)");
    expect_error<Cfg, Out>(with([&](QuantScales& s) { s.softmax_scale = 1e300; }), 64, h,
                           Status::scale_out_of_range, "softmax_scale = 1e300");
  } else {
    // Tiny scales calibrate (their logits vanish); large ones would saturate int8 scores and
    // are rejected by name.
    Fixture<Cfg, Out> tiny(h);
    CHECK(tiny.run(QuantScales{one(1.0e-30f), one(1.0e-30f), good4}, 64) == Status::ok);
    expect_error<Cfg, Out>(QuantScales{one(1.0e6f), one(1.0e6f), good4}, 64, h,
                           Status::logit_range_exceeded, "q = k = 1e6");
  }
  // sm_scale itself overflows to infinity (both designs).
  static const float max_float = 3.0e38f;
  expect_error<Cfg, Out>(with([&](QuantScales& s) {
                           s.softmax_scale = 1e300;
                           s.q = s.k = one(max_float);
                         }),
                         64, h, Status::scale_out_of_range, "sm_scale = inf");
}

}  // namespace

TEST_CASE("calibrate: every invalid input gives its Status and writes nothing",
          "[calibrate][errors]") {
  SECTION("Precise, s8") {
    check_errors<presets::Precise, OutputFor<presets::Precise, std::int8_t>>();
  }
  SECTION("Precise, s16") {
    check_errors<presets::Precise, OutputFor<presets::Precise, std::int16_t>>();
  }
  SECTION("PreciseCubic, s32") {
    check_errors<presets::PreciseCubic, OutputFor<presets::PreciseCubic, std::int32_t>>();
  }
  SECTION("Precise, fp16") {
    check_errors<presets::Precise, OutputFor<presets::Precise, qflash::Float16>>();
  }
  SECTION("Paper, s8") { check_errors<presets::Paper, OutputFor<presets::Paper, std::int8_t>>(); }
}

TEST_CASE("calibrate: output scales out of range, per output type", "[calibrate][errors]") {
  const float v = 0.05f, big_out = 1e30f, v_tiny = 1e-44f;  // v_tiny: a float subnormal
  const float qk = 0.05f;
  using PS8 = OutputFor<presets::Precise, std::int8_t>;
  using PF16 = OutputFor<presets::Precise, qflash::Float16>;
  using PaperS8 = OutputFor<presets::Paper, std::int8_t>;
  // V / out far below 1/2: no multiplier with shift <= 31.
  expect_error<presets::Precise, PS8>(QuantScales{one(qk), one(qk), one(v), one(big_out)}, 64, 3,
                                      Status::scale_out_of_range, "out = 1e30");
  expect_error<presets::Paper, PaperS8>(QuantScales{one(qk), one(qk), one(v), one(big_out)}, 64, 3,
                                        Status::scale_out_of_range, "paper, out = 1e30");
  // Paper: out = 4 V is a ratio of 1/4 (sum_bits 0): below 1/2.
  const float four_v = 4 * v;
  expect_error<presets::Paper, PaperS8>(QuantScales{one(qk), one(qk), one(v), one(four_v)}, 64, 1,
                                        Status::scale_out_of_range, "paper, out = 4 v");
  // fp16: s_v / 2^16 underflows binary32.
  expect_error<presets::Precise, PF16>(QuantScales{one(qk), one(qk), one(v_tiny)}, 64, 2,
                                       Status::scale_out_of_range, "fp16, v = 1e-44");
  // Paper: 1 / sm_scale outside [1/2, 127 * 2^17 + 1/2).
  const float big_qk = 30.0f;  // sm_scale = 1.4427 / 8 * 900 = 162 octaves per unit
  expect_error<presets::Paper, PaperS8>(QuantScales{one(big_qk), one(big_qk), one(v)}, 64, 1,
                                        Status::scale_out_of_range, "paper, q = k = 30");
}

namespace {

template <class Cfg, class Out>
HeadParams<Cfg, Out> head(double q, double k, double v, double out, double sm, int d) {
  HeadParams<Cfg, Out> p{};
  REQUIRE(qflash::calibrate_head<Cfg, Out>(q, k, v, out, sm, d, p) == Status::ok);
  return p;
}

template <class Cfg, class Out>
bool same_bytes(const HeadParams<Cfg, Out>& a, const HeadParams<Cfg, Out>& b) {
  return std::memcmp(&a, &b, sizeof a) == 0;
}

}  // namespace

TEST_CASE("calibrate: calibrate_head is the policies' own calibration of the derived scales",
          "[calibrate]") {
  using Cfg = presets::Precise;
  using Out = OutputFor<Cfg, std::int16_t>;
  for (const int d : {32, 64, 80, 96, 128}) {
    const double q = 0.031, k = 0.047, v = 0.02, sm = 1.0 / std::sqrt(static_cast<double>(d));
    const auto p = head<Cfg, Out>(q, k, v, 0.0, sm, d);
    const double sm_scale = qflash::kLog2e * sm * q * k;  // the documented order
    Cfg::Logit::Params lp{};
    REQUIRE(Cfg::Logit::calibrate(sm_scale, d, lp) == Status::ok);
    CHECK(p.logit == lp);
    Out::Params op{};
    REQUIRE(Out::calibrate(v, v / 256.0, Cfg::Exp::sum_bits, op) == Status::ok);
    CHECK(p.output.multiplier == op.multiplier);
    CHECK(p.output.shift == op.shift);
    // The logits step by sm_scale * 2^16 per score unit (within the rounding of two logits).
    const double step = static_cast<double>(Cfg::Logit::apply(20000, 0, p.logit)) -
                        static_cast<double>(Cfg::Logit::apply(0, 0, p.logit));
    CHECK(std::abs(step - sm_scale * 65536.0 * 20000.0) <= 1.0);
  }
  // Paper: the exp constants come from the same sm_scale.
  using P = presets::Paper;
  using PO = OutputFor<P, std::int8_t>;
  const auto pp = head<P, PO>(0.05, 0.04, 0.03, 0.0, 0.125, 64);
  qflash::PaperShiftExp2::Params ep{};
  REQUIRE(qflash::PaperShiftExp2::calibrate(qflash::kLog2e * 0.125 * 0.05 * 0.04, ep) ==
          Status::ok);
  CHECK(pp.exp.r == ep.r);
  CHECK(pp.exp.exp_m == ep.exp_m);
  CHECK(pp.exp.req_m == ep.req_m);
  CHECK(pp.exp.l_m == ep.l_m);
  CHECK(pp.logit.r == ep.r);
  // Paper s8 at V's scale: ratio 1 (sum_bits 0) -> 2^30 * 2^-30.
  CHECK(pp.output.multiplier == 1 << 30);
  CHECK(pp.output.shift == 30);
  // out_scale <= 0 (and -inf) selects the default; NaN and +inf are invalid.
  using O8 = OutputFor<Cfg, std::int8_t>;
  const auto def = head<Cfg, O8>(0.05, 0.05, 0.05, 0.0, 0.125, 64);
  CHECK(same_bytes(def, head<Cfg, O8>(0.05, 0.05, 0.05, -1.0, 0.125, 64)));
  CHECK(same_bytes(
      def, head<Cfg, O8>(0.05, 0.05, 0.05, -std::numeric_limits<double>::infinity(), 0.125, 64)));
  CHECK(same_bytes(def, head<Cfg, O8>(0.05, 0.05, 0.05, 0.05, 0.125, 64)));  // = V's scale
  HeadParams<Cfg, O8> x{};
  CHECK(qflash::calibrate_head<Cfg, O8>(0.05, 0.05, 0.05, std::numeric_limits<double>::quiet_NaN(),
                                        0.125, 64, x) == Status::invalid_scale);
  CHECK(qflash::calibrate_head<Cfg, O8>(0.05, 0.05, 0.05, std::numeric_limits<double>::infinity(),
                                        0.125, 64, x) == Status::invalid_scale);
  CHECK(qflash::calibrate_head<Cfg, O8>(0.05, 0.05, 0.05, 0.0, 0.125, 48, x) ==
        Status::unsupported_head_dim);
}

TEST_CASE("calibrate: per-tensor spans broadcast, per-head spans differ per head", "[calibrate]") {
  using Cfg = presets::Precise;
  using Out = OutputFor<Cfg, std::int8_t>;
  using Params = HeadParams<Cfg, Out>;
  const float q = 0.02f, k = 0.03f, v = 0.04f;
  // Size 1 everywhere, H = 5 outputs: five copies of the single-head result.
  std::vector<Params> single(1), five(5);
  REQUIRE(qflash::calibrate<Cfg, Out>(QuantScales{one(q), one(k), one(v)}, 64,
                                      std::span<Params>(single)) == Status::ok);
  REQUIRE(qflash::calibrate<Cfg, Out>(QuantScales{one(q), one(k), one(v)}, 64,
                                      std::span<Params>(five)) == Status::ok);
  for (const auto& p : five) CHECK(same_bytes(p, single[0]));
  // The same scales given H times: identical to size 1.
  const std::vector<float> q5(5, q), k5(5, k), v5(5, v);
  std::vector<Params> repeated(5);
  REQUIRE(qflash::calibrate<Cfg, Out>(QuantScales{q5, k5, v5}, 64, std::span<Params>(repeated)) ==
          Status::ok);
  for (const auto& p : repeated) CHECK(same_bytes(p, single[0]));
  // Per-head Q scales doubling per head: the logit step per score unit doubles per head.
  const std::vector<float> qh = {0.01f, 0.02f, 0.04f, 0.08f, 0.16f};
  std::vector<Params> per_head(5);
  REQUIRE(qflash::calibrate<Cfg, Out>(QuantScales{qh, one(k), one(v)}, 64,
                                      std::span<Params>(per_head)) == Status::ok);
  for (std::size_t h = 1; h < 5; ++h) {
    INFO("head " << h);
    CHECK_FALSE(per_head[h].logit == per_head[0].logit);
    auto step = [&](std::size_t head) {
      return static_cast<double>(Cfg::Logit::apply(20000, 0, per_head[head].logit)) -
             static_cast<double>(Cfg::Logit::apply(0, 0, per_head[head].logit));
    };
    const double scale = std::ldexp(1.0, static_cast<int>(h));
    CHECK(std::abs(step(h) - scale * step(0)) <= scale + 1.0);
  }
  // Each head equals calibrate_head with its own scales (mixed sizes: q per head, k and v shared).
  for (std::size_t h = 0; h < 5; ++h) {
    CHECK(same_bytes(per_head[h], head<Cfg, Out>(qh[h], k, v, 0.0, 1.0 / 8.0, 64)));
  }
  // Per-head V and output scales change the output multiplier per head.
  const std::vector<float> vh = {0.01f, 0.02f, 0.03f, 0.04f, 0.05f};
  const std::vector<float> oh = {0.01f, 0.01f, 0.01f, 0.01f, 0.01f};
  std::vector<Params> out_per_head(5);
  REQUIRE(qflash::calibrate<Cfg, Out>(QuantScales{one(q), one(k), vh, oh}, 64,
                                      std::span<Params>(out_per_head)) == Status::ok);
  for (std::size_t h = 0; h < 5; ++h) {
    Out::Params op{};
    REQUIRE(Out::calibrate(vh[h], oh[h], Cfg::Exp::sum_bits, op) == Status::ok);
    CHECK(out_per_head[h].output.multiplier == op.multiplier);
    CHECK(out_per_head[h].output.shift == op.shift);
  }
  CHECK(out_per_head[0].output.multiplier != out_per_head[2].output.multiplier);
}

TEST_CASE("calibrate: out_scale and softmax_scale overrides", "[calibrate]") {
  using Cfg = presets::Precise;
  using Params8 = HeadParams<Cfg, OutputFor<Cfg, std::int8_t>>;
  using Params16 = HeadParams<Cfg, OutputFor<Cfg, std::int16_t>>;
  const float q = 0.02f, k = 0.03f, v = 0.04f;
  // Default s8: V's scale, ratio 2^6 -> {2^30, 24}. Override out = v / 2: ratio 2^7 -> shift 23.
  std::vector<Params8> def(1), half(1);
  REQUIRE(qflash::calibrate<Cfg, OutputFor<Cfg, std::int8_t>>(
              QuantScales{one(q), one(k), one(v)}, 64, std::span<Params8>(def)) == Status::ok);
  const float half_v = v / 2;
  REQUIRE(qflash::calibrate<Cfg, OutputFor<Cfg, std::int8_t>>(
              QuantScales{one(q), one(k), one(v), one(half_v)}, 64, std::span<Params8>(half)) ==
          Status::ok);
  CHECK(def[0].output.multiplier == 1 << 30);
  CHECK(def[0].output.shift == 24);
  CHECK(half[0].output.multiplier == 1 << 30);
  CHECK(half[0].output.shift == 23);
  CHECK(half[0].logit == def[0].logit);  // only the output changes
  // Default s16: V / 256 -> ratio 2^14 -> shift 16.
  std::vector<Params16> def16(1);
  REQUIRE(qflash::calibrate<Cfg, OutputFor<Cfg, std::int16_t>>(
              QuantScales{one(q), one(k), one(v)}, 64, std::span<Params16>(def16)) == Status::ok);
  CHECK(def16[0].output.multiplier == 1 << 30);
  CHECK(def16[0].output.shift == 16);
  // softmax_scale 0 is 1 / sqrt(D); an explicit value replaces it.
  for (const int d : {32, 64, 80, 96, 128}) {
    std::vector<Params8> dflt(1), explicit_default(1), other(1);
    REQUIRE(qflash::calibrate<Cfg, OutputFor<Cfg, std::int8_t>>(
                QuantScales{one(q), one(k), one(v)}, d, std::span<Params8>(dflt)) == Status::ok);
    QuantScales s{one(q), one(k), one(v)};
    s.softmax_scale = 1.0 / std::sqrt(static_cast<double>(d));
    REQUIRE(qflash::calibrate<Cfg, OutputFor<Cfg, std::int8_t>>(
                s, d, std::span<Params8>(explicit_default)) == Status::ok);
    CHECK(same_bytes(dflt[0], explicit_default[0]));
    s.softmax_scale = 0.3;
    REQUIRE(qflash::calibrate<Cfg, OutputFor<Cfg, std::int8_t>>(s, d, std::span<Params8>(other)) ==
            Status::ok);
    Cfg::Logit::Params lp{};
    REQUIRE(Cfg::Logit::calibrate(
                qflash::kLog2e * 0.3 * static_cast<double>(q) * static_cast<double>(k), d, lp) ==
            Status::ok);
    CHECK(other[0].logit == lp);
    CHECK_FALSE(same_bytes(other[0], dflt[0]));
  }
  // The fp16 output carries s_v / 2^16 as a float.
  using PF = HeadParams<Cfg, OutputFor<Cfg, qflash::Float16>>;
  std::vector<PF> f16(1);
  REQUIRE(qflash::calibrate<Cfg, OutputFor<Cfg, qflash::Float16>>(
              QuantScales{one(q), one(k), one(v)}, 64, std::span<PF>(f16)) == Status::ok);
  CHECK(f16[0].output.scale == static_cast<float>(static_cast<double>(v) / 65536.0));
  CHECK(f16[0].output.integer.shift == 8);  // ratio 2^16 * 2^6
}
