// SPDX-License-Identifier: Apache-2.0
// Inputs that once returned Status::ok with a wrong answer or undefined behaviour: each is now
// either served within its proven accuracy bound or rejected with a named status.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <qflash/qflash.hpp>
#include <qflash/reference/accuracy_bound.hpp>
#include <qflash/reference/flash_attention_int.hpp>
#include <span>
#include <vector>

#include "support/catch.hpp"
#include "support/host_generators.hpp"

namespace {

using namespace qflash;
using qflash::reference::HeadScales;

template <class Cfg, class OutT>
using ParamsOf = HeadParams<Cfg, OutputFor<Cfg, OutT>>;

template <class Cfg, class OutT>
Status calibrate_one(float q, float k, float v, int d, ParamsOf<Cfg, OutT>& out) {
  return calibrate<Cfg, OutputFor<Cfg, OutT>>(QuantScales{{&q, 1}, {&k, 1}, {&v, 1}}, d,
                                              std::span<ParamsOf<Cfg, OutT>>(&out, 1));
}

/// The large-logit case: one query of all 127, keys all 127 and all 127 but one 126, D = 32,
/// s_q = s_k = 0.3, V = +-100 (exact output 76.59).
struct LargeLogitCase {
  static constexpr int d = 32;
  std::vector<std::int8_t> q = std::vector<std::int8_t>(d, 127);
  std::vector<std::int8_t> k = [] {
    std::vector<std::int8_t> x(2 * d, 127);
    x[d] = 126;
    return x;
  }();
  std::vector<std::int8_t> v = [] {
    std::vector<std::int8_t> x(2 * d);
    for (int i = 0; i < 2 * d; ++i)
      x[static_cast<std::size_t>(i)] = (i < d) == (i % 2 == 0) ? 100 : -100;
    return x;
  }();
  AttentionProblem problem() const {
    return {bhnd(q.data(), 1, 1, 1, d), bhnd(k.data(), 1, 1, 2, d), bhnd(v.data(), 1, 1, 2, d)};
  }
};

}  // namespace

TEST_CASE("reliability: Precise rejects scales whose logits would saturate", "[reliability]") {
  LargeLogitCase c;
  ParamsOf<presets::Precise, std::int32_t> precise{};
  CHECK(calibrate_one<presets::Precise, std::int32_t>(0.3f, 0.3f, 1.0f, c.d, precise) ==
        Status::logit_range_exceeded);
  ParamsOf<presets::PreciseCubic, std::int8_t> cubic{};
  CHECK(calibrate_one<presets::PreciseCubic, std::int8_t>(0.3f, 0.3f, 1.0f, c.d, cubic) ==
        Status::logit_range_exceeded);
  // The boundary: sm_scale = 1 / (4 D) octaves per unit is the largest accepted.
  for (const int d : {32, 64, 80, 96, 128}) {
    const double limit = 1.0 / (4.0 * d);
    const auto at = [&](double sm) {
      typename Log2Logit<16>::Params p{};
      return Log2Logit<16>::calibrate(sm, d, p);
    };
    CHECK(at(limit) == Status::ok);
    CHECK(at(limit * (1 + 1e-6)) == Status::logit_range_exceeded);
  }
  // Paper serves the same input, within its bound (output 76.4 against exact 76.59).
  ParamsOf<presets::Paper, std::int32_t> paper{};
  REQUIRE(calibrate_one<presets::Paper, std::int32_t>(0.3f, 0.3f, 1.0f, c.d, paper) == Status::ok);
  std::vector<std::int32_t> out(c.d);
  const auto view = bhnd(out.data(), 1, 1, 1, c.d);
  REQUIRE(reference::flash_attention<presets::Paper, OutputFor<presets::Paper, std::int32_t>>(
              c.problem(), std::span<const ParamsOf<presets::Paper, std::int32_t>>(&paper, 1),
              view) == Status::ok);
  const HeadScales sc{kLog2e / std::sqrt(32.0) * double(0.3f) * double(0.3f), 1.0, 1.0 / 65536};
  const auto r = reference::check_accuracy<presets::Paper, OutputFor<presets::Paper, std::int32_t>>(
      c.problem(), std::span<const ParamsOf<presets::Paper, std::int32_t>>(&paper, 1),
      std::span<const HeadScales>(&sc, 1), view);
  CHECK(r.violations == 0);
  CHECK(r.unbounded == 0);  // a finite guarantee, not a vacuous one
  CHECK(std::fabs(out[0] / 65536.0 - 76.59) < 1.0);
}

TEST_CASE("reliability: Paper rejects scales whose 16-bit octave estimate fails", "[reliability]") {
  // 1 / sm_scale = 2.0e5: exp_m = round(-2^16 / R) = 0 (keys two octaves down got P = 0).
  PaperShiftExp2::Params p{};
  CHECK(PaperShiftExp2::calibrate(1.0 / 2.0e5, p) == Status::scale_out_of_range);
  CHECK(PaperShiftExp2::calibrate(1.0 / 9.0e4, p) == Status::scale_out_of_range);
  // Accepted for every 1 / sm_scale in [8, 2^14) (dense sweep) and for exact powers of two.
  for (double inverse = 8.0; inverse < 16384.0; inverse *= 1.0009) {
    INFO("1 / sm_scale = " << inverse);
    REQUIRE(PaperShiftExp2::calibrate(1.0 / inverse, p) == Status::ok);
    REQUIRE(PaperShiftExp2::validate(p) == Status::ok);
  }
  CHECK(PaperShiftExp2::calibrate(1.0 / 65536.0, p) == Status::ok);
  // Whatever calibrate accepts, the estimate holds (the bound of docs/numerics.md relies on it).
  test::Rng rng(0xc0ffee);
  for (int i = 0; i < 20000; ++i) {
    const double sm = std::exp2(-24.0 * rng.unit() + 1.0);
    if (PaperShiftExp2::calibrate(sm, p) != Status::ok) continue;
    REQUIRE(PaperShiftExp2::octave_estimate_holds(p.r, p.exp_m));
  }
}

TEST_CASE("reliability: binary16 output rejects V scales that overflow or go subnormal",
          "[reliability]") {
  using Out = DequantizeFloat16<>;
  Out::Params p{};
  CHECK(Out::calibrate(600.0, 0.0, 6, p) == Status::scale_out_of_range);
  CHECK(Out::calibrate(1e-30, 0.0, 6, p) == Status::scale_out_of_range);
  CHECK(Out::calibrate(Out::min_v_scale / 2, 0.0, 6, p) == Status::scale_out_of_range);
  REQUIRE(Out::calibrate(511.0, 0.0, 6, p) == Status::ok);
  // The largest output magnitude (all V = -128) stays finite at the largest accepted scale.
  const auto largest = Out::apply(-128 * 255, std::int64_t{255} << 6, p);
  CHECK(std::isfinite(half_bits_to_float(largest.bits)));
  CHECK(half_bits_to_float(largest.bits) == Approx(-128.0 * 511.0).epsilon(1e-3));
  REQUIRE(Out::calibrate(Out::min_v_scale, 0.0, 6, p) == Status::ok);
  const auto one = Out::apply(255, std::int64_t{255} << 6, p);  // one unit of V
  CHECK(half_bits_to_float(one.bits) == Approx(Out::min_v_scale).epsilon(1e-3));
}

TEST_CASE("reliability: binary16 output stays finite at the largest V scale a preset accepts",
          "[reliability]") {
  // P and its row-sum weight round separately: per key P * 2^6 - weight <= 32 (exhaustive over
  // every distance), which lets an output exceed max |V| by up to 6.2 % in a 32-key tile, so
  // Precise's f16 limit is 65520 / max_output_v_units (482.1), below the policy's own 511.875.
  using Exp = PolyExp2<2, 255, 6, 16>;
  std::int32_t worst = 0;
  for (std::int32_t u = 0; u <= Exp::kVisibleCap; ++u) {
    const Exp2Value e = Exp::apply(u);
    worst = std::max(worst, e.p * 64 - e.weight);
  }
  CHECK(worst <= 32);
  CHECK(worst >= 31);  // the bound is reached: the margin is needed
  const double precise_limit = 65520.0 / max_output_v_units<presets::Precise>();
  CHECK(precise_limit == Approx(482.1).margin(0.05));
  ParamsOf<presets::Precise, Float16> p{};
  CHECK(calibrate_head<presets::Precise, OutputFor<presets::Precise, Float16>>(
            0.01, 0.01, 500.0, 0.0, 0.125, 64, p) == Status::scale_out_of_range);
  CHECK(calibrate_head<presets::Precise, OutputFor<presets::Precise, Float16>>(
            0.01, 0.01, 482.0, 0.0, 0.125, 64, p) == Status::ok);
  ParamsOf<presets::Paper, Float16> paper{};
  CHECK(calibrate_head<presets::Paper, OutputFor<presets::Paper, Float16>>(
            0.05, 0.05, 511.0, 0.0, 0.125, 64, paper) == Status::ok);
  // The adversarial tile: the maximum key plus 31 keys whose P * 64 - weight is largest, V = 127
  // everywhere: the output is 127 * (16320 + 31 * 64 P) / (16320 + 31 w), finite at 482.
  std::int32_t worst_u = 0;
  for (std::int32_t u = 0; u <= Exp::kVisibleCap; ++u) {
    const Exp2Value e = Exp::apply(u);
    if (e.p * 64 - e.weight == worst) {
      worst_u = u;
      break;
    }
  }
  const Exp2Value e = Exp::apply(worst_u);
  const std::int32_t acc = 127 * (255 + 31 * e.p);
  const std::int64_t l = 16320 + 31 * std::int64_t{e.weight};
  const auto o = DequantizeFloat16<>::apply(acc, l, p.output);
  CHECK(std::isfinite(half_bits_to_float(o.bits)));
  CHECK(half_bits_to_float(o.bits) > 127.0f * 482.0f);  // above max |V|: the margin was needed
}

TEST_CASE("reliability: hand-made HeadParams outside calibrate's ranges are rejected",
          "[reliability]") {
  using Cfg = presets::Precise;
  using Output = OutputFor<Cfg, std::int8_t>;
  LargeLogitCase c;
  ParamsOf<Cfg, std::int8_t> good{};
  REQUIRE(calibrate_one<Cfg, std::int8_t>(0.01f, 0.01f, 1.0f, c.d, good) == Status::ok);
  std::vector<std::int8_t> out(c.d);
  const auto run = [&](const ParamsOf<Cfg, std::int8_t>& prm) {
    return reference::flash_attention<Cfg, Output>(
        c.problem(), std::span<const ParamsOf<Cfg, std::int8_t>>(&prm, 1),
        bhnd(out.data(), 1, 1, 1, c.d));
  };
  CHECK(run(good) == Status::ok);
  auto bad = good;
  bad.logit.pre_shift = 40;
  CHECK(run(bad) == Status::invalid_params);
  bad = good;
  bad.output.shift = -3;
  CHECK(run(bad) == Status::invalid_params);
  bad = good;
  bad.output.shift = 40;
  CHECK(run(bad) == Status::invalid_params);
  bad = good;
  bad.logit.score_limit = 1000;  // would saturate int8 scores
  CHECK(run(bad) == Status::invalid_params);
  bad = good;
  bad.logit.multiplier = 0xffffffffu;
  bad.logit.post_shift = 0;  // logits past 2^29
  CHECK(run(bad) == Status::invalid_params);
  ParamsOf<presets::Paper, std::int8_t> paper{};
  REQUIRE(calibrate_one<presets::Paper, std::int8_t>(0.05f, 0.05f, 1.0f, c.d, paper) == Status::ok);
  auto bad_paper = paper;
  bad_paper.exp.req_m = 1;  // P would be 0 for every key
  CHECK(validate_head(bad_paper, c.d) == Status::invalid_params);
  bad_paper = paper;
  bad_paper.exp.exp_m = -(1 << 30);
  CHECK(validate_head(bad_paper, c.d) == Status::invalid_params);
  bad_paper = paper;
  bad_paper.logit.r += 1;  // the bias converted with another R than the exponent uses
  CHECK(validate_head(bad_paper, c.d) == Status::invalid_params);
}

TEST_CASE("reliability: every parameter set calibrate makes passes validate", "[reliability]") {
  test::Rng rng(0xabcdef);
  int accepted = 0;
  for (int i = 0; i < 3000; ++i) {
    const int d = std::array{32, 64, 80, 96, 128}[rng.below(5)];
    const auto s = [&] { return static_cast<float>(std::exp2(-20.0 * rng.unit() + 2.0)); };
    const float q = s(), k = s(), v = static_cast<float>(std::exp2(-16.0 * rng.unit() + 8.0));
    ParamsOf<presets::Precise, Float16> a{};
    if (calibrate_one<presets::Precise, Float16>(q, k, v, d, a) == Status::ok) {
      ++accepted;
      REQUIRE(validate_head(a, d) == Status::ok);
    }
    ParamsOf<presets::Paper, std::int16_t> b{};
    if (calibrate_one<presets::Paper, std::int16_t>(q, k, v, d, b) == Status::ok) {
      ++accepted;
      REQUIRE(validate_head(b, d) == Status::ok);
    }
  }
  CHECK(accepted > 1000);
}

TEST_CASE("reliability: the accuracy check fails on an output outside its bound",
          "[reliability][accuracy]") {
  using Cfg = presets::Precise;
  using Output = OutputFor<Cfg, std::int16_t>;
  test::Rng rng(7);
  constexpr int d = 64, n = 77;
  const auto q = test::random_int8(rng, n * d), k = test::random_int8(rng, n * d),
             v = test::random_int8(rng, n * d);
  const AttentionProblem problem{bhnd(q.data(), 1, 1, n, d), bhnd(k.data(), 1, 1, n, d),
                                 bhnd(v.data(), 1, 1, n, d)};
  ParamsOf<Cfg, std::int16_t> prm{};
  REQUIRE(calibrate_one<Cfg, std::int16_t>(0.02f, 0.02f, 0.05f, d, prm) == Status::ok);
  std::vector<std::int16_t> out(n * d);
  const auto view = bhnd(out.data(), 1, 1, n, d);
  const auto params = std::span<const ParamsOf<Cfg, std::int16_t>>(&prm, 1);
  REQUIRE(reference::flash_attention<Cfg, Output>(problem, params, view) == Status::ok);
  const HeadScales sc{kLog2e / 8.0 * double(0.02f) * double(0.02f), double(0.05f),
                      double(0.05f) / 256.0};
  const auto ok = reference::check_accuracy<Cfg, Output>(problem, params, {&sc, 1}, view);
  CHECK(ok.violations == 0);
  CHECK(ok.worst_ratio > 0.0);
  CHECK(ok.floor_db() > 15.0);
  // One element moved by 3 % of V's range: far outside its bound.
  out[100] = static_cast<std::int16_t>(out[100] + 1000);
  const auto bad = reference::check_accuracy<Cfg, Output>(problem, params, {&sc, 1}, view);
  CHECK(bad.violations == 1);
  CHECK(bad.first_violation == 100);
}
