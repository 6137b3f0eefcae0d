// SPDX-License-Identifier: Apache-2.0
// The softmax must merge with the configuration's own Exp: a Softmax built on another exp policy
// would let the reference and the kernel disagree, so KernelConfig rejects it.
// expect: exp_policy
#include <cstdint>
#include <qflash/qflash.hpp>

struct MyConfig {
  using Logit = qflash::Log2Logit<16>;
  using Exp = qflash::PolyExp2<2>;
#ifdef QFLASH_SHOULD_FAIL
  using Softmax = qflash::OnlineSoftmax<qflash::PolyExp2<3>, qflash::MaxMode::tile_local>;
#else
  using Softmax = qflash::OnlineSoftmax<qflash::PolyExp2<2>, qflash::MaxMode::tile_local>;
#endif
  static constexpr qflash::Rounding output_rounding = qflash::Rounding::half_away_from_zero;
  static constexpr int block_n = 64;
};

qflash::HeadParams<MyConfig, qflash::OutputFor<MyConfig, std::int8_t>> params{};
