// SPDX-License-Identifier: Apache-2.0
// A softmax whose SoftmaxTraits declare `merges_biased` must have merge_element_biased: a
// misspelled hook is rejected where a SoftmaxPolicy is required (here: the Softmax of a kernel
// configuration), naming the missing expression, instead of leaving the kernel on its plain path.
// expect: S::merge_element_biased\(a, a, f\)
#include <cstdint>
#include <qflash/qflash.hpp>

// FrameSoftmax has no merge_element_biased of its own to inherit.
struct MySoftmax : qflash::FrameSoftmax<qflash::PolyExp2<>> {
  static constexpr std::uint32_t biased_sum(std::uint32_t a, std::uint32_t p) noexcept {
    return a + p - 0x80000000u;
  }
#ifdef QFLASH_SHOULD_FAIL
  static constexpr std::uint32_t merge_element_biassed(std::uint32_t a, std::uint32_t p,
                                                       qflash::MergeFactors) noexcept {
    return biased_sum(a, p);
  }
#else
  static constexpr std::uint32_t merge_element_biased(std::uint32_t a, std::uint32_t p,
                                                      qflash::MergeFactors) noexcept {
    return biased_sum(a, p);
  }
#endif
};

template <>
struct qflash::SoftmaxTraits<MySoftmax> : qflash::SoftmaxTraitsDefaults {
  static constexpr bool merges_biased = true;
};

struct MyConfig {
  using Logit = qflash::Log2Logit<16>;
  using Exp = qflash::PolyExp2<>;
  using Softmax = MySoftmax;
  static constexpr qflash::Rounding output_rounding = qflash::Rounding::half_away_from_zero;
  static constexpr int block_n = 64;
};

qflash::HeadParams<MyConfig, qflash::Requantize<std::int8_t>> params{};
