// SPDX-License-Identifier: Apache-2.0
// core/fixed_point.hpp against exact 128-bit integer arithmetic: every helper is defined for
// every input of its documented domain (UBSan runs over this file), and rounds as it says.
#include <cstdint>
#include <limits>
#include <qflash/core/fixed_point.hpp>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "support/catch.hpp"
#include "support/compare.hpp"
#include "support/host_generators.hpp"

namespace {

using qflash::Rounding;
using qflash::test::int128;
using qflash::test::Rng;
using qflash::test::uint128;
using qflash::test::ViolationLog;

constexpr std::int64_t kI64Min = std::numeric_limits<std::int64_t>::min();
constexpr std::int64_t kI64Max = std::numeric_limits<std::int64_t>::max();
constexpr std::int32_t kI32Min = std::numeric_limits<std::int32_t>::min();
constexpr std::int32_t kI32Max = std::numeric_limits<std::int32_t>::max();

std::string str128(int128 v) {
  if (v == 0) return "0";
  const bool neg = v < 0;
  uint128 mag = neg ? uint128{0} - static_cast<uint128>(v) : static_cast<uint128>(v);
  std::string digits;
  while (mag != 0) {
    digits.insert(digits.begin(), static_cast<char>('0' + static_cast<int>(mag % 10)));
    mag /= 10;
  }
  return neg ? "-" + digits : digits;
}

/// round(x / 2^s), half away from zero, exactly, for |x| < 2^126 and 0 <= s <= 125.
int128 ref_round_shift(int128 x, int s) {
  if (s == 0) return x;
  const bool neg = x < 0;
  const uint128 mag = neg ? uint128{0} - static_cast<uint128>(x) : static_cast<uint128>(x);
  const uint128 q = (mag + (uint128{1} << (s - 1))) >> s;
  return neg ? -static_cast<int128>(q) : static_cast<int128>(q);
}

/// floor(x / 2^s) exactly, for every s >= 0.
int128 ref_floor_shift(int128 x, int s) {
  if (s >= 126) return x < 0 ? -1 : 0;
  const int128 d = int128{1} << s;
  int128 q = x / d;
  if (x % d != 0 && x < 0) --q;
  return q;
}

/// num / den rounded half away from zero or toward zero, exactly.
int128 ref_divide(int128 num, int128 den, Rounding mode) {
  int128 q = num / den;  // truncates
  const int128 r = num - q * den;
  if (mode == Rounding::half_away_from_zero) {
    const int128 twice = r < 0 ? -2 * r : 2 * r;
    if (twice >= den) q += num < 0 ? -1 : 1;
  }
  return q;
}

/// Interesting int64 values: the extremes, small values, powers of two and their neighbours.
std::vector<std::int64_t> edge_int64() {
  std::vector<std::int64_t> v = {kI64Min, kI64Min + 1, kI64Min + 2, kI64Max, kI64Max - 1, 0,
                                 1,       -1,          2,           -2,      3,           -3};
  for (int k = 1; k < 63; ++k) {
    const std::int64_t p = std::int64_t{1} << k;
    for (const std::int64_t x : {p - 1, p, p + 1}) {
      v.push_back(x);
      v.push_back(-x);
    }
  }
  return v;
}

std::vector<std::int32_t> edge_int32() {
  std::vector<std::int32_t> v = {kI32Min, kI32Min + 1, kI32Max, kI32Max - 1, 0, 1,
                                 -1,      2,           -2,      3,           -3};
  for (int k = 1; k < 31; ++k) {
    const std::int32_t p = std::int32_t{1} << k;
    for (const std::int32_t x : {p - 1, p, p + 1}) {
      v.push_back(x);
      v.push_back(-x);
    }
  }
  return v;
}

}  // namespace

TEST_CASE("fixed_point: round_shift(int64) is exact for edges, ties and every shift 0..70",
          "[fixed_point]") {
  ViolationLog log("round_shift(int64)");
  auto check = [&](std::int64_t x, int s) {
    const std::int64_t got = qflash::round_shift(x, s);
    const int128 want = ref_round_shift(x, s);
    log.check(got == want, [&] {
      std::ostringstream os;
      os << "round_shift(" << x << ", " << s << ") = " << got << ", expected " << str128(want);
      return os.str();
    });
  };
  for (const std::int64_t x : edge_int64()) {
    for (int s = 0; s <= 70; ++s) check(x, s);
  }
  // Exact ties (2m + 1) * 2^(s-1), both signs, and their neighbours: the tie goes away from 0.
  Rng rng(qflash::test::test_seed(0x7f1e5));
  INFO(qflash::test::seed_text(rng.seed()));
  for (int s = 1; s <= 63; ++s) {
    for (int rep = 0; rep < 64; ++rep) {
      const std::int64_t m_max = (kI64Max >> (s - 1)) / 2 - 1;  // keeps (2m + 2) * 2^(s-1) in range
      const std::int64_t m = rng.uniform(0, m_max < 0 ? 0 : m_max);
      const int128 tie = (2 * int128{m} + 1) * (int128{1} << (s - 1));
      if (tie > kI64Max) continue;
      const auto t = static_cast<std::int64_t>(tie);
      for (const std::int64_t x : {t, -t, t - 1, -(t - 1), t < kI64Max ? t + 1 : t}) check(x, s);
      CHECK(qflash::round_shift(t, s) == m + 1);
      CHECK(qflash::round_shift(-t, s) == -(m + 1));
    }
  }
  // Hand-checked values.
  CHECK(qflash::round_shift(std::int64_t{5}, 1) == 3);
  CHECK(qflash::round_shift(std::int64_t{-5}, 1) == -3);
  CHECK(qflash::round_shift(std::int64_t{-6}, 2) == -2);  // -1.5 -> -2
  CHECK(qflash::round_shift(kI64Min, 63) == -1);          // -1 exactly
  CHECK(qflash::round_shift(kI64Min, 64) == -1);          // -0.5 -> -1 (away from zero)
  CHECK(qflash::round_shift(kI64Min, 65) == 0);           // -0.25
  CHECK(qflash::round_shift(kI64Max, 64) == 0);           // just below 0.5
  CHECK(qflash::round_shift(kI64Max, 63) == 1);
  CHECK(qflash::round_shift(kI64Max, 1) == std::int64_t{1} << 62);
  CHECK(qflash::round_shift(kI64Min, 0) == kI64Min);
  CHECK(qflash::round_shift(std::int64_t{1}, 1) == 1);  // 0.5 -> 1
  CHECK(qflash::round_shift(std::int64_t{-1}, 1) == -1);
  CHECK(qflash::round_shift(std::int64_t{1}, 2) == 0);
  CHECK(qflash::round_shift(std::int64_t{12345}, 1000) == 0);
  constexpr std::int64_t at_compile_time = qflash::round_shift(std::int64_t{-7}, 1);
  CHECK(at_compile_time == -4);
  INFO(log.describe());
  CHECK(log.ok());
}

TEST_CASE("fixed_point: round_shift(int64) on random values and shifts", "[fixed_point]") {
  Rng rng(qflash::test::test_seed(0x5eed0001));
  INFO(qflash::test::seed_text(rng.seed()));
  ViolationLog log("round_shift(int64) random");
  for (int i = 0; i < 300000; ++i) {
    const std::int64_t x = rng.wide_int64();
    const int s = static_cast<int>(rng.uniform(0, 70));
    const std::int64_t got = qflash::round_shift(x, s);
    log.check(got == ref_round_shift(x, s), [&] {
      std::ostringstream os;
      os << "round_shift(" << x << ", " << s << ") = " << got << ", expected "
         << str128(ref_round_shift(x, s));
      return os.str();
    });
  }
  INFO(log.describe());
  CHECK(log.ok());
}

TEST_CASE("fixed_point: round_shift(int32) matches exact rounding for every shift 0..70",
          "[fixed_point]") {
  Rng rng(qflash::test::test_seed(0x5eed0002));
  INFO(qflash::test::seed_text(rng.seed()));
  ViolationLog log("round_shift(int32)");
  auto check = [&](std::int32_t x, int s) {
    const std::int32_t got = qflash::round_shift(x, s);
    static_assert(std::is_same_v<decltype(qflash::round_shift(x, s)), std::int32_t>);
    log.check(got == ref_round_shift(x, s), [&] {
      std::ostringstream os;
      os << "round_shift(int32 " << x << ", " << s << ") = " << got << ", expected "
         << str128(ref_round_shift(x, s));
      return os.str();
    });
  };
  for (const std::int32_t x : edge_int32()) {
    for (int s = 0; s <= 70; ++s) check(x, s);
  }
  for (int s = 1; s <= 31; ++s) {  // ties of both signs
    for (int rep = 0; rep < 32; ++rep) {
      const std::int64_t m = rng.uniform(0, (std::int64_t{kI32Max} >> s));
      const std::int64_t tie = (2 * m + 1) << (s - 1);
      if (tie > kI32Max) continue;
      check(static_cast<std::int32_t>(tie), s);
      check(static_cast<std::int32_t>(-tie), s);
    }
  }
  for (int i = 0; i < 200000; ++i) check(rng.wide_int32(), static_cast<int>(rng.uniform(0, 70)));
  CHECK(qflash::round_shift(kI32Min, 31) == -1);
  CHECK(qflash::round_shift(kI32Min, 32) == -1);  // -0.5 -> -1
  CHECK(qflash::round_shift(kI32Min, 33) == 0);
  CHECK(qflash::round_shift(kI32Max, 32) == 0);
  CHECK(qflash::round_shift(kI32Max, 31) == 1);
  INFO(log.describe());
  CHECK(log.ok());
}

TEST_CASE("fixed_point: mul_round_shift forms the product exactly in 64 bits", "[fixed_point]") {
  Rng rng(qflash::test::test_seed(0x5eed0003));
  INFO(qflash::test::seed_text(rng.seed()));
  ViolationLog log("mul_round_shift");
  for (int i = 0; i < 200000; ++i) {
    const std::int32_t a = rng.wide_int32(), b = rng.wide_int32();
    const int s = static_cast<int>(rng.uniform(0, 70));
    const int128 want = ref_round_shift(int128{a} * b, s);
    const std::int64_t got = qflash::mul_round_shift(a, b, s);
    log.check(got == want, [&] {
      std::ostringstream os;
      os << "mul_round_shift(" << a << ", " << b << ", " << s << ") = " << got;
      return os.str();
    });
    // The int64 overload, with |a64 * b| < 2^63 as documented.
    const std::int64_t a64 = rng.uniform(-(std::int64_t{1} << 31), std::int64_t{1} << 31) *
                             rng.uniform(-(std::int64_t{1} << 30), std::int64_t{1} << 30);
    const std::int32_t b64 = static_cast<std::int32_t>(rng.uniform(-1, 1));
    const std::int32_t small = static_cast<std::int32_t>(rng.uniform(-(1 << 30), 1 << 30));
    const std::int64_t a_fit = a64 >> 32;  // |a_fit| <= 2^29, |a_fit * small| < 2^60
    log.check(qflash::mul_round_shift(a64, b64, s) == ref_round_shift(int128{a64} * b64, s),
              [&] { return "mul_round_shift(int64) by -1/0/1"; });
    log.check(qflash::mul_round_shift(a_fit, small, s) == ref_round_shift(int128{a_fit} * small, s),
              [&] {
                std::ostringstream os;
                os << "mul_round_shift(int64 " << a_fit << ", " << small << ", " << s << ")";
                return os.str();
              });
  }
  CHECK(qflash::mul_round_shift(kI32Min, kI32Min, 62) == 1);  // 2^62 / 2^62
  CHECK(qflash::mul_round_shift(kI32Min, kI32Max, 31) == -kI32Max);
  CHECK(qflash::mul_round_shift(kI32Min, kI32Max, 62) == -1);  // -(2^62 - 2^31) / 2^62 ~ -1
  CHECK(qflash::mul_round_shift(kI32Max, kI32Max, 0) == std::int64_t{kI32Max} * kI32Max);
  INFO(log.describe());
  CHECK(log.ok());
}

TEST_CASE("fixed_point: shift_right_floor saturates for counts at or above the width",
          "[fixed_point]") {
  ViolationLog log("shift_right_floor");
  for (const std::int32_t x : edge_int32()) {
    for (int s = 0; s <= 200; ++s) {
      const std::int32_t got = qflash::shift_right_floor(x, s);
      log.check(got == ref_floor_shift(x, s), [&] {
        std::ostringstream os;
        os << "shift_right_floor(int32 " << x << ", " << s << ") = " << got;
        return os.str();
      });
    }
  }
  for (const std::int64_t x : edge_int64()) {
    for (int s = 0; s <= 200; ++s) {
      const std::int64_t got = qflash::shift_right_floor(x, s);
      log.check(got == ref_floor_shift(x, s), [&] {
        std::ostringstream os;
        os << "shift_right_floor(int64 " << x << ", " << s << ") = " << got;
        return os.str();
      });
    }
  }
  // The host/GPU divergence the helper exists for: x86 masks the count, the GPU clamps it.
  CHECK(qflash::shift_right_floor(std::int32_t{-5}, 32) == -1);
  CHECK(qflash::shift_right_floor(std::int32_t{5}, 32) == 0);
  CHECK(qflash::shift_right_floor(std::int32_t{5}, 33) == 0);
  CHECK(qflash::shift_right_floor(kI32Min, 31) == -1);
  CHECK(qflash::shift_right_floor(kI32Max, 31) == 0);
  CHECK(qflash::shift_right_floor(std::int64_t{-5}, 64) == -1);
  CHECK(qflash::shift_right_floor(kI64Max, 64) == 0);
  CHECK(qflash::shift_right_floor(kI64Min, 63) == -1);
  CHECK(qflash::shift_right_floor(std::int64_t{-1}, 1000) == -1);
  INFO(log.describe());
  CHECK(log.ok());
}

TEST_CASE("fixed_point: round_shift_nonneg over its domain 0 <= x < 2^31", "[fixed_point]") {
  Rng rng(qflash::test::test_seed(0x5eed0004));
  INFO(qflash::test::seed_text(rng.seed()));
  ViolationLog log("round_shift_nonneg");
  auto check = [&](std::uint32_t x, int s) {
    const std::uint32_t got = qflash::round_shift_nonneg(x, s);
    const int128 want = ref_round_shift(x, s);
    log.check(got == want, [&] {
      std::ostringstream os;
      os << "round_shift_nonneg(" << x << ", " << s << ") = " << got << ", expected "
         << str128(want);
      return os.str();
    });
  };
  std::vector<std::uint32_t> edges = {
      0u, 1u, 2u, 3u, (1u << 30) - 1u, 1u << 30, (1u << 30) + 1u, (1u << 31) - 1u, (1u << 31) - 2u};
  for (int k = 1; k < 31; ++k) {
    for (const std::uint32_t x : {(1u << k) - 1u, 1u << k, (1u << k) + 1u}) edges.push_back(x);
  }
  for (const std::uint32_t x : edges) {
    for (int s = 0; s <= 64; ++s) check(x, s);
  }
  for (int s = 1; s <= 31; ++s) {  // exact ties round up
    for (int rep = 0; rep < 64; ++rep) {
      const std::uint64_t m = static_cast<std::uint64_t>(rng.uniform(0, ((1ll << 31) - 1) >> s));
      const std::uint64_t tie = (2 * m + 1) << (s - 1);
      if (tie >= (1ull << 31)) continue;
      check(static_cast<std::uint32_t>(tie), s);
      check(static_cast<std::uint32_t>(tie - 1), s);
    }
  }
  for (int i = 0; i < 300000; ++i) {
    check(static_cast<std::uint32_t>(rng.uniform(0, (1ll << 31) - 1)),
          static_cast<int>(rng.uniform(0, 40)));
  }
  INFO(log.describe());
  CHECK(log.ok());
}

TEST_CASE("fixed_point: divide_rounded in both modes against 128-bit division", "[fixed_point]") {
  Rng rng(qflash::test::test_seed(0x5eed0005));
  INFO(qflash::test::seed_text(rng.seed()));
  ViolationLog log("divide_rounded");
  auto check = [&](std::int64_t num, std::int64_t den) {
    for (const Rounding mode : {Rounding::half_away_from_zero, Rounding::toward_zero}) {
      const std::int64_t got = qflash::divide_rounded(num, den, mode);
      const int128 want = ref_divide(num, den, mode);
      log.check(got == want, [&] {
        std::ostringstream os;
        os << "divide_rounded(" << num << ", " << den << ", "
           << (mode == Rounding::toward_zero ? "toward_zero" : "half_away") << ") = " << got
           << ", expected " << str128(want);
        return os.str();
      });
    }
  };
  const std::vector<std::int64_t> dens = {1,
                                          2,
                                          3,
                                          4,
                                          5,
                                          7,
                                          1000,
                                          (std::int64_t{1} << 31) - 1,
                                          std::int64_t{1} << 31,
                                          std::int64_t{1} << 62,
                                          kI64Max - 1,
                                          kI64Max};
  for (const std::int64_t num : edge_int64()) {
    for (const std::int64_t den : dens) check(num, den);
  }
  for (int i = 0; i < 200000; ++i) {
    std::int64_t den = rng.wide_int64();
    if (den == kI64Min) den = kI64Max;
    den = den < 0 ? -den : den;
    if (den == 0) den = 1;
    check(rng.wide_int64(), den);
  }
  // Exact ties k + 1/2 of both signs, and the values next to them.
  for (int i = 0; i < 20000; ++i) {
    const std::int64_t half = rng.uniform(1, std::int64_t{1} << rng.uniform(1, 40));
    const std::int64_t den = 2 * half;
    const std::int64_t k = rng.uniform(0, kI64Max / den - 1);
    const std::int64_t tie = k * den + half;
    check(tie, den);
    check(-tie, den);
    check(tie - 1, den);
    check(-(tie - 1), den);
    check(tie + 1, den);
    CHECK(qflash::divide_rounded(tie, den, Rounding::half_away_from_zero) == k + 1);
    CHECK(qflash::divide_rounded(-tie, den, Rounding::half_away_from_zero) == -(k + 1));
    CHECK(qflash::divide_rounded(-tie, den, Rounding::toward_zero) == -k);
  }
  CHECK(qflash::divide_rounded(kI64Min, 1, Rounding::half_away_from_zero) == kI64Min);
  CHECK(qflash::divide_rounded(kI64Min, 2, Rounding::toward_zero) == kI64Min / 2);
  CHECK(qflash::divide_rounded(kI64Min, kI64Max, Rounding::half_away_from_zero) == -1);
  CHECK(qflash::divide_rounded(kI64Max, kI64Max, Rounding::half_away_from_zero) == 1);
  CHECK(qflash::divide_rounded(-7, 2, Rounding::toward_zero) == -3);
  CHECK(qflash::divide_rounded(-7, 2, Rounding::half_away_from_zero) == -4);
  CHECK(qflash::divide_rounded(-5, 3, Rounding::half_away_from_zero) == -2);
  CHECK(qflash::divide_rounded(4, 3, Rounding::half_away_from_zero) == 1);
  INFO(log.describe());
  CHECK(log.ok());
}

namespace {

template <class OutT, class InT>
void check_saturate(ViolationLog& log, InT x) {
  const int128 lo = std::numeric_limits<OutT>::min();
  const int128 hi = static_cast<int128>(std::numeric_limits<OutT>::max());
  const int128 v = static_cast<int128>(x);
  const int128 want = v < lo ? lo : (v > hi ? hi : v);
  const OutT got = qflash::saturate_cast<OutT>(x);
  static_assert(std::is_same_v<decltype(qflash::saturate_cast<OutT>(x)), OutT>);
  log.check(static_cast<int128>(got) == want, [&] {
    std::ostringstream os;
    os << "saturate_cast<" << (std::is_signed_v<OutT> ? "s" : "u") << sizeof(OutT) * 8 << ">("
       << (std::is_signed_v<InT> ? "s" : "u") << sizeof(InT) * 8 << " " << str128(v)
       << ") = " << str128(static_cast<int128>(got)) << ", expected " << str128(want);
    return os.str();
  });
}

template <class InT>
void saturate_all_outputs(ViolationLog& log, InT x) {
  check_saturate<std::int8_t>(log, x);
  check_saturate<std::int16_t>(log, x);
  check_saturate<std::int32_t>(log, x);
  check_saturate<std::int64_t>(log, x);
  check_saturate<std::uint8_t>(log, x);
  check_saturate<std::uint16_t>(log, x);
  check_saturate<std::uint32_t>(log, x);
  check_saturate<std::uint64_t>(log, x);
}

template <class InT>
void saturate_sweep(ViolationLog& log, Rng& rng) {
  const auto lo = std::numeric_limits<InT>::min();
  const auto hi = std::numeric_limits<InT>::max();
  std::vector<InT> values = {lo,     hi,    static_cast<InT>(lo + 1), static_cast<InT>(hi - 1),
                             InT{0}, InT{1}};
  if constexpr (std::is_signed_v<InT>) values.push_back(InT{-1});
  for (const std::int64_t edge : {127ll, 128ll, 255ll, 256ll, 32767ll, 32768ll, 65535ll, 65536ll,
                                  2147483647ll, 2147483648ll, 4294967295ll, 4294967296ll}) {
    for (const std::int64_t e : {edge, -edge, edge - 1, -edge - 1, edge + 1}) {
      if (static_cast<int128>(e) >= static_cast<int128>(lo) &&
          static_cast<int128>(e) <= static_cast<int128>(hi)) {
        values.push_back(static_cast<InT>(e));
      }
    }
  }
  for (int i = 0; i < 2000; ++i) {
    const std::uint64_t bits = rng.next_u64() >> rng.uniform(0, 63);
    values.push_back(static_cast<InT>(bits));
  }
  for (const InT x : values) saturate_all_outputs(log, x);
}

}  // namespace

TEST_CASE("fixed_point: saturate_cast clamps every integer type into every other",
          "[fixed_point]") {
  Rng rng(qflash::test::test_seed(0x5eed0006));
  INFO(qflash::test::seed_text(rng.seed()));
  ViolationLog log("saturate_cast");
  saturate_sweep<std::int8_t>(log, rng);
  saturate_sweep<std::int16_t>(log, rng);
  saturate_sweep<std::int32_t>(log, rng);
  saturate_sweep<std::int64_t>(log, rng);
  saturate_sweep<std::uint8_t>(log, rng);
  saturate_sweep<std::uint16_t>(log, rng);
  saturate_sweep<std::uint32_t>(log, rng);
  saturate_sweep<std::uint64_t>(log, rng);
  CHECK(qflash::saturate_cast<std::int8_t>(std::int64_t{200}) == 127);
  CHECK(qflash::saturate_cast<std::int8_t>(std::int64_t{-200}) == -128);
  CHECK(qflash::saturate_cast<std::uint64_t>(std::int64_t{-1}) == 0u);
  CHECK(qflash::saturate_cast<std::int64_t>(std::numeric_limits<std::uint64_t>::max()) == kI64Max);
  CHECK(qflash::saturate_cast<std::int16_t>(std::uint32_t{40000}) == 32767);
  INFO(log.describe());
  CHECK(log.ok());
}

TEST_CASE("fixed_point: min, max and clamp", "[fixed_point]") {
  CHECK(qflash::min(3, -4) == -4);
  CHECK(qflash::max(3, -4) == 3);
  CHECK(qflash::clamp(5, -2, 2) == 2);
  CHECK(qflash::clamp(-5, -2, 2) == -2);
  CHECK(qflash::clamp(1, -2, 2) == 1);
  CHECK(qflash::clamp<std::int64_t>(kI64Min, -1, 1) == -1);
  CHECK(qflash::clamp<std::int64_t>(kI64Max, -1, 1) == 1);
  CHECK(qflash::IntTraits<std::int8_t>::min == -128);
  CHECK(qflash::IntTraits<std::int8_t>::max == 127);
  CHECK(qflash::IntTraits<std::uint32_t>::max == 4294967295u);
  CHECK(qflash::IntTraits<std::int64_t>::min == kI64Min);
  CHECK(qflash::IntTraits<std::uint64_t>::min == 0u);
}
