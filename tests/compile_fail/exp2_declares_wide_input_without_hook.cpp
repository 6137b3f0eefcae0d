// SPDX-License-Identifier: Apache-2.0
// An exp policy whose Exp2Traits declare `has_wide_input` must have product_wide (and
// apply_wide): a misspelled hook is rejected where an Exp2Policy is required, naming the missing
// expression.
// expect: E::product_wide\(u\)
#include <cstdint>
#include <qflash/qflash.hpp>

struct MyExp2 : qflash::AscendingPolyExp2<> {
#ifdef QFLASH_SHOULD_FAIL
  static constexpr std::uint64_t product_wide() noexcept { return 0; }  // hides the base's
  static constexpr std::uint64_t product_wid(std::int64_t v) noexcept {
    return qflash::AscendingPolyExp2<>::product_wide(v);
  }
#endif
};

template <>
struct qflash::Exp2Traits<MyExp2> : qflash::Exp2TraitsDefaults {
  static constexpr bool has_wide_input = true;
};

static_assert(qflash::Exp2Policy<MyExp2>);
