// SPDX-License-Identifier: Apache-2.0
// Scale conventions, int8 quantization, the nats -> Q16-octave bias and fp16 rounding.
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <qflash/reference/quantize.hpp>
#include <random>
#include <vector>

#include "support/catch.hpp"

namespace {

using namespace qflash;
using namespace qflash::reference;

constexpr float kInf = std::numeric_limits<float>::infinity();

std::vector<std::int8_t> quantize_all(const std::vector<float>& x, float scale) {
  std::vector<std::int8_t> out(x.size(), 99);
  const auto n = static_cast<std::int64_t>(x.size());
  REQUIRE(quantize(bhnd<const float>(x.data(), 1, 1, 1, n), std::span<const float>(&scale, 1),
                   bhnd(out.data(), 1, 1, 1, n)) == Status::ok);
  return out;
}

}  // namespace

TEST_CASE("quantize: symmetric scale is amax / 127 in float, 1 for an all-zero tensor",
          "[quantize]") {
  CHECK(symmetric_scale(127.0f) == 1.0f);
  CHECK(symmetric_scale(254.0f) == 2.0f);
  CHECK(symmetric_scale(0.0f) == 1.0f);
  const float amax = 3.9921875f;
  CHECK(std::bit_cast<std::uint32_t>(symmetric_scale(amax)) ==
        std::bit_cast<std::uint32_t>(amax / 127.0f));
}

TEST_CASE("quantize: round half to even, clamp to +-127, NaN to 0", "[quantize]") {
  const std::vector<float> x = {0.5f,  1.5f,   2.5f,       3.5f,   -0.5f,
                                -1.5f, -2.5f,  2.4999998f, 200.0f, -1000.f,
                                127.f, -127.f, kInf,       -kInf,  std::nanf("")};
  const std::vector<std::int8_t> expected = {0,   2,    2,   4,    0,   -2,   -2, 2,
                                             127, -127, 127, -127, 127, -127, 0};
  CHECK(quantize_all(x, 1.0f) == expected);
  // Ties are decided on the float quotient: 1.25 / 0.5 = 2.5 -> 2, 1.75 / 0.5 = 3.5 -> 4.
  CHECK(quantize_all({1.25f, 1.75f, -1.25f}, 0.5f) == std::vector<std::int8_t>{2, 4, -2});
  CHECK(quantize_value(-128.0f, 1.0f) == -127);  // -128 is never produced
}

TEST_CASE("quantize: round trip within half a step, the maximum maps to 127", "[quantize]") {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> dist(-4.0f, 4.0f);
  std::vector<float> x(4096);
  for (float& value : x) value = dist(rng);
  const auto n = static_cast<std::int64_t>(x.size());
  const float scale = symmetric_scale(amax(bhnd<const float>(x.data(), 1, 1, 1, n)));
  const auto codes = quantize_all(x, scale);
  std::vector<float> back(x.size());
  REQUIRE(dequantize(bhnd<const std::int8_t>(codes.data(), 1, 1, 1, n),
                     std::span<const float>(&scale, 1),
                     bhnd(back.data(), 1, 1, 1, n)) == Status::ok);
  int extreme = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    REQUIRE(std::fabs(back[i] - x[i]) <= 0.5f * scale * 1.0001f);
    REQUIRE(back[i] == scale * static_cast<float>(codes[i]));
    extreme = std::max(extreme, std::abs(int{codes[i]}));
  }
  CHECK(extreme == 127);
}

TEST_CASE("quantize: per-head amax and scales", "[quantize]") {
  // [Z=2, H=2, N=1, D=2]; head 0 peaks at 2, head 1 at 8 (in batch element 1).
  const std::vector<float> x = {1.0f, -2.0f, 0.5f, 4.0f, 0.25f, 1.0f, -8.0f, 2.0f};
  const auto view = bhnd<const float>(x.data(), 2, 2, 1, 2);
  CHECK(amax(view) == 8.0f);
  CHECK(amax_per_head(view) == std::vector<float>{2.0f, 8.0f});
  const std::vector<float> scales = {symmetric_scale(2.0f), symmetric_scale(8.0f)};
  std::vector<std::int8_t> codes(x.size());
  REQUIRE(quantize(view, scales, bhnd(codes.data(), 2, 2, 1, 2)) == Status::ok);
  CHECK(codes == std::vector<std::int8_t>{64, -127, 8, 64, 16, 64, -127, 32});
  std::vector<double> back(x.size());
  REQUIRE(dequantize(bhnd<const std::int8_t>(codes.data(), 2, 2, 1, 2), scales,
                     bhnd(back.data(), 2, 2, 1, 2)) == Status::ok);
  CHECK(back[1] == -127.0 * static_cast<double>(scales[0]));  // exact in double
  CHECK(back[6] == -127.0 * static_cast<double>(scales[1]));
  CHECK(back[1] == Approx(-2.0));
}

TEST_CASE("quantize: invalid arguments return a status and write nothing", "[quantize]") {
  const std::vector<float> x = {1.0f, 2.0f, 3.0f, 4.0f};
  std::vector<std::int8_t> codes(4, 55);
  const auto in = bhnd<const float>(x.data(), 1, 2, 1, 2);
  const auto out = bhnd(codes.data(), 1, 2, 1, 2);
  const float one = 1.0f;
  const std::vector<float> three = {1.0f, 1.0f, 1.0f};
  const float bad_scales[] = {0.0f, -1.0f, kInf, std::nanf("")};
  CHECK(quantize(in, three, out) == Status::param_count_mismatch);
  CHECK(quantize(in, {}, out) == Status::param_count_mismatch);
  for (const float bad : bad_scales) {
    CHECK(quantize(in, std::span<const float>(&bad, 1), out) == Status::invalid_scale);
  }
  CHECK(quantize(in, std::span<const float>(&one, 1), bhnd(codes.data(), 1, 1, 2, 2)) ==
        Status::shape_mismatch);
  CHECK(quantize(Tensor4<const float>{}, std::span<const float>(&one, 1), out) ==
        Status::null_pointer);
  auto overlapping = out;
  overlapping.stride_head = 0;
  CHECK(quantize(in, std::span<const float>(&one, 1), overlapping) == Status::invalid_stride);
  for (const std::int8_t c : codes) REQUIRE(c == 55);
}

TEST_CASE("quantize: views past the address space or overlapping the output are rejected",
          "[quantize][validate]") {
  std::vector<float> x(16, 1.0f);  // views below read the first 8 floats
  std::vector<std::int8_t> codes(8, 55);
  std::vector<float> back(8, -3.0f);
  const float one = 1.0f;
  const auto ones = std::span<const float>(&one, 1);
  const auto out = bhnd(codes.data(), 2, 1, 1, 4);

  // Two batch elements 2^62 floats apart: the largest offset fits int64, its byte span does not.
  auto far = bhnd<const float>(x.data(), 2, 1, 1, 4);
  far.stride_batch = std::int64_t{1} << 62;
  CHECK(quantize(far, ones, out) == Status::invalid_stride);
  // 2^46 floats apart: 2^48 + 16 bytes, just past detail::kMaxViewBytes.
  far.stride_batch = std::int64_t{1} << 46;
  CHECK(quantize(far, ones, out) == Status::invalid_stride);
  // The largest offset itself overflows int64.
  far.stride_batch = std::numeric_limits<std::int64_t>::max() / 2 + 1;
  far.batch = 3;
  far.dim = 2;
  CHECK(quantize(far, ones, bhnd(codes.data(), 3, 1, 1, 2)) == Status::invalid_stride);
  for (const std::int8_t c : codes) REQUIRE(c == 55);

  auto far_codes = bhnd<const std::int8_t>(codes.data(), 2, 1, 1, 4);
  far_codes.stride_batch = std::int64_t{1} << 62;
  CHECK(dequantize(far_codes, ones, bhnd(back.data(), 2, 1, 1, 4)) == Status::invalid_stride);
  far_codes.stride_batch = std::int64_t{1} << 48;  // 2^48 + 4 bytes
  CHECK(dequantize(far_codes, ones, bhnd(back.data(), 2, 1, 1, 4)) == Status::invalid_stride);
  for (const float b : back) REQUIRE(b == -3.0f);

  // amax and amax_per_head read nothing of such a view: NaN (a scale quantize rejects) and no
  // per-head values (a scale count quantize rejects).
  far = bhnd<const float>(x.data(), 2, 1, 1, 4);
  far.stride_batch = std::int64_t{1} << 62;
  CHECK(std::isnan(amax(far)));
  CHECK(std::isnan(symmetric_scale(amax(far))));
  CHECK(amax_per_head(far).empty());
  auto negative = bhnd<const float>(x.data(), 2, 1, 1, 4);
  negative.stride_dim = -1;
  CHECK(std::isnan(amax(negative)));
  CHECK(amax_per_head(negative).empty());
  CHECK(std::isnan(amax(bhnd<const float>(nullptr, 1, 1, 1, 4))));
  CHECK(amax(bhnd<const float>(x.data(), 0, 1, 1, 4)) == 0.0f);  // empty: 0, as before
  // 2^62 heads at head stride 0 span one row, but 2^62 per-head maxima would not fit.
  auto many_heads = bhnd<const float>(x.data(), 1, 1, 1, 4);
  many_heads.heads = std::int64_t{1} << 62;
  many_heads.stride_head = 0;
  CHECK(amax_per_head(many_heads).empty());

  // An output over its input: quantize into the input's own bytes, dequantize over the codes or
  // over the scales. Each is rejected before anything is read or written.
  const auto in = bhnd<const float>(x.data(), 2, 1, 1, 4);
  auto* x_bytes = reinterpret_cast<std::int8_t*>(x.data());
  CHECK(quantize(in, ones, bhnd(x_bytes, 2, 1, 1, 4)) == Status::output_overlaps_input);
  CHECK(quantize(in, ones, bhnd(x_bytes + 28, 2, 1, 1, 4)) == Status::output_overlaps_input);
  CHECK(quantize(in, ones, bhnd(x_bytes + 32, 2, 1, 1, 4)) == Status::ok);  // just past `in`
  std::vector<float> buffer(16, 0.0f);
  const auto* buffer_codes = reinterpret_cast<const std::int8_t*>(buffer.data());
  CHECK(dequantize(bhnd(buffer_codes, 2, 1, 1, 4), ones, bhnd(buffer.data(), 2, 1, 1, 4)) ==
        Status::output_overlaps_input);
  CHECK(dequantize(bhnd(buffer_codes + 60, 2, 1, 1, 2), ones, bhnd(buffer.data(), 2, 1, 1, 2)) ==
        Status::ok);  // disjoint bytes
  std::vector<float> scales_in_out(8, 1.0f);
  CHECK(dequantize(bhnd<const std::int8_t>(codes.data(), 2, 1, 1, 4),
                   std::span<const float>(scales_in_out.data() + 7, 1),
                   bhnd(scales_in_out.data(), 2, 1, 1, 4)) == Status::output_overlaps_input);
  for (const float f : scales_in_out) REQUIRE(f == 1.0f);
}

TEST_CASE("quantize: bias layouts past the address space or in place are rejected",
          "[quantize][bias][validate]") {
  std::vector<float> nats(8, 0.5f);
  const std::vector<std::int32_t> index(4, 0);
  QuantizedBias untouched;

  // heads * rows * cols = 2^66 overflows int64 (before, the product wrapped and the copy read
  // far past `nats`).
  const std::int64_t big = std::int64_t{1} << 22;
  CHECK(quantize_bias(FloatBias{BiasKind::dense, nats.data(), big, big, big}, untouched) ==
        Status::bias_shape_mismatch);
  // 2^47 floats: exact in int64, but 2^49 bytes, past detail::kMaxViewBytes.
  CHECK(quantize_bias(FloatBias{BiasKind::dense, nats.data(), 1, std::int64_t{1} << 24,
                                std::int64_t{1} << 23},
                      untouched) == Status::bias_shape_mismatch);
  // A table whose largest offset h * stride_head overflows int64.
  CHECK(quantize_bias(FloatBias{BiasKind::relative_table, nats.data(), 4, 2, 2, index.data(), 2,
                                std::int64_t{1} << 62, 1},
                      untouched) == Status::bias_shape_mismatch);
  // Zero strides: the table view spans one float, but heads * table_size = 2^80 gathered entries
  // overflow int64 (before, the product wrapped to 0 and the gather wrote past an empty vector).
  const std::int64_t huge = std::int64_t{1} << 40;
  CHECK(quantize_bias(
            FloatBias{BiasKind::relative_table, nats.data(), huge, 2, 2, index.data(), huge, 0, 0},
            untouched) == Status::bias_shape_mismatch);
  // An index map [rows, cols] past the bound.
  CHECK(quantize_bias(FloatBias{BiasKind::relative_table, nats.data(), 1, big, big * big,
                                index.data(), 2, 0, 1},
                      untouched) == Status::bias_shape_mismatch);
  CHECK(untouched.view().kind == BiasKind::none);

  // Element-wise arrays: the output over its input (in place too) is rejected, nothing written.
  std::vector<float> shared = {1.0f, 2.0f, 3.0f, 4.0f};
  auto* shared_q16 = reinterpret_cast<std::int32_t*>(shared.data());
  CHECK(quantize_bias(std::span<const float>(shared.data(), 2),
                      std::span<std::int32_t>(shared_q16 + 1, 2)) == Status::output_overlaps_input);
  CHECK(quantize_bias(std::span<const float>(shared.data(), 4),
                      std::span<std::int32_t>(shared_q16, 4)) == Status::output_overlaps_input);
  CHECK(shared == std::vector<float>{1.0f, 2.0f, 3.0f, 4.0f});
  std::vector<std::int32_t> q16(2, 0);
  CHECK(quantize_bias(std::span<const float>(shared.data() + 2, 2), std::span<std::int32_t>(q16)) ==
        Status::ok);
}

TEST_CASE("quantize: bias nats -> Q16 octaves, half away from zero, saturated",
          "[quantize][bias]") {
  CHECK(quantize_bias(0.0f) == 0);
  CHECK(quantize_bias(1.0f) == 94548);            // 94548.46...
  CHECK(quantize_bias(-0.5f) == -47274);          // -47274.23...
  CHECK(quantize_bias(std::log(2.0f)) == 65536);  // one octave
  CHECK(quantize_bias(0.1f) == 9455);             // 9454.846...
  CHECK(quantize_bias(1.0e6f) == kLogitHalfRange);
  CHECK(quantize_bias(-1.0e6f) == -kLogitHalfRange);
  CHECK(quantize_bias(kInf) == kLogitHalfRange);
  CHECK(quantize_bias(-kInf) == -kLogitHalfRange);
  CHECK(quantize_bias(std::nanf("")) == 0);
  CHECK(quantize_bias(2839.0f) == 268423084);  // just below the saturation bound

  std::mt19937 rng(12);
  std::uniform_real_distribution<float> dist(-50.0f, 50.0f);
  for (int i = 0; i < 10000; ++i) {
    const float nats = dist(rng);
    const std::int32_t q = quantize_bias(nats);
    REQUIRE(quantize_bias(-nats) == -q);  // symmetric rounding
    const double exact = static_cast<double>(nats) * kLog2e * 65536.0;
    REQUIRE(std::fabs(static_cast<double>(q) - exact) <= 0.5);
  }
}

TEST_CASE("quantize: bias arrays, dense and relative table", "[quantize][bias]") {
  const std::vector<float> nats = {0.0f, 1.0f, -0.5f, 0.1f, 2.0f, -3.0f};
  std::vector<std::int32_t> q16(nats.size());
  REQUIRE(quantize_bias(nats, q16) == Status::ok);
  for (std::size_t i = 0; i < nats.size(); ++i) CHECK(q16[i] == quantize_bias(nats[i]));
  std::vector<std::int32_t> short_out(2, 7);
  CHECK(quantize_bias(nats, short_out) == Status::shape_mismatch);
  CHECK(short_out == std::vector<std::int32_t>{7, 7});

  // Dense [1, 2, 3].
  const FloatBias dense{BiasKind::dense, nats.data(), 1, 2, 3};
  QuantizedBias qd;
  REQUIRE(quantize_bias(dense, qd) == Status::ok);
  const AttentionBias dv = qd.view();
  CHECK(dv.kind == BiasKind::dense);
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 3; ++j) CHECK(dv.at(0, i, j) == quantize_bias(dense.at(0, i, j)));
  }

  // Table of 3 entries for 2 heads, interleaved (stride_head 1, stride_entry 2), 2 x 2 index.
  const std::vector<std::int32_t> index = {0, 1, 2, 1};
  const FloatBias table{BiasKind::relative_table, nats.data(), 2, 2, 2, index.data(), 3, 1, 2};
  QuantizedBias qt;
  REQUIRE(quantize_bias(table, qt) == Status::ok);
  const AttentionBias tv = qt.view();
  CHECK(tv.stride_head == 3);
  CHECK(tv.stride_entry == 1);
  CHECK(qt.values().size() == 6);
  for (int h = 0; h < 2; ++h)
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 2; ++j) CHECK(tv.at(h, i, j) == quantize_bias(table.at(h, i, j)));

  QuantizedBias untouched;
  CHECK(quantize_bias(FloatBias{BiasKind::dense, nullptr, 1, 2, 3}, untouched) ==
        Status::null_pointer);
  CHECK(quantize_bias(FloatBias{BiasKind::dense, nats.data(), 0, 2, 3}, untouched) ==
        Status::bias_shape_mismatch);
  CHECK(untouched.view().kind == BiasKind::none);
}

TEST_CASE("quantize: rounding through binary16", "[quantize][fp16]") {
  CHECK(round_through_half(1.0f / 3.0f) == 0.333251953125f);
  CHECK(round_through_half(2049.0f) == 2048.0f);  // tie -> even significand
  CHECK(round_through_half(2051.0f) == 2052.0f);  // tie -> even significand
  CHECK(round_through_half(-2051.0f) == -2052.0f);
  CHECK(round_through_half(65519.0f) == 65504.0f);
  CHECK(round_through_half(65520.0f) == kInf);
  CHECK(round_through_half(1.0e-8f) == 0.0f);
  CHECK(round_through_half(3.998046875f) == 3.998046875f);  // representable: unchanged
  CHECK(round_through_half(3.9990234375f) == 4.0f);         // halfway: to the even 4.0
  std::vector<float> values = {2049.0f, 0.1f};
  round_through_half(values);
  CHECK(values == std::vector<float>{2048.0f, 0.0999755859375f});
}

TEST_CASE("quantize: dequantize integer and fp16 outputs", "[quantize]") {
  const std::vector<std::int16_t> s16 = {-300, 0, 5};
  CHECK(dequantize(std::span<const std::int16_t>(s16), 0.25) ==
        std::vector<double>{-75.0, 0.0, 1.25});
  const std::vector<Float16> f16 = {Float16{0x3c00}, Float16{0xc000}, Float16{0x3555}};
  CHECK(dequantize(std::span<const Float16>(f16)) ==
        std::vector<double>{1.0, -2.0, 0.333251953125});
}
