// SPDX-License-Identifier: Apache-2.0
// Instantiates the attention kernels for the PTX scan (tests/ptx/ptx_scan.cmake): every integer
// output of every preset at every head dim (the general kernel and, for Fast, the in-place one),
// plus the dequantizing Float16 output, which the scan must find floating-point instructions in
// (the positive control).
#include "qflash/device/in_place_kernel.cuh"
#include "qflash/device/kernel.cuh"
#include "qflash/qflash.hpp"

namespace qflash::device {

template <KernelConfig Cfg, class OutT, bool Extras>
void instantiate_all_dims() {
  using Output = OutputFor<Cfg, OutT>;
  (void)&flash_attention_kernel<Cfg, Output, 32, 4, Extras>;
  (void)&flash_attention_kernel<Cfg, Output, 64, 4, Extras>;
  (void)&flash_attention_kernel<Cfg, Output, 80, 4, Extras>;
  (void)&flash_attention_kernel<Cfg, Output, 96, 4, Extras>;
  (void)&flash_attention_kernel<Cfg, Output, 128, 4, Extras>;
}

template <KernelConfig Cfg, class OutT>
void for_both() {  // the instances without and with bias/mask code
  instantiate_all_dims<Cfg, OutT, false>();
  instantiate_all_dims<Cfg, OutT, true>();
}

template <KernelConfig Cfg>
void instantiate_all_outputs() {
  for_both<Cfg, std::int8_t>();
  for_both<Cfg, std::int16_t>();
  for_both<Cfg, std::int32_t>();
  for_both<Cfg, Float16>();
}

template void instantiate_all_outputs<presets::Paper>();
template void instantiate_all_outputs<presets::Precise>();
template void instantiate_all_outputs<presets::PreciseCubic>();
template void instantiate_all_outputs<presets::Fast>();
template void instantiate_all_outputs<presets::FastLong>();

/// The in-place kernel (presets::Fast and FastLong without bias or mask) at every head dim and
/// output, with each warps-per-CTA count the launcher uses.
template <InPlaceConfig Cfg, class OutT>
void instantiate_in_place() {
  using Output = OutputFor<Cfg, OutT>;
  (void)&in_place_attention_kernel<Cfg, Output, 32, 4>;
  (void)&in_place_attention_kernel<Cfg, Output, 64, 4>;
  (void)&in_place_attention_kernel<Cfg, Output, 80, 4>;
  (void)&in_place_attention_kernel<Cfg, Output, 96, 4>;
  (void)&in_place_attention_kernel<Cfg, Output, 128, 4>;
  (void)&in_place_attention_kernel<Cfg, Output, 80, kInPlaceWideWarps<80>>;
  (void)&in_place_attention_kernel<Cfg, Output, 96, kInPlaceWideWarps<96>>;
  (void)&in_place_attention_kernel<Cfg, Output, 128, kInPlaceWideWarps<128>>;
}
template void instantiate_in_place<presets::Fast, std::int8_t>();
template void instantiate_in_place<presets::Fast, std::int16_t>();
template void instantiate_in_place<presets::Fast, std::int32_t>();
template void instantiate_in_place<presets::Fast, Float16>();
template void instantiate_in_place<presets::FastLong, std::int8_t>();
template void instantiate_in_place<presets::FastLong, Float16>();

}  // namespace qflash::device
