// SPDX-License-Identifier: Apache-2.0
// core/dyadic.hpp: the integer-only double -> M * 2^-shift conversion and round_to_int64,
// against an independent decomposition (std::frexp / std::ldexp, exact on every double) and
// exact 128-bit integer arithmetic.
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <qflash/core/dyadic.hpp>
#include <sstream>
#include <vector>

#include "support/catch.hpp"
#include "support/compare.hpp"
#include "support/host_generators.hpp"

namespace {

using qflash::test::int128;
using qflash::test::Rng;
using qflash::test::ViolationLog;

struct Expected {
  std::int64_t multiplier;
  int shift;
};

/// Independent expectation: x = m * 2^e with m in [0.5, 1) (frexp, exact for every finite
/// double, subnormals included); M = round_half_away(m * 2^31) in [2^30, 2^31]; shift = 31 - e;
/// M == 2^31 renormalises to 2^30 with shift - 1.
Expected expected_dyadic(double x) {
  int e = 0;
  const double m = std::frexp(x, &e);
  // m * 2^53 is an integer in [2^52, 2^53): exact.
  const auto sig = static_cast<std::int64_t>(std::ldexp(m, 53));
  // round_half_away(sig / 2^22), sig > 0
  std::int64_t mult = (sig + (std::int64_t{1} << 21)) >> 22;
  int shift = 31 - e;
  if (mult == (std::int64_t{1} << 31)) {
    mult >>= 1;
    --shift;
  }
  return {mult, shift};
}

std::string describe_double(double x) {
  std::ostringstream os;
  os << std::hexfloat << x << " (bits 0x" << std::hex << std::bit_cast<std::uint64_t>(x) << ")";
  return os.str();
}

/// 2 * |x * 2^shift - M| <= 1, exactly: x = sig * 2^(e - 53), so x * 2^shift = sig * 2^k with
/// k = e - 53 + shift in [-23, -22]; the inequality becomes |sig - M * 2^-k| * 2 <= 2^-k.
bool within_half_ulp(double x, const qflash::Dyadic& d) {
  int e = 0;
  const double m = std::frexp(x, &e);
  const auto sig = static_cast<int128>(std::ldexp(m, 53));
  const int k = e - 53 + d.shift;
  if (k > 0 || k < -60) return false;
  const int128 scaled_m = static_cast<int128>(d.multiplier) << (-k);
  int128 diff = sig - scaled_m;
  diff = diff < 0 ? -diff : diff;
  return 2 * diff <= (int128{1} << (-k));
}

void check_dyadic(ViolationLog& log, double x) {
  REQUIRE(qflash::is_positive_finite(x));
  const qflash::Dyadic d = qflash::to_dyadic(x);
  const Expected want = expected_dyadic(x);
  log.check(d.multiplier == want.multiplier && d.shift == want.shift, [&] {
    std::ostringstream os;
    os << "to_dyadic(" << describe_double(x) << ") = {" << d.multiplier << ", " << d.shift
       << "}, expected {" << want.multiplier << ", " << want.shift << "}";
    return os.str();
  });
  log.check(d.multiplier >= (std::int32_t{1} << 30) && d.multiplier <= 0x7fffffff, [&] {
    std::ostringstream os;
    os << "multiplier " << d.multiplier << " outside [2^30, 2^31) for " << describe_double(x);
    return os.str();
  });
  log.check(within_half_ulp(x, d), [&] {
    std::ostringstream os;
    os << "M * 2^-shift not within half an ulp of 31 bits of " << describe_double(x);
    return os.str();
  });
  // The same statement in long double (64-bit significand, exact for M * 2^-shift):
  // relative error at most 2^-31.
  const long double rebuilt = std::ldexp(static_cast<long double>(d.multiplier), -d.shift);
  const long double rel = std::fabs(rebuilt - static_cast<long double>(x)) / x;
  log.check(rel <= 0x1p-31L, [&] {
    std::ostringstream os;
    os << "relative reconstruction error " << static_cast<double>(rel) << " for "
       << describe_double(x);
    return os.str();
  });
}

}  // namespace

TEST_CASE("dyadic: to_dyadic on powers of two, subnormals and the extremes", "[dyadic]") {
  ViolationLog log("to_dyadic edges");
  for (int e = -1074; e <= 1023; ++e) check_dyadic(log, std::ldexp(1.0, e));
  const double denorm_min = std::numeric_limits<double>::denorm_min();
  for (const double x : {denorm_min, 2 * denorm_min, 3 * denorm_min, 1023 * denorm_min,
                         std::numeric_limits<double>::min() - denorm_min,  // largest subnormal
                         std::numeric_limits<double>::min(), std::numeric_limits<double>::max(),
                         1.0, 0.1, 1.0 / 3.0, 2.0 / 3.0, 1.4426950408889634, 3.0e-300, 7.5e300}) {
    check_dyadic(log, x);
  }
  // Known values.
  const auto one = qflash::to_dyadic(1.0);
  CHECK(one.multiplier == (1 << 30));
  CHECK(one.shift == 30);
  const auto big = qflash::to_dyadic(std::ldexp(1.0, 40));  // shift may be negative
  CHECK(big.multiplier == (1 << 30));
  CHECK(big.shift == -10);
  const auto tiny = qflash::to_dyadic(denorm_min);  // 2^-1074 = 2^30 * 2^-1104
  CHECK(tiny.multiplier == (1 << 30));
  CHECK(tiny.shift == 1104);
  const auto third = qflash::to_dyadic(1.0 / 3.0);
  CHECK(third.multiplier == 1431655765);  // round(2^32 / 3) with shift 32
  CHECK(third.shift == 32);
  INFO(log.describe());
  CHECK(log.ok());
}

TEST_CASE("dyadic: to_dyadic rounds half away from zero and renormalises 2^31", "[dyadic]") {
  ViolationLog log("to_dyadic rounding");
  // x = (2^30 + j + 1/2) * 2^-30: an exact tie at the 31st bit, rounds up (away from zero).
  for (std::int64_t j = 0; j < 4096; ++j) {
    const double x = std::ldexp(static_cast<double>((std::int64_t{1} << 31) + 2 * j + 1), -31);
    check_dyadic(log, x);
    CHECK(qflash::to_dyadic(x).multiplier == (1 << 30) + j + 1);
  }
  // Just below a power of two: every double in [2 - 2^-30, 2) rounds to M = 2^31 -> 2^30 * 2^-29.
  double x = 2.0;
  for (int i = 0; i < 4096; ++i) {
    x = std::nextafter(x, 0.0);
    check_dyadic(log, x);
    const auto d = qflash::to_dyadic(x);
    CHECK(d.multiplier == (1 << 30));
    CHECK(d.shift == 29);
  }
  // The largest double below 2 that does NOT round up: (2^31 - 1/2 - ulp) * 2^-30.
  const double below_tie =
      std::nextafter(std::ldexp(static_cast<double>((1ll << 32) - 1), -31), 0.0);
  CHECK(qflash::to_dyadic(below_tie).multiplier == 0x7fffffff);
  CHECK(qflash::to_dyadic(std::ldexp(static_cast<double>((1ll << 32) - 1), -31)).multiplier ==
        (1 << 30));  // the tie itself rounds up to 2^31 -> 2^30
  // Largest double: rounds up to 2^1024, represented as 2^30 * 2^994 (shift -994).
  const auto dmax = qflash::to_dyadic(std::numeric_limits<double>::max());
  CHECK(dmax.multiplier == (1 << 30));
  CHECK(dmax.shift == -994);
  INFO(log.describe());
  CHECK(log.ok());
}

TEST_CASE("dyadic: to_dyadic on random positive finite doubles of every exponent", "[dyadic]") {
  Rng rng(qflash::test::test_seed(0xd1ad1c));
  INFO(qflash::test::seed_text(rng.seed()));
  ViolationLog log("to_dyadic random");
  for (int i = 0; i < 200000; ++i) {
    // Uniform bit patterns in (0, +inf): every exponent field, subnormals included.
    const auto bits = static_cast<std::uint64_t>(rng.uniform(1, 0x7fefffffffffffffll));
    check_dyadic(log, std::bit_cast<double>(bits));
  }
  for (int i = 0; i < 20000; ++i) {  // subnormals only
    check_dyadic(log, std::bit_cast<double>(
                          static_cast<std::uint64_t>(rng.uniform(1, (std::int64_t{1} << 52) - 1))));
  }
  INFO(log.describe());
  CHECK(log.ok());
}

TEST_CASE("dyadic: is_positive_finite", "[dyadic]") {
  const double inf = std::numeric_limits<double>::infinity();
  const double qnan = std::numeric_limits<double>::quiet_NaN();
  const double snan = std::numeric_limits<double>::signaling_NaN();
  const double denorm = std::numeric_limits<double>::denorm_min();
  CHECK_FALSE(qflash::is_positive_finite(0.0));
  CHECK_FALSE(qflash::is_positive_finite(-0.0));
  CHECK_FALSE(qflash::is_positive_finite(qnan));
  CHECK_FALSE(qflash::is_positive_finite(-qnan));
  CHECK_FALSE(qflash::is_positive_finite(snan));
  CHECK_FALSE(qflash::is_positive_finite(std::bit_cast<double>(0x7ff0000000000001ull)));
  CHECK_FALSE(qflash::is_positive_finite(std::bit_cast<double>(0xfff8000000000001ull)));
  CHECK_FALSE(qflash::is_positive_finite(inf));
  CHECK_FALSE(qflash::is_positive_finite(-inf));
  CHECK_FALSE(qflash::is_positive_finite(-1.0));
  CHECK_FALSE(qflash::is_positive_finite(-denorm));
  CHECK_FALSE(qflash::is_positive_finite(-std::numeric_limits<double>::max()));
  CHECK(qflash::is_positive_finite(denorm));
  CHECK(qflash::is_positive_finite(std::numeric_limits<double>::min() - denorm));
  CHECK(qflash::is_positive_finite(std::numeric_limits<double>::min()));
  CHECK(qflash::is_positive_finite(std::numeric_limits<double>::max()));
  CHECK(qflash::is_positive_finite(1.0));
  CHECK(qflash::double_bits(1.0) == 0x3ff0000000000000ull);
  CHECK(qflash::double_bits(-0.0) == 0x8000000000000000ull);
}

TEST_CASE("dyadic: round_to_int64 rounds half away from zero, exactly", "[dyadic]") {
  Rng rng(qflash::test::test_seed(0x0d0d1));
  INFO(qflash::test::seed_text(rng.seed()));
  ViolationLog log("round_to_int64");
  auto check = [&](double x) {
    const std::int64_t got = qflash::round_to_int64(x);
    const long long want = std::llround(x);  // C: halfway cases away from zero
    log.check(got == want, [&] {
      std::ostringstream os;
      os << "round_to_int64(" << describe_double(x) << ") = " << got << ", expected " << want;
      return os.str();
    });
  };
  for (int k = 0; k < 200; ++k) {  // ties +-(k + 1/2) and their neighbours
    const double tie = k + 0.5;
    for (const double x : {tie, -tie, std::nextafter(tie, 0.0), std::nextafter(tie, 1e9),
                           -std::nextafter(tie, 0.0), -std::nextafter(tie, 1e9)}) {
      check(x);
    }
  }
  CHECK(qflash::round_to_int64(0.5) == 1);
  CHECK(qflash::round_to_int64(-0.5) == -1);
  CHECK(qflash::round_to_int64(1.5) == 2);
  CHECK(qflash::round_to_int64(2.5) == 3);
  CHECK(qflash::round_to_int64(-2.5) == -3);
  CHECK(qflash::round_to_int64(0.49999999999999994) == 0);
  CHECK(qflash::round_to_int64(0.0) == 0);
  CHECK(qflash::round_to_int64(-0.0) == 0);
  CHECK(qflash::round_to_int64(std::numeric_limits<double>::denorm_min()) == 0);
  CHECK(qflash::round_to_int64(-std::numeric_limits<double>::min()) == 0);
  // Large magnitudes up to the documented bound |x| < 2^62 (integers there are exact).
  const double near_bound = std::nextafter(std::ldexp(1.0, 62), 0.0);
  CHECK(qflash::round_to_int64(near_bound) == (std::int64_t{1} << 62) - 512);
  CHECK(qflash::round_to_int64(-near_bound) == -((std::int64_t{1} << 62) - 512));
  CHECK(qflash::round_to_int64(std::ldexp(1.0, 52) + 1.0) == (std::int64_t{1} << 52) + 1);
  CHECK(qflash::round_to_int64(std::ldexp(1.0, 53)) == std::int64_t{1} << 53);
  for (int e = -1074; e < 62; ++e) {
    check(std::ldexp(1.0, e));
    check(-std::ldexp(1.0, e));
    check(std::nextafter(std::ldexp(1.0, e), 0.0));
    check(std::ldexp(1.5, e - 1));
  }
  for (int i = 0; i < 200000; ++i) {
    const double mag = std::ldexp(rng.unit() + 0.5, static_cast<int>(rng.uniform(-60, 61)));
    check(rng.chance(1, 2) ? -mag : mag);
  }
  INFO(log.describe());
  CHECK(log.ok());
}
