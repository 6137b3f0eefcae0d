// SPDX-License-Identifier: Apache-2.0
/// @file
/// Scale-range tests: where a predicate on positive doubles flips from true to false.
#pragma once

#include <bit>
#include <concepts>
#include <cstdint>
#include <type_traits>

#include "support/catch.hpp"

namespace qflash::test {

/// The value adjacent to the boundary of `ok` on the `ok_value` side, by bisection on the bit
/// patterns of positive floats or doubles (ordered like the values). Requires ok(ok_value) and
/// !ok(bad_value).
template <std::floating_point T, class Ok>
T boundary(T ok_value, T bad_value, Ok ok) {
  using Bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
  REQUIRE(ok(ok_value));
  REQUIRE_FALSE(ok(bad_value));
  Bits good = std::bit_cast<Bits>(ok_value);
  Bits bad = std::bit_cast<Bits>(bad_value);
  while (good + 1 != bad && bad + 1 != good) {
    const Bits mid = good < bad ? good + (bad - good) / 2 : bad + (good - bad) / 2;
    (ok(std::bit_cast<T>(mid)) ? good : bad) = mid;
  }
  return std::bit_cast<T>(good);
}

}  // namespace qflash::test
