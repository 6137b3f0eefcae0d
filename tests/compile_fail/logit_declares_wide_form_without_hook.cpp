// SPDX-License-Identifier: Apache-2.0
// A logit policy whose LogitTraits declare `has_wide_form` must have apply_wide_offset: a
// misspelled hook is rejected where a LogitPolicy is required, naming the missing expression,
// instead of the kernels silently taking the Q16 path.
// expect: L::apply_wide_offset\(score, offset, prm\)
#include <cstdint>
#include <qflash/qflash.hpp>

struct MyLogit : qflash::WideLog2Logit {
#ifdef QFLASH_SHOULD_FAIL
  static constexpr std::int64_t apply_wide_ofset(std::int32_t s, std::int64_t c,
                                                 const Params& prm) noexcept {
    return qflash::WideLog2Logit::apply_wide_offset(s, c, prm);
  }
  static constexpr std::int64_t apply_wide_offset() noexcept { return 0; }  // hides the base's
#endif
};

template <>
struct qflash::LogitTraits<MyLogit> : qflash::LogitTraitsDefaults {
  static constexpr bool has_wide_form = true;
};

static_assert(qflash::LogitPolicy<MyLogit>);
