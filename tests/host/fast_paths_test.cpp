// SPDX-License-Identifier: Apache-2.0
// The hot-path helpers equal their general twins on their documented domains: the CUDA kernel
// and the reference both use the fast forms, so these equalities keep the fast forms honest.
#include <cstdint>
#include <qflash/core/fast_divide.hpp>
#include <qflash/core/fixed_point.hpp>
#include <random>

#include "support/catch.hpp"

namespace {

__extension__ using Int128 = __int128;

/// round(x / 2^s), half away from zero, in 128-bit arithmetic.
std::int64_t exact_round_shift(Int128 x, int s) {
  if (s == 0) return static_cast<std::int64_t>(x);
  const Int128 mag = x < 0 ? -x : x;
  const Int128 r = (mag + (Int128{1} << (s - 1))) >> s;
  return static_cast<std::int64_t>(x < 0 ? -r : r);
}

std::int64_t exact_divide(std::int64_t num, std::int64_t den, qflash::Rounding mode) {
  const Int128 mag = num < 0 ? -Int128{num} : Int128{num};
  Int128 q = mag / den;
  const Int128 r = mag - q * den;
  if (mode == qflash::Rounding::half_away_from_zero && 2 * r >= den) ++q;
  return static_cast<std::int64_t>(num < 0 ? -q : q);
}

}  // namespace

TEST_CASE("round_shift_bounded == round_shift for |x| <= 2^62, 0 <= s <= 62",
          "[fixed_point][fast]") {
  std::mt19937_64 rng(0xfa57);
  std::uniform_int_distribution<std::int64_t> wide(-(std::int64_t{1} << 62), std::int64_t{1} << 62);
  std::uniform_int_distribution<int> shift(0, 62);
  std::int64_t mismatches = 0;
  for (int i = 0; i < 2000000; ++i) {
    const std::int64_t x = i % 4 == 0 ? wide(rng) >> (i % 60) : wide(rng);
    const int s = shift(rng);
    mismatches += qflash::round_shift_bounded(x, s) != qflash::round_shift(x, s);
    mismatches += qflash::round_shift_bounded(x, s) != exact_round_shift(x, s);
  }
  // Exact ties of both signs and the domain edges.
  for (int s = 1; s <= 62; ++s) {
    for (const std::int64_t k : {0, 1, 2, 3, 1000}) {
      const Int128 tie128 = Int128{k} * (Int128{1} << s) + (Int128{1} << (s - 1));
      if (tie128 > (Int128{1} << 62)) continue;
      const auto tie = static_cast<std::int64_t>(tie128);
      CHECK(qflash::round_shift_bounded(tie, s) == k + 1);
      CHECK(qflash::round_shift_bounded(-tie, s) == -(k + 1));
    }
  }
  for (const std::int64_t x : {std::int64_t{1} << 62, -(std::int64_t{1} << 62), std::int64_t{0}}) {
    for (int s = 0; s <= 62; ++s)
      CHECK(qflash::round_shift_bounded(x, s) == exact_round_shift(x, s));
  }
  CHECK(mismatches == 0);
}

TEST_CASE("mul_round_shift_bounded == the exact product rounding", "[fixed_point][fast]") {
  std::mt19937_64 rng(0xb0b);
  std::uniform_int_distribution<std::int32_t> any32(INT32_MIN, INT32_MAX);
  std::uniform_int_distribution<int> shift(0, 62);
  std::int64_t mismatches = 0;
  for (int i = 0; i < 1000000; ++i) {
    const std::int32_t a = any32(rng), b = any32(rng);
    const int s = shift(rng);
    mismatches += qflash::mul_round_shift_bounded(a, b, s) != exact_round_shift(Int128{a} * b, s);
    const std::int64_t a64 = std::int64_t{a} * 2;  // |a64 * (b >> 1)| <= 2^62
    mismatches += qflash::mul_round_shift_bounded(a64, b >> 1, s) !=
                  exact_round_shift(Int128{a64} * (b >> 1), s);
  }
  CHECK(qflash::mul_round_shift_bounded(INT32_MIN, INT32_MIN, 62) == 1);
  CHECK(mismatches == 0);
}

TEST_CASE("mul_high: the high halves of 64- and 128-bit products", "[fixed_point][fast]") {
  std::mt19937_64 rng(0x41);
  for (int i = 0; i < 1000000; ++i) {
    const std::uint64_t a = rng(), b = rng();
    __extension__ using U128 = unsigned __int128;
    REQUIRE(qflash::mul_high(a, b) == static_cast<std::uint64_t>((U128{a} * b) >> 64));
    const auto a32 = static_cast<std::uint32_t>(a), b32 = static_cast<std::uint32_t>(b);
    REQUIRE(qflash::mul_high(a32, b32) ==
            static_cast<std::uint32_t>((std::uint64_t{a32} * b32) >> 32));
  }
  CHECK(qflash::mul_high(~std::uint64_t{0}, ~std::uint64_t{0}) == ~std::uint64_t{0} - 1);
  CHECK(qflash::mul_high(~std::uint32_t{0}, ~std::uint32_t{0}) == ~std::uint32_t{0} - 1);
}

TEST_CASE("divide_rounded == exact rounded division for every numerator", "[fixed_point][fast]") {
  std::mt19937_64 rng(0xd1);
  std::int64_t mismatches = 0;
  const auto check_all = [&](std::int64_t num, std::int64_t den) {
    for (const auto mode : {qflash::Rounding::half_away_from_zero, qflash::Rounding::toward_zero}) {
      const std::int64_t want = exact_divide(num, den, mode);
      mismatches += qflash::divide_rounded(num, den, mode) != want;
    }
  };
  for (int i = 0; i < 1000000; ++i) {
    const int den_bits = static_cast<int>(rng() % 62) + 1;
    const auto den = static_cast<std::int64_t>((rng() >> (64 - den_bits)) | 1u);
    const int num_bits = static_cast<int>(rng() % 63);
    auto num = static_cast<std::int64_t>(rng() >> (64 - num_bits - 1)) >> 1;
    if (rng() & 1) num = -num;
    check_all(num, den);
  }
  // Divisors near powers of two, quotients at exact ties and at the extremes.
  for (int k = 0; k < 62; ++k) {
    for (const std::int64_t delta : {-1, 0, 1}) {
      const std::int64_t den = (std::int64_t{1} << k) + delta;
      if (den <= 0) continue;
      for (const std::int64_t q : {0, 1, 2, 7, 1000, 123456789}) {
        for (const std::int64_t extra : {std::int64_t{0}, den / 2, den - 1, den / 2 + 1}) {
          const Int128 num = Int128{q} * den + extra;
          if (num >= (Int128{1} << 62)) continue;
          check_all(static_cast<std::int64_t>(num), den);
          check_all(-static_cast<std::int64_t>(num), den);
        }
      }
      check_all((std::int64_t{1} << 62) - 1, den);
      check_all(-(std::int64_t{1} << 62), den);
    }
  }
  CHECK(mismatches == 0);
}

TEST_CASE("FastDivide: multiply-high division equals n / d for n < 2^31", "[fast_paths]") {
  std::mt19937_64 rng(0xd1u);
  long long mismatches = 0;
  const auto check = [&](std::uint32_t n, std::uint32_t d) {
    const qflash::FastDivide f = qflash::FastDivide::make(d);
    mismatches += f.quotient(n) != n / d || f.divisor != d;
  };
  const std::uint32_t top = (std::uint32_t{1} << 31) - 1;
  for (int i = 0; i < 1000000; ++i) {
    const int d_bits = static_cast<int>(rng() % 31) + 1;
    const auto d = static_cast<std::uint32_t>(rng() >> (64 - d_bits)) | 1u;
    const std::uint32_t even = (d & ~1u) == 0 ? 2u : (d & ~1u);
    check(static_cast<std::uint32_t>(rng() >> 33), d);  // n in [0, 2^31)
    check(static_cast<std::uint32_t>(rng() >> 33), even);
  }
  // Divisors at and next to powers of two, dividends at multiples, just below them, and at the
  // top of the range (where the multiplier's error is largest).
  for (int k = 0; k < 31; ++k) {
    for (const std::int64_t delta : {-1, 0, 1}) {
      const std::int64_t d = (std::int64_t{1} << k) + delta;
      if (d < 1 || d > top) continue;
      const auto du = static_cast<std::uint32_t>(d);
      for (std::uint32_t n :
           {0u, 1u, du - 1, du, du + 1, top, top - 1, top - du, top / du * du, top / du * du - 1}) {
        if (n <= top) check(n, du);
      }
    }
  }
  for (std::uint32_t d : {3u, 5u, 6u, 7u, 12u, 24u, 49u, 197u, 641u, 65537u, top}) {
    for (std::uint32_t n = top; n > top - 100000; --n) check(n, d);
  }
  CHECK(qflash::FastDivide::make(0).quotient(12345) == 12345);  // 0 is treated as 1
  CHECK(mismatches == 0);
}
