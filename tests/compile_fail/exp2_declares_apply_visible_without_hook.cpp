// SPDX-License-Identifier: Apache-2.0
// An exp policy whose Exp2Traits declare `has_apply_visible` must have apply_visible: a
// misspelled hook is rejected where an Exp2Policy is required, naming the missing expression,
// instead of the kernel silently calling apply.
// expect: E::apply_visible\(u, prm\)
#include <cstdint>
#include <qflash/qflash.hpp>

// AscendingPolyExp2 has no apply_visible of its own to inherit.
struct MyExp2 : qflash::AscendingPolyExp2<> {
#ifdef QFLASH_SHOULD_FAIL
  static constexpr qflash::Exp2Value apply_visibel(std::int32_t u, Params = {}) noexcept {
    return apply(u);
  }
#else
  static constexpr qflash::Exp2Value apply_visible(std::int32_t u, Params = {}) noexcept {
    return apply(u);
  }
#endif
};

template <>
struct qflash::Exp2Traits<MyExp2> : qflash::Exp2TraitsDefaults {
  static constexpr bool has_apply_visible = true;
};

static_assert(qflash::Exp2Policy<MyExp2>);
