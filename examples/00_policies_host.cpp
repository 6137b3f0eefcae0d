// SPDX-License-Identifier: Apache-2.0
// Example 00: the scalar policies on the host, each integer next to the real value it stands for.
//
//  - PolyExp2 (the "Precise" exp2): a distance u below the row maximum, in Q16 octaves, becomes a
//    probability p = round(255 * 2^-u) and a row-sum weight p * 2^6; rescale_q30 gives 2^-d in
//    Q1.30.
//  - PaperShiftExp2 (the published QFlash exp2): u in raw Q K^T units, R units per octave, a
//    linear fraction between octaves, 7-bit P.
//  - Requantize: the final O = acc / l, rounded, in the output's scale.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <qflash/qflash.hpp>

namespace {

using namespace qflash;

void poly_exp2() {
  using Exp = PolyExp2<2>;  // quadratic, Pmax 255, 6 extra sum bits, F = 16
  std::printf("PolyExp2<2>: u in Q16 octaves -> p = round(255 * 2^-u), weight = p * 2^6\n");
  std::printf("  %10s %10s %5s %7s %12s %12s\n", "u (Q16)", "octaves", "p", "weight", "p / 255",
              "2^-u exact");
  for (const double octaves : {0.0, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.9, 9.0}) {
    const auto u = static_cast<std::int32_t>(octaves * 65536.0);
    const Exp2Value e = Exp::apply(u);
    std::printf("  %10d %10.4f %5d %7d %12.6f %12.6f\n", u, octaves, e.p, e.weight, e.p / 255.0,
                std::exp2(-octaves));
  }
  std::printf("  rescale_q30(d): 2^-d in Q1.30\n");
  for (const double octaves : {0.0, 0.3, 1.0, 3.7}) {
    const auto d = static_cast<std::int32_t>(octaves * 65536.0);
    const std::int32_t factor = Exp::rescale_q30(d);
    std::printf("  d = %6.3f octaves: %10d = %.8f (exact %.8f)\n", octaves, factor,
                factor / 1073741824.0, std::exp2(-octaves));
  }
}

void paper_shift_exp2() {
  // ViT-like scales: s_q = s_k = 4 / 127, D = 64, softmax scale 1/8.
  const double s = 4.0 / 127.0;
  const double sm_scale = kLog2e / 8.0 * s * s;  // octaves per Q K^T unit
  PaperShiftExp2::Params prm{};
  if (PaperShiftExp2::calibrate(sm_scale, prm) != Status::ok) {
    std::printf("PaperShiftExp2: calibration failed\n");
    return;
  }
  std::printf("\nPaperShiftExp2: sm_scale = %.6g octaves/unit, R = %d units per octave\n", sm_scale,
              prm.r);
  std::printf("  %10s %10s %5s %12s %12s\n", "u (units)", "octaves", "P", "P / 127", "2^-u exact");
  for (const double octaves : {0.0, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0}) {
    const auto u = static_cast<std::int32_t>(octaves * prm.r);
    const Exp2Value e = PaperShiftExp2::apply(u, prm);
    std::printf("  %10d %10.4f %5d %12.6f %12.6f\n", u, u / static_cast<double>(prm.r), e.p,
                e.p / 127.0, std::exp2(-u / static_cast<double>(prm.r)));
  }
  std::printf("  (the linear fraction 1 + f/2 between octaves overestimates 2^f by up to 6 %%)\n");
}

void requantize() {
  // acc = sum_j P_j V_j (V codes), l = sum_j P_j * 2^6: O = acc * 2^6 / l in V's units.
  using S8 = Requantize<std::int8_t>;
  using S8Trunc = Requantize<std::int8_t, Rounding::toward_zero>;
  using S16 = Requantize<std::int16_t>;
  const double v_scale = 4.0 / 127.0;
  S8::Params s8{};
  S8Trunc::Params trunc{};
  S16::Params s16{};
  if (S8::calibrate(v_scale, v_scale, 6, s8) != Status::ok ||
      S8Trunc::calibrate(v_scale, v_scale, 6, trunc) != Status::ok ||
      S16::calibrate(v_scale, v_scale / 256.0, 6, s16) != Status::ok) {
    std::printf("Requantize: calibration failed\n");
    return;
  }
  std::printf("\nRequantize: O = round(acc * 2^6 / l) at V's scale %.6f (s16: scale / 256)\n",
              v_scale);
  std::printf("  %8s %8s %12s %6s %6s %7s %12s\n", "acc", "l", "acc*2^6/l", "s8", "s8-trunc", "s16",
              "real (s16)");
  const struct {
    std::int32_t acc;
    std::int64_t l;
  } cases[] = {{25500, 255 * 64}, {12345, 255 * 64 * 3}, {33, 128},
               {-33, 128},        {-4207, 255 * 64},     {100000, 255 * 64}};
  for (const auto& c : cases) {
    const std::int16_t o16 = S16::apply(c.acc, c.l, s16);
    std::printf("  %8d %8lld %12.4f %6d %8d %7d %12.6f\n", c.acc, static_cast<long long>(c.l),
                c.acc * 64.0 / static_cast<double>(c.l), S8::apply(c.acc, c.l, s8),
                S8Trunc::apply(c.acc, c.l, trunc), o16, o16 * v_scale / 256.0);
  }
  std::printf(
      "  (+-16.5 rounds to +-17 half away from zero, to +-16 truncated; 392 saturates s8)\n");
}

}  // namespace

int main() {
  poly_exp2();
  paper_shift_exp2();
  requantize();
  return 0;
}
