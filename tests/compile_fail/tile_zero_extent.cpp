// SPDX-License-Identifier: Apache-2.0
// A Tile needs two positive extents.
// expect: Tile: both extents must be positive
#include <cstdint>
#include <qflash/core/tile.hpp>

#ifdef QFLASH_SHOULD_FAIL
using T = qflash::Tile<std::int8_t, 16, 0>;
#else
using T = qflash::Tile<std::int8_t, 16, 1>;
#endif

int use_tile() {
  T t{};
  t.fill(1);
  return t(0, 0);
}
