// SPDX-License-Identifier: Apache-2.0
// The integer reference on cases whose exact answer is known in closed form.
#include <cstdint>
#include <numeric>
#include <qflash/qflash.hpp>
#include <qflash/reference/flash_attention_int.hpp>
#include <vector>

#include "support/catch.hpp"

namespace {

using namespace qflash;

template <class Cfg>
std::vector<std::int8_t> attend_with_zero_queries(const std::vector<std::int8_t>& v, int n, int d) {
  using Out = OutputFor<Cfg, std::int8_t>;
  std::vector<std::int8_t> q(static_cast<std::size_t>(n * d), 0), k(q.size(), 7), o(q.size(), 99);
  AttentionProblem p{bhnd<const std::int8_t>(q.data(), 1, 1, n, d),
                     bhnd<const std::int8_t>(k.data(), 1, 1, n, d),
                     bhnd<const std::int8_t>(v.data(), 1, 1, n, d)};
  HeadParams<Cfg, Out> params[1];
  const float scale = 0.05f;
  REQUIRE(calibrate<Cfg, Out>(QuantScales{{&scale, 1}, {&scale, 1}, {&scale, 1}}, d,
                              std::span<HeadParams<Cfg, Out>>(params)) == Status::ok);
  REQUIRE(reference::flash_attention<Cfg, Out>(p, std::span<const HeadParams<Cfg, Out>>(params),
                                               bhnd(o.data(), 1, 1, n, d)) == Status::ok);
  return o;
}

}  // namespace

TEST_CASE("reference: equal logits give the rounded mean of V", "[reference][smoke]") {
  const int n = 197, d = 64;
  std::vector<std::int8_t> v(static_cast<std::size_t>(n * d));
  for (int j = 0; j < n; ++j) {
    for (int c = 0; c < d; ++c)
      v[static_cast<std::size_t>(j * d + c)] =
          static_cast<std::int8_t>((j * 31 + c * 7) % 255 - 127);
  }
  const auto o = attend_with_zero_queries<presets::Precise>(v, n, d);
  for (int c = 0; c < d; ++c) {
    long sum = 0;
    for (int j = 0; j < n; ++j) sum += v[static_cast<std::size_t>(j * d + c)];
    // round half away from zero of sum / n
    const long mag = (std::labs(sum) * 2 + n) / (2 * n);
    const long expected = sum < 0 ? -mag : mag;
    for (int i = 0; i < n; ++i) CHECK(o[static_cast<std::size_t>(i * d + c)] == expected);
  }
}
