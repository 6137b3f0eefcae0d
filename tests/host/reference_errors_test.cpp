// SPDX-License-Identifier: Apache-2.0
// The integer reference's argument validation: every invalid call returns its named Status and
// writes nothing (the output is filled with a sentinel and compared afterwards). Sequences that
// are too long are described by views over a tiny buffer: validation must reject them before it
// reads anything (ASan would see a read).
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <qflash/qflash.hpp>
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
    // Exactly max_keys passes validation (not run here: that is the extremes test's job).
    AttentionProblem ok{bhnd<const std::int8_t>(tiny.data(), 1, 1, 1, 32),
                        bhnd<const std::int8_t>(tiny.data(), 1, 1, max_keys, 32),
                        bhnd<const std::int8_t>(tiny.data(), 1, 1, max_keys, 32)};
    CHECK(validate<Cfg>(ok, bhnd(out.data(), 1, 1, 1, 32), prm.data(), 1) == Status::ok);
  };
  check_config(presets::Precise{}, 65793);
  check_config(presets::PreciseCubic{}, 65793);
  check_config(presets::Paper{}, 132104);
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
