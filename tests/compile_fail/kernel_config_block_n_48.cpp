// SPDX-License-Identifier: Apache-2.0
// KV blocks are 32, 64 or 128 keys (the kernel's tiling); block_n = 48 is rejected.
// expect: block_n == 32
#include <cstdint>
#include <qflash/qflash.hpp>

struct MyConfig : qflash::presets::Precise {
#ifdef QFLASH_SHOULD_FAIL
  static constexpr int block_n = 48;
#else
  static constexpr int block_n = 128;
#endif
};

qflash::HeadParams<MyConfig, qflash::OutputFor<MyConfig, std::int8_t>> params{};
