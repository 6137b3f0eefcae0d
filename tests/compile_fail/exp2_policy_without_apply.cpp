// SPDX-License-Identifier: Apache-2.0
// A downstream exp policy without `apply` is rejected where an Exp2Policy is required (here: as
// the Exp of a kernel configuration), naming the missing expression.
// expect: E::apply\(u, prm\)
#include <cstdint>
#include <qflash/qflash.hpp>

struct MyExp2 {
  struct Params {};
  static constexpr int pmax = 255;
  static constexpr int sum_bits = 0;
#ifndef QFLASH_SHOULD_FAIL
  static constexpr qflash::Exp2Value apply(std::int32_t u, Params) noexcept {
    return qflash::PolyExp2<>::apply(u);
  }
#endif
  static constexpr std::int32_t rescale_q30(std::int32_t d, Params) noexcept {
    return qflash::PolyExp2<>::rescale_q30(d);
  }
  static constexpr qflash::Status calibrate(double, Params&) noexcept { return qflash::Status::ok; }
  static constexpr qflash::Status validate(const Params&) noexcept { return qflash::Status::ok; }
};

struct MyConfig {
  using Logit = qflash::Log2Logit<16>;
  using Exp = MyExp2;
  using Softmax = qflash::OnlineSoftmax<Exp, qflash::MaxMode::tile_local>;
  static constexpr qflash::Rounding output_rounding = qflash::Rounding::half_away_from_zero;
  static constexpr int block_n = 64;
};

qflash::HeadParams<MyConfig, qflash::Requantize<std::int8_t>> params{};
