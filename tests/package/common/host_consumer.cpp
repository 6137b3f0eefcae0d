// SPDX-License-Identifier: Apache-2.0
// A downstream program: calibrate a tiny problem, run the bit-exact integer reference, check the
// answer against its closed form. Built by both consumer projects (find_package and
// add_subdirectory); exits non-zero on any mismatch.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <qflash/qflash.hpp>
#include <qflash/reference/flash_attention_int.hpp>
#include <span>
#include <vector>

#if defined(QFLASH_EXPECTED_VERSION_MAJOR)
static_assert(QFLASH_VERSION_MAJOR == QFLASH_EXPECTED_VERSION_MAJOR &&
                  QFLASH_VERSION_MINOR == QFLASH_EXPECTED_VERSION_MINOR &&
                  QFLASH_VERSION_PATCH == QFLASH_EXPECTED_VERSION_PATCH,
              "qflash/version.hpp disagrees with the CMake package version");
#endif

int main() {
  using Cfg = qflash::presets::Precise;
  using Out = qflash::OutputFor<Cfg, std::int8_t>;
  using Params = qflash::HeadParams<Cfg, Out>;
  constexpr int n = 37, d = 32;  // one full KV block of 32 and a ragged one of 5

  // All-zero queries make every logit equal, so each output is the mean of its V column,
  // rounded half away from zero.
  const auto size = static_cast<std::size_t>(n * d);
  std::vector<std::int8_t> q(size, 0), k(size, 3), v(size), o(size, 0);
  for (int j = 0; j < n; ++j) {
    for (int c = 0; c < d; ++c)
      v[static_cast<std::size_t>(j * d + c)] = static_cast<std::int8_t>((j * 17 + c * 5) % 61 - 30);
  }
  const qflash::AttentionProblem problem{qflash::bhnd<const std::int8_t>(q.data(), 1, 1, n, d),
                                         qflash::bhnd<const std::int8_t>(k.data(), 1, 1, n, d),
                                         qflash::bhnd<const std::int8_t>(v.data(), 1, 1, n, d)};

  Params params[1];
  const float scale = 0.05f;
  const qflash::QuantScales scales{{&scale, 1}, {&scale, 1}, {&scale, 1}};
  if (qflash::calibrate<Cfg, Out>(scales, d, std::span<Params>(params)) != qflash::Status::ok) {
    std::puts("calibrate failed");
    return EXIT_FAILURE;
  }
  if (qflash::reference::flash_attention<Cfg, Out>(problem, std::span<const Params>(params),
                                                   qflash::bhnd(o.data(), 1, 1, n, d)) !=
      qflash::Status::ok) {
    std::puts("reference::flash_attention failed");
    return EXIT_FAILURE;
  }

  int mismatches = 0;
  for (int c = 0; c < d; ++c) {
    long sum = 0;
    for (int j = 0; j < n; ++j) sum += v[static_cast<std::size_t>(j * d + c)];
    const long magnitude = (std::labs(sum) * 2 + n) / (2 * n);
    const long expected = sum < 0 ? -magnitude : magnitude;
    for (int i = 0; i < n; ++i) {
      if (o[static_cast<std::size_t>(i * d + c)] != expected) ++mismatches;
    }
  }
  std::printf("qflash %d.%d.%d host consumer: %d of %d outputs differ from the closed form\n",
              QFLASH_VERSION_MAJOR, QFLASH_VERSION_MINOR, QFLASH_VERSION_PATCH, mismatches, n * d);
  return mismatches == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
