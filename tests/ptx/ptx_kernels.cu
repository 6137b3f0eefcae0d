// SPDX-License-Identifier: Apache-2.0
// Instantiates the attention kernels for the PTX scan (tests/ptx/ptx_scan.cmake): every integer
// output of every preset at every head dim, plus the dequantizing Float16 output, which the scan
// must find floating-point instructions in (the positive control).
#include "qflash/device/kernel.cuh"
#include "qflash/qflash.hpp"

namespace qflash::device {

template <KernelConfig Cfg, class OutT>
void instantiate_all_dims() {
  using Output = OutputFor<Cfg, OutT>;
  (void)&flash_attention_kernel<Cfg, Output, 32, 4>;
  (void)&flash_attention_kernel<Cfg, Output, 64, 4>;
  (void)&flash_attention_kernel<Cfg, Output, 80, 4>;
  (void)&flash_attention_kernel<Cfg, Output, 96, 4>;
  (void)&flash_attention_kernel<Cfg, Output, 128, 4>;
}

template <KernelConfig Cfg>
void instantiate_all_outputs() {
  instantiate_all_dims<Cfg, std::int8_t>();
  instantiate_all_dims<Cfg, std::int16_t>();
  instantiate_all_dims<Cfg, std::int32_t>();
  instantiate_all_dims<Cfg, Float16>();
}

template void instantiate_all_outputs<presets::Paper>();
template void instantiate_all_outputs<presets::Precise>();
template void instantiate_all_outputs<presets::PreciseCubic>();

}  // namespace qflash::device
