// SPDX-License-Identifier: Apache-2.0
// attention/flash_step.hpp and the reference driver that walks it: flash_step against an
// independent per-row emulation written from the documented steps (for every preset), the
// predicates (hidden keys never matter, a block without a visible key changes nothing), and the
// reference on sequence lengths that are not a multiple of block_n (197, 49, 33, 1) against the
// same emulation and against the equivalent problem padded with masked keys.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <qflash/qflash.hpp>
#include <qflash/reference/flash_attention_int.hpp>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "support/catch.hpp"
#include "support/compare.hpp"
#include "support/host_generators.hpp"

namespace {

using namespace qflash;
using qflash::test::CompareOptions;
using qflash::test::Rng;

// ------------------------------------------------------------------------------------------
// The documented algorithm for one query row, from the policy functions only.

template <class Cfg>
struct RowEmulation {
  RowState row{};
  std::vector<std::int64_t> acc;  // wide, so that an overflow in the library would show
};

/// One KV block for one query row (steps 1-6 of flash_step.hpp). `q_row` has D values, `k`
/// and `v` BN x D, `visible` and `bias` BN values.
template <class Cfg>
void emulate_block(RowEmulation<Cfg>& r, const std::int8_t* q_row, const std::int8_t* k,
                   const std::int8_t* v, const std::uint8_t* visible, const std::int32_t* bias,
                   int bn, int d, const typename Cfg::Logit::Params& lp,
                   const typename Cfg::Exp::Params& ep) {
  using Softmax = typename Cfg::Softmax;
  constexpr bool kWide = qflash::LogitTraits<typename Cfg::Logit>::has_wide_form;
  std::vector<std::int32_t> t(static_cast<std::size_t>(bn), 0);
  std::vector<std::int64_t> t_wide(static_cast<std::size_t>(bn), 0);  // Q32, wide logits only
  bool any = false;
  std::int32_t tile_max = 0;
  for (int j = 0; j < bn; ++j) {
    if (!visible[j]) continue;
    std::int32_t s = 0;
    for (int c = 0; c < d; ++c) s += std::int32_t{q_row[c]} * k[j * d + c];
    t[static_cast<std::size_t>(j)] = Cfg::Logit::apply(s, bias[j], lp);
    if constexpr (kWide) {
      t_wide[static_cast<std::size_t>(j)] = Cfg::Logit::apply_wide(s, bias[j], lp);
      // the Q16 logit is the floor of the wide one
      if ((t_wide[static_cast<std::size_t>(j)] >> 16) != t[static_cast<std::size_t>(j)])
        FAIL_CHECK("apply " << t[static_cast<std::size_t>(j)]
                            << " is not floor(apply_wide / 2^16)");
    }
    tile_max =
        any ? std::max(tile_max, t[static_cast<std::size_t>(j)]) : t[static_cast<std::size_t>(j)];
    any = true;
  }
  if (!any) return;
  const std::int32_t ref = Softmax::reference_max(r.row, tile_max);
  std::int64_t tile_sum = 0;
  std::vector<std::int64_t> pv(static_cast<std::size_t>(d), 0);
  for (int j = 0; j < bn; ++j) {
    if (!visible[j]) continue;
    Exp2Value e{};
    if constexpr (kWide) {  // the distance in Q32: ref * 2^16 - t_wide
      e = Cfg::Exp::apply_wide(std::int64_t{ref} * 65536 - t_wide[static_cast<std::size_t>(j)], ep);
    } else {
      e = Cfg::Exp::apply(ref - t[static_cast<std::size_t>(j)], ep);
    }
    if (e.p < 0 || e.p > Cfg::Exp::pmax) FAIL_CHECK("P " << e.p << " outside [0, Pmax]");
    tile_sum += e.weight;
    for (int c = 0; c < d; ++c) pv[static_cast<std::size_t>(c)] += std::int64_t{e.p} * v[j * d + c];
  }
  const MergeFactors f = Softmax::merge_row(r.row, tile_max, tile_sum, ep);
  for (int c = 0; c < d; ++c) {
    auto& a = r.acc[static_cast<std::size_t>(c)];
    if (a < INT32_MIN || a > INT32_MAX) FAIL_CHECK("accumulator " << a << " outside int32");
    a = Softmax::merge_element(static_cast<std::int32_t>(a),
                               static_cast<std::int32_t>(pv[static_cast<std::size_t>(c)]), f);
  }
}

template <class Cfg>
struct Calibrated {
  using Out8 = OutputFor<Cfg, std::int8_t>;
  HeadParams<Cfg, Out8> params{};
  explicit Calibrated(double q, double k, double v, int d) {
    REQUIRE(calibrate_head<Cfg, Out8>(q, k, v, 0.0, 1.0 / std::sqrt(double(d)), d, params) ==
            Status::ok);
  }
};

/// flash_step on random tiles, several blocks in a row, against the emulation.
template <class Cfg, int BM, int BN, int D>
void check_flash_step(Rng& rng, double qk_scale) {
  const Calibrated<Cfg> cal(qk_scale, qk_scale, 0.05, D);
  Tile<std::int8_t, BM, D> q{};
  Tile<std::int8_t, BN, D> k{}, v{};
  BlockExtras<BM, BN> extras{};
  Array<RowState, BM> rows{};
  Tile<std::int32_t, BM, D> acc{};
  acc.fill(0);
  std::vector<RowEmulation<Cfg>> emu(BM);
  for (auto& e : emu) e.acc.assign(D, 0);
  for (int i = 0; i < BM * D; ++i) q.data[i] = rng.int8();
  for (int block = 0; block < 6; ++block) {
    for (int i = 0; i < BN * D; ++i) {
      k.data[i] = rng.int8();
      v.data[i] = rng.int8();
    }
    const int pattern = static_cast<int>(rng.below(4));
    for (int i = 0; i < BM; ++i) {
      for (int j = 0; j < BN; ++j) {
        // 0: all visible; 1: random; 2: row i sees nothing in this block; 3: sparse
        const bool vis = pattern == 0   ? true
                         : pattern == 1 ? rng.chance(3, 4)
                         : pattern == 2 ? (i % 2 == 0)
                                        : rng.chance(1, 16);
        extras.visible(i, j) = vis ? 1 : 0;
        extras.bias(i, j) = vis && rng.chance(1, 3) ? rng.uniform32(-(8 << 16), 8 << 16) : 0;
      }
    }
    flash_step<Cfg>(q, k, v, extras, cal.params.logit, cal.params.exp, rows, acc);
    for (int i = 0; i < BM; ++i) {
      emulate_block<Cfg>(emu[static_cast<std::size_t>(i)], &q.data[i * D], k.data, v.data,
                         &extras.visible.data[i * BN], &extras.bias.data[i * BN], BN, D,
                         cal.params.logit, cal.params.exp);
    }
    for (int i = 0; i < BM; ++i) {
      INFO("block " << block << ", row " << i << ", pattern " << pattern);
      const auto& e = emu[static_cast<std::size_t>(i)];
      REQUIRE(rows[i].started == e.row.started);
      if (e.row.started) {
        REQUIRE(rows[i].max == e.row.max);
        REQUIRE(rows[i].sum == e.row.sum);
      }
      std::vector<std::int64_t> got(D);
      for (int c = 0; c < D; ++c) got[static_cast<std::size_t>(c)] = acc(i, c);
      const auto r = test::compare_exact(e.acc, got, CompareOptions("acc row", rng.seed()));
      INFO(r.describe());
      REQUIRE(r.ok());
    }
  }
}

}  // namespace

TEST_CASE("flash_step: blocks of random tiles equal the per-row emulation", "[flash_step]") {
  Rng rng(qflash::test::test_seed(0xf1a5));
  INFO(qflash::test::seed_text(rng.seed()));
  for (int rep = 0; rep < 6; ++rep) {
    // Peaky (large scale) and flat (small scale) attention.
    const double qk = rep % 2 == 0 ? 0.05 : 0.004;
    check_flash_step<presets::Precise, 4, 32, 32>(rng, qk);
    check_flash_step<presets::PreciseCubic, 3, 32, 64>(rng, qk);
    // Paper's 16-bit octave estimate needs 1 / sm_scale below about 2^14 (docs/numerics.md).
    check_flash_step<presets::Paper, 4, 32, 32>(rng, std::max(qk, 0.02));
    check_flash_step<presets::Precise, 2, 64, 32>(rng, qk);
    check_flash_step<presets::Fast, 4, 64, 64>(rng, qk);
    check_flash_step<presets::FastT<32>, 2, 32, 32>(rng, qk);
    check_flash_step<presets::FastLong, 2, 128, 32>(rng, qk);
  }
}

namespace {

/// Hidden keys (mask, padding) never change a block's result, and a block without a visible key
/// changes nothing, for one configuration (Fast: hidden keys also carry wide fraction bits).
template <class Cfg>
void check_hidden_keys_never_matter() {
  constexpr int BM = 4, BN = 32, D = 32;
  Rng rng(qflash::test::test_seed(0x41d));
  INFO(qflash::test::seed_text(rng.seed()));
  const Calibrated<Cfg> cal(0.03, 0.03, 0.05, D);
  Tile<std::int8_t, BM, D> q{};
  Tile<std::int8_t, BN, D> k{}, v{};
  BlockExtras<BM, BN> extras{};
  for (int i = 0; i < BM * D; ++i) q.data[i] = rng.int8();
  for (int i = 0; i < BN * D; ++i) {
    k.data[i] = rng.int8();
    v.data[i] = rng.int8();
  }
  for (int i = 0; i < BM; ++i) {
    for (int j = 0; j < BN; ++j)
      extras.visible(i, j) = (j % 3 == 0 && i != 2) ? 1 : 0;  // row 2 sees nothing
  }
  Array<RowState, BM> rows_a{}, rows_b{};
  Tile<std::int32_t, BM, D> acc_a{}, acc_b{};
  // Start from a non-trivial state: one fully visible block.
  {
    BlockExtras<BM, BN> all{};
    all.visible.fill(1);
    all.bias.fill(0);
    flash_step<Cfg>(q, k, v, all, cal.params.logit, cal.params.exp, rows_a, acc_a);
    flash_step<Cfg>(q, k, v, all, cal.params.logit, cal.params.exp, rows_b, acc_b);
  }
  // Same visible entries, different hidden K, V and bias.
  Tile<std::int8_t, BN, D> k2 = k, v2 = v;
  BlockExtras<BM, BN> extras2 = extras;
  for (int j = 0; j < BN; ++j) {
    if (j % 3 == 0) continue;  // visible to some row: keep
    for (int c = 0; c < D; ++c) {
      k2(j, c) = (c % 2) ? std::int8_t{127} : std::int8_t{-128};
      v2(j, c) = std::int8_t{-128};
    }
    for (int i = 0; i < BM; ++i) extras2.bias(i, j) = INT32_MAX;
  }
  for (int j = 0; j < BN; ++j) extras2.bias(2, j) = INT32_MIN;  // row 2 is hidden everywhere
  const Array<RowState, BM>& before_rows = rows_a;
  const RowState row2_before = before_rows[2];
  std::vector<std::int32_t> acc2_before(acc_a.data + 2 * D, acc_a.data + 3 * D);
  flash_step<Cfg>(q, k, v, extras, cal.params.logit, cal.params.exp, rows_a, acc_a);
  flash_step<Cfg>(q, k2, v2, extras2, cal.params.logit, cal.params.exp, rows_b, acc_b);
  CHECK(std::memcmp(acc_a.data, acc_b.data, sizeof acc_a.data) == 0);
  for (int i = 0; i < BM; ++i) {
    CHECK(rows_a[i].max == rows_b[i].max);
    CHECK(rows_a[i].sum == rows_b[i].sum);
    CHECK(rows_a[i].started == rows_b[i].started);
  }
  // Row 2 had no visible key in this block: untouched.
  CHECK(rows_a[2].max == row2_before.max);
  CHECK(rows_a[2].sum == row2_before.sum);
  CHECK(std::vector<std::int32_t>(acc_a.data + 2 * D, acc_a.data + 3 * D) == acc2_before);
  // A block with no visible key at all changes nothing, for any content.
  BlockExtras<BM, BN> none{};
  none.visible.fill(0);
  none.bias.fill(INT32_MIN);
  const auto acc_copy = acc_a;
  RowState saved[BM];
  for (int i = 0; i < BM; ++i) saved[i] = rows_a[i];
  flash_step<Cfg>(q, k2, v2, none, cal.params.logit, cal.params.exp, rows_a, acc_a);
  CHECK(std::memcmp(acc_copy.data, acc_a.data, sizeof acc_a.data) == 0);
  for (int i = 0; i < BM; ++i) {
    CHECK(rows_a[i].max == saved[i].max);
    CHECK(rows_a[i].sum == saved[i].sum);
  }
  // A row that never saw a key finalizes to 0 whatever its accumulator holds.
  const RowState never{};
  const typename OutputFor<Cfg, std::int8_t>::Params op = cal.params.output;
  CHECK(finalize<OutputFor<Cfg, std::int8_t>>(12345, never, op) == 0);
  const RowState stale{5, 99999, false};
  CHECK(finalize<OutputFor<Cfg, std::int8_t>>(-777, stale, op) == 0);
}

}  // namespace

TEST_CASE("flash_step: hidden keys never matter, and an invisible block changes nothing",
          "[flash_step]") {
  SECTION("Precise") { check_hidden_keys_never_matter<presets::Precise>(); }
  SECTION("Fast") { check_hidden_keys_never_matter<presets::Fast>(); }
  SECTION("FastLong") { check_hidden_keys_never_matter<presets::FastLong>(); }
}

// ------------------------------------------------------------------------------------------
// The reference driver on ragged sequence lengths.

namespace {

struct Case {
  std::int64_t z, h, nq, nkv, d;
  std::vector<std::int8_t> q, k, v;  // contiguous BHND
  std::vector<std::uint8_t> mask;    // [Z, Nq, Nkv] (windows = Z) or empty
  std::vector<std::int32_t> bias;    // [H, Nq, Nkv] or empty
};

Case make_case(Rng& rng, std::int64_t z, std::int64_t h, std::int64_t nq, std::int64_t nkv,
               std::int64_t d, bool with_mask, bool with_bias) {
  Case c{z, h, nq, nkv, d, {}, {}, {}, {}, {}};
  c.q = test::random_int8(rng, static_cast<std::size_t>(z * h * nq * d));
  c.k = test::random_int8(rng, static_cast<std::size_t>(z * h * nkv * d));
  c.v = test::random_int8(rng, static_cast<std::size_t>(z * h * nkv * d));
  if (with_mask) {
    c.mask.resize(static_cast<std::size_t>(z * nq * nkv));
    for (auto& m : c.mask) m = rng.chance(4, 5) ? 1 : 0;
    for (std::int64_t i = 0; i < nq && z > 0; ++i) {  // one fully masked row in window 0
      if (i == nq / 2) {
        for (std::int64_t j = 0; j < nkv; ++j) c.mask[static_cast<std::size_t>(i * nkv + j)] = 0;
      }
    }
  }
  if (with_bias)
    c.bias = test::random_int32(rng, static_cast<std::size_t>(h * nq * nkv), -(3 << 16), 3 << 16);
  return c;
}

AttentionProblem problem_of(const Case& c) {
  AttentionProblem p{bhnd<const std::int8_t>(c.q.data(), c.z, c.h, c.nq, c.d),
                     bhnd<const std::int8_t>(c.k.data(), c.z, c.h, c.nkv, c.d),
                     bhnd<const std::int8_t>(c.v.data(), c.z, c.h, c.nkv, c.d)};
  if (!c.mask.empty()) p.mask = AttentionMask{c.mask.data(), c.z, c.nq, c.nkv};
  if (!c.bias.empty()) {
    p.bias = AttentionBias{};
    p.bias.kind = BiasKind::dense;
    p.bias.values = c.bias.data();
    p.bias.heads = c.h;
    p.bias.rows = c.nq;
    p.bias.cols = c.nkv;
  }
  return p;
}

template <class Cfg, class OutT>
std::vector<OutT> run_reference(const AttentionProblem& p,
                                const HeadParams<Cfg, OutputFor<Cfg, OutT>>& prm) {
  using Out = OutputFor<Cfg, OutT>;
  std::vector<OutT> o(static_cast<std::size_t>(p.q.batch * p.q.heads * p.q.seq * p.q.dim));
  const Status s =
      reference::flash_attention<Cfg, Out>(p, std::span<const HeadParams<Cfg, Out>>(&prm, 1),
                                           bhnd(o.data(), p.q.batch, p.q.heads, p.q.seq, p.q.dim));
  REQUIRE(s == Status::ok);
  return o;
}

/// The whole attention by the row emulation, in blocks of Cfg::block_n from key 0.
template <class Cfg, class OutT>
std::vector<OutT> run_emulation(const Case& c, const HeadParams<Cfg, OutputFor<Cfg, OutT>>& prm) {
  using Out = OutputFor<Cfg, OutT>;
  const int bn = Cfg::block_n, d = static_cast<int>(c.d);
  std::vector<OutT> o(static_cast<std::size_t>(c.z * c.h * c.nq * c.d));
  std::vector<std::int8_t> kb(static_cast<std::size_t>(bn * d)), vb(kb.size());
  std::vector<std::uint8_t> vis(static_cast<std::size_t>(bn));
  std::vector<std::int32_t> bias(static_cast<std::size_t>(bn));
  for (std::int64_t z = 0; z < c.z; ++z) {
    for (std::int64_t h = 0; h < c.h; ++h) {
      for (std::int64_t i = 0; i < c.nq; ++i) {
        RowEmulation<Cfg> r;
        r.acc.assign(static_cast<std::size_t>(d), 0);
        const std::int8_t* q_row = &c.q[static_cast<std::size_t>(((z * c.h + h) * c.nq + i) * c.d)];
        for (std::int64_t key0 = 0; key0 < c.nkv; key0 += bn) {
          for (int j = 0; j < bn; ++j) {
            const std::int64_t key = key0 + j;
            const bool in = key < c.nkv;
            for (int e = 0; e < d; ++e) {
              const auto src = static_cast<std::size_t>(((z * c.h + h) * c.nkv + key) * c.d + e);
              kb[static_cast<std::size_t>(j * d + e)] = in ? c.k[src] : std::int8_t{0};
              vb[static_cast<std::size_t>(j * d + e)] = in ? c.v[src] : std::int8_t{0};
            }
            const bool m = !in || c.mask.empty() ||
                           c.mask[static_cast<std::size_t>((z * c.nq + i) * c.nkv + key)] != 0;
            vis[static_cast<std::size_t>(j)] = in && m ? 1 : 0;
            bias[static_cast<std::size_t>(j)] =
                in && m && !c.bias.empty()
                    ? c.bias[static_cast<std::size_t>((h * c.nq + i) * c.nkv + key)]
                    : 0;
          }
          emulate_block<Cfg>(r, q_row, kb.data(), vb.data(), vis.data(), bias.data(), bn, d,
                             prm.logit, prm.exp);
        }
        for (int e = 0; e < d; ++e) {
          o[static_cast<std::size_t>(((z * c.h + h) * c.nq + i) * c.d + e)] =
              Out::apply(static_cast<std::int32_t>(r.acc[static_cast<std::size_t>(e)]),
                         r.row.started ? r.row.sum : 0, prm.output);
        }
      }
    }
  }
  return o;
}

template <class Cfg, class OutT>
void check_ragged(Rng& rng, std::int64_t n, std::int64_t d, double qk) {
  using Out = OutputFor<Cfg, OutT>;
  HeadParams<Cfg, Out> prm{};
  REQUIRE(calibrate_head<Cfg, Out>(qk, qk, 0.05, 0.0, 1.0 / std::sqrt(double(d)),
                                   static_cast<int>(d), prm) == Status::ok);
  for (const bool masked : {false, true}) {
    const Case c = make_case(rng, 1, 2, n, n, d, masked, masked);
    INFO("N " << n << ", D " << d << ", masked+bias " << masked);
    const auto got = run_reference<Cfg, OutT>(problem_of(c), prm);
    const auto want = run_emulation<Cfg, OutT>(c, prm);
    const auto r = test::compare_exact(
        want, got,
        CompareOptions("reference vs emulation", rng.seed()).with_shape(c.z, c.h, c.nq, c.d));
    INFO(r.describe());
    CHECK(r.ok());
    // The same problem padded to a multiple of block_n with masked keys gives the same output.
    const std::int64_t padded = (n + Cfg::block_n - 1) / Cfg::block_n * Cfg::block_n + Cfg::block_n;
    Case p = c;
    p.nkv = padded;
    p.k.assign(static_cast<std::size_t>(c.z * c.h * padded * d), std::int8_t{127});
    p.v.assign(p.k.size(), std::int8_t{-128});
    for (std::int64_t zh = 0; zh < c.z * c.h; ++zh) {
      for (std::int64_t j = 0; j < n * d; ++j) {
        p.k[static_cast<std::size_t>(zh * padded * d + j)] =
            c.k[static_cast<std::size_t>(zh * n * d + j)];
        p.v[static_cast<std::size_t>(zh * padded * d + j)] =
            c.v[static_cast<std::size_t>(zh * n * d + j)];
      }
    }
    p.mask.assign(static_cast<std::size_t>(c.z * c.nq * padded), 0);
    for (std::int64_t z = 0; z < c.z; ++z) {
      for (std::int64_t i = 0; i < c.nq; ++i) {
        for (std::int64_t j = 0; j < n; ++j) {
          p.mask[static_cast<std::size_t>((z * c.nq + i) * padded + j)] =
              c.mask.empty() ? 1 : c.mask[static_cast<std::size_t>((z * c.nq + i) * n + j)];
        }
      }
    }
    if (!c.bias.empty()) {
      p.bias.assign(static_cast<std::size_t>(c.h * c.nq * padded), INT32_MAX);
      for (std::int64_t hi = 0; hi < c.h * c.nq; ++hi) {
        for (std::int64_t j = 0; j < n; ++j) {
          p.bias[static_cast<std::size_t>(hi * padded + j)] =
              c.bias[static_cast<std::size_t>(hi * n + j)];
        }
      }
    }
    const auto padded_out = run_reference<Cfg, OutT>(problem_of(p), prm);
    const auto rp = test::compare_exact(
        got, padded_out, CompareOptions("ragged vs padded with masked keys", rng.seed()));
    INFO(rp.describe());
    CHECK(rp.ok());
  }
}

}  // namespace

TEST_CASE("flash_step: the reference on N not a multiple of block_n", "[flash_step][reference]") {
  Rng rng(qflash::test::test_seed(0x4a66ed));
  INFO(qflash::test::seed_text(rng.seed()));
  for (const std::int64_t n : {197, 49, 33, 1}) {
    check_ragged<presets::Precise, std::int8_t>(rng, n, 64, 0.03);
    check_ragged<presets::Paper, std::int8_t>(rng, n, 32, 0.03);
    check_ragged<presets::PreciseCubic, std::int16_t>(rng, n, 32, 0.01);
    check_ragged<presets::Fast, std::int8_t>(rng, n, 64, 0.03);
    check_ragged<presets::FastLong, std::int8_t>(rng, n, 64, 0.03);
  }
  check_ragged<presets::Fast, qflash::Float16>(rng, 33, 80, 0.02);
  check_ragged<presets::Precise, qflash::Float16>(rng, 33, 80, 0.02);
  check_ragged<presets::Precise, std::int32_t>(rng, 49, 96, 0.02);
  check_ragged<presets::Paper, std::int16_t>(rng, 65, 128, 0.03);
}
