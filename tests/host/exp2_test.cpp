// SPDX-License-Identifier: Apache-2.0
// policy/exp2.hpp. PolyExp2: exhaustive over every fraction (mantissa), every u in [0, 2^24]
// (apply) and every d in [0, 2^22] (rescale_q30), against exact 2^-x (long double) and exact
// integer rounding. PaperShiftExp2: against an independent int64 emulation of the published
// Triton arithmetic, and the documented fixes where that arithmetic misbehaves.
//
// Observed bounds (Pmax 255/127/15, F 16), relative to Pmax * 2^G * 2^(-f / 2^16):
//   quadratic mantissa 0.2725 % (polynomial alone 0.2680 %), cubic 0.0189 % (polynomial alone
//   0.0117 %; the rest is integer rounding of the coefficients and of the Horner steps, at most
//   Degree units of E ~ 2^14..2^15). rescale_q30: 0.2680 % / 0.0117 % + rounding.
#include <cmath>
#include <cstdint>
#include <limits>
#include <qflash/core/status.hpp>
#include <qflash/policy/exp2.hpp>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "support/catch.hpp"
#include "support/compare.hpp"
#include "support/host_generators.hpp"

namespace {

using qflash::Exp2Value;
using qflash::PaperShiftExp2;
using qflash::PolyExp2;
using qflash::Status;
using qflash::test::Rng;
using qflash::test::ViolationLog;

/// 2^(-f / 2^F) for every fraction f, in long double.
std::vector<long double> exp2_table(int fraction_bits) {
  std::vector<long double> t(std::size_t{1} << fraction_bits);
  for (std::size_t f = 0; f < t.size(); ++f) {
    t[f] = std::exp2(-static_cast<long double>(f) / static_cast<long double>(t.size()));
  }
  return t;
}

/// round(x / 2^k), half away from zero, for x >= 0 and every k >= 0 (exact, int64).
std::int64_t round_div_pow2(std::int64_t x, int k) {
  if (k == 0) return x;
  if (k >= 63) return 0;
  return (x + (std::int64_t{1} << (k - 1))) >> k;
}

/// The documented relative error of the polynomial itself (numerics brief, section 3).
template <int Degree>
constexpr long double kPolyRelError = Degree == 2 ? 0.0027L : 0.00012L;

template <class E>
std::string name() {
  std::ostringstream os;
  os << "PolyExp2<Pmax " << E::pmax << ", SumBits " << E::sum_bits << ", F " << E::fraction_bits
     << "> (G " << E::guard_bits << ", a_1 " << E::template coefficient<1> << ")";
  return os.str();
}

template <class E, int... K>
std::int64_t coefficient_sum_of(std::integer_sequence<int, K...>) {
  return (std::int64_t{E::template coefficient<K>} + ...);
}

template <class E, int Degree>
void check_mantissa() {
  constexpr int F = E::fraction_bits;
  constexpr int G = E::guard_bits;
  const auto table = exp2_table(F);
  const long double a0 = static_cast<long double>(E::pmax) * static_cast<long double>(1 << G);
  ViolationLog log(name<E>() + " mantissa, degree " + std::to_string(Degree));
  INFO(name<E>() << ", degree " << Degree);
  long double worst_rel = 0, worst_excess = -1e9L;
  CHECK(E::template coefficient<0> == E::pmax * (1 << G));  // a_0 exact
  CHECK(E::mantissa(0) == E::pmax * (1 << G));
  // G is the largest guard that keeps Pmax * 2^G < 2^30 (twice every partial sum fits int32).
  CHECK(static_cast<std::int64_t>(E::pmax) << G < (std::int64_t{1} << 30));
  CHECK(static_cast<std::int64_t>(E::pmax) << (G + 1) >= (std::int64_t{1} << 30));
  for (std::int32_t f = 0; f < (1 << F); ++f) {
    const std::int32_t e = E::mantissa(f);
    const long double exact = a0 * table[static_cast<std::size_t>(f)];
    const long double err = std::fabs(static_cast<long double>(e) - exact);
    worst_rel = std::fmax(worst_rel, err / exact);
    worst_excess = std::fmax(worst_excess, err - kPolyRelError<Degree> * exact);
    // The polynomial's own error, plus at most 1/2 per rounded coefficient and 1/2 per
    // rounded Horner step (each damped by f / 2^F < 1): Degree units in all.
    log.check(err <= kPolyRelError<Degree> * exact + Degree, [&] {
      std::ostringstream os;
      os << "mantissa(" << f << ") = " << e << ", exact " << static_cast<double>(exact);
      return os.str();
    });
    // The documented range [Pmax 2^(G-1), Pmax 2^G].
    log.check(e >= E::pmax * (1 << (G - 1)) && e <= E::pmax * (1 << G), [&] {
      std::ostringstream os;
      os << "mantissa(" << f << ") = " << e << " outside [Pmax 2^(G-1), Pmax 2^G]";
      return os.str();
    });
  }
  // Endpoint-exact: the integer coefficients sum to a_0 / 2 (E(2^F) = Pmax 2^(G-1)) up to their
  // own rounding, 1/2 each.
  const std::int64_t coefficient_sum =
      coefficient_sum_of<E>(std::make_integer_sequence<int, Degree + 1>{});
  CHECK(2 * std::abs(coefficient_sum - E::pmax * (1 << (G - 1))) <= Degree);
  INFO(log.describe());
  INFO("max relative error " << static_cast<double>(worst_rel) * 100 << " %, max excess over "
                             << static_cast<double>(kPolyRelError<Degree>) * 100
                             << " % of exact: " << static_cast<double>(worst_excess) << " units");
  CHECK(log.ok());
  // Tight observed bounds (see the file comment), so that a regression shows. With F = 16 the
  // mantissa has 14-15 bits and rounding adds at most ~0.007 %; other F keep the loose bound.
  if constexpr (F == 16) {
    CHECK(worst_rel <= (Degree == 2 ? 0.002735L : 0.000195L));
    CHECK(worst_excess <= 0.5L * Degree);
  }
}

/// apply over every u in [0, u_end]: exact rounding of the mantissa, ranges, the weight, and
/// the distance to Pmax * 2^(-u / 2^F). The loop runs over (octave, fraction) with the mantissa
/// and 2^-f tabulated once, so that the sweep stays fast in unoptimised sanitizer builds.
template <class E, int Degree>
void check_apply(std::int64_t u_end) {
  constexpr int F = E::fraction_bits;
  constexpr int G = E::guard_bits;
  constexpr int S = E::sum_bits;
  constexpr std::int32_t kFractions = std::int32_t{1} << F;
  const auto table = exp2_table(F);
  std::vector<std::int64_t> mant(static_cast<std::size_t>(kFractions));
  for (std::int32_t f = 0; f < kFractions; ++f) mant[static_cast<std::size_t>(f)] = E::mantissa(f);
  ViolationLog log(name<E>() + " apply");
  std::int32_t prev_p = E::pmax, prev_w = E::pmax << S;
  int worst_rise = 0;
  for (std::int64_t u64 = 0; u64 <= u_end;) {
    const int q = static_cast<int>(u64 >> F);
    const long double scale = static_cast<long double>(E::pmax) * std::ldexp(1.0L, -q);
    const long double slack = 0.5L + std::ldexp(static_cast<long double>(Degree), -(q + G));
    const int shift_p = q + G, shift_w = q + G - S;
    for (std::int32_t f = static_cast<std::int32_t>(u64 & (kFractions - 1));
         f < kFractions && u64 <= u_end; ++f, ++u64) {
      const auto u = static_cast<std::int32_t>(u64);
      const Exp2Value v = E::apply(u, {});
      const std::int64_t e = mant[static_cast<std::size_t>(f)];
      const std::int64_t want_p = round_div_pow2(e, shift_p);
      const std::int64_t want_w = round_div_pow2(e, shift_w);
      // Accuracy against the real function: the mantissa's bound, scaled, plus the rounding.
      const long double exact = scale * table[static_cast<std::size_t>(f)];
      const long double err = static_cast<long double>(v.p) - exact;
      const bool ok = v.p == want_p && v.weight == want_w && v.p >= 0 && v.p <= E::pmax &&
                      std::abs(v.weight - (v.p << S)) <= (S == 0 ? 0 : (1 << (S - 1))) &&
                      err <= kPolyRelError<Degree> * exact + slack &&
                      -err <= kPolyRelError<Degree> * exact + slack;
      if (!ok) {
        log.check(false, [&] {
          std::ostringstream os;
          os << "apply(" << u << ") = {" << v.p << ", " << v.weight << "}, expected {" << want_p
             << ", " << want_w << "} (E = " << e << ", exact p " << static_cast<double>(exact)
             << ")";
          return os.str();
        });
      }
      const int rise = std::max(v.p - prev_p, v.weight - prev_w);
      worst_rise = rise > worst_rise ? rise : worst_rise;
      prev_p = v.p;
      prev_w = v.weight;
    }
  }
  const Exp2Value at0 = E::apply(0, {});
  CHECK(at0.p == E::pmax);
  CHECK(at0.weight == E::pmax << S);
  // Never rises at all (the monotone case below checks the whole domain exhaustively).
  CHECK(worst_rise <= 1);
  INFO(log.describe());
  CHECK(log.ok());
}

/// u < 0 is 0; above 2^24 the result is 0 for every configuration tested here (q + G >= 32
/// happens before u reaches 2^31; for F = 16 that is q >= 32 - G).
template <class E>
void check_apply_edges() {
  constexpr int F = E::fraction_bits;
  constexpr int G = E::guard_bits;
  const Exp2Value zero = E::apply(0, {});
  for (const std::int32_t u :
       {-1, -2, -65536, -(1 << 30), std::numeric_limits<std::int32_t>::min()}) {
    const Exp2Value v = E::apply(u, {});
    CHECK(v.p == zero.p);
    CHECK(v.weight == zero.weight);
  }
  // Sparse sweep of the rest of the int32 range: p and weight vanish once q + G - S >= 32.
  ViolationLog log(name<E>() + " apply above 2^24");
  for (std::int64_t u = std::int64_t{1} << 24; u <= std::numeric_limits<std::int32_t>::max();
       u += 4099) {
    const Exp2Value v = E::apply(static_cast<std::int32_t>(u), {});
    const int q = static_cast<int>(u >> F);
    const std::int64_t e = E::mantissa(static_cast<std::int32_t>(u & ((1 << F) - 1)));
    log.check(v.p == round_div_pow2(e, q + G) && v.weight == round_div_pow2(e, q + G - E::sum_bits),
              [&] {
                std::ostringstream os;
                os << "apply(" << u << ") = {" << v.p << ", " << v.weight << "}";
                return os.str();
              });
  }
  const Exp2Value top = E::apply(std::numeric_limits<std::int32_t>::max(), {});
  CHECK(top.p == 0);
  CHECK(top.weight == 0);
  INFO(log.describe());
  CHECK(log.ok());
}

/// rescale_q30 over every d in [0, d_end]: 2^30 at 0, never above, monotone, and close to
/// 2^30 * 2^(-d / 2^F).
template <class E, int Degree>
void check_rescale(std::int64_t d_end) {
  constexpr int F = E::fraction_bits;
  const auto table = exp2_table(F);
  ViolationLog log(name<E>() + " rescale_q30");
  CHECK(E::rescale_q30(0, {}) == qflash::kOneQ30);
  CHECK(E::rescale_q30(-1, {}) == qflash::kOneQ30);
  CHECK(E::rescale_q30(std::numeric_limits<std::int32_t>::min(), {}) == qflash::kOneQ30);
  CHECK(E::rescale_q30(std::numeric_limits<std::int32_t>::max(), {}) == 0);
  std::int32_t prev = qflash::kOneQ30;
  long double worst_rel = 0;
  for (std::int64_t d64 = 0; d64 <= d_end; ++d64) {
    const auto d = static_cast<std::int32_t>(d64);
    const std::int32_t r = E::rescale_q30(d, {});
    const int q = static_cast<int>(d64 >> F);
    const long double exact =
        std::ldexp(table[static_cast<std::size_t>(d64 & ((1 << F) - 1))], 30 - q);
    const long double err = std::fabs(static_cast<long double>(r) - exact);
    if (exact >= 1e6L) worst_rel = std::fmax(worst_rel, err / exact);
    const long double slack = 0.5L + std::ldexp(static_cast<long double>(Degree), -q);
    const bool ok =
        r >= 0 && r <= qflash::kOneQ30 && r <= prev && err <= kPolyRelError<Degree> * exact + slack;
    log.check(ok, [&] {
      std::ostringstream os;
      os << "rescale_q30(" << d << ") = " << r << " (previous " << prev << "), exact "
         << static_cast<double>(exact);
      return os.str();
    });
    prev = r;
  }
  INFO(log.describe());
  INFO("max relative error where 2^30 2^-d >= 10^6: " << static_cast<double>(worst_rel) * 100
                                                      << " %");
  CHECK(log.ok());
  CHECK(worst_rel <= (Degree == 2 ? 0.00269L : 0.000118L));
}

/// apply_visible(u) == apply(u) for every u >= 0: every u below u_end, then the octave
/// boundaries, the cap and a sparse sweep to the top of int32.
template <class E>
void check_apply_visible(std::int64_t u_end) {
  constexpr int F = E::fraction_bits;
  ViolationLog log(name<E>() + " apply_visible");
  std::int64_t compared = 0;
  const auto compare = [&](std::int64_t u) {
    const auto u32 = static_cast<std::int32_t>(u);
    const Exp2Value a = E::apply(u32, {}), b = E::apply_visible(u32, {});
    ++compared;
    log.check(a.p == b.p && a.weight == b.weight, [&] {
      std::ostringstream os;
      os << "apply(" << u << ") = {" << a.p << ", " << a.weight << "} but apply_visible = {" << b.p
         << ", " << b.weight << "}";
      return os.str();
    });
  };
  for (std::int64_t u = 0; u <= u_end; ++u) compare(u);
  constexpr std::int64_t kTop = std::numeric_limits<std::int32_t>::max();
  for (std::int64_t octave = 0; (octave << F) <= kTop; ++octave) {
    for (const std::int64_t u : {(octave << F) - 1, octave << F, (octave << F) + 1}) {
      if (u >= 0 && u <= kTop) compare(u);
    }
  }
  for (const std::int64_t u : {std::int64_t{E::kVisibleCap} - 1, std::int64_t{E::kVisibleCap},
                               std::int64_t{E::kVisibleCap} + 1, kTop}) {
    compare(u);
  }
  for (std::int64_t u = u_end; u <= kTop; u += 65537) compare(u);
  INFO(compared << " values compared");
  CHECK(compared > u_end);
  INFO(log.describe());
  CHECK(log.ok());
}

/// rescale_end == 0 skips rescale_q30 (its Q1.30 polynomial depends on Degree and F only).
template <class E, int Degree>
void check_poly_exp2(std::int64_t apply_end, std::int64_t rescale_end) {
  SECTION("mantissa") { check_mantissa<E, Degree>(); }
  SECTION("apply") { check_apply<E, Degree>(apply_end); }
  SECTION("apply edges") { check_apply_edges<E>(); }
  SECTION("apply_visible == apply for u >= 0") { check_apply_visible<E>(apply_end); }
  if (rescale_end > 0) {
    SECTION("rescale_q30") { check_rescale<E, Degree>(rescale_end); }
  }
  SECTION("calibrate") {
    typename E::Params p{};
    CHECK(E::calibrate(0.25, p) == Status::ok);
  }
}

/// Counts the places where a larger distance gives a larger value (mantissa over f; apply's p
/// and weight over u).
template <class E>
void check_monotone(ViolationLog& log, std::int64_t u_end) {
  constexpr int F = E::fraction_bits;
  for (std::int32_t f = 1; f < (1 << F); ++f) {
    const std::int32_t a = E::mantissa(f - 1), b = E::mantissa(f);
    log.check(b <= a, [&] {
      std::ostringstream os;
      os << name<E>() << ": mantissa(" << f - 1 << ") = " << a << " < mantissa(" << f
         << ") = " << b;
      return os.str();
    });
  }
  Exp2Value prev = E::apply(0, {});
  for (std::int64_t u = 1; u <= u_end; ++u) {
    const Exp2Value v = E::apply(static_cast<std::int32_t>(u), {});
    log.check(v.p <= prev.p && v.weight <= prev.weight, [&] {
      std::ostringstream os;
      os << name<E>() << ": apply(" << u - 1 << ") = {" << prev.p << ", " << prev.weight
         << "} but apply(" << u << ") = {" << v.p << ", " << v.weight << "}";
      return os.str();
    });
    prev = v;
  }
}

}  // namespace

TEST_CASE("exp2: PolyExp2 quadratic, Pmax 255 (the Precise preset), exhaustive", "[exp2]") {
  check_poly_exp2<PolyExp2<2, 255, 6, 16>, 2>(std::int64_t{1} << 24, std::int64_t{1} << 22);
}

TEST_CASE("exp2: PolyExp2 cubic, Pmax 255 (the PreciseCubic preset), exhaustive", "[exp2]") {
  check_poly_exp2<PolyExp2<3, 255, 6, 16>, 3>(std::int64_t{1} << 24, std::int64_t{1} << 22);
}

TEST_CASE("exp2: PolyExp2 with Pmax 127 and 15, exhaustive", "[exp2]") {
  SECTION("quadratic, Pmax 127") {
    check_poly_exp2<PolyExp2<2, 127, 6, 16>, 2>(std::int64_t{1} << 22, 0);
  }
  SECTION("cubic, Pmax 127") {
    check_poly_exp2<PolyExp2<3, 127, 6, 16>, 3>(std::int64_t{1} << 22, 0);
  }
  SECTION("quadratic, Pmax 15") {
    check_poly_exp2<PolyExp2<2, 15, 6, 16>, 2>(std::int64_t{1} << 22, 0);
  }
  SECTION("cubic, Pmax 15, SumBits 0") {
    check_poly_exp2<PolyExp2<3, 15, 0, 16>, 3>(std::int64_t{1} << 22, 0);
  }
}

TEST_CASE("exp2: PolyExp2 with other fraction widths (F 12 and 20)", "[exp2]") {
  SECTION("F 12, SumBits 4") {
    check_poly_exp2<PolyExp2<2, 255, 4, 12>, 2>(std::int64_t{1} << 20, std::int64_t{1} << 18);
  }
  SECTION("F 20, Pmax 63") {  // G = 5: a short mantissa (E in [1008, 2016])
    check_poly_exp2<PolyExp2<3, 63, 4, 20>, 3>(std::int64_t{1} << 22, std::int64_t{1} << 21);
  }
}

// Known defect (reported): the Horner step rounds the inner term to an integer before
// multiplying it by f, so E(f + 1) can exceed E(f) by one unit where the slope of E is below
// one unit per step (1,465 places for the quadratic at Pmax 255, the first E(21835) = 25970 <
// E(21836) = 25971). Through apply this makes a key farther below the maximum get a larger P:
// PolyExp2<2, 255, 6, 16>::apply(28702).p == 188 but apply(28703).p == 189.
TEST_CASE("exp2: PolyExp2 mantissa and apply are monotone non-increasing", "[exp2]") {
  ViolationLog log("PolyExp2 monotonicity");
  // 33 octaves: beyond q + G - SumBits >= 32 both p and weight are 0.
  check_monotone<PolyExp2<2, 255, 6, 16>>(log, std::int64_t{33} << 16);
  check_monotone<PolyExp2<3, 255, 6, 16>>(log, std::int64_t{33} << 16);
  check_monotone<PolyExp2<2, 127, 6, 16>>(log, std::int64_t{1} << 20);
  check_monotone<PolyExp2<2, 15, 6, 16>>(log, std::int64_t{1} << 20);
  INFO(log.describe());
  CHECK(log.ok());
}

// ------------------------------------------------------------------------------------------
// PaperShiftExp2

namespace {

/// The published arithmetic (numerics brief section 1, steps 3-4), emulated in int64.
struct PaperEmulation {
  bool well_defined;  ///< shift count < 63 and a non-negative base: the paper's p is exact
  std::int64_t p;     ///< the paper's p (valid when well_defined)
  std::int64_t P;     ///< the paper's P before any int8 cast, with a negative base shifted as
                      ///< the GPU does (count clamped: -1 for a negative base)
};

PaperEmulation emulate_paper(std::int64_t u, const PaperShiftExp2::Params& c) {
  const std::int64_t x = -u;
  const std::int64_t q = (x * c.exp_m) >> 16;
  const std::int64_t r = x + q * c.r;
  const std::int64_t base = (r >> 1) + c.r;
  const bool defined = q < 63 && base >= 0;
  const std::int64_t shifted = q >= 63 ? (base < 0 ? -1 : 0) : (base >> q);
  const std::int64_t P = (shifted * c.req_m + (std::int64_t{1} << 15)) >> 16;
  return {defined, shifted, P};
}

/// round(x), half away from zero, of a long double (exact for |x| < 2^63).
std::int64_t round_ld(long double x) { return std::llround(x); }

/// The released code's constants for sm_scale, without calibrate's range checks: the arithmetic
/// of `apply` is defined for all of them (only its accuracy needs the checks).
PaperShiftExp2::Params released_constants(double sm_scale) {
  PaperShiftExp2::Params p{};
  p.r = static_cast<std::int32_t>(std::llround(1.0 / sm_scale));
  p.exp_m = static_cast<std::int32_t>(-std::llround(sm_scale * 65536.0));
  p.req_m = static_cast<std::int32_t>(std::llround(sm_scale * 127.0 * 65536.0));
  p.l_m = static_cast<std::int32_t>(std::llround(1073741824.0 / p.r));
  return p;
}

PaperShiftExp2::Params calibrated(double sm_scale) {
  PaperShiftExp2::Params p{};
  REQUIRE(PaperShiftExp2::calibrate(sm_scale, p) == Status::ok);
  return p;
}

}  // namespace

TEST_CASE("exp2: PaperShiftExp2 calibrate constants", "[exp2][paper]") {
  Rng rng(qflash::test::test_seed(0xca11b));
  INFO(qflash::test::seed_text(rng.seed()));
  ViolationLog log("PaperShiftExp2::calibrate");
  for (int i = 0; i < 20000; ++i) {
    // log-uniform 1 / sm_scale in [0.5, 2^23.99] (within 127 * 2^17)
    const double inverse = std::exp2(rng.unit() * 24.98 - 1.0);
    const double s = 1.0 / inverse;
    PaperShiftExp2::Params p{};
    if (PaperShiftExp2::calibrate(s, p) != Status::ok) {
      // Rejected only where the 16-bit octave estimate fails (or req_m is 0).
      const std::int64_t r = std::llround(inverse), e = std::llround(s * 65536.0);
      log.check(!PaperShiftExp2::octave_estimate_holds(r, -e) || r > PaperShiftExp2::max_r,
                [&] { return "calibrate rejected " + std::to_string(s); });
      continue;
    }
    const long double exact_inverse = 1.0L / static_cast<long double>(s);
    const long double frac = exact_inverse - std::floor(exact_inverse);
    if (std::fabs(frac - 0.5L) < 1e-9L) continue;  // too close to a tie for double division
    const std::int64_t want_r = round_ld(exact_inverse);
    const std::int64_t want_exp_m = -round_ld(static_cast<long double>(s) * 65536.0L);
    const long double req = static_cast<long double>(s) * 127.0L * 65536.0L;  // exact
    const long double req_frac = req - std::floor(req);
    const bool req_tie = std::fabs(req_frac - 0.5L) < 1e-9L * req;
    const std::int64_t want_req = round_ld(req);
    const std::int64_t want_l = ((std::int64_t{1} << 31) + want_r) / (2 * want_r);  // round(2^30/r)
    log.check(p.r == want_r && p.exp_m == want_exp_m && (req_tie || p.req_m == want_req) &&
                  p.l_m == want_l && p.r >= 1 && p.r <= PaperShiftExp2::max_r &&
                  p.exp_m >= -(1 << 17) && p.exp_m <= 0,
              [&] {
                std::ostringstream os;
                os << "sm_scale " << s << ": {r " << p.r << ", exp_m " << p.exp_m << ", req_m "
                   << p.req_m << ", l_m " << p.l_m << "}, expected {" << want_r << ", "
                   << want_exp_m << ", " << want_req << ", " << want_l << "}";
                return os.str();
              });
  }
  INFO(log.describe());
  CHECK(log.ok());

  // Boundaries: R = round(1 / sm_scale) must land in [1, 127 * 2^17] (req_m >= 1).
  const PaperShiftExp2::Params sentinel{-7, -7, -7, -7};
  auto status = [&](double s) {
    PaperShiftExp2::Params p = sentinel;
    const Status st = PaperShiftExp2::calibrate(s, p);
    if (st != Status::ok) {  // nothing written on error
      CHECK(p.r == -7);
      CHECK(p.exp_m == -7);
      CHECK(p.req_m == -7);
      CHECK(p.l_m == -7);
    }
    return st;
  };
  // sm_scale = 2 gives R = 1 but exp_m = -2^17: the octave estimate is off by a factor 2.
  CHECK(status(2.0) == Status::scale_out_of_range);
  CHECK(status(1.0) == Status::ok);
  CHECK(calibrated(1.0).r == 1);
  CHECK(calibrated(1.0).exp_m == -65536);
  CHECK(status(std::nextafter(2.0, 3.0)) == Status::scale_out_of_range);
  // Past 2^16 (exp_m = -1) the estimate holds only near R = 2^16.
  CHECK(status(1.0 / 65536.0) == Status::ok);
  CHECK(status(1.0 / 80000.0) == Status::scale_out_of_range);
  CHECK(status(1.0 / 16646144.0) == Status::scale_out_of_range);
  CHECK(status(1.0 / 16646143.9) == Status::scale_out_of_range);
  CHECK(status(1.0 / 16646144.1) == Status::scale_out_of_range);  // req_m would round to 0
  CHECK(status(1.0 / 16646145.0) == Status::scale_out_of_range);
  CHECK(status(1.0 / 16777216.0) == Status::scale_out_of_range);
  CHECK(status(1e-30) == Status::scale_out_of_range);
  CHECK(status(1e300) == Status::scale_out_of_range);
  CHECK(status(0.0) == Status::invalid_scale);
  CHECK(status(-0.0) == Status::invalid_scale);
  CHECK(status(-0.01) == Status::invalid_scale);
  CHECK(status(std::numeric_limits<double>::quiet_NaN()) == Status::invalid_scale);
  CHECK(status(std::numeric_limits<double>::infinity()) == Status::invalid_scale);
  CHECK(status(std::numeric_limits<double>::denorm_min()) == Status::scale_out_of_range);
  // Known constants.
  const auto p162 = calibrated(1.0 / 162.0);
  CHECK(p162.r == 162);
  CHECK(p162.exp_m == -405);   // round(-65536 / 162) = round(-404.54)
  CHECK(p162.req_m == 51377);  // round(127 * 65536 / 162) = round(51377.38)
  CHECK(p162.l_m == 6628036);  // round(2^30 / 162) = round(6628035.95)
}

TEST_CASE(
    "exp2: PaperShiftExp2 equals the published arithmetic where it is defined, and the "
    "documented fixes elsewhere",
    "[exp2][paper]") {
  Rng rng(qflash::test::test_seed(0x9a9e7));
  INFO(qflash::test::seed_text(rng.seed()));
  ViolationLog log("PaperShiftExp2::apply");
  std::int64_t original_minus_one = 0, original_128 = 0, original_wrap_fixed = 0;
  const std::vector<double> rs = {1,   2,   30,  83,   101,    127,     128,
                                  162, 254, 255, 1000, 100000, 1000000, 16646144};
  for (const double R : rs) {
    for (const double delta : {-0.45, -0.2, 0.0, 0.2, 0.45}) {
      const double inverse = R + delta;
      if (inverse < 0.5 || inverse > 16646144.0) continue;  // req_m >= 1
      const PaperShiftExp2::Params c = released_constants(1.0 / inverse);
      auto check_u = [&](std::int64_t u) {
        const Exp2Value v = PaperShiftExp2::apply(static_cast<std::int32_t>(u), c);
        const std::int64_t p = PaperShiftExp2::shift_exp(static_cast<std::int32_t>(u), c);
        const PaperEmulation orig = emulate_paper(u, c);
        if (orig.P < 0) ++original_minus_one;
        if (orig.P == 128) ++original_128;
        const std::int64_t want = orig.well_defined ? std::min<std::int64_t>(orig.P, 127) : 0;
        if (orig.P >= 128 && v.p == 127) ++original_wrap_fixed;
        const bool ok = v.p == want && v.weight == v.p && v.p >= 0 && v.p <= 127 && p >= 0 &&
                        p <= 2 * std::int64_t{c.r} &&
                        (!orig.well_defined || p == std::min<std::int64_t>(orig.p, 2 * c.r));
        log.check(ok, [&] {
          std::ostringstream os;
          os << "1/sm_scale " << inverse << " (r " << c.r << ", exp_m " << c.exp_m << ", req_m "
             << c.req_m << "): apply(" << u << ") = " << v.p << " (p " << p << "), expected "
             << want << " (published p " << orig.p << ", P " << orig.P
             << (orig.well_defined ? "" : ", undefined") << ")";
          return os.str();
        });
      };
      // Every u up to 2^16, multiples of R and their neighbours, a dense stride over the whole
      // int32 range, and random values.
      for (std::int64_t u = 0; u <= 65536; ++u) check_u(u);
      for (std::int64_t k = 0; k <= 80; ++k) {
        const auto base = static_cast<std::int64_t>(k * c.r);
        for (std::int64_t u = base - 2; u <= base + 2; ++u) {
          if (u >= 0 && u <= std::numeric_limits<std::int32_t>::max()) check_u(u);
        }
      }
      for (std::int64_t u = 65536; u <= std::numeric_limits<std::int32_t>::max(); u += 32771) {
        check_u(u);
      }
      for (int i = 0; i < 2000; ++i)
        check_u(rng.uniform(0, std::numeric_limits<std::int32_t>::max()));
      check_u(std::numeric_limits<std::int32_t>::max());
      // u < 0 is treated as 0.
      CHECK(PaperShiftExp2::apply(-5, c).p == PaperShiftExp2::apply(0, c).p);
      CHECK(PaperShiftExp2::apply(std::numeric_limits<std::int32_t>::min(), c).p ==
            PaperShiftExp2::apply(0, c).p);
    }
  }
  INFO(log.describe());
  CHECK(log.ok());
  // The sweep reached both published defects (P = -1 from a sign-filled shift, and P = 128
  // that wraps to -128), and the library returned 0 and 127 there.
  INFO("published P < 0: " << original_minus_one << ", P == 128: " << original_128);
  CHECK(original_minus_one > 0);
  CHECK(original_128 > 0);
  CHECK(original_wrap_fixed > 0);
}

TEST_CASE("exp2: PaperShiftExp2 rescale_q30 is alpha * l_m, capped at 2^30", "[exp2][paper]") {
  ViolationLog log("PaperShiftExp2::rescale_q30");
  for (const double inverse :
       {1.0, 2.0, 30.0, 83.0, 101.3, 127.0, 162.0, 254.6, 1000.0, 1e5, 1e6, 16646144.0}) {
    const PaperShiftExp2::Params c = released_constants(1.0 / inverse);
    auto check_d = [&](std::int64_t d) {
      const std::int32_t got = PaperShiftExp2::rescale_q30(static_cast<std::int32_t>(d), c);
      const std::int64_t p = PaperShiftExp2::shift_exp(static_cast<std::int32_t>(d), c);
      const std::int64_t want = std::min<std::int64_t>(p * c.l_m, qflash::kOneQ30);
      log.check(got == want && got >= 0 && got <= qflash::kOneQ30, [&] {
        std::ostringstream os;
        os << "1/sm_scale " << inverse << ": rescale_q30(" << d << ") = " << got << ", expected "
           << want;
        return os.str();
      });
    };
    for (std::int64_t d = 0; d <= 20000; ++d) check_d(d);
    for (std::int64_t d = 20000; d <= std::numeric_limits<std::int32_t>::max(); d += 1048573) {
      check_d(d);
    }
    CHECK(PaperShiftExp2::rescale_q30(-3, c) == PaperShiftExp2::rescale_q30(0, c));
    CHECK(PaperShiftExp2::rescale_q30(std::numeric_limits<std::int32_t>::max(), c) == 0);
  }
  INFO(log.describe());
  CHECK(log.ok());
}

// Once 1 / sm_scale > 127 * 2^17 the released requantization multiplier req_m =
// round(sm_scale * 127 * 2^16) is 0 and every probability would be 0; calibrate therefore
// accepts R only up to 127 * 2^17 (req_m >= 1) and every accepted scale keeps P(max) positive.
TEST_CASE("exp2: PaperShiftExp2 gives the row maximum a positive P for every accepted scale",
          "[exp2][paper]") {
  ViolationLog log("PaperShiftExp2 P at u = 0");
  for (double inverse = 0.5; inverse < 2 * 16777216.5; inverse *= 1.01) {
    PaperShiftExp2::Params c{};
    if (PaperShiftExp2::calibrate(1.0 / inverse, c) != Status::ok) continue;
    const std::int32_t p0 = PaperShiftExp2::apply(0, c).p;
    log.check(p0 > 0, [&] {
      std::ostringstream os;
      os << "1/sm_scale " << inverse << " (r " << c.r << ", req_m " << c.req_m
         << "): apply(0).p = " << p0;
      return os.str();
    });
  }
  for (const double inverse : {65536.0, 1e6, 16646143.9, 16646144.1, 16700000.0, 16777216.0}) {
    PaperShiftExp2::Params c{};
    const Status s = PaperShiftExp2::calibrate(1.0 / inverse, c);
    if (inverse <= 65536.0) {
      REQUIRE(s == Status::ok);
      CHECK(PaperShiftExp2::apply(0, c).p > 0);
    } else {
      CHECK(s == Status::scale_out_of_range);
    }
  }
  INFO(log.describe());
  CHECK(log.ok());
}
