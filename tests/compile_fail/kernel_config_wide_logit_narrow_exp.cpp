// SPDX-License-Identifier: Apache-2.0
// A configuration whose logit has the wide form (Q32) needs an exp policy that takes it
// (Exp2Traits::has_wide_input): with a Q16-only exp it is not a KernelConfig, instead of
// dropping the fraction bits.
// expect: Exp2Traits<typename C::Exp>::has_wide_input
#include <qflash/qflash.hpp>

struct NarrowExp2 : qflash::AscendingPolyExp2<> {
};  // declares no wide input (traits not inherited)

struct MyConfig {
  using Logit = qflash::WideLog2Logit;
#ifdef QFLASH_SHOULD_FAIL
  using Exp = NarrowExp2;
#else
  using Exp = qflash::AscendingPolyExp2<>;
#endif
  using Softmax = qflash::FrameSoftmax<Exp>;
  static constexpr qflash::Rounding output_rounding = qflash::Rounding::half_away_from_zero;
  static constexpr int block_n = 64;
};

static_assert(qflash::KernelConfig<MyConfig>);
