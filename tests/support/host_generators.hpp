// SPDX-License-Identifier: Apache-2.0
/// @file
/// Seeded, platform-independent random generators for the test suites.
///
/// `std::uniform_int_distribution` differs between standard libraries, so the suites use their
/// own generator (SplitMix64) and their own unbiased range reduction: a seed reproduces the same
/// inputs on every host, and GPU tests can regenerate exactly what a host test used.
///
/// Every randomized test takes its seed from `test_seed(default)`, which honours the environment
/// variable QFLASH_TEST_SEED (decimal or 0x-hex), and prints it on failure (`seed_text`).
/// Header-only and free of Catch2, so .cu translation units may include it too.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

namespace qflash::test {

/// 128-bit integers for exact reference arithmetic (a GCC/Clang extension; __extension__ keeps
/// -Wpedantic quiet).
__extension__ typedef __int128 int128;
__extension__ typedef unsigned __int128 uint128;

/// The seed of a randomized test: QFLASH_TEST_SEED when set and parseable, else `fallback`.
inline std::uint64_t test_seed(std::uint64_t fallback) {
  const char* text = std::getenv("QFLASH_TEST_SEED");
  if (text == nullptr || *text == '\0') return fallback;
  char* end = nullptr;
  const unsigned long long value = std::strtoull(text, &end, 0);
  return (end != nullptr && *end == '\0') ? static_cast<std::uint64_t>(value) : fallback;
}

/// "seed 0x... (rerun with QFLASH_TEST_SEED=0x...)", for INFO messages.
inline std::string seed_text(std::uint64_t seed) {
  std::ostringstream os;
  os << "seed 0x" << std::hex << seed << " (rerun with QFLASH_TEST_SEED=0x" << seed << ")";
  return os.str();
}

/// SplitMix64 (Steele, Lea, Flood 2014): 64-bit state, full period, passes BigCrush.
class Rng {
 public:
  explicit Rng(std::uint64_t seed) noexcept : state_(seed), seed_(seed) {}

  std::uint64_t seed() const noexcept { return seed_; }

  std::uint64_t next_u64() noexcept {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  std::uint32_t next_u32() noexcept { return static_cast<std::uint32_t>(next_u64() >> 32); }

  /// Uniform in [0, bound) for bound >= 1, unbiased (Lemire's multiply-and-reject).
  std::uint64_t below(std::uint64_t bound) noexcept {
    const std::uint64_t threshold = (std::uint64_t{0} - bound) % bound;
    for (;;) {
      const uint128 m = static_cast<uint128>(next_u64()) * bound;
      if (static_cast<std::uint64_t>(m) >= threshold) return static_cast<std::uint64_t>(m >> 64);
    }
  }

  /// Uniform in [lo, hi] (inclusive), every int64 range including the full one.
  std::int64_t uniform(std::int64_t lo, std::int64_t hi) noexcept {
    const std::uint64_t span = static_cast<std::uint64_t>(hi) - static_cast<std::uint64_t>(lo);
    const std::uint64_t offset =
        span == std::numeric_limits<std::uint64_t>::max() ? next_u64() : below(span + 1u);
    return static_cast<std::int64_t>(static_cast<std::uint64_t>(lo) + offset);
  }
  std::int32_t uniform32(std::int32_t lo, std::int32_t hi) noexcept {
    return static_cast<std::int32_t>(uniform(lo, hi));
  }

  /// True with probability num / den.
  bool chance(std::uint64_t num, std::uint64_t den) noexcept { return below(den) < num; }

  /// Uniform double in [0, 1) with 53 random bits.
  double unit() noexcept { return static_cast<double>(next_u64() >> 11) * 0x1p-53; }

  /// An int64 whose magnitude has a uniformly random bit length (0..63), random sign, and now
  /// and then one of the extremes: dense near 0, near powers of two and near INT64_MIN/MAX.
  std::int64_t wide_int64() noexcept {
    switch (below(16)) {
      case 0:
        return std::numeric_limits<std::int64_t>::min() + static_cast<std::int64_t>(below(4));
      case 1:
        return std::numeric_limits<std::int64_t>::max() - static_cast<std::int64_t>(below(4));
      default:
        break;
    }
    const auto bits = static_cast<int>(below(64));
    const std::uint64_t mag = bits == 0 ? 0u : (next_u64() >> (64 - bits));
    const auto value = static_cast<std::int64_t>(mag);
    return chance(1, 2) ? -value : value;
  }

  /// The int32 analogue of `wide_int64`.
  std::int32_t wide_int32() noexcept {
    switch (below(16)) {
      case 0:
        return std::numeric_limits<std::int32_t>::min() + static_cast<std::int32_t>(below(4));
      case 1:
        return std::numeric_limits<std::int32_t>::max() - static_cast<std::int32_t>(below(4));
      default:
        break;
    }
    const auto bits = static_cast<int>(below(32));
    const std::uint32_t mag = bits == 0 ? 0u : (next_u32() >> (32 - bits));
    const auto value = static_cast<std::int32_t>(mag);
    return chance(1, 2) ? -value : value;
  }

  std::int8_t int8(int lo = -128, int hi = 127) noexcept {
    return static_cast<std::int8_t>(uniform(lo, hi));
  }

 private:
  std::uint64_t state_;
  std::uint64_t seed_;
};

/// `count` int8 values uniform in [lo, hi].
inline std::vector<std::int8_t> random_int8(Rng& rng, std::size_t count, int lo = -128,
                                            int hi = 127) {
  std::vector<std::int8_t> v(count);
  for (auto& x : v) x = rng.int8(lo, hi);
  return v;
}

/// `count` int32 values uniform in [lo, hi].
inline std::vector<std::int32_t> random_int32(Rng& rng, std::size_t count, std::int32_t lo,
                                              std::int32_t hi) {
  std::vector<std::int32_t> v(count);
  for (auto& x : v) x = rng.uniform32(lo, hi);
  return v;
}

}  // namespace qflash::test
