// SPDX-License-Identifier: Apache-2.0
// The float oracle against a naive loop implementation, closed-form cases, non-finite inputs
// and its validation.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <qflash/reference/attention_float.hpp>
#include <random>
#include <utility>
#include <vector>

#include "support/catch.hpp"

namespace {

using namespace qflash;
using qflash::reference::attention_float;
using qflash::reference::FloatBias;

struct Problem {
  std::int64_t z, h, nq, nkv, d;
  std::vector<float> q, k, v;
};

Problem random_problem(std::int64_t z, std::int64_t h, std::int64_t nq, std::int64_t nkv,
                       std::int64_t d, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  Problem p{z, h, nq, nkv, d, {}, {}, {}};
  p.q.resize(static_cast<std::size_t>(z * h * nq * d));
  p.k.resize(static_cast<std::size_t>(z * h * nkv * d));
  p.v.resize(p.k.size());
  for (auto* values : {&p.q, &p.k, &p.v}) {
    for (float& x : *values) x = dist(rng);
  }
  return p;
}

/// The textbook formula, one output element at a time, in long double; hidden keys are skipped
/// and a row without visible keys gives 0.
std::vector<double> naive_attention(const Problem& p, const FloatBias& bias,
                                    const AttentionMask& mask, double scale) {
  std::vector<double> out(static_cast<std::size_t>(p.z * p.h * p.nq * p.d), 0.0);
  const auto at = [](const std::vector<float>& t, std::int64_t h_count, std::int64_t n_count,
                     std::int64_t d_count, std::int64_t z, std::int64_t h, std::int64_t n,
                     std::int64_t c) {
    return static_cast<long double>(
        t[static_cast<std::size_t>(((z * h_count + h) * n_count + n) * d_count + c)]);
  };
  for (std::int64_t z = 0; z < p.z; ++z) {
    for (std::int64_t h = 0; h < p.h; ++h) {
      for (std::int64_t i = 0; i < p.nq; ++i) {
        std::vector<long double> logits;
        std::vector<std::int64_t> keys;
        for (std::int64_t j = 0; j < p.nkv; ++j) {
          if (!mask.visible(z, i, j)) continue;
          long double dot = 0;
          for (std::int64_t c = 0; c < p.d; ++c) {
            dot += at(p.q, p.h, p.nq, p.d, z, h, i, c) * at(p.k, p.h, p.nkv, p.d, z, h, j, c);
          }
          logits.push_back(static_cast<long double>(scale) * dot +
                           static_cast<long double>(bias.at(h, i, j)));
          keys.push_back(j);
        }
        if (keys.empty()) continue;
        long double biggest = logits[0];
        for (const long double l : logits) biggest = std::max(biggest, l);
        long double total = 0;
        for (long double& l : logits) total += (l = std::exp(l - biggest));
        for (std::int64_t c = 0; c < p.d; ++c) {
          long double o = 0;
          for (std::size_t n = 0; n < keys.size(); ++n) {
            o += logits[n] / total * at(p.v, p.h, p.nkv, p.d, z, h, keys[n], c);
          }
          out[static_cast<std::size_t>(((z * p.h + h) * p.nq + i) * p.d + c)] =
              static_cast<double>(o);
        }
      }
    }
  }
  return out;
}

std::vector<double> run_oracle(const Problem& p, const FloatBias& bias, const AttentionMask& mask,
                               double scale) {
  std::vector<double> out(static_cast<std::size_t>(p.z * p.h * p.nq * p.d), -1234.5);
  const Status s = attention_float(bhnd<const float>(p.q.data(), p.z, p.h, p.nq, p.d),
                                   bhnd<const float>(p.k.data(), p.z, p.h, p.nkv, p.d),
                                   bhnd<const float>(p.v.data(), p.z, p.h, p.nkv, p.d), bias, mask,
                                   scale, bhnd(out.data(), p.z, p.h, p.nq, p.d));
  REQUIRE(s == Status::ok);
  return out;
}

void require_close(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    INFO("element " << i);
    REQUIRE(a[i] == Approx(b[i]).margin(1e-12).epsilon(1e-11));
  }
}

/// Element (z, h, i, c) of a contiguous [Z, H, Nq, D] output of `p`.
double output_at(const Problem& p, const std::vector<double>& out, std::int64_t z, std::int64_t h,
                 std::int64_t i, std::int64_t c) {
  return out[static_cast<std::size_t>(((z * p.h + h) * p.nq + i) * p.d + c)];
}

/// The (h, i) rows of batch element 0 that must be NaN in every column; every other element of
/// `out` must match `expected`.
void check_nan_rows(const Problem& p, const std::vector<double>& out,
                    const std::vector<double>& expected,
                    const std::vector<std::pair<std::int64_t, std::int64_t>>& nan_rows) {
  for (std::int64_t h = 0; h < p.h; ++h) {
    for (std::int64_t i = 0; i < p.nq; ++i) {
      const bool nan_row =
          std::find(nan_rows.begin(), nan_rows.end(), std::make_pair(h, i)) != nan_rows.end();
      for (std::int64_t c = 0; c < p.d; ++c) {
        INFO("head " << h << ", row " << i << ", column " << c);
        if (nan_row) {
          CHECK(std::isnan(output_at(p, out, 0, h, i, c)));
        } else {
          CHECK(output_at(p, out, 0, h, i, c) ==
                Approx(output_at(p, expected, 0, h, i, c)).margin(1e-12).epsilon(1e-11));
        }
      }
    }
  }
}

/// Element (h, n, c) of batch element 0 of a contiguous [Z, H, n_count, d_count] tensor.
float& element(std::vector<float>& t, std::int64_t n_count, std::int64_t d_count, std::int64_t h,
               std::int64_t n, std::int64_t c) {
  return t[static_cast<std::size_t>((h * n_count + n) * d_count + c)];
}

}  // namespace

TEST_CASE("float oracle: matches a naive implementation without bias or mask", "[float]") {
  const Problem p = random_problem(2, 3, 19, 23, 8, 1);
  const double scale = 1.0 / std::sqrt(8.0);
  require_close(run_oracle(p, {}, {}, scale), naive_attention(p, {}, {}, scale));
}

TEST_CASE("float oracle: long sequences cross the row-block boundary", "[float]") {
  const Problem p = random_problem(1, 1, 300, 41, 4, 2);
  require_close(run_oracle(p, {}, {}, 0.7), naive_attention(p, {}, {}, 0.7));
}

TEST_CASE("float oracle: dense bias per head and broadcast", "[float][bias]") {
  const Problem p = random_problem(2, 3, 7, 9, 4, 3);
  std::mt19937 rng(4);
  std::uniform_real_distribution<float> dist(-3.0f, 3.0f);
  std::vector<float> values(static_cast<std::size_t>(3 * 7 * 9));
  for (float& x : values) x = dist(rng);

  FloatBias per_head{BiasKind::dense, values.data(), 3, 7, 9};
  const auto with_bias = run_oracle(p, per_head, {}, 0.5);
  require_close(with_bias, naive_attention(p, per_head, {}, 0.5));
  // The bias must change the result, or the comparison above proves nothing about it.
  const auto without = run_oracle(p, {}, {}, 0.5);
  REQUIRE(std::abs(with_bias[0] - without[0]) > 1e-3);

  FloatBias broadcast{BiasKind::dense, values.data(), 1, 7, 9};
  require_close(run_oracle(p, broadcast, {}, 0.5), naive_attention(p, broadcast, {}, 0.5));
}

TEST_CASE("float oracle: relative-position table with strides", "[float][bias]") {
  const Problem p = random_problem(1, 2, 6, 6, 4, 5);
  // Table of 11 entries per head, interleaved: entry e of head h at h + 2 * e.
  std::vector<float> table(22);
  for (std::size_t e = 0; e < table.size(); ++e)
    table[e] = 0.25f * static_cast<float>(e % 7) - 0.8f;
  std::vector<std::int32_t> index(36);
  for (int i = 0; i < 6; ++i) {
    for (int j = 0; j < 6; ++j) index[static_cast<std::size_t>(i * 6 + j)] = i - j + 5;
  }
  FloatBias bias{BiasKind::relative_table, table.data(), 2, 6, 6, index.data(), 11, 1, 2};
  CHECK(bias.at(1, 0, 5) == table[1 + 2 * 0]);
  CHECK(bias.at(0, 5, 0) == table[2 * 10]);
  require_close(run_oracle(p, bias, {}, 0.9), naive_attention(p, bias, {}, 0.9));
}

TEST_CASE("float oracle: windowed mask and a fully masked row", "[float][mask]") {
  const Problem p = random_problem(4, 2, 5, 6, 4, 6);
  std::vector<std::uint8_t> mask_data(2 * 5 * 6);
  for (std::size_t n = 0; n < mask_data.size(); ++n) mask_data[n] = (n * 7 % 3) != 0 ? 1 : 0;
  // Window 1, query 2 sees no key.
  for (int j = 0; j < 6; ++j) mask_data[static_cast<std::size_t>((1 * 5 + 2) * 6 + j)] = 0;
  // Window 0, query 0 sees only key 3: its output is exactly v[3].
  for (int j = 0; j < 6; ++j) mask_data[static_cast<std::size_t>(j)] = j == 3 ? 1 : 0;
  const AttentionMask mask{mask_data.data(), 2, 5, 6};

  const auto out = run_oracle(p, {}, mask, 0.6);
  require_close(out, naive_attention(p, {}, mask, 0.6));
  for (std::int64_t z : {1, 3}) {  // batch elements 1 and 3 use window 1
    for (std::int64_t h = 0; h < 2; ++h) {
      for (std::int64_t c = 0; c < 4; ++c) {
        CHECK(out[static_cast<std::size_t>(((z * 2 + h) * 5 + 2) * 4 + c)] == 0.0);
      }
    }
  }
  for (std::int64_t c = 0; c < 4; ++c) {
    CHECK(out[static_cast<std::size_t>(c)] ==
          static_cast<double>(p.v[static_cast<std::size_t>(3 * 4 + c)]));
  }
}

TEST_CASE("float oracle: equal logits average V", "[float]") {
  Problem p = random_problem(1, 1, 3, 10, 4, 7);
  std::fill(p.q.begin(), p.q.end(), 0.0f);
  const auto out = run_oracle(p, {}, {}, 1.0);
  for (std::int64_t c = 0; c < 4; ++c) {
    double mean = 0.0;
    for (std::int64_t j = 0; j < 10; ++j) mean += p.v[static_cast<std::size_t>(j * 4 + c)];
    mean /= 10.0;
    for (std::int64_t i = 0; i < 3; ++i) {
      CHECK(out[static_cast<std::size_t>(i * 4 + c)] == Approx(mean).margin(1e-14));
    }
  }
}

TEST_CASE("float oracle: strided (BNHD) views give the same result", "[float]") {
  const Problem p = random_problem(2, 3, 5, 5, 4, 8);
  // Re-layout q, k, v and the output as [Z, N, H, D].
  const auto to_bnhd = [&](const std::vector<float>& x) {
    std::vector<float> y(x.size());
    for (std::int64_t z = 0; z < 2; ++z)
      for (std::int64_t h = 0; h < 3; ++h)
        for (std::int64_t n = 0; n < 5; ++n)
          for (std::int64_t c = 0; c < 4; ++c)
            y[static_cast<std::size_t>(((z * 5 + n) * 3 + h) * 4 + c)] =
                x[static_cast<std::size_t>(((z * 3 + h) * 5 + n) * 4 + c)];
    return y;
  };
  const auto q = to_bnhd(p.q), k = to_bnhd(p.k), v = to_bnhd(p.v);
  std::vector<double> out(q.size());
  REQUIRE(attention_float(bnhd<const float>(q.data(), 2, 3, 5, 4),
                          bnhd<const float>(k.data(), 2, 3, 5, 4),
                          bnhd<const float>(v.data(), 2, 3, 5, 4), {}, {}, 0.5,
                          bnhd(out.data(), 2, 3, 5, 4)) == Status::ok);
  const auto expected = naive_attention(p, {}, {}, 0.5);
  const auto out_view = bnhd(out.data(), 2, 3, 5, 4);
  for (std::int64_t z = 0; z < 2; ++z)
    for (std::int64_t h = 0; h < 3; ++h)
      for (std::int64_t n = 0; n < 5; ++n)
        for (std::int64_t c = 0; c < 4; ++c)
          CHECK(out_view(z, h, n, c) ==
                Approx(expected[static_cast<std::size_t>(((z * 3 + h) * 5 + n) * 4 + c)])
                    .margin(1e-12));
}

TEST_CASE("float oracle: invalid arguments return a named status and write nothing",
          "[float][validate]") {
  const Problem p = random_problem(2, 2, 4, 4, 4, 9);
  std::vector<double> out(p.q.size(), -7.0);
  const auto q = bhnd<const float>(p.q.data(), 2, 2, 4, 4);
  const auto k = bhnd<const float>(p.k.data(), 2, 2, 4, 4);
  const auto v = bhnd<const float>(p.v.data(), 2, 2, 4, 4);
  const auto o = bhnd(out.data(), 2, 2, 4, 4);
  std::vector<float> bias_values(2 * 4 * 4, 0.5f);
  std::vector<std::uint8_t> mask_data(4 * 4, 1);
  std::vector<std::int32_t> index(16, 0);
  index[5] = 3;

  const auto call = [&](auto qq, auto kk, auto vv, FloatBias b, AttentionMask m, double scale,
                        auto oo) { return attention_float(qq, kk, vv, b, m, scale, oo); };

  CHECK(call(Tensor4<const float>{}, k, v, {}, {}, 1.0, o) == Status::null_pointer);
  CHECK(call(q, k, v, FloatBias{BiasKind::dense, nullptr, 2, 4, 4}, {}, 1.0, o) ==
        Status::null_pointer);
  CHECK(call(q, k, v, {}, AttentionMask{nullptr, 1, 4, 4}, 1.0, o) == Status::null_pointer);
  CHECK(call(bhnd<const float>(p.q.data(), 2, 2, 0, 4), k, v, {}, {}, 1.0, o) ==
        Status::empty_problem);
  CHECK(call(q, bhnd<const float>(p.k.data(), 2, 2, 4, 2), v, {}, {}, 1.0, o) ==
        Status::shape_mismatch);
  CHECK(call(q, k, bhnd<const float>(p.v.data(), 2, 2, 3, 4), {}, {}, 1.0, o) ==
        Status::shape_mismatch);
  auto overlapping = o;
  overlapping.stride_head = 0;
  CHECK(call(q, k, v, {}, {}, 1.0, overlapping) == Status::invalid_stride);
  auto negative = k;
  negative.stride_seq = -4;
  CHECK(call(q, negative, v, {}, {}, 1.0, o) == Status::invalid_stride);
  CHECK(call(q, k, v, FloatBias{BiasKind::dense, bias_values.data(), 3, 4, 4}, {}, 1.0, o) ==
        Status::bias_shape_mismatch);
  CHECK(call(q, k, v, FloatBias{BiasKind::dense, bias_values.data(), 2, 4, 3}, {}, 1.0, o) ==
        Status::bias_shape_mismatch);
  CHECK(call(q, k, v, {}, AttentionMask{mask_data.data(), 3, 4, 4}, 1.0, o) ==
        Status::mask_shape_mismatch);
  CHECK(call(q, k, v, {}, AttentionMask{mask_data.data(), 1, 4, 5}, 1.0, o) ==
        Status::mask_shape_mismatch);
  CHECK(call(q, k, v, {}, {}, 0.0, o) == Status::invalid_scale);
  CHECK(call(q, k, v, {}, {}, std::nan(""), o) == Status::invalid_scale);
  CHECK(
      call(q, k, v,
           FloatBias{BiasKind::relative_table, bias_values.data(), 1, 4, 4, index.data(), 3, 0, 1},
           {}, 1.0, o) == Status::bias_index_out_of_range);
  for (const double x : out) REQUIRE(x == -7.0);

  // The same table with room for index 3 is accepted.
  CHECK(
      call(q, k, v,
           FloatBias{BiasKind::relative_table, bias_values.data(), 1, 4, 4, index.data(), 4, 0, 1},
           {}, 1.0, o) == Status::ok);
}

TEST_CASE("float oracle: a NaN or an infinity in q or k makes the rows that see it NaN",
          "[float][nonfinite]") {
  Problem p = random_problem(1, 2, 6, 7, 4, 10);
  const auto q_at = [&](std::int64_t h, std::int64_t i, std::int64_t c) -> float& {
    return element(p.q, p.nq, p.d, h, i, c);
  };
  const auto k_at = [&](std::int64_t h, std::int64_t j, std::int64_t c) -> float& {
    return element(p.k, p.nkv, p.d, h, j, c);
  };
  constexpr float kInf = std::numeric_limits<float>::infinity();
  // Head 0, row 1: a NaN in q.
  q_at(0, 1, 2) = std::numeric_limits<float>::quiet_NaN();
  // Head 0, row 3: +inf in q against a zero column of k (inf * 0 is NaN in every logit).
  q_at(0, 3, 0) = kInf;
  for (std::int64_t j = 0; j < p.nkv; ++j) k_at(0, j, 0) = 0.0f;
  // Head 0, row 4: -inf in q against a positive column of k (every logit is -inf).
  q_at(0, 4, 1) = -kInf;
  for (std::int64_t j = 0; j < p.nkv; ++j) k_at(0, j, 1) = 0.5f + std::fabs(k_at(0, j, 1));
  // Head 1: a NaN in key 5, which rows 3 to 5 do not see (their output stays finite).
  k_at(1, 5, 3) = std::numeric_limits<float>::quiet_NaN();
  std::vector<std::uint8_t> mask_data(static_cast<std::size_t>(p.nq * p.nkv), 1);
  for (std::int64_t i = 3; i < p.nq; ++i) mask_data[static_cast<std::size_t>(i * p.nkv + 5)] = 0;
  const AttentionMask mask{mask_data.data(), 1, p.nq, p.nkv};

  check_nan_rows(p, run_oracle(p, {}, mask, 0.5), naive_attention(p, {}, mask, 0.5),
                 {{0, 1}, {0, 3}, {0, 4}, {1, 0}, {1, 1}, {1, 2}});
}

TEST_CASE("float oracle: a NaN or +inf bias makes its row NaN, a -inf bias hides its key",
          "[float][bias][nonfinite]") {
  Problem p = random_problem(1, 2, 5, 6, 4, 11);
  std::mt19937 rng(12);
  std::uniform_real_distribution<float> dist(-3.0f, 3.0f);
  std::vector<float> values(static_cast<std::size_t>(2 * 5 * 6));
  for (float& x : values) x = dist(rng);
  const auto bias_at = [&](std::int64_t h, std::int64_t i, std::int64_t j) -> float& {
    return values[static_cast<std::size_t>((h * 5 + i) * 6 + j)];
  };
  constexpr float kInf = std::numeric_limits<float>::infinity();
  for (std::int64_t j = 0; j < 6; ++j) bias_at(0, 0, j) = std::numeric_limits<float>::quiet_NaN();
  bias_at(0, 2, 3) = kInf;
  bias_at(1, 1, 2) = -kInf;  // hides key 2 from row 1 of head 1
  for (std::int64_t j = 0; j < 6; ++j) bias_at(1, 4, j) = -kInf;  // row 4 of head 1 sees nothing
  const FloatBias bias{BiasKind::dense, values.data(), 2, 5, 6};

  const auto out = run_oracle(p, bias, {}, 0.7);
  // The naive loop agrees except on the row without a visible logit (its 0 / 0 is NaN).
  auto expected = naive_attention(p, bias, {}, 0.7);
  for (std::int64_t c = 0; c < 4; ++c) {
    CHECK(output_at(p, out, 0, 1, 4, c) == 0.0);
    expected[static_cast<std::size_t>(((1 * 5) + 4) * 4 + c)] = 0.0;
  }
  check_nan_rows(p, out, expected, {{0, 0}, {0, 2}});

  // A key hidden by a -inf bias is not read: a NaN in its V leaves those rows finite, while the
  // rows that see the key become NaN.
  for (std::int64_t c = 0; c < 4; ++c) {
    element(p.v, p.nkv, p.d, 1, 2, c) = std::numeric_limits<float>::quiet_NaN();
  }
  check_nan_rows(p, run_oracle(p, bias, {}, 0.7), expected,
                 {{0, 0}, {0, 2}, {1, 0}, {1, 2}, {1, 3}});
}

TEST_CASE("float oracle: a NaN or infinite V reaches the rows that see it, column by column",
          "[float][mask][nonfinite]") {
  Problem p = random_problem(1, 1, 5, 5, 4, 13);
  // Key 4: NaN in column 1, +inf in column 2.
  element(p.v, p.nkv, p.d, 0, 4, 1) = std::numeric_limits<float>::quiet_NaN();
  element(p.v, p.nkv, p.d, 0, 4, 2) = std::numeric_limits<float>::infinity();
  std::vector<std::uint8_t> mask_data(25, 1);
  mask_data[0 * 5 + 4] = 0;                                      // row 0: keys 0-3
  for (std::size_t j = 0; j < 5; ++j) mask_data[2 * 5 + j] = 0;  // row 2: no key
  for (std::size_t j = 0; j < 4; ++j) mask_data[3 * 5 + j] = 0;  // row 3: key 4 only
  const AttentionMask mask{mask_data.data(), 1, 5, 5};
  // Row 4 sees key 4 with a weight of exp(-1000): 0 in double, yet the key is visible.
  std::vector<float> bias_values(25, 0.0f);
  bias_values[4 * 5 + 4] = -1000.0f;
  const FloatBias bias{BiasKind::dense, bias_values.data(), 1, 5, 5};

  const auto out = run_oracle(p, bias, mask, 0.5);
  const auto expected = naive_attention(p, bias, mask, 0.5);
  const auto at = [&](const std::vector<double>& o, std::int64_t i, std::int64_t c) {
    return output_at(p, o, 0, 0, i, c);
  };
  for (std::int64_t c = 0; c < 4; ++c) {
    INFO("column " << c);
    CHECK(at(out, 0, c) == Approx(at(expected, 0, c)).margin(1e-12));  // key 4 hidden
    CHECK(at(out, 2, c) == 0.0);                                       // no visible key
  }
  for (const std::int64_t i : {1, 3, 4}) {
    INFO("row " << i);
    CHECK(std::isnan(at(out, i, 1)));
    CHECK(at(out, i, 0) == Approx(at(expected, i, 0)).margin(1e-12));
    CHECK(at(out, i, 3) == Approx(at(expected, i, 3)).margin(1e-12));
  }
  CHECK(at(out, 1, 2) == std::numeric_limits<double>::infinity());
  CHECK(at(out, 3, 2) == std::numeric_limits<double>::infinity());
  CHECK(std::isnan(at(out, 4, 2)));  // 0 * inf
}

TEST_CASE("float oracle: problems whose buffers exceed its element bound return a status",
          "[float][validate]") {
  using qflash::reference::kMaxFloatOracleElements;
  STATIC_REQUIRE(kMaxFloatOracleElements == std::int64_t{1} << 28);
  const std::vector<float> one_row(4, 0.5f);
  std::vector<double> out(4, -7.0);
  const auto q = bhnd<const float>(one_row.data(), 1, 1, 1, 4);
  const auto o = bhnd(out.data(), 1, 1, 1, 4);
  // K and V repeat one row (seq stride 0) 2^40 times: a few bytes of views, but the oracle would
  // copy them into two 2^40 x 4 double matrices (before, Eigen threw std::bad_alloc).
  auto repeated = bhnd<const float>(one_row.data(), 1, 1, std::int64_t{1} << 40, 4);
  repeated.stride_seq = 0;
  repeated.stride_head = 0;
  repeated.stride_batch = 0;
  CHECK(attention_float(q, repeated, repeated, {}, {}, 1.0, o) == Status::sequence_too_long);
  // Nkv * D just past the bound: 2^26 + 1 keys of D = 4.
  repeated.seq = (std::int64_t{1} << 26) + 1;
  CHECK(attention_float(q, repeated, repeated, {}, {}, 1.0, o) == Status::sequence_too_long);
  // A block of 256 queries times Nkv past the bound (Nkv * D itself is within it).
  std::vector<double> out256(256, -7.0);
  auto q256 = bhnd<const float>(one_row.data(), 1, 1, 256, 1);
  q256.stride_seq = 0;
  auto k1 = bhnd<const float>(one_row.data(), 1, 1, (std::int64_t{1} << 20) + 1, 1);
  k1.stride_seq = 0;
  CHECK(attention_float(q256, k1, k1, {}, {}, 1.0, bhnd(out256.data(), 1, 1, 256, 1)) ==
        Status::sequence_too_long);
  // A huge head dim with one key: one query row is D doubles.
  auto wide = bhnd<const float>(one_row.data(), 1, 1, 1, (std::int64_t{1} << 28) + 1);
  wide.stride_dim = 0;
  const auto wide_out = bhnd(out.data(), 1, 1, 1, (std::int64_t{1} << 28) + 1);  // never written
  CHECK(attention_float(wide, wide, wide, {}, {}, 1.0, wide_out) == Status::sequence_too_long);
  for (const double x : out) REQUIRE(x == -7.0);
  for (const double x : out256) REQUIRE(x == -7.0);

  // Within the bound, a zero-stride K is fine: every key equal, the output is that row of V.
  repeated.seq = 1000;
  REQUIRE(attention_float(q, repeated, repeated, {}, {}, 1.0, o) == Status::ok);
  for (const double x : out) CHECK(x == Approx(0.5).margin(1e-12));
}
