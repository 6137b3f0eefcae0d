// SPDX-License-Identifier: Apache-2.0
// Policy Params are passed by value to kernels, so they must be trivially copyable.
// expect: is_trivially_copyable
#include <cstdint>
#include <qflash/qflash.hpp>

struct MyOutput {
  using value_type = std::int8_t;
  struct Params {
    std::int32_t multiplier = 1;
#ifdef QFLASH_SHOULD_FAIL
    Params() = default;
    Params(const Params& other) : multiplier(other.multiplier) {}  // user-provided copy
    Params& operator=(const Params&) = default;
#endif
  };
  struct Row {};
  static constexpr Row prepare(std::int64_t, const Params&) noexcept { return {}; }
  static constexpr std::int8_t apply(std::int32_t acc, const Row&) noexcept {
    return qflash::saturate_cast<std::int8_t>(acc);
  }
  static constexpr std::int8_t apply(std::int32_t acc, std::int64_t, const Params&) noexcept {
    return qflash::saturate_cast<std::int8_t>(acc);
  }
  static constexpr qflash::Status calibrate(double, double, int, Params&) noexcept {
    return qflash::Status::ok;
  }
  static constexpr double default_scale_divisor() noexcept { return 1.0; }
  static constexpr qflash::Status validate(const Params&, int) noexcept {
    return qflash::Status::ok;
  }
};

qflash::HeadParams<qflash::presets::Precise, MyOutput> params{};
