// SPDX-License-Identifier: Apache-2.0
// A configuration that is not a preset, for the GPU suite: the Precise policies with 64-key
// blocks. Tile-local maxima make launches with Nkv in (64, 128] take the kernel's paired pass
// with k32 chunks skipped in the second block's P V, and at D = 128 that launch needs more than
// 48 KiB of shared memory -- paths the presets (32-key blocks) do not reach.
#include "qflash/reference/equivalence.cuh"
#include "qflash_instances.hpp"

namespace qflash::instances {

namespace {
struct TileLocalBlock64 : presets::Precise {
  static constexpr int block_n = 64;
};
static_assert(KernelConfig<TileLocalBlock64>);
}  // namespace

reference::EquivalenceReport check_tile_local_block64(const reference::EquivalenceCase& c) {
  return reference::check_equivalence<TileLocalBlock64, OutputFor<TileLocalBlock64, std::int8_t>>(
      c);
}

}  // namespace qflash::instances
