// SPDX-License-Identifier: Apache-2.0
// A downstream program that uses qflash::qflash alone (no reference, so no Eigen): calibrate one
// head of a preset and evaluate a policy on the host. Exits non-zero on any surprise.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <qflash/qflash.hpp>
#include <span>

int main() {
  using Cfg = qflash::presets::Precise;
  using Out = qflash::OutputFor<Cfg, std::int8_t>;
  using Params = qflash::HeadParams<Cfg, Out>;
  Params params[1];
  const float scale = 0.05f;
  const qflash::QuantScales scales{{&scale, 1}, {&scale, 1}, {&scale, 1}};
  const bool calibrated =
      qflash::calibrate<Cfg, Out>(scales, 64, std::span<Params>(params)) == qflash::Status::ok;
  const bool exp_ok = Cfg::Exp::apply(0, params[0].exp).p == Cfg::Exp::pmax;
  std::printf("qflash %d.%d.%d core consumer: calibrate %s, exp2(0) %s\n", QFLASH_VERSION_MAJOR,
              QFLASH_VERSION_MINOR, QFLASH_VERSION_PATCH, calibrated ? "ok" : "FAILED",
              exp_ok ? "ok" : "FAILED");
  return calibrated && exp_ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
