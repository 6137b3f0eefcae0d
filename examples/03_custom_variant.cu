// SPDX-License-Identifier: Apache-2.0
// Example 03: a downstream variant -- its own exp2 policy, its own bit widths and block size --
// kept in agreement with the host reference by the public equivalence harness.
//
// `HalfOctaveExp2` is deliberately simple: it rounds the distance below the maximum to half
// octaves, p = round(Pmax * 2^-(k/2)), with Pmax = 127 (7-bit P) and 2 extra fraction bits in
// the row sum. Any struct with this shape satisfies qflash::Exp2Policy and runs both in the host
// reference and in the CUDA kernel; the harness proves the two agree bit for bit.
#include <cstdint>
#include <cstdio>

#include "qflash/qflash.hpp"
#include "qflash/reference/equivalence.cuh"

struct HalfOctaveExp2 {
  struct Params {
    friend constexpr bool operator==(const Params&, const Params&) = default;
  };
  static constexpr int pmax = 127;
  static constexpr int sum_bits = 2;

  /// In: u >= 0 in Q16 octaves. k = round(2u / 2^16) half octaves; value = Pmax * 2^-(k/2) with
  /// an odd k using 1/sqrt(2) ~ 181 / 256. Rounding: half away from zero; 0 past 31 octaves.
  QFLASH_HOST_DEVICE static constexpr std::int32_t scaled(std::int32_t u, int extra_bits) {
    const std::int32_t half_octaves = static_cast<std::int32_t>(
        qflash::round_shift(static_cast<std::int64_t>(u < 0 ? 0 : u), 15));
    const int octaves = half_octaves / 2;
    const std::uint32_t mantissa = (half_octaves % 2 == 0 ? 256u : 181u) * pmax;  // Q8
    return static_cast<std::int32_t>(
        qflash::round_shift_nonneg(mantissa, octaves + 8 - extra_bits));
  }
  QFLASH_HOST_DEVICE static constexpr qflash::Exp2Value apply(std::int32_t u, Params) noexcept {
    return qflash::Exp2Value{scaled(u, 0), scaled(u, sum_bits)};
  }
  /// 2^-d in Q1.30 on the same half-octave grid.
  QFLASH_HOST_DEVICE static constexpr std::int32_t rescale_q30(std::int32_t d, Params) noexcept {
    const std::int32_t half_octaves = static_cast<std::int32_t>(
        qflash::round_shift(static_cast<std::int64_t>(d < 0 ? 0 : d), 15));
    const std::int64_t mantissa = half_octaves % 2 == 0 ? (std::int64_t{1} << 30) : 759250125;
    return static_cast<std::int32_t>(qflash::round_shift(mantissa, half_octaves / 2));
  }
  QFLASH_HOST_DEVICE static constexpr qflash::Status calibrate(double, Params&) noexcept {
    return qflash::Status::ok;
  }
  /// No runtime constants: every Params value is valid.
  QFLASH_HOST_DEVICE static constexpr qflash::Status validate(const Params&) noexcept {
    return qflash::Status::ok;
  }
};
static_assert(qflash::Exp2Policy<HalfOctaveExp2>);

/// The variant: log2-domain logits, the custom exp, running max, KV blocks of 64 keys.
struct HalfOctaveConfig {
  using Logit = qflash::Log2Logit<16>;
  using Exp = HalfOctaveExp2;
  using Softmax = qflash::OnlineSoftmax<Exp, qflash::MaxMode::running>;
  static constexpr qflash::Rounding output_rounding = qflash::Rounding::toward_zero;
  static constexpr int block_n = 64;
};
static_assert(qflash::KernelConfig<HalfOctaveConfig>);

int main() {
  using Output = qflash::Requantize<std::int16_t, qflash::Rounding::toward_zero>;  // 16-bit out
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::puts("example 03: no CUDA device, nothing to run");
    return 0;
  }
  int failures = 0;
  // Seeds 1-3 with a dense bias; seeds 4 and 5 without one, so that the kernel instance without
  // bias/mask code runs too, with a ragged last block of 49 and of 38 keys.
  for (std::uint64_t seed = 1; seed <= 5; ++seed) {
    qflash::reference::EquivalenceCase c;
    c.batch = 2;
    c.heads = 3;
    c.seq_q = c.seq_kv =
        seed <= 3 ? 150 + static_cast<std::int64_t>(seed) * 20 : (seed == 4 ? 49 : 230);
    c.head_dim = 64;
    c.bias = seed <= 3 ? qflash::BiasKind::dense : qflash::BiasKind::none;
    c.seed = seed;
    const auto report = qflash::reference::check_equivalence<HalfOctaveConfig, Output>(c);
    std::printf("example 03: %s -> %s\n", report.describe().c_str(),
                report.passed() ? "bit-exact" : "MISMATCH");
    failures += report.passed() ? 0 : 1;
  }
  return failures == 0 ? 0 : 1;
}
