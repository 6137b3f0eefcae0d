// SPDX-License-Identifier: Apache-2.0
// Error metrics on vectors whose statistics are known in closed form.
#include <cmath>
#include <limits>
#include <qflash/reference/metrics.hpp>
#include <stdexcept>
#include <vector>

#include "support/catch.hpp"

using qflash::reference::compare;
using qflash::reference::ErrorStats;

TEST_CASE("metrics: known vectors", "[metrics]") {
  const std::vector<double> reference = {1.0, 2.0, 3.0};
  const std::vector<double> test = {1.0, 2.0, 4.0};
  const ErrorStats s = compare(reference, test);
  CHECK(s.sqnr_db == Approx(10.0 * std::log10(14.0)));  // signal 14, noise 1
  CHECK(s.sqnr_db == Approx(11.4612803568));
  CHECK(s.max_abs == 1.0);
  CHECK(s.mean_abs == Approx(1.0 / 3.0));
  CHECK(s.cosine == Approx(17.0 / std::sqrt(14.0 * 21.0)));
}

TEST_CASE("metrics: uniform relative error of 1 % is 40 dB", "[metrics]") {
  std::vector<double> reference(100), test(100);
  for (std::size_t i = 0; i < reference.size(); ++i) {
    reference[i] = (i % 2 == 0 ? 1.0 : -1.0) * static_cast<double>(i + 1);
    test[i] = reference[i] * 1.01;
  }
  const ErrorStats s = compare(reference, test);
  CHECK(s.sqnr_db == Approx(40.0).margin(1e-9));
  CHECK(s.max_abs == Approx(1.0));  // 1 % of 100
  CHECK(s.mean_abs == Approx(0.505));
  CHECK(s.cosine == Approx(1.0));
}

TEST_CASE("metrics: edge cases", "[metrics]") {
  const std::vector<double> a = {0.5, -0.25};
  const ErrorStats same = compare(a, a);
  CHECK(same.sqnr_db == std::numeric_limits<double>::infinity());
  CHECK(same.max_abs == 0.0);
  CHECK(same.mean_abs == 0.0);
  CHECK(same.cosine == Approx(1.0).epsilon(1e-15));

  const std::vector<double> negated = {-0.5, 0.25};
  const ErrorStats flipped = compare(a, negated);
  CHECK(flipped.cosine == Approx(-1.0));
  CHECK(flipped.sqnr_db == Approx(10.0 * std::log10(1.0 / 4.0)));  // noise = 4 * signal

  const std::vector<double> zeros = {0.0, 0.0};
  CHECK(compare(zeros, zeros).cosine == 1.0);
  CHECK(compare(zeros, a).sqnr_db == -std::numeric_limits<double>::infinity());
  CHECK(compare(zeros, a).cosine == 0.0);
  CHECK(compare(a, zeros).sqnr_db == Approx(0.0).margin(1e-12));

  const std::vector<double> with_nan = {0.5, std::nan("")};
  CHECK(std::isnan(compare(a, with_nan).sqnr_db));
  CHECK(std::isnan(compare(a, with_nan).max_abs));

  const std::vector<double> longer = {1.0, 2.0, 3.0};
  CHECK_THROWS_AS(compare(a, longer), std::invalid_argument);
  CHECK_THROWS_AS(compare(std::vector<double>{}, std::vector<double>{}), std::invalid_argument);
}
