// SPDX-License-Identifier: Apache-2.0
// The policies of the Fast preset (the in-place kernel's numerics), against exact arithmetic:
//  - AscendingPolyExp2: exhaustive over u in [0, 16 octaves] (p, weight) and d in [0, 2^22]
//    (rescale_q30) against 2^-x in long double; monotone; exact where the polynomial is exact;
//  - AscendingPolyExp2's wide input: equal to apply at zero fraction, p <= Pmax down to
//    kMinWideDistance (exhaustive), within rounding + 0.27 % of Pmax 2^-u, monotone;
//  - WideLog2Logit (Fast's logit): calibrate's statuses and ranges, apply_wide against
//    S * sm_scale * 2^32, apply its floor; ScaledLog2Logit (the Q16 form) likewise;
//  - FrameSoftmax: the biased rescale equals the plain one; frame moves; the overflow bounds of
//    the class comment over adversarial row sequences of max_keys keys.
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <qflash/attention/presets.hpp>
#include <qflash/core/status.hpp>
#include <qflash/policy/exp2.hpp>
#include <qflash/policy/logit.hpp>
#include <qflash/policy/online_softmax.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "support/catch.hpp"
#include "support/compare.hpp"
#include "support/host_generators.hpp"

namespace {

using qflash::Exp2Value;
using qflash::MergeFactors;
using qflash::RowState;
using qflash::ScaledLog2Logit;
using qflash::Status;
using qflash::WideLog2Logit;
using qflash::test::Rng;
using qflash::test::ViolationLog;
using Exp = qflash::AscendingPolyExp2<255, 6>;
using Softmax = qflash::FrameSoftmax<Exp>;

constexpr std::int32_t kOneQ30 = std::int32_t{1} << 30;

bool same(Exp2Value a, Exp2Value b) { return a.p == b.p && a.weight == b.weight; }

/// Pmax * 2^(-u / 2^16), exact in long double.
long double ideal_p(std::int64_t u) {
  return 255.0L * std::exp2(-static_cast<long double>(u) / 65536.0L);
}

}  // namespace

TEST_CASE("fast exp2: p and weight within rounding + 0.27 % of Pmax 2^-u, exhaustive",
          "[exp2][fast]") {
  ViolationLog log("AscendingPolyExp2<255, 6>::apply");
  double worst_p = 0.0, worst_weight = 0.0;
  for (std::int64_t u = 0; u <= (std::int64_t{16} << 16); ++u) {
    const Exp2Value v = Exp::apply(static_cast<std::int32_t>(u));
    const long double exact = ideal_p(u);
    // p = floor(y + 1/2 + 2^-7), weight = floor(64 y + 1/2), y within 0.27 % of exact.
    const long double p_err = std::fabs(static_cast<long double>(v.p) - exact);
    const long double w_err = std::fabs(static_cast<long double>(v.weight) - 64.0L * exact);
    worst_p = std::max(worst_p, static_cast<double>(p_err));
    worst_weight = std::max(worst_weight, static_cast<double>(w_err / 64.0L));
    log.check(p_err <= 0.5L + 1.0L / 128 + 0.0027L * exact &&
                  w_err <= 0.5L + 0.0027L * 64.0L * exact && v.p >= 0 && v.p <= 255,
              [&] {
                std::ostringstream os;
                os << "apply(" << u << ") = {" << v.p << ", " << v.weight << "}, exact p "
                   << static_cast<double>(exact);
                return os.str();
              });
  }
  INFO(log.describe() << "; worst |p - exact| " << worst_p << ", worst |weight/64 - exact| "
                      << worst_weight);
  CHECK(log.ok());
  CHECK(worst_p > 0.5);  // the check saw the polynomial's error, not only exact points
  // Whole octaves are exact: E = A0 at a zero fraction.
  for (int k = 0; k <= 15; ++k) {
    const Exp2Value v = Exp::apply(k << 16);
    const long double exact = ideal_p(std::int64_t{k} << 16);
    CHECK(v.p == static_cast<std::int32_t>(std::floor(exact + 0.5L + 1.0L / 128)));
    CHECK(v.weight == static_cast<std::int32_t>(std::floor(64.0L * exact + 0.5L)));
  }
  CHECK(Exp::apply(0).p == 255);
  CHECK(Exp::apply(0).weight == 255 * 64);
}

TEST_CASE("fast exp2: p and weight never grow with u; u < 0 is u = 0; far keys are 0",
          "[exp2][fast]") {
  ViolationLog log("AscendingPolyExp2 monotone");
  Exp2Value prev = Exp::apply(0);
  for (std::int64_t u = 1; u <= (std::int64_t{17} << 16); ++u) {
    const Exp2Value v = Exp::apply(static_cast<std::int32_t>(u));
    log.check(v.p <= prev.p && v.weight <= prev.weight, [&] {
      std::ostringstream os;
      os << "apply(" << u - 1 << ") = {" << prev.p << ", " << prev.weight << "} < apply(" << u
         << ") = {" << v.p << ", " << v.weight << "}";
      return os.str();
    });
    prev = v;
  }
  INFO(log.describe());
  CHECK(log.ok());
  for (const std::int32_t u : {-1, -65536, std::numeric_limits<std::int32_t>::min()}) {
    CHECK(same(Exp::apply(u), Exp::apply(0)));
  }
  for (const std::int32_t u : {17 << 16, 1 << 30, std::numeric_limits<std::int32_t>::max()}) {
    const Exp2Value v = Exp::apply(u);
    CHECK(v.p == 0);
    CHECK(v.weight == 0);
  }
  // The headroom form is the same computation (the kernel's entry point).
  Rng rng(qflash::test::test_seed(0xfa57e2u));
  ViolationLog headroom("from_high_word(product(kHeadroom - u) >> 32) == apply(u)");
  for (int i = 0; i < 100000; ++i) {
    const std::int32_t u = rng.uniform32(0, 40 << 16);
    const Exp2Value v =
        Exp::from_high_word(static_cast<std::uint32_t>(Exp::product(Exp::kHeadroom - u) >> 32));
    headroom.check(same(v, Exp::apply(u)), [&] { return "u " + std::to_string(u); });
  }
  INFO(headroom.describe());
  CHECK(headroom.ok());
}

TEST_CASE("fast exp2: rescale_q30 within 0.012 % of 2^-d, exact at whole octaves, exhaustive",
          "[exp2][fast]") {
  ViolationLog log("AscendingPolyExp2::rescale_q30");
  std::int32_t prev = Exp::rescale_q30(0);
  CHECK(prev == kOneQ30);
  for (std::int64_t d = 1; d <= (std::int64_t{1} << 22); ++d) {
    const std::int32_t f = Exp::rescale_q30(static_cast<std::int32_t>(d));
    const long double exact = std::ldexp(std::exp2(-static_cast<long double>(d) / 65536.0L), 30);
    log.check(f <= prev && std::fabs(f - exact) <= 0.00012L * exact + 0.5L, [&] {
      std::ostringstream os;
      os << "rescale_q30(" << d << ") = " << f << " (previous " << prev << "), exact "
         << static_cast<double>(exact);
      return os.str();
    });
    prev = f;
  }
  INFO(log.describe());
  CHECK(log.ok());
  for (int k = 0; k <= 30; ++k) CHECK(Exp::rescale_q30(k << 16) == (kOneQ30 >> k));
  CHECK(Exp::rescale_q30(-5) == kOneQ30);
  CHECK(Exp::rescale_q30(31 << 16) <= 1);
  CHECK(Exp::rescale_q30(std::numeric_limits<std::int32_t>::max()) == 0);
}

TEST_CASE("fast exp2: the wide input equals apply at zero fraction, p <= Pmax, monotone",
          "[exp2][fast]") {
  static_assert(qflash::Exp2Traits<Exp>::has_wide_input);
  ViolationLog log("AscendingPolyExp2<255, 6>::apply_wide");
  // Every Q16 distance u >= 0 of the first 16 octaves and sparse ones beyond: u * 2^16 in Q32
  // is u in Q16, and product_wide of a Q16 headroom value is product's.
  for (std::int64_t u = 0; u < (std::int64_t{1} << 31); u += u < (16 << 16) ? 1 : 977 + (u >> 8)) {
    const auto u32 = static_cast<std::int32_t>(u);
    log.check(same(Exp::apply_wide(u * 65536), Exp::apply(u32)) &&
                  Exp::product_wide(std::int64_t{Exp::kHeadroom - u32} * 65536) ==
                      Exp::product(Exp::kHeadroom - u32),
              [&] { return "u " + std::to_string(u); });
  }
  // A logit less than one Q16 unit above the frame (u in (-2^16, 0]): p <= Pmax, exhaustive;
  // below kMinWideDistance u counts as that.
  // The weight stays within the Q16 form's bound Pmax 2^6 and the product's high word below
  // 2^14, which the in-place kernel's packing of two high words per register needs.
  for (std::int64_t u = Exp::kMinWideDistance; u <= 0; ++u) {
    const Exp2Value v = Exp::apply_wide(u);
    const auto high = static_cast<std::uint32_t>(
        Exp::product_wide((std::int64_t{Exp::kHeadroom} << 16) - u) >> 32);
    log.check(v.p >= 0 && v.p <= Exp::pmax && v.weight <= Exp::pmax * 64 && high < (1u << 14), [&] {
      return "u " + std::to_string(u) + ": p " + std::to_string(v.p) + ", weight " +
             std::to_string(v.weight);
    });
  }
  CHECK(same(Exp::apply_wide(Exp::kMinWideDistance - 1), Exp::apply_wide(Exp::kMinWideDistance)));
  CHECK(same(Exp::apply_wide(std::numeric_limits<std::int64_t>::min() / 4),
             Exp::apply_wide(Exp::kMinWideDistance)));
  // Accuracy and monotonicity over the first 16 octaves in Q32 steps of 2^-16 octave with
  // random fractions: p within rounding + 0.27 % of Pmax 2^-u, p and weight never grow with u.
  Rng rng(qflash::test::test_seed(0x3a1de2u));
  Exp2Value prev = Exp::apply_wide(Exp::kMinWideDistance);
  std::int64_t prev_u = Exp::kMinWideDistance;
  for (std::int64_t q16 = 0; q16 <= (std::int64_t{16} << 16); ++q16) {
    const std::int64_t u = q16 * 65536 + static_cast<std::int64_t>(rng.uniform(0, 65535));
    const Exp2Value v = Exp::apply_wide(u);
    const long double exact = 255.0L * std::exp2(-static_cast<long double>(u) / 4294967296.0L);
    log.check(
        std::fabs(static_cast<long double>(v.p) - exact) <= 0.5L + 1.0L / 128 + 0.0027L * exact &&
            v.p <= prev.p && v.weight <= prev.weight,
        [&] {
          return "u " + std::to_string(u) + " (previous " + std::to_string(prev_u) + "): p " +
                 std::to_string(v.p) + ", exact " + std::to_string(static_cast<double>(exact));
        });
    prev = v;
    prev_u = u;
  }
  // Far keys: nothing.
  CHECK(Exp::apply_wide(std::int64_t{40} << 32).p == 0);
  CHECK(Exp::apply_wide(std::int64_t{40} << 32).weight == 0);
  CHECK(Exp::apply_wide(std::numeric_limits<std::int64_t>::max() / 4).weight == 0);
  INFO(log.describe());
  CHECK(log.ok());
}

TEST_CASE("fast logit: calibrate's statuses and ranges", "[logit][fast]") {
  static_assert(qflash::LogitTraits<WideLog2Logit>::has_wide_form);
  WideLog2Logit::Params p{};
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  for (const double bad : {0.0, -1e-3, nan, inf, -inf}) {
    CHECK(WideLog2Logit::calibrate(bad, 64, p) == Status::invalid_scale);
  }
  // M = round(sm_scale 2^32) rounds to 0 below 2^-33, to 1 from there.
  CHECK(WideLog2Logit::calibrate(1e-30, 64, p) == Status::scale_out_of_range);
  CHECK(WideLog2Logit::calibrate(std::ldexp(0.99, -33), 64, p) == Status::scale_out_of_range);
  REQUIRE(WideLog2Logit::calibrate(std::ldexp(1.01, -33), 64, p) == Status::ok);
  CHECK(p.multiplier == 1);
  CHECK(WideLog2Logit::calibrate(1.0, 64, p) == Status::logit_range_exceeded);
  CHECK(WideLog2Logit::calibrate(1e-3, 0, p) == Status::logit_range_exceeded);
  CHECK(WideLog2Logit::calibrate(1e-3, 2000, p) == Status::logit_range_exceeded);
  // The accepted range ends where the largest int8 score reaches 2^29 Q16 units.
  for (const int d : {1, 16, 32, 64, 80, 128, 256, 1024}) {
    const double limit = std::ldexp(1.0, 29 - 16) / static_cast<double>(qflash::max_abs_score(d));
    INFO("D " << d);
    CHECK(WideLog2Logit::calibrate(limit * 0.999, d, p) == Status::ok);
    CHECK(WideLog2Logit::validate(p, d) == Status::ok);
    CHECK(WideLog2Logit::logit_bound(p, d) <= (std::int64_t{1} << 29));
    CHECK(WideLog2Logit::calibrate(limit * 1.001, d, p) == Status::logit_range_exceeded);
  }
  // validate rejects what calibrate cannot produce.
  REQUIRE(WideLog2Logit::calibrate(2e-4, 64, p) == Status::ok);
  CHECK(WideLog2Logit::validate(p, 64) == Status::ok);
  CHECK(WideLog2Logit::validate(p, 0) == Status::invalid_params);
  CHECK(WideLog2Logit::validate({0}, 64) == Status::invalid_params);
  CHECK(WideLog2Logit::validate({-5}, 64) == Status::invalid_params);
  // At D 1 the largest multiplier keeps |t| <= 2^29 (2^14 M / 2^16 + 1); at D 2 it does not.
  CHECK(WideLog2Logit::validate({std::numeric_limits<std::int32_t>::max()}, 1) == Status::ok);
  CHECK(WideLog2Logit::validate({std::numeric_limits<std::int32_t>::max()}, 2) ==
        Status::invalid_params);
}

TEST_CASE("fast logit: apply_wide is S * sm_scale * 2^32 within |S| / 2 units, apply its floor",
          "[logit][fast]") {
  Rng rng(qflash::test::test_seed(0x51de10u));
  ViolationLog log("WideLog2Logit::apply_wide");
  for (int trial = 0; trial < 400; ++trial) {
    const int d = static_cast<int>(rng.uniform(1, 256));
    const double limit = std::ldexp(1.0, 13) / static_cast<double>(qflash::max_abs_score(d));
    const double sm = limit * std::exp2(-rng.unit() * 40.0);
    WideLog2Logit::Params p{};
    if (WideLog2Logit::calibrate(sm, d, p) != Status::ok) {
      CHECK(sm < std::ldexp(1.0, -33));  // only scales whose multiplier rounds to 0
      continue;
    }
    const std::int32_t smax = static_cast<std::int32_t>(qflash::max_abs_score(d));
    std::int64_t prev = WideLog2Logit::apply_wide(-smax, 0, p);
    for (int i = 0; i < 2000; ++i) {
      const std::int32_t s = i == 0 ? smax : rng.uniform32(-smax, smax);
      const std::int32_t bias = rng.uniform32(-(1 << 27), 1 << 27);
      const std::int64_t offset = static_cast<std::int64_t>(rng.uniform32(-(1 << 30), 1 << 30))
                                  << 10;
      const std::int64_t wide = WideLog2Logit::apply_wide(s, 0, p);
      const std::int32_t t = WideLog2Logit::apply(s, 0, p);
      const long double exact = static_cast<long double>(s) * sm * 4294967296.0L;
      // M's rounding: |S M - S sm 2^32| <= |S| / 2; t and the bias form are floors and sums.
      log.check(std::fabs(static_cast<long double>(wide) - exact) <= std::abs(s) / 2.0L + 1e-6L &&
                    t == static_cast<std::int32_t>(wide >> 16) &&
                    WideLog2Logit::apply(s, bias, p) == t + bias &&
                    WideLog2Logit::apply_offset(s, bias, p) == t + bias &&
                    WideLog2Logit::apply_wide(s, bias, p) == wide + std::int64_t{bias} * 65536 &&
                    WideLog2Logit::apply_wide_offset(s, offset, p) == wide + offset,
                [&] {
                  std::ostringstream os;
                  os << "D " << d << ", sm_scale " << sm << ", S " << s << ": t_wide " << wide
                     << ", exact " << static_cast<double>(exact);
                  return os.str();
                });
    }
    for (std::int32_t s = -smax; s <= smax; s += std::max(1, smax / 5000)) {
      const std::int64_t wide = WideLog2Logit::apply_wide(s, 0, p);
      log.check(wide >= prev, [&] { return "not monotone at S " + std::to_string(s); });
      prev = wide;
    }
  }
  INFO(log.describe());
  CHECK(log.ok());
  // The bias saturates at +-2^28.
  WideLog2Logit::Params p{};
  REQUIRE(WideLog2Logit::calibrate(1e-4, 64, p) == Status::ok);
  CHECK(WideLog2Logit::apply(0, std::numeric_limits<std::int32_t>::max(), p) == (1 << 28));
  CHECK(WideLog2Logit::apply(0, std::numeric_limits<std::int32_t>::min(), p) == -(1 << 28));
  CHECK(WideLog2Logit::apply_wide(0, std::numeric_limits<std::int32_t>::min(), p) ==
        -(std::int64_t{1} << 44));
}

TEST_CASE("fast: the in-place kernel's one multiply-add gives flash_step's P, any fraction",
          "[exp2][logit][fast]") {
  // The in-place kernel computes product_wide(apply_wide_offset(S, (H - F) 2^16)); flash_step
  // computes apply_wide(F 2^16 - apply_wide(S, bias)) with its bias in the frame. Equal for every
  // frame F >= t, with the fraction bits nonzero; the high word below 2^14.
  Rng rng(qflash::test::test_seed(0x1e5f0dau));
  ViolationLog log("product_wide(apply_wide_offset) against apply_wide");
  for (int trial = 0; trial < 300; ++trial) {
    const int d = static_cast<int>(rng.uniform(1, 1024));
    const double limit = std::ldexp(1.0, 13) / static_cast<double>(qflash::max_abs_score(d));
    WideLog2Logit::Params p{};
    if (WideLog2Logit::calibrate(limit * std::exp2(-rng.unit() * 30.0), d, p) != Status::ok)
      continue;
    const auto smax = static_cast<std::int32_t>(qflash::max_abs_score(d));
    for (int i = 0; i < 2000; ++i) {
      const std::int32_t s = rng.uniform32(-smax, smax);
      const std::int32_t t = WideLog2Logit::apply(s, 0, p);
      // Frames at t (u in (-2^16, 0]), just above, and up to 40 octaves above.
      const std::int64_t above = i % 4 == 0 ? 0 : rng.uniform(0, i % 4 == 1 ? 3 : (40 << 16));
      const auto frame = static_cast<std::int32_t>(t + above);
      const std::int64_t offset = std::int64_t{Exp::kHeadroom - frame} * 65536;
      const std::uint64_t x = Exp::product_wide(WideLog2Logit::apply_wide_offset(s, offset, p));
      const auto high = static_cast<std::uint32_t>(x >> 32);
      const Exp2Value kernel = Exp::from_high_word(high);
      const Exp2Value step =
          Exp::apply_wide(std::int64_t{frame} * 65536 - WideLog2Logit::apply_wide(s, 0, p));
      log.check(same(kernel, step) && high < (1u << 14), [&] {
        std::ostringstream os;
        os << "D " << d << ", M " << p.multiplier << ", S " << s << ", F - t " << above
           << ": kernel p " << kernel.p << ", flash_step p " << step.p;
        return os.str();
      });
    }
  }
  INFO(log.describe());
  CHECK(log.ok());
  CHECK(log.checked() > 100000);
}

TEST_CASE("scaled logit: calibrate's statuses and ranges", "[logit]") {
  ScaledLog2Logit::Params p{};
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  for (const double bad : {0.0, -1e-3, nan, inf, -inf}) {
    CHECK(ScaledLog2Logit::calibrate(bad, 64, p) == Status::invalid_scale);
  }
  CHECK(ScaledLog2Logit::calibrate(1e-30, 64, p) == Status::scale_out_of_range);
  CHECK(ScaledLog2Logit::calibrate(1.0, 64, p) == Status::logit_range_exceeded);
  CHECK(ScaledLog2Logit::calibrate(1e-3, 0, p) == Status::logit_range_exceeded);
  CHECK(ScaledLog2Logit::calibrate(1e-3, 2000, p) == Status::logit_range_exceeded);
  for (int d = 1; d <= 1024; ++d) {
    const std::int32_t a = ScaledLog2Logit::pre_shift_for(d);
    CHECK((qflash::max_abs_score(d) << a) < (std::int64_t{1} << 31));
    CHECK((qflash::max_abs_score(d) << (a + 1)) >= (std::int64_t{1} << 31));
  }
  CHECK(ScaledLog2Logit::pre_shift_for(64) == 10);
  CHECK(ScaledLog2Logit::pre_shift_for(128) == 9);
  // The accepted range ends where the largest int8 score reaches 2^29 Q16 units.
  for (const int d : {16, 32, 64, 80, 128, 256}) {
    const double limit = std::ldexp(1.0, 29 - 16) / static_cast<double>(qflash::max_abs_score(d));
    INFO("D " << d);
    CHECK(ScaledLog2Logit::calibrate(limit * 0.999, d, p) == Status::ok);
    CHECK(ScaledLog2Logit::validate(p, d) == Status::ok);
    CHECK(ScaledLog2Logit::calibrate(limit * 1.001, d, p) == Status::logit_range_exceeded);
  }
  // validate rejects what calibrate cannot produce.
  REQUIRE(ScaledLog2Logit::calibrate(2e-4, 64, p) == Status::ok);
  CHECK(ScaledLog2Logit::validate(p, 64) == Status::ok);
  CHECK(ScaledLog2Logit::validate(p, 128) == Status::invalid_params);  // pre-shift of D 64
  CHECK(ScaledLog2Logit::validate({0, 10}, 64) == Status::invalid_params);
  CHECK(ScaledLog2Logit::validate({-5, 10}, 64) == Status::invalid_params);
  // At D 64 every multiplier keeps |t| < 2^29 (2^30 * M / 2^32); at D 80 the largest do not.
  CHECK(ScaledLog2Logit::validate({std::numeric_limits<std::int32_t>::max(), 10}, 64) ==
        Status::ok);
  CHECK(ScaledLog2Logit::validate({std::numeric_limits<std::int32_t>::max(), 10}, 80) ==
        Status::invalid_params);
}

TEST_CASE("scaled logit: apply is S * sm_scale * 2^16 within [-1.25, 0.25] units, monotone",
          "[logit]") {
  Rng rng(qflash::test::test_seed(0x1061fa57u));
  ViolationLog log("ScaledLog2Logit::apply");
  for (int trial = 0; trial < 400; ++trial) {
    const int d = static_cast<int>(rng.uniform(1, 256));
    const double limit = std::ldexp(1.0, 13) / static_cast<double>(qflash::max_abs_score(d));
    const double sm = limit * std::exp2(-rng.unit() * 40.0);
    ScaledLog2Logit::Params p{};
    if (ScaledLog2Logit::calibrate(sm, d, p) != Status::ok) {
      CHECK(sm < 1e-9);  // only scales so small that the multiplier rounds to 0
      continue;
    }
    const std::int32_t smax = static_cast<std::int32_t>(qflash::max_abs_score(d));
    std::int32_t prev = ScaledLog2Logit::apply(-smax, 0, p);
    for (int i = 0; i < 2000; ++i) {
      const std::int32_t s = i == 0 ? smax : rng.uniform32(-smax, smax);
      const std::int32_t bias = rng.uniform32(-(1 << 27), 1 << 27);
      const std::int32_t t = ScaledLog2Logit::apply(s, 0, p);
      const long double exact = static_cast<long double>(s) * sm * 65536.0L;
      log.check(t >= exact - 1.25L && t <= exact + 0.25L &&
                    ScaledLog2Logit::apply(s, bias, p) == t + bias &&
                    ScaledLog2Logit::apply_offset(s, bias, p) == t + bias,
                [&] {
                  std::ostringstream os;
                  os << "D " << d << ", sm_scale " << sm << ", S " << s << ": t " << t << ", exact "
                     << static_cast<double>(exact);
                  return os.str();
                });
    }
    for (std::int32_t s = -smax; s <= smax; s += std::max(1, smax / 5000)) {
      const std::int32_t t = ScaledLog2Logit::apply(s, 0, p);
      log.check(t >= prev, [&] { return "not monotone at S " + std::to_string(s); });
      prev = t;
    }
  }
  INFO(log.describe());
  CHECK(log.ok());
  // The bias saturates at +-2^28.
  ScaledLog2Logit::Params p{};
  REQUIRE(ScaledLog2Logit::calibrate(1e-4, 64, p) == Status::ok);
  CHECK(ScaledLog2Logit::apply(0, std::numeric_limits<std::int32_t>::max(), p) == (1 << 28));
  CHECK(ScaledLog2Logit::apply(0, std::numeric_limits<std::int32_t>::min(), p) == -(1 << 28));
}

TEST_CASE("fast softmax: rescale_biased is rescale on the biased form", "[softmax][fast]") {
  Rng rng(qflash::test::test_seed(0xb1a5edu));
  ViolationLog log("FrameSoftmax::rescale_biased");
  for (int i = 0; i < 2000000; ++i) {
    const std::int32_t shift = rng.uniform32(2, 30);
    const std::int32_t factor = rng.chance(1, 8) ? kOneQ30 : rng.uniform32(0, kOneQ30);
    // |x * factor / 2^shift| < 2^31: the range the kernel's accumulators stay in.
    const std::int64_t x_limit =
        std::min<std::int64_t>(std::numeric_limits<std::int32_t>::max(),
                               (std::int64_t{1} << (30 + shift)) / (std::int64_t{factor} + 1));
    const auto x = static_cast<std::int32_t>(rng.uniform(-x_limit, x_limit));
    const std::int32_t plain = Softmax::rescale(x, factor, shift);
    // Independent: floor((x f + 2^(s-1)) / 2^s) in long double (x f < 2^62: exact).
    const long double exact =
        std::floor((static_cast<long double>(x) * factor + std::ldexp(1.0L, shift - 1)) /
                   std::ldexp(1.0L, shift));
    const std::uint32_t biased =
        Softmax::rescale_biased(static_cast<std::uint32_t>(x) + 0x80000000u,
                                Softmax::biased_addend(factor, shift), factor, shift);
    log.check(plain == exact && biased == static_cast<std::uint32_t>(plain) + 0x80000000u, [&] {
      std::ostringstream os;
      os << "x " << x << ", factor " << factor << ", shift " << shift << ": rescale " << plain
         << ", exact " << static_cast<double>(exact) << ", biased " << biased;
      return os.str();
    });
  }
  INFO(log.describe());
  CHECK(log.ok());
}

TEST_CASE("fast softmax: frame moves", "[softmax][fast]") {
  const Exp::Params ep{};
  // No move, up, down by whole octaves (an exact shift), down by a fraction.
  MergeFactors f = Softmax::frame_move(1000, 1000, ep);
  CHECK((f.state_q30 == kOneQ30 && f.state_shift == 30));
  f = Softmax::frame_move(0, 3 << 16, ep);
  CHECK((f.state_q30 == (kOneQ30 >> 3) && f.state_shift == 30));
  f = Softmax::frame_move(5 << 16, 0, ep);
  CHECK((f.state_q30 == kOneQ30 && f.state_shift == 25));
  CHECK(Softmax::rescale(1000, f.state_q30, f.state_shift) == 32000);
  f = Softmax::frame_move(0, -(3 << 16) - 12345, ep);  // 2^(3.19): 4 octaves up to 2^-0.81
  CHECK(f.state_shift == 26);
  const double gain = std::ldexp(static_cast<double>(f.state_q30), -f.state_shift);
  const double expected = std::exp2(3.0 + 12345.0 / 65536.0);
  INFO("gain " << gain << ", 2^(d / 2^16) " << expected);
  CHECK(std::fabs(gain / expected - 1.0) < 0.0027);

  // The frame: the tile max on the first tile; later at most headroom_octaves below the frame.
  RowState row{};
  CHECK(Softmax::reference_max(row, -77) == -77);
  row = RowState{100 << 16, 1000, true};  // 10 bits of sum: 16 octaves of headroom
  CHECK(Softmax::headroom_octaves(1000) == 16);
  CHECK(Softmax::reference_max(row, 90 << 16) == 90 << 16);
  CHECK(Softmax::reference_max(row, 50 << 16) == 84 << 16);
  CHECK(Softmax::reference_max(row, 120 << 16) == 120 << 16);
  CHECK(Softmax::headroom_octaves(std::int64_t{1} << 26) == 0);
  CHECK(Softmax::headroom_octaves(-5) == 26);
  // The 32-bit width it takes below 2^kHeadroomBits is the 64-bit width's: every power of two
  // and its neighbours, and the extremes.
  const auto wide_room = [](std::int64_t sum) {
    const int room =
        Softmax::kHeadroomBits -
        static_cast<int>(std::bit_width(static_cast<std::uint64_t>(sum < 0 ? 0 : sum)));
    return room < 0 ? 0 : room;
  };
  int checked = 0;
  for (int b = 0; b < 63; ++b) {
    for (const std::int64_t delta : {-1, 0, 1}) {
      for (const std::int64_t sign : {1, -1}) {
        const std::int64_t sum = sign * ((std::int64_t{1} << b) + delta);
        INFO("sum " << sum);
        CHECK(Softmax::headroom_octaves(sum) == wide_room(sum));
        ++checked;
      }
    }
  }
  for (const std::int64_t sum : {std::numeric_limits<std::int64_t>::max(),
                                 std::numeric_limits<std::int64_t>::min(), std::int64_t{0}}) {
    CHECK(Softmax::headroom_octaves(sum) == wide_room(sum));
  }
  CHECK(checked == 63 * 6);
}

TEST_CASE("fast softmax: row sums and accumulators stay in int32 over max_keys keys",
          "[softmax][fast]") {
  Rng rng(qflash::test::test_seed(0x0f10u));
  const Exp::Params ep{};
  constexpr int kBlock = 64;
  const std::int64_t tiles = Softmax::max_keys / kBlock;
  std::int64_t worst_sum = 0, worst_acc = 0;
  for (int trial = 0; trial < 60; ++trial) {
    RowState row{};
    std::int64_t acc = 0;  // the worst accumulator element: V = 127 on every key
    std::int32_t tile_max = 0;
    const int pattern = trial % 4;
    for (std::int64_t t = 0; t < tiles; ++t) {
      // 0: all logits equal (largest sums); 1: the tile max falls every tile (frame moves
      // down); 2: random walk; 3: saw-tooth (down, down, jump up).
      switch (pattern) {
        case 0:
          break;
        case 1:
          tile_max -= rng.uniform32(0, 3 << 16);
          break;
        case 2:
          tile_max += rng.uniform32(-(4 << 16), 4 << 16);
          break;
        default:
          tile_max += (t % 8 == 7) ? (20 << 16) : -(3 << 16);
          break;
      }
      tile_max = std::clamp(tile_max, -(1 << 29), 1 << 29);
      const std::int32_t frame = Softmax::reference_max(row, tile_max);
      std::int64_t tile_sum = 0, tile_pv = 0;
      for (int j = 0; j < kBlock; ++j) {
        const std::int32_t logit =
            j == 0 || pattern == 0 ? tile_max : tile_max - rng.uniform32(0, 1 << 16);
        const Exp2Value v = Exp::apply(frame - logit);
        tile_sum += v.weight;
        tile_pv += 127 * std::int64_t{v.p};
      }
      const bool started = row.started;
      const MergeFactors f = Softmax::merge_row(row, tile_max, tile_sum, ep);
      CHECK(row.max == frame);
      const std::int64_t moved =
          started ? (acc * f.state_q30 + (std::int64_t{1} << (f.state_shift - 1))) >> f.state_shift
                  : 0;
      REQUIRE(moved <= std::numeric_limits<std::int32_t>::max());
      acc = moved + tile_pv;
      worst_sum = std::max(worst_sum, row.sum);
      worst_acc = std::max(worst_acc, acc);
      REQUIRE(row.sum < (std::int64_t{1} << 31));
      REQUIRE(acc < (std::int64_t{1} << 31));
    }
  }
  INFO("largest row sum " << worst_sum << ", largest accumulator " << worst_acc);
  CHECK(worst_sum > (std::int64_t{1} << 28));  // the sequences reached the interesting range
  CHECK(worst_acc > (std::int64_t{1} << 29));
}
