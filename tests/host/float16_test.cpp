// SPDX-License-Identifier: Apache-2.0
// core/float16.hpp against the compiler's own binary16 (`_Float16`, g++ 12 on x86-64: IEEE
// round to nearest even in libgcc's soft-fp), on a strided sweep of every float exponent and on
// every rounding boundary of every binary16 value.
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <qflash/core/float16.hpp>
#include <sstream>

#include "support/catch.hpp"
#include "support/compare.hpp"

namespace {

using qflash::test::ViolationLog;

std::uint16_t gcc_half_bits(float f) {
  return std::bit_cast<std::uint16_t>(static_cast<_Float16>(f));
}

bool is_half_nan(std::uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0; }

std::string hex(std::uint32_t v) {
  std::ostringstream os;
  os << "0x" << std::hex << v;
  return os.str();
}

void check_conversion(ViolationLog& log, float f) {
  const std::uint16_t got = qflash::float_to_half_bits(f);
  const std::uint16_t want = gcc_half_bits(f);
  const bool ok = std::isnan(f) ? (is_half_nan(got) && ((got ^ want) & 0x8000u) == 0) : got == want;
  log.check(ok, [&] {
    return "float_to_half_bits(" + hex(std::bit_cast<std::uint32_t>(f)) + ") = " + hex(got) +
           ", _Float16 gives " + hex(want);
  });
}

}  // namespace

TEST_CASE("float16: float_to_half_bits matches _Float16 on a strided sweep of all floats",
          "[float16]") {
  ViolationLog log("float_to_half_bits strided sweep");
  // Stride 997 (prime): ~4.3 million patterns, every exponent of both signs with mantissas that
  // vary in their low bits (round/sticky) as well as their high ones.
  constexpr std::uint64_t kStride = 997;
  for (std::uint64_t i = 0; i < (std::uint64_t{1} << 32); i += kStride) {
    check_conversion(log, std::bit_cast<float>(static_cast<std::uint32_t>(i)));
  }
  // Every float exponent with the mantissas that matter for rounding: 0, 1, the half-ulp and
  // sticky patterns, all ones.
  for (std::uint32_t sign = 0; sign < 2; ++sign) {
    for (std::uint32_t e = 0; e < 256; ++e) {
      for (const std::uint32_t m : {0x0u, 0x1u, 0xfffu, 0x1000u, 0x1001u, 0x2000u, 0x3000u,
                                    0x7fffffu, 0x400000u, 0x7fe000u, 0x7ff000u, 0x7ff001u}) {
        check_conversion(log, std::bit_cast<float>((sign << 31) | (e << 23) | m));
      }
    }
  }
  INFO(log.describe());
  CHECK(log.ok());
}

TEST_CASE("float16: float_to_half_bits at every binary16 rounding boundary", "[float16]") {
  ViolationLog log("float_to_half_bits boundaries");
  // For each finite half value v and its successor in magnitude, the exact midpoint (12
  // significant bits: exact in float), one float ulp either side of it, and v itself with its
  // float neighbours. The successor of 65504 is 65536 (rounds to infinity).
  for (std::uint32_t h = 0; h < 0x7c00u; ++h) {
    for (const std::uint32_t sign : {0x0000u, 0x8000u}) {
      const auto bits = static_cast<std::uint16_t>(sign | h);
      const float v = qflash::half_bits_to_float(bits);
      const float next =
          h + 1 == 0x7c00u ? (sign ? -65536.0f : 65536.0f)
                           : qflash::half_bits_to_float(static_cast<std::uint16_t>(sign | (h + 1)));
      const float mid = (v + next) * 0.5f;
      REQUIRE(static_cast<double>(mid) ==
              (static_cast<double>(v) + static_cast<double>(next)) / 2.0);  // exact
      const float away =
          sign ? -std::numeric_limits<float>::infinity() : std::numeric_limits<float>::infinity();
      for (const float f : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, away), v,
                            std::nextafter(v, 0.0f), std::nextafter(v, away)}) {
        check_conversion(log, f);
      }
    }
  }
  INFO(log.describe());
  CHECK(log.ok());
}

TEST_CASE("float16: special values, overflow, underflow and ties to even", "[float16]") {
  const float inf = std::numeric_limits<float>::infinity();
  CHECK(qflash::float_to_half_bits(0.0f) == 0x0000u);
  CHECK(qflash::float_to_half_bits(-0.0f) == 0x8000u);
  CHECK(qflash::float_to_half_bits(inf) == 0x7c00u);
  CHECK(qflash::float_to_half_bits(-inf) == 0xfc00u);
  CHECK(is_half_nan(qflash::float_to_half_bits(std::numeric_limits<float>::quiet_NaN())));
  CHECK(is_half_nan(qflash::float_to_half_bits(std::numeric_limits<float>::signaling_NaN())));
  CHECK(
      is_half_nan(qflash::float_to_half_bits(std::bit_cast<float>(0x7f800001u))));  // tiny payload
  CHECK(is_half_nan(qflash::float_to_half_bits(std::bit_cast<float>(0xff800001u))));
  CHECK(qflash::float_to_half_bits(65504.0f) == 0x7bffu);
  CHECK(qflash::float_to_half_bits(std::nextafter(65520.0f, 0.0f)) == 0x7bffu);
  CHECK(qflash::float_to_half_bits(65520.0f) == 0x7c00u);  // tie to even: overflow
  CHECK(qflash::float_to_half_bits(-65520.0f) == 0xfc00u);
  CHECK(qflash::float_to_half_bits(std::numeric_limits<float>::max()) == 0x7c00u);
  CHECK(qflash::float_to_half_bits(0x1p-24f) == 0x0001u);  // smallest subnormal
  CHECK(qflash::float_to_half_bits(0x1p-25f) == 0x0000u);  // tie to even zero
  CHECK(qflash::float_to_half_bits(-0x1p-25f) == 0x8000u);
  CHECK(qflash::float_to_half_bits(std::nextafter(0x1p-25f, 1.0f)) == 0x0001u);
  CHECK(qflash::float_to_half_bits(0x1.8p-24f) == 0x0002u);                      // 1.5 -> 2 (even)
  CHECK(qflash::float_to_half_bits(0x1.4p-23f) == 0x0002u);                      // 2.5 -> 2 (even)
  CHECK(qflash::float_to_half_bits(0x1p-14f) == 0x0400u);                        // smallest normal
  CHECK(qflash::float_to_half_bits(std::nextafter(0x1p-14f, 0.0f)) == 0x0400u);  // rounds up
  CHECK(qflash::float_to_half_bits(1.0f + 0x1p-11f) == 0x3c00u);  // tie -> even (1.0)
  CHECK(qflash::float_to_half_bits(1.0f + 0x3p-11f) == 0x3c02u);  // tie -> even (up)
  CHECK(qflash::float_to_half_bits(std::numeric_limits<float>::denorm_min()) == 0x0000u);
  CHECK(qflash::float_to_half_bits(-std::numeric_limits<float>::denorm_min()) == 0x8000u);
  CHECK(qflash::float_to_half_bits(1.0f) == 0x3c00u);
  CHECK(qflash::float_to_half_bits(-2.0f) == 0xc000u);
}

TEST_CASE("float16: half_bits_to_float on all 65536 patterns", "[float16]") {
  ViolationLog log("half_bits_to_float");
  for (std::uint32_t h = 0; h < 0x10000u; ++h) {
    const auto bits = static_cast<std::uint16_t>(h);
    const float got = qflash::half_bits_to_float(bits);
    const float want = static_cast<float>(std::bit_cast<_Float16>(bits));
    if (is_half_nan(bits)) {
      // NaN stays NaN with its sign (the payload's quiet bit is not part of the contract).
      log.check(std::isnan(got) && std::signbit(got) == ((h & 0x8000u) != 0),
                [&] { return "NaN " + hex(h) + " -> " + hex(std::bit_cast<std::uint32_t>(got)); });
      continue;
    }
    log.check(std::bit_cast<std::uint32_t>(got) == std::bit_cast<std::uint32_t>(want), [&] {
      return "half_bits_to_float(" + hex(h) + ") = " + hex(std::bit_cast<std::uint32_t>(got)) +
             ", _Float16 gives " + hex(std::bit_cast<std::uint32_t>(want));
    });
    // binary16 -> float -> binary16 is the identity on every non-NaN pattern.
    log.check(qflash::float_to_half_bits(got) == bits,
              [&] { return "round trip of " + hex(h) + " changed it"; });
  }
  CHECK(qflash::half_bits_to_float(0x0001u) == 0x1p-24f);
  CHECK(qflash::half_bits_to_float(0x03ffu) == 0x1.ff8p-15f);
  CHECK(qflash::half_bits_to_float(0x7bffu) == 65504.0f);
  CHECK(qflash::half_bits_to_float(0xfc00u) == -std::numeric_limits<float>::infinity());
  CHECK(std::signbit(qflash::half_bits_to_float(0x8000u)));
  INFO(log.describe());
  CHECK(log.ok());
}
