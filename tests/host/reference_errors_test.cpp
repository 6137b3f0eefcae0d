// SPDX-License-Identifier: Apache-2.0
// The integer reference's argument validation: every invalid call returns its named Status and
// writes nothing (the output is filled with a sentinel and compared afterwards). Sequences that
// are too long are described by views over a tiny buffer: validation must reject them before it
// reads anything (ASan would see a read).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <qflash/qflash.hpp>
#include <qflash/reference/attention_float.hpp>
#include <qflash/reference/flash_attention_int.hpp>
#include <span>
#include <string>
#include <vector>

#include "support/catch.hpp"
#include "support/host_generators.hpp"

namespace {

using namespace qflash;

constexpr std::int64_t Z = 2, H = 3, NQ = 40, NK = 36, D = 32;
constexpr auto size_of(std::int64_t n) { return static_cast<std::size_t>(n); }
constexpr std::int8_t kSentinel = 0x5a;
constexpr std::int64_t kTwoTo62 = std::int64_t{1} << 62;

/// A valid call that each case breaks in one way.
template <class Cfg, class OutT>
struct Call {
  using Out = OutputFor<Cfg, OutT>;
  using Params = HeadParams<Cfg, Out>;
  std::vector<std::int8_t> q, k, v;
  std::vector<OutT> out;
  std::vector<Params> params;
  std::vector<std::int32_t> bias_values, index;
  std::vector<std::uint8_t> mask;
  AttentionProblem problem;
  Tensor4<OutT> out_view;
  std::span<const Params> param_span;

  Call() {
    test::Rng rng(7);
    q = test::random_int8(rng, size_of(Z * H * NQ * D));
    k = test::random_int8(rng, size_of(Z * H * NK * D));
    v = test::random_int8(rng, size_of(Z * H * NK * D));
    out.resize(size_of(Z * H * NQ * D));
    std::memset(static_cast<void*>(out.data()), kSentinel, out.size() * sizeof(OutT));
    params.resize(size_of(H));
    const float s = 0.03f;
    REQUIRE(calibrate<Cfg, Out>(QuantScales{{&s, 1}, {&s, 1}, {&s, 1}}, D,
                                std::span<Params>(params)) == Status::ok);
    bias_values.assign(size_of(H * 50), 1000);
    index.assign(size_of(NQ * NK), 3);
    mask.assign(size_of(Z * NQ * NK), 1);
    problem = AttentionProblem{bhnd<const std::int8_t>(q.data(), Z, H, NQ, D),
                               bhnd<const std::int8_t>(k.data(), Z, H, NK, D),
                               bhnd<const std::int8_t>(v.data(), Z, H, NK, D)};
    out_view = bhnd(out.data(), Z, H, NQ, D);
    param_span = std::span<const Params>(params);
  }

  void relative_bias() {
    problem.bias = AttentionBias{
        BiasKind::relative_table, bias_values.data(), H, NQ, NK, index.data(), 50, 50, 1};
  }
  void dense_bias_on(std::vector<std::int32_t>& storage) {
    storage.assign(size_of(H * NQ * NK), -77);
    problem.bias = AttentionBias{BiasKind::dense, storage.data(), H, NQ, NK};
  }
  void window_mask(std::int64_t windows) {
    mask.assign(static_cast<std::size_t>((windows > 0 ? windows : 1) * NQ * NK), 1);
    problem.mask = AttentionMask{mask.data(), windows, NQ, NK};
  }

  Status run() { return reference::flash_attention<Cfg, Out>(problem, param_span, out_view); }

  bool untouched() const {
    const auto* bytes = reinterpret_cast<const unsigned char*>(out.data());
    for (std::size_t i = 0; i < out.size() * sizeof(OutT); ++i) {
      if (bytes[i] != static_cast<unsigned char>(kSentinel)) return false;
    }
    return true;
  }
};

template <class Cfg, class OutT>
void expect(const std::string& what, Status want,
            const std::function<void(Call<Cfg, OutT>&)>& mutate) {
  INFO(what);
  Call<Cfg, OutT> c;
  mutate(c);
  const Status got = c.run();
  CHECK(std::string(to_string(got)) == to_string(want));
  CHECK(c.untouched());
}

template <class Cfg, class OutT>
void check_all_errors() {
  using C = Call<Cfg, OutT>;
  // The unmodified call is valid (and writes).
  {
    C c;
    REQUIRE(c.run() == Status::ok);
    CHECK_FALSE(c.untouched());
  }
  // Null pointers.
  expect<Cfg, OutT>("null q", Status::null_pointer, [](C& c) { c.problem.q.data = nullptr; });
  expect<Cfg, OutT>("null k", Status::null_pointer, [](C& c) { c.problem.k.data = nullptr; });
  expect<Cfg, OutT>("null v", Status::null_pointer, [](C& c) { c.problem.v.data = nullptr; });
  expect<Cfg, OutT>("null out", Status::null_pointer, [](C& c) { c.out_view.data = nullptr; });
  expect<Cfg, OutT>("null params", Status::null_pointer, [](C& c) { c.param_span = {}; });
  expect<Cfg, OutT>("null dense bias values", Status::null_pointer, [](C& c) {
    c.problem.bias = AttentionBias{BiasKind::dense, nullptr, H, NQ, NK};
  });
  expect<Cfg, OutT>("null relative table", Status::null_pointer, [](C& c) {
    c.relative_bias();
    c.problem.bias.values = nullptr;
  });
  expect<Cfg, OutT>("null relative index", Status::null_pointer, [](C& c) {
    c.relative_bias();
    c.problem.bias.index = nullptr;
  });
  expect<Cfg, OutT>("null mask data", Status::null_pointer, [](C& c) {
    c.window_mask(1);
    c.problem.mask.data = nullptr;
  });
  // Empty problems.
  expect<Cfg, OutT>("Z = 0", Status::empty_problem, [](C& c) {
    c.problem.q.batch = c.problem.k.batch = c.problem.v.batch = c.out_view.batch = 0;
  });
  expect<Cfg, OutT>("Z = -1", Status::empty_problem, [](C& c) {
    c.problem.q.batch = c.problem.k.batch = c.problem.v.batch = c.out_view.batch = -1;
  });
  expect<Cfg, OutT>("H = 0", Status::empty_problem, [](C& c) {
    c.problem.q.heads = c.problem.k.heads = c.problem.v.heads = c.out_view.heads = 0;
  });
  expect<Cfg, OutT>("Nq = 0", Status::empty_problem,
                    [](C& c) { c.problem.q.seq = c.out_view.seq = 0; });
  expect<Cfg, OutT>("Nkv = 0", Status::empty_problem,
                    [](C& c) { c.problem.k.seq = c.problem.v.seq = 0; });
  expect<Cfg, OutT>("D = 0", Status::empty_problem, [](C& c) {
    c.problem.q.dim = c.problem.k.dim = c.problem.v.dim = c.out_view.dim = 0;
  });
  // Head dims without an instantiation.
  for (const std::int64_t d : {16, 48, 31, 33, 256}) {
    expect<Cfg, OutT>("D = " + std::to_string(d), Status::unsupported_head_dim, [d](C& c) {
      c.problem.q.dim = c.problem.k.dim = c.problem.v.dim = c.out_view.dim = d;
    });
  }
  // Shape mismatches.
  expect<Cfg, OutT>("K vs V seq", Status::shape_mismatch, [](C& c) { c.problem.v.seq = NK - 1; });
  expect<Cfg, OutT>("Q vs O seq", Status::shape_mismatch, [](C& c) { c.out_view.seq = NQ - 1; });
  expect<Cfg, OutT>("K heads", Status::shape_mismatch, [](C& c) { c.problem.k.heads = H - 1; });
  expect<Cfg, OutT>("V heads", Status::shape_mismatch, [](C& c) { c.problem.v.heads = H + 1; });
  expect<Cfg, OutT>("O heads", Status::shape_mismatch, [](C& c) { c.out_view.heads = 1; });
  expect<Cfg, OutT>("K batch", Status::shape_mismatch, [](C& c) { c.problem.k.batch = 1; });
  expect<Cfg, OutT>("V batch", Status::shape_mismatch, [](C& c) { c.problem.v.batch = -Z; });
  expect<Cfg, OutT>("O batch", Status::shape_mismatch, [](C& c) { c.out_view.batch = Z + 1; });
  expect<Cfg, OutT>("K dim", Status::shape_mismatch, [](C& c) { c.problem.k.dim = 64; });
  expect<Cfg, OutT>("V dim", Status::shape_mismatch, [](C& c) { c.problem.v.dim = 64; });
  expect<Cfg, OutT>("O dim", Status::shape_mismatch, [](C& c) { c.out_view.dim = 64; });
  // Strides.
  expect<Cfg, OutT>("negative q stride", Status::invalid_stride, [](C& c) {
    c.problem.q.data += NQ * D - D;  // a reversed view of the tokens
    c.problem.q.stride_seq = -D;
  });
  expect<Cfg, OutT>("negative k stride", Status::invalid_stride,
                    [](C& c) { c.problem.k.stride_head = -c.problem.k.stride_head; });
  expect<Cfg, OutT>("negative v stride", Status::invalid_stride,
                    [](C& c) { c.problem.v.stride_dim = -1; });
  expect<Cfg, OutT>("negative out stride", Status::invalid_stride,
                    [](C& c) { c.out_view.stride_batch = -1; });
  expect<Cfg, OutT>("overlapping out rows", Status::invalid_stride,
                    [](C& c) { c.out_view.stride_seq = D / 2; });
  expect<Cfg, OutT>("out heads aliased", Status::invalid_stride,
                    [](C& c) { c.out_view.stride_head = 0; });
  expect<Cfg, OutT>("out elements aliased", Status::invalid_stride,
                    [](C& c) { c.out_view.stride_dim = 0; });
  expect<Cfg, OutT>("out batches overlap heads", Status::invalid_stride,
                    [](C& c) { c.out_view.stride_batch = H * NQ * D - 1; });
  // Views past the address space (Z = 2, so each batch stride is used): once these reached the
  // reference as offsets that overflowed int64 or pointed far past the buffer (SEGV).
  expect<Cfg, OutT>("q batch stride 2^62", Status::invalid_stride,
                    [](C& c) { c.problem.q.stride_batch = kTwoTo62; });
  expect<Cfg, OutT>("k batch stride 2^62", Status::invalid_stride,
                    [](C& c) { c.problem.k.stride_batch = kTwoTo62; });
  expect<Cfg, OutT>("v batch stride 2^62", Status::invalid_stride,
                    [](C& c) { c.problem.v.stride_batch = kTwoTo62; });
  expect<Cfg, OutT>("q strides sum past int64", Status::invalid_stride, [](C& c) {
    c.problem.q.stride_batch = kTwoTo62;     // 1 * 2^62
    c.problem.q.stride_head = kTwoTo62 / 2;  // + (H - 1) * 2^61 = 2^63
  });
  expect<Cfg, OutT>("k token stride * (Nkv - 1) past int64", Status::invalid_stride,
                    [](C& c) { c.problem.k.stride_seq = std::int64_t{1} << 58; });
  expect<Cfg, OutT>("v span past 2^48 bytes", Status::invalid_stride,
                    [](C& c) { c.problem.v.stride_seq = std::int64_t{1} << 43; });  // 35 * 2^43
  expect<Cfg, OutT>("out span past 2^48 bytes", Status::invalid_stride,
                    [](C& c) { c.out_view.stride_batch = std::int64_t{1} << 48; });
  // Bias shapes.
  std::vector<std::int32_t> dense;
  expect<Cfg, OutT>("dense bias heads", Status::bias_shape_mismatch, [&](C& c) {
    c.dense_bias_on(dense);
    c.problem.bias.heads = 2;
  });
  expect<Cfg, OutT>("dense bias heads 0", Status::bias_shape_mismatch, [&](C& c) {
    c.dense_bias_on(dense);
    c.problem.bias.heads = 0;
  });
  expect<Cfg, OutT>("dense bias rows", Status::bias_shape_mismatch, [&](C& c) {
    c.dense_bias_on(dense);
    c.problem.bias.rows = NQ + 1;
  });
  expect<Cfg, OutT>("dense bias cols", Status::bias_shape_mismatch, [&](C& c) {
    c.dense_bias_on(dense);
    c.problem.bias.cols = NK - 1;
  });
  expect<Cfg, OutT>("relative table size 0", Status::bias_shape_mismatch, [](C& c) {
    c.relative_bias();
    c.problem.bias.table_size = 0;
  });
  expect<Cfg, OutT>("relative table negative head stride", Status::bias_shape_mismatch, [](C& c) {
    c.relative_bias();
    c.problem.bias.stride_head = -50;
  });
  expect<Cfg, OutT>("relative table negative entry stride", Status::bias_shape_mismatch, [](C& c) {
    c.relative_bias();
    c.problem.bias.stride_entry = -1;
  });
  expect<Cfg, OutT>("relative table heads", Status::bias_shape_mismatch, [](C& c) {
    c.relative_bias();
    c.problem.bias.heads = 4;
  });
  // Relative tables whose largest offset stride_head * (H - 1) + stride_entry * 49 overflows
  // int64 (once a signed overflow in BiasView::at, and ok) or spans more than 2^48 bytes.
  expect<Cfg, OutT>("relative table head stride 2^62", Status::bias_shape_mismatch, [](C& c) {
    c.relative_bias();
    c.problem.bias.stride_head = kTwoTo62;
  });
  expect<Cfg, OutT>("relative table strides sum past int64", Status::bias_shape_mismatch, [](C& c) {
    c.relative_bias();
    c.problem.bias.stride_head = kTwoTo62 / 2;    // 2 * 2^61
    c.problem.bias.stride_entry = kTwoTo62 / 32;  // + 49 * 2^57
  });
  expect<Cfg, OutT>("relative table span past 2^48 bytes", Status::bias_shape_mismatch, [](C& c) {
    c.relative_bias();
    c.problem.bias.stride_head = std::int64_t{1} << 45;  // (2 * 2^45 + 50) * 4 bytes
  });
  // Relative-position indices outside the table.
  expect<Cfg, OutT>("index == table size", Status::bias_index_out_of_range, [](C& c) {
    c.relative_bias();
    c.index[size_of(NQ * NK - 1)] = 50;
  });
  expect<Cfg, OutT>("index -1", Status::bias_index_out_of_range, [](C& c) {
    c.relative_bias();
    c.index[0] = -1;
  });
  expect<Cfg, OutT>("index INT32_MAX", Status::bias_index_out_of_range, [](C& c) {
    c.relative_bias();
    c.index[size_of(NK + 5)] = std::numeric_limits<std::int32_t>::max();
  });
  {  // the largest valid index is accepted
    C c;
    c.relative_bias();
    c.index[7] = 49;
    CHECK(c.run() == Status::ok);
  }
  // Masks.
  expect<Cfg, OutT>("mask rows", Status::mask_shape_mismatch, [](C& c) {
    c.window_mask(1);
    c.problem.mask.rows = NQ - 1;
  });
  expect<Cfg, OutT>("mask cols", Status::mask_shape_mismatch, [](C& c) {
    c.window_mask(1);
    c.problem.mask.cols = NK + 1;
  });
  expect<Cfg, OutT>("Z % windows != 0", Status::mask_shape_mismatch,
                    [](C& c) { c.window_mask(3); });
  expect<Cfg, OutT>("windows > Z", Status::mask_shape_mismatch, [](C& c) { c.window_mask(4); });
  expect<Cfg, OutT>("negative windows", Status::mask_shape_mismatch, [](C& c) {
    c.window_mask(1);
    c.problem.mask.windows = -2;
  });
  {  // windows == Z and windows == 1 are fine
    C c;
    c.window_mask(Z);
    CHECK(c.run() == Status::ok);
  }
  // Parameter counts.
  expect<Cfg, OutT>("2 params for 3 heads", Status::param_count_mismatch,
                    [](C& c) { c.param_span = c.param_span.subspan(0, 2); });
  expect<Cfg, OutT>("0 params (non-null)", Status::param_count_mismatch,
                    [](C& c) { c.param_span = c.param_span.subspan(0, 0); });
  std::vector<typename C::Params> four(4);
  expect<Cfg, OutT>("4 params for 3 heads", Status::param_count_mismatch, [&](C& c) {
    four.assign(4, c.params[0]);
    c.param_span = std::span<const typename C::Params>(four);
  });
  {
    C c;
    c.param_span = c.param_span.subspan(0, 1);
    CHECK(c.run() == Status::ok);
  }
}

}  // namespace

TEST_CASE("reference errors: every invalid call returns its Status and writes nothing",
          "[reference][errors]") {
  SECTION("Precise, s8") { check_all_errors<presets::Precise, std::int8_t>(); }
  SECTION("Paper, s16") { check_all_errors<presets::Paper, std::int16_t>(); }
  SECTION("PreciseCubic, fp16") { check_all_errors<presets::PreciseCubic, Float16>(); }
  SECTION("Fast, s8") { check_all_errors<presets::Fast, std::int8_t>(); }
}

TEST_CASE("reference errors: sequences above max_keys are rejected before any read",
          "[reference][errors]") {
  // Views that claim max_keys + 1 (or 2^40) keys over a 64-byte buffer: any read would be
  // out of bounds.
  std::vector<std::int8_t> tiny(64, 1);
  auto check_config = [&](auto cfg_tag, std::int64_t max_keys) {
    using Cfg = decltype(cfg_tag);
    using Out = OutputFor<Cfg, std::int8_t>;
    CHECK(Cfg::Softmax::max_keys == max_keys);
    std::vector<HeadParams<Cfg, Out>> prm(1);
    const float s = 0.03f;
    REQUIRE(calibrate<Cfg, Out>(QuantScales{{&s, 1}, {&s, 1}, {&s, 1}}, 32,
                                std::span<HeadParams<Cfg, Out>>(prm)) == Status::ok);
    std::vector<std::int8_t> out(32, kSentinel);
    for (const std::int64_t n : {max_keys + 1, max_keys + 1000, std::int64_t{1} << 40}) {
      INFO("Nkv " << n);
      AttentionProblem p{bhnd<const std::int8_t>(tiny.data(), 1, 1, 1, 32),
                         bhnd<const std::int8_t>(tiny.data(), 1, 1, n, 32),
                         bhnd<const std::int8_t>(tiny.data(), 1, 1, n, 32)};
      const Status st = reference::flash_attention<Cfg, Out>(
          p, std::span<const HeadParams<Cfg, Out>>(prm), bhnd(out.data(), 1, 1, 1, 32));
      CHECK(std::string(to_string(st)) == to_string(Status::sequence_too_long));
      for (const auto x : out) CHECK(x == kSentinel);
      // Also with a bias and a mask of that size (never read either).
      std::vector<std::int32_t> b(8, 0);
      std::vector<std::uint8_t> m(8, 1);
      p.bias = AttentionBias{BiasKind::dense, b.data(), 1, 1, n};
      p.mask = AttentionMask{m.data(), 1, 1, n};
      CHECK(validate<Cfg>(p, bhnd(out.data(), 1, 1, 1, 32), prm.data(), 1) ==
            Status::sequence_too_long);
    }
    // Exactly max_keys passes validation (not run here: that is the extremes test's job). K and
    // V get real memory: views past their buffer could cover `out`, an output_overlaps_input.
    std::vector<std::int8_t> keys(size_of(max_keys * 32), 1);
    AttentionProblem ok{bhnd<const std::int8_t>(tiny.data(), 1, 1, 1, 32),
                        bhnd<const std::int8_t>(keys.data(), 1, 1, max_keys, 32),
                        bhnd<const std::int8_t>(keys.data(), 1, 1, max_keys, 32)};
    CHECK(validate<Cfg>(ok, bhnd(out.data(), 1, 1, 1, 32), prm.data(), 1) == Status::ok);
  };
  check_config(presets::Precise{}, 65793);
  check_config(presets::PreciseCubic{}, 65793);
  check_config(presets::Paper{}, 132104);
  check_config(presets::Fast{}, 32896);
}

// detail::is_non_overlapping once multiplied stride * extent in int64 without an overflow check:
// with out strides {dim 1, seq 32, head 2^62, batch 2^62 + 32} and extents {32, 40, 3, 2} the
// span 3 * 2^62 overflowed and validate() accepted an output whose elements overlap ((z 1, h 0,
// n 0) and (z 0, h 1, n 1) share offset 2^62 + 32). It must say invalid_stride, also under UBSan.
TEST_CASE("reference errors: huge overlapping output strides are rejected without overflow",
          "[reference][errors]") {
  using Cfg = presets::Precise;
  std::vector<std::int8_t> buf(64, 0);
  std::vector<std::int8_t> out(8, 0);
  const std::int64_t big = std::int64_t{1} << 62;
  AttentionProblem p{bhnd<const std::int8_t>(buf.data(), 2, 3, 40, 32),
                     bhnd<const std::int8_t>(buf.data(), 2, 3, 40, 32),
                     bhnd<const std::int8_t>(buf.data(), 2, 3, 40, 32)};
  const Tensor4<std::int8_t> o{out.data(), 2, 3, 40, 32, big + 32, big, 32, 1};
  const int dummy_params = 0;
  CHECK(std::string(to_string(validate<Cfg>(p, o, &dummy_params, 1))) ==
        to_string(Status::invalid_stride));
}

namespace {

/// Grows `input` to at least `bytes` bytes (new elements are T{}) and returns its bytes: an
/// output placed over it then stays in bounds even if a call wrongly runs.
template <class T>
std::span<unsigned char> grow_to_bytes(std::vector<T>& input, std::size_t bytes) {
  input.resize(std::max(input.size(), (bytes + sizeof(T) - 1) / sizeof(T)));
  return {reinterpret_cast<unsigned char*>(input.data()), input.size() * sizeof(T)};
}

/// The output placed over each input (Q, K, V, dense bias, relative table, index map, mask) is
/// rejected without a write; placed right before or after K in one buffer it is served, and equals
/// the output of a separate buffer.
template <class Cfg, class OutT>
void check_output_placement() {
  using C = Call<Cfg, OutT>;
  const std::size_t out_bytes = size_of(Z * H * NQ * D) * sizeof(OutT);
  // `place` moves one input into storage of at least out_bytes and returns that storage; the
  // output is then placed at its first byte.
  const auto expect_overlap = [&](const std::string& what,
                                  const std::function<std::span<unsigned char>(C&)>& place) {
    INFO(what);
    C c;
    const std::span<unsigned char> input = place(c);
    REQUIRE(input.size() >= out_bytes);
    const std::vector<unsigned char> before(input.begin(), input.end());
    c.out_view.data = reinterpret_cast<OutT*>(input.data());
    CHECK(std::string(to_string(c.run())) == to_string(Status::output_overlaps_input));
    CHECK(std::equal(input.begin(), input.end(), before.begin()));
  };
  expect_overlap("out over q", [&](C& c) {
    const auto bytes = grow_to_bytes(c.q, out_bytes);
    c.problem.q.data = c.q.data();
    return bytes;
  });
  expect_overlap("out over k", [&](C& c) {
    const auto bytes = grow_to_bytes(c.k, out_bytes);
    c.problem.k.data = c.k.data();
    return bytes;
  });
  expect_overlap("out over v", [&](C& c) {
    const auto bytes = grow_to_bytes(c.v, out_bytes);
    c.problem.v.data = c.v.data();
    return bytes;
  });
  std::vector<std::int32_t> dense;
  expect_overlap("out over the dense bias", [&](C& c) {
    c.dense_bias_on(dense);
    const auto bytes = grow_to_bytes(dense, out_bytes);
    c.problem.bias.values = dense.data();
    return bytes;
  });
  expect_overlap("out over the relative table", [&](C& c) {
    const auto bytes = grow_to_bytes(c.bias_values, out_bytes);
    c.relative_bias();
    return bytes;
  });
  expect_overlap("out over the relative index map", [&](C& c) {
    const auto bytes = grow_to_bytes(c.index, out_bytes);
    c.relative_bias();
    return bytes;
  });
  expect_overlap("out over the mask", [&](C& c) {
    c.window_mask(1);
    const auto bytes = grow_to_bytes(c.mask, out_bytes);
    c.problem.mask.data = c.mask.data();
    return bytes;
  });

  // K and the output in one buffer, at byte offsets k_at and out_at.
  C separate;
  REQUIRE(separate.run() == Status::ok);
  const std::size_t k_bytes = separate.k.size();
  const auto place_in_one_buffer = [&](const std::string& what, std::size_t out_at,
                                       std::size_t k_at, Status want) {
    INFO(what);
    C c;
    std::vector<unsigned char> buffer(out_bytes + k_bytes, 0xee);
    std::memcpy(buffer.data() + k_at, c.k.data(), k_bytes);
    const std::vector<unsigned char> before = buffer;
    c.problem.k.data = reinterpret_cast<const std::int8_t*>(buffer.data() + k_at);
    c.out_view.data = reinterpret_cast<OutT*>(buffer.data() + out_at);
    CHECK(std::string(to_string(c.run())) == to_string(want));
    CHECK(std::memcmp(buffer.data() + k_at, before.data() + k_at, k_bytes) == 0);
    if (want == Status::ok) {
      CHECK(std::memcmp(buffer.data() + out_at, separate.out.data(), out_bytes) == 0);
    } else {
      CHECK(buffer == before);
    }
  };
  place_in_one_buffer("k right after out", 0, out_bytes, Status::ok);
  place_in_one_buffer("k's first byte is out's last", 0, out_bytes - 1,
                      Status::output_overlaps_input);
  place_in_one_buffer("out right after k", k_bytes, 0, Status::ok);
  place_in_one_buffer("out's first element over k's last bytes", k_bytes - sizeof(OutT), 0,
                      Status::output_overlaps_input);
}

}  // namespace

// Issue item 5: an output over an input once returned ok and computed from inputs it had already
// overwritten (745 of 1,280 outputs differed from a separate buffer with out over K).
TEST_CASE("reference errors: an output that overlaps an input is rejected and writes nothing",
          "[reference][errors]") {
  SECTION("Precise, s8") { check_output_placement<presets::Precise, std::int8_t>(); }
  SECTION("Paper, s16") { check_output_placement<presets::Paper, std::int16_t>(); }
  SECTION("PreciseCubic, fp16") { check_output_placement<presets::PreciseCubic, Float16>(); }
}

// The bound is kMaxViewBytes = 2^48 bytes from a view's first element to one past its last. The
// output comes first in one buffer and the inputs after it, so that no input's claimed span (far
// past the buffer: validate reads nothing) covers the output.
TEST_CASE("reference errors: views up to 2^48 bytes pass and larger views or layouts do not",
          "[reference][errors]") {
  using Cfg = presets::Precise;
  STATIC_REQUIRE(detail::kMaxViewBytes == std::int64_t{1} << 48);
  std::vector<std::int8_t> buffer(size_of(2 * Z * H * NQ * D), 0);
  std::int8_t* const out = buffer.data();
  const std::int8_t* const in = buffer.data() + Z * H * NQ * D;
  const int dummy_params = 0;
  const auto check = [&](const AttentionProblem& p, const Tensor4<std::int8_t>& o, Status want) {
    CHECK(std::string(to_string(validate<Cfg>(p, o, &dummy_params, 1))) == to_string(want));
  };

  AttentionProblem p{bhnd(in, Z, H, NQ, D), bhnd(in, Z, H, NK, D), bhnd(in, Z, H, NK, D)};
  const std::int64_t batch_span = H * NQ * D;             // bytes of one batch element of Q
  p.q.stride_batch = detail::kMaxViewBytes - batch_span;  // the last byte is at 2^48 - 1
  check(p, bhnd(out, Z, H, NQ, D), Status::ok);
  p.q.stride_batch += 1;
  check(p, bhnd(out, Z, H, NQ, D), Status::invalid_stride);

  // Layouts whose extents all pass but whose bytes exceed 2^48 without overflowing int64: a
  // dense bias [H, Nq, Nkv] = [2^20, 2^16, 2^16] of int32 (2^54 bytes), and a mask
  // [windows, Nq, Nkv] = [2^22, 2^12, 2^16] (2^50 bytes). Q, K, V and O stay below the bound.
  const std::int64_t big_h = std::int64_t{1} << 20, n16 = std::int64_t{1} << 16;
  const AttentionProblem wide{
      bhnd(in, 1, big_h, n16, 32), bhnd(in, 1, big_h, n16, 32), bhnd(in, 1, big_h, n16, 32),
      AttentionBias{BiasKind::dense,
                    reinterpret_cast<const std::int32_t*>(buffer.data() + 4 * 1024), big_h, n16,
                    n16}};
  check(wide, bhnd(out, 1, big_h, n16, 32), Status::bias_shape_mismatch);

  const std::int64_t big_z = std::int64_t{1} << 22, n12 = std::int64_t{1} << 12;
  std::vector<std::uint8_t> mask(16, 1);
  const AttentionProblem windowed{bhnd(in, big_z, 1, n12, 32), bhnd(in, big_z, 1, n16, 32),
                                  bhnd(in, big_z, 1, n16, 32), AttentionBias{},
                                  AttentionMask{mask.data(), big_z, n12, n16}};
  check(windowed, bhnd(out, big_z, 1, n12, 32), Status::mask_shape_mismatch);
}

// validate_bias_indices on its own (the CUDA launcher's callers run it on the host): it once
// looped over rows * cols entries without checking that product.
TEST_CASE("reference errors: validate_bias_indices checks its map's extents first",
          "[reference][errors]") {
  std::vector<std::int32_t> table(50, 0), index(16, 3);
  const auto relative = [&](std::int64_t rows, std::int64_t cols, const std::int32_t* map) {
    return AttentionBias{BiasKind::relative_table, table.data(), 1, rows, cols, map, 50, 50, 1};
  };
  CHECK(validate_bias_indices(relative(4, 4, index.data())) == Status::ok);
  index[15] = 50;
  CHECK(validate_bias_indices(relative(4, 4, index.data())) == Status::bias_index_out_of_range);
  const std::int64_t two_to_32 = std::int64_t{1} << 32;
  CHECK(validate_bias_indices(relative(two_to_32, two_to_32, index.data())) ==
        Status::bias_shape_mismatch);  // 2^64 entries: the product wraps to 0
  CHECK(validate_bias_indices(relative(-65536, -65536, index.data())) ==
        Status::bias_shape_mismatch);  // a positive product over negative extents
  CHECK(validate_bias_indices(relative(4, 4, nullptr)) == Status::null_pointer);
}

// validate_float_attention applies the same layout and placement checks to the float oracle.
TEST_CASE("float oracle errors: views past the address space and outputs over inputs",
          "[float][errors]") {
  using reference::attention_float;
  using reference::FloatBias;
  using reference::validate_float_attention;
  constexpr std::int64_t z = 2, h = 2, n = 4, d = 4, count = z * h * n * d;
  std::vector<float> q(size_of(count)), k(size_of(count)), v(size_of(count));
  for (std::size_t i = 0; i < q.size(); ++i) {
    q[i] = static_cast<float>(i % 7) * 0.25f - 0.75f;
    k[i] = static_cast<float>(i % 5) * 0.5f - 1.0f;
    v[i] = static_cast<float>(i % 11) - 5.0f;
  }
  std::vector<double> out(size_of(count), -7.0);
  std::vector<float> table(10, 0.5f);
  std::vector<std::int32_t> index(size_of(n * n), 1);
  std::vector<std::uint8_t> mask(size_of(n * n), 1);
  const auto qv = bhnd<const float>(q.data(), z, h, n, d);
  const auto kv = bhnd<const float>(k.data(), z, h, n, d);
  const auto vv = bhnd<const float>(v.data(), z, h, n, d);
  const auto ov = bhnd(out.data(), z, h, n, d);
  const auto untouched = [&] {
    return std::all_of(out.begin(), out.end(), [](double x) { return x == -7.0; });
  };
  const auto expect = [&](const std::string& what, Status got, Status want) {
    INFO(what);
    CHECK(std::string(to_string(got)) == to_string(want));
    CHECK(untouched());
  };

  auto huge = qv;
  huge.stride_batch = kTwoTo62;
  expect("q batch stride 2^62", attention_float(huge, kv, vv, {}, {}, 0.5, ov),
         Status::invalid_stride);
  huge = kv;
  huge.stride_batch = huge.stride_head = kTwoTo62;  // 2^62 + 2^62 overflows int64
  expect("k strides sum past int64", attention_float(qv, huge, vv, {}, {}, 0.5, ov),
         Status::invalid_stride);
  auto huge_out = ov;
  huge_out.stride_batch = std::int64_t{1} << 46;  // (2^46 + 64) doubles: past 2^48 bytes
  expect("out span past 2^48 bytes", attention_float(qv, kv, vv, {}, {}, 0.5, huge_out),
         Status::invalid_stride);
  expect("relative table head stride 2^62",
         attention_float(qv, kv, vv,
                         FloatBias{BiasKind::relative_table, table.data(), h, n, n, index.data(), 5,
                                   kTwoTo62, 1},
                         {}, 0.5, ov),
         Status::bias_shape_mismatch);
  // No bound on Nkv here: K and V views with zero strides and Nkv = 2^62 keys (never read) make
  // a dense bias [1, Nq, Nkv] and a mask [1, Nq, Nkv] whose element counts overflow int64.
  const std::int64_t many = kTwoTo62;
  const Tensor4<const float> flat_k{k.data(), z, h, many, d, 0, 0, 0, 1};
  const Tensor4<const float> flat_v{v.data(), z, h, many, d, 0, 0, 0, 1};
  expect("dense bias Nq * Nkv past int64",
         validate_float_attention(
             qv, flat_k, flat_v, FloatBias{BiasKind::dense, table.data(), 1, n, many}, {}, 0.5, ov),
         Status::bias_shape_mismatch);
  expect("mask Nq * Nkv past int64",
         validate_float_attention(qv, flat_k, flat_v, {}, AttentionMask{mask.data(), 1, n, many},
                                  0.5, ov),
         Status::mask_shape_mismatch);

  // The double output over each float input: rejected, the input unchanged.
  const std::size_t out_bytes = out.size() * sizeof(double);
  const auto expect_overlap =
      [&](const std::string& what, std::span<unsigned char> input, const FloatBias& bias,
          const AttentionMask& m, const Tensor4<const float>& q_in,
          const Tensor4<const float>& k_in, const Tensor4<const float>& v_in) {
        INFO(what);
        REQUIRE(input.size() >= out_bytes);
        const std::vector<unsigned char> before(input.begin(), input.end());
        const Tensor4<double> over{reinterpret_cast<double*>(input.data()),
                                   z,
                                   h,
                                   n,
                                   d,
                                   ov.stride_batch,
                                   ov.stride_head,
                                   ov.stride_seq,
                                   ov.stride_dim};
        CHECK(std::string(to_string(attention_float(q_in, k_in, v_in, bias, m, 0.5, over))) ==
              to_string(Status::output_overlaps_input));
        CHECK(std::equal(input.begin(), input.end(), before.begin()));
      };
  std::vector<float> q2 = q, k2 = k, v2 = v, table2 = table;
  std::vector<std::int32_t> index2 = index;
  std::vector<std::uint8_t> mask2 = mask;
  const auto q_bytes = grow_to_bytes(q2, out_bytes), k_bytes = grow_to_bytes(k2, out_bytes),
             v_bytes = grow_to_bytes(v2, out_bytes), table_bytes = grow_to_bytes(table2, out_bytes),
             index_bytes = grow_to_bytes(index2, out_bytes),
             mask_bytes = grow_to_bytes(mask2, out_bytes);
  const auto q2v = bhnd<const float>(q2.data(), z, h, n, d);
  const auto k2v = bhnd<const float>(k2.data(), z, h, n, d);
  const auto v2v = bhnd<const float>(v2.data(), z, h, n, d);
  const FloatBias relative{
      BiasKind::relative_table, table2.data(), 1, n, n, index2.data(), 5, 0, 1};
  const FloatBias dense{BiasKind::dense, table2.data(), 1, n, n};
  const AttentionMask window{mask2.data(), 1, n, n};
  expect_overlap("out over q", q_bytes, {}, {}, q2v, kv, vv);
  expect_overlap("out over k", k_bytes, {}, {}, qv, k2v, vv);
  expect_overlap("out over v", v_bytes, {}, {}, qv, kv, v2v);
  expect_overlap("out over the dense bias", table_bytes, dense, {}, qv, kv, vv);
  expect_overlap("out over the relative table", table_bytes, relative, {}, qv, kv, vv);
  expect_overlap("out over the relative index map", index_bytes, relative, {}, qv, kv, vv);
  expect_overlap("out over the mask", mask_bytes, {}, window, qv, kv, vv);

  // K right after the output in one buffer: served, and equal to a separate output.
  REQUIRE(attention_float(qv, kv, vv, {}, {}, 0.5, ov) == Status::ok);
  const std::size_t k_size = k.size() * sizeof(float);
  std::vector<unsigned char> buffer(out_bytes + k_size);
  std::memcpy(buffer.data() + out_bytes, k.data(), k_size);
  const Tensor4<double> first{reinterpret_cast<double*>(buffer.data()),
                              z,
                              h,
                              n,
                              d,
                              ov.stride_batch,
                              ov.stride_head,
                              ov.stride_seq,
                              ov.stride_dim};
  const auto k_after =
      bhnd<const float>(reinterpret_cast<const float*>(buffer.data() + out_bytes), z, h, n, d);
  CHECK(attention_float(qv, k_after, vv, {}, {}, 0.5, first) == Status::ok);
  CHECK(std::memcmp(buffer.data(), out.data(), out_bytes) == 0);
  CHECK(std::memcmp(buffer.data() + out_bytes, k.data(), k_size) == 0);
}
