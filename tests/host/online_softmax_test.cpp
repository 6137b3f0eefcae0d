// SPDX-License-Identifier: Apache-2.0
// policy/online_softmax.hpp: reference_max in both modes, the merge rules (first tile, the
// exact 2^30 identity, a growing maximum, a lower tile in tile-local mode, sums), and the order
// property: merging tiles as documented equals a direct computation at the global maximum,
// exactly when no maximum grows, and within the documented rounding when maxima grow.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <qflash/attention/presets.hpp>
#include <qflash/policy/exp2.hpp>
#include <qflash/policy/online_softmax.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "support/catch.hpp"
#include "support/compare.hpp"
#include "support/host_generators.hpp"

namespace {

using qflash::kOneQ30;
using qflash::MaxMode;
using qflash::MergeFactors;
using qflash::OnlineSoftmax;
using qflash::RowState;
using qflash::test::int128;
using qflash::test::Rng;
using qflash::test::uint128;
using qflash::test::ViolationLog;

using Quad = qflash::PolyExp2<2, 255, 6, 16>;
using Cubic = qflash::PolyExp2<3, 255, 6, 16>;
using RunningQuad = OnlineSoftmax<Quad, MaxMode::running>;
using LocalQuad = OnlineSoftmax<Quad, MaxMode::tile_local>;
using LocalCubic = OnlineSoftmax<Cubic, MaxMode::tile_local>;
using RunningPaper = OnlineSoftmax<qflash::PaperShiftExp2, MaxMode::running>;

constexpr std::int32_t kI32Min = std::numeric_limits<std::int32_t>::min();
constexpr std::int32_t kI32Max = std::numeric_limits<std::int32_t>::max();

/// round(x * f / 2^30), half away from zero, exactly.
int128 ref_rescale(int128 x, std::int32_t f) {
  const int128 prod = x * f;
  const bool neg = prod < 0;
  const uint128 mag = neg ? uint128{0} - static_cast<uint128>(prod) : static_cast<uint128>(prod);
  const uint128 q = (mag + (uint128{1} << 29)) >> 30;
  return neg ? -static_cast<int128>(q) : static_cast<int128>(q);
}

/// floor(x * f / 2^30 + 1/2) (half up), exactly: the accumulator rescale.
int128 ref_rescale_half_up(int128 x, std::int32_t f) {
  const int128 v = x * f + (int128{1} << 29);
  return v >= 0 ? v >> 30 : -((-v + (int128{1} << 30) - 1) >> 30);  // floor division
}

qflash::PaperShiftExp2::Params paper_params(double inverse) {
  qflash::PaperShiftExp2::Params p{};
  REQUIRE(qflash::PaperShiftExp2::calibrate(1.0 / inverse, p) == qflash::Status::ok);
  return p;
}

}  // namespace

TEST_CASE("online_softmax: reference_max in both modes", "[online_softmax]") {
  Rng rng(qflash::test::test_seed(0x5e1));
  INFO(qflash::test::seed_text(rng.seed()));
  for (int i = 0; i < 2000; ++i) {
    const std::int32_t row_max = rng.uniform32(-(1 << 29), 1 << 29);
    const std::int32_t tile_max = rng.uniform32(-(1 << 29), 1 << 29);
    const RowState fresh{};
    const RowState started{row_max, 123, true};
    const RowState not_started{row_max, 123, false};  // a stale max must be ignored
    CHECK(RunningQuad::reference_max(fresh, tile_max) == tile_max);
    CHECK(RunningQuad::reference_max(not_started, tile_max) == tile_max);
    CHECK(RunningQuad::reference_max(started, tile_max) == std::max(row_max, tile_max));
    CHECK(LocalQuad::reference_max(fresh, tile_max) == tile_max);
    CHECK(LocalQuad::reference_max(started, tile_max) == tile_max);
    CHECK(RunningPaper::reference_max(started, tile_max) == std::max(row_max, tile_max));
  }
  CHECK(RunningQuad::reference_max(RowState{1 << 29, 0, true}, -(1 << 29)) == 1 << 29);
  CHECK(RunningQuad::reference_max(RowState{-(1 << 29), 0, true}, 1 << 29) == 1 << 29);
  // A default RowState is "no visible key yet", with no sentinel maximum.
  const RowState fresh{};
  CHECK_FALSE(fresh.started);
  CHECK(fresh.sum == 0);
}

TEST_CASE("online_softmax: max_keys keeps Pmax * 128 * Nkv inside int32", "[online_softmax]") {
  CHECK(LocalQuad::max_keys == 65793);
  CHECK(RunningPaper::max_keys == 132104);
  for (const std::int64_t pmax : {255, 127}) {
    const std::int64_t keys = pmax == 255 ? LocalQuad::max_keys : RunningPaper::max_keys;
    CHECK(pmax * 128 * keys <= kI32Max);
    CHECK(pmax * 128 * (keys + 1) > kI32Max);
  }
}

TEST_CASE("online_softmax: the 2^30 factor is an exact identity, other factors round half up",
          "[online_softmax]") {
  Rng rng(qflash::test::test_seed(0x1de));
  INFO(qflash::test::seed_text(rng.seed()));
  ViolationLog log("rescale / merge_element");
  for (const std::int32_t x : {kI32Min, kI32Min + 1, kI32Max, 0, 1, -1, 12345, -12345}) {
    CHECK(LocalQuad::rescale(x, kOneQ30) == x);
    // Skipping is exact: the multiply would give the same value.
    CHECK(qflash::mul_round_shift(x, kOneQ30, 30) == x);
    const std::int64_t wide = std::int64_t{x} * 2;
    CHECK(LocalQuad::rescale(wide, kOneQ30) == wide);
    CHECK(LocalQuad::rescale(x, 0) == 0);
  }
  for (int i = 0; i < 100000; ++i) {
    const std::int32_t acc = rng.wide_int32(), pv = rng.wide_int32();
    // merge_row returns at most one factor other than 2^30 (checked below), so merge_element
    // is only defined on such pairs: identity, state only, or tile only.
    const std::int32_t f = rng.uniform32(0, kOneQ30);
    const auto which = rng.below(3);
    const std::int32_t fs = which == 1 ? f : kOneQ30;
    const std::int32_t ft = which == 2 ? f : kOneQ30;
    const int128 a = ref_rescale_half_up(acc, fs), b = ref_rescale_half_up(pv, ft);
    // merge_element's contract keeps the sum inside int32 (|acc| + |pv| bounded by max_keys);
    // only compare where that holds.
    if (a + b > kI32Max || a + b < kI32Min) continue;
    const std::int32_t got = LocalQuad::merge_element(acc, pv, MergeFactors{fs, ft});
    // The biased form (the kernel's accumulators) against the exact merge, with the top bit
    // flipped (merge_element is defined through it, so compare with the 128-bit reference).
    constexpr std::uint32_t kBias = LocalQuad::kBias;
    const std::uint32_t got_biased = LocalQuad::merge_element_biased(
        static_cast<std::uint32_t>(acc) ^ kBias, static_cast<std::uint32_t>(pv) ^ kBias,
        MergeFactors{fs, ft});
    log.check(static_cast<int128>(static_cast<std::int32_t>(got_biased ^ kBias)) == a + b, [&] {
      std::ostringstream os;
      os << "merge_element_biased(" << acc << ", " << pv << ", {" << fs << ", " << ft
         << "}) = " << static_cast<std::int32_t>(got_biased ^ kBias) << ", expected "
         << static_cast<long long>(a + b);
      return os.str();
    });
    // identity_merge_is_sum: the kernel's one-add merge for blocks where no row rescales.
    if (which == 0) {
      static_assert(qflash::SoftmaxTraits<LocalQuad>::identity_merge_is_sum &&
                    qflash::SoftmaxTraits<LocalQuad>::merges_biased);
      const std::uint32_t sum_biased = (static_cast<std::uint32_t>(acc) ^ kBias) +
                                       (static_cast<std::uint32_t>(pv) ^ kBias) - kBias;
      log.check(sum_biased == got_biased, [&] {
        return "identity merge of " + std::to_string(acc) + " and " + std::to_string(pv) +
               " is not the sum";
      });
    }
    log.check(got == a + b && LocalQuad::rescale(acc, fs) == a, [&] {
      std::ostringstream os;
      os << "merge_element(" << acc << ", " << pv << ", {" << fs << ", " << ft << "}) = " << got;
      return os.str();
    });
    const std::int64_t sum = rng.uniform(0, std::int64_t{1} << 33);
    log.check(LocalQuad::rescale(sum, fs) == ref_rescale(sum, fs),
              [&] { return "rescale(int64 " + std::to_string(sum) + ")"; });
  }
  // Accumulator ties round half up (3 * 2^29 / 2^30 = 1.5 -> 2, -1.5 -> -1); row-sum ties
  // (int64) round away from zero.
  CHECK(LocalQuad::rescale(std::int32_t{3}, 1 << 29) == 2);
  CHECK(LocalQuad::rescale(std::int32_t{-3}, 1 << 29) == -1);
  CHECK(LocalQuad::rescale(std::int32_t{-5}, 1 << 29) == -2);
  CHECK(LocalQuad::rescale(std::int64_t{-3}, 1 << 29) == -2);
  for (const std::int32_t x : {kI32Min, kI32Max, -1, 1}) {  // extremes of the biased multiply
    for (const std::int32_t f : {0, 1, (1 << 29) + 1, kOneQ30 - 1}) {
      CHECK(static_cast<int128>(LocalQuad::rescale(x, f)) == ref_rescale_half_up(x, f));
    }
  }
  CHECK(LocalQuad::merge_element(10, 20, MergeFactors{kOneQ30, kOneQ30}) == 30);
  INFO(log.describe());
  CHECK(log.ok());
}

namespace {

template <class Softmax>
void check_merge_rules(const typename Softmax::exp_policy::Params& prm, Rng& rng) {
  using Exp = typename Softmax::exp_policy;
  ViolationLog log("merge_row");
  for (int i = 0; i < 20000; ++i) {
    const std::int32_t row_max = rng.uniform32(-(1 << 29), 1 << 29);
    const std::int64_t row_sum = rng.uniform(0, std::int64_t{1} << 31);
    const std::int64_t tile_sum = rng.uniform(0, std::int64_t{1} << 20);
    std::int32_t tile_max = row_max;
    switch (rng.below(4)) {
      case 0:
        break;  // equal
      case 1:
        tile_max = row_max + rng.uniform32(1, 1 << 20);  // grows (a little)
        break;
      case 2:
        tile_max = rng.uniform32(-(1 << 29), 1 << 29);  // anything
        break;
      default:
        tile_max = row_max - rng.uniform32(1, 1 << 20);  // lower
        break;
    }
    // First tile: adopt it.
    RowState fresh{};
    const MergeFactors f0 = Softmax::merge_row(fresh, tile_max, tile_sum, prm);
    log.check(fresh.started && fresh.max == tile_max && fresh.sum == tile_sum &&
                  f0.state_q30 == kOneQ30 && f0.tile_q30 == kOneQ30,
              [&] { return "first tile not adopted"; });

    RowState row{row_max, row_sum, true};
    const MergeFactors f = Softmax::merge_row(row, tile_max, tile_sum, prm);
    std::ostringstream ctx;
    ctx << "row {" << row_max << ", " << row_sum << "} + tile {" << tile_max << ", " << tile_sum
        << "} -> row {" << row.max << ", " << row.sum << "}, factors {" << f.state_q30 << ", "
        << f.tile_q30 << "}";
    bool ok = row.started && row.max == std::max(row_max, tile_max);
    if (tile_max > row_max) {  // the state moves up to the new maximum
      const std::int32_t a = Exp::rescale_q30(tile_max - row_max, prm);
      ok = ok && f.state_q30 == a && f.tile_q30 == kOneQ30 &&
           row.sum == (a == kOneQ30 ? row_sum : ref_rescale(row_sum, a)) + tile_sum;
    } else if (tile_max < row_max && Softmax::max_mode == MaxMode::tile_local) {
      const std::int32_t b = Exp::rescale_q30(row_max - tile_max, prm);
      ok = ok && f.state_q30 == kOneQ30 && f.tile_q30 == b &&
           row.sum == row_sum + (b == kOneQ30 ? tile_sum : ref_rescale(tile_sum, b));
    } else {  // equal maximum, or running mode with a lower tile: plain sum
      ok = ok && f.state_q30 == kOneQ30 && f.tile_q30 == kOneQ30 && row.sum == row_sum + tile_sum;
    }
    // At most one of the two factors differs from 2^30.
    ok = ok && (f.state_q30 == kOneQ30 || f.tile_q30 == kOneQ30);
    log.check(ok, [&] { return ctx.str(); });
  }
  INFO(log.describe());
  CHECK(log.ok());
}

}  // namespace

TEST_CASE("online_softmax: merge_row rules in both modes", "[online_softmax]") {
  Rng rng(qflash::test::test_seed(0x3e6));
  INFO(qflash::test::seed_text(rng.seed()));
  SECTION("tile_local, quadratic") { check_merge_rules<LocalQuad>({}, rng); }
  SECTION("tile_local, cubic") { check_merge_rules<LocalCubic>({}, rng); }
  SECTION("running, quadratic") { check_merge_rules<RunningQuad>({}, rng); }
  SECTION("running, paper") {
    for (const double inverse : {1.0, 101.0, 162.0, 1000.0, 16384.0}) {
      check_merge_rules<RunningPaper>(paper_params(inverse), rng);
    }
  }
  // Concrete: one octave up halves the sum (2^30 -> 2^29 exactly for the polynomials).
  RowState row{0, 1000, true};
  const MergeFactors f = LocalQuad::merge_row(row, 1 << 16, 7, {});
  CHECK(f.state_q30 == 1 << 29);
  CHECK(f.tile_q30 == kOneQ30);
  CHECK(row.max == 1 << 16);
  CHECK(row.sum == 507);
  RowState row2{1 << 16, 1000, true};
  const MergeFactors g = LocalQuad::merge_row(row2, 0, 7, {});  // a tile one octave lower
  CHECK(g.state_q30 == kOneQ30);
  CHECK(g.tile_q30 == 1 << 29);
  CHECK(row2.sum == 1004);  // 1000 + round(3.5)
  RowState row3{1 << 16, 1000, true};
  const MergeFactors h = RunningQuad::merge_row(row3, 0, 7, {});
  CHECK(h.state_q30 == kOneQ30);
  CHECK(h.tile_q30 == kOneQ30);
  CHECK(row3.sum == 1007);
}

// ------------------------------------------------------------------------------------------
// Order: one query row, keys split into tiles, merged as flash_step documents.

namespace {

constexpr int kDim = 8;

struct RowResult {
  std::vector<std::int64_t> acc;  // int64 so that the test itself cannot overflow
  RowState row;
  int factors_applied = 0;  // non-identity factors (each rounds once)
};

/// The documented merge for one row: tiles of `bn` keys in the given order.
template <class Softmax>
RowResult merge_tiles(const std::vector<std::int32_t>& t, const std::vector<std::int8_t>& v, int bn,
                      const std::vector<int>& tile_order,
                      const typename Softmax::exp_policy::Params& prm) {
  using Exp = typename Softmax::exp_policy;
  RowResult r;
  r.acc.assign(kDim, 0);
  for (const int tile : tile_order) {
    std::vector<int> keys;
    for (int j = tile * bn; j < std::min<int>((tile + 1) * bn, static_cast<int>(t.size())); ++j) {
      keys.push_back(j);
    }
    std::int32_t tile_max = t[static_cast<std::size_t>(keys[0])];
    for (const int j : keys) tile_max = std::max(tile_max, t[static_cast<std::size_t>(j)]);
    const std::int32_t ref = Softmax::reference_max(r.row, tile_max);
    std::int64_t tile_sum = 0;
    std::vector<std::int64_t> pv(kDim, 0);
    for (const int j : keys) {
      const qflash::Exp2Value e = Exp::apply(ref - t[static_cast<std::size_t>(j)], prm);
      tile_sum += e.weight;
      for (int d = 0; d < kDim; ++d)
        pv[static_cast<std::size_t>(d)] += e.p * v[static_cast<std::size_t>(j * kDim + d)];
    }
    const MergeFactors f = Softmax::merge_row(r.row, tile_max, tile_sum, prm);
    for (int d = 0; d < kDim; ++d) {
      auto& a = r.acc[static_cast<std::size_t>(d)];
      a = Softmax::merge_element(static_cast<std::int32_t>(a),
                                 static_cast<std::int32_t>(pv[static_cast<std::size_t>(d)]), f);
    }
    r.factors_applied += (f.state_q30 != kOneQ30) + (f.tile_q30 != kOneQ30);
  }
  return r;
}

struct Direct {
  std::vector<std::int64_t> acc;
  std::int64_t sum = 0;
};

/// Every P against the global maximum, one tile.
template <class Exp>
Direct direct(const std::vector<std::int32_t>& t, const std::vector<std::int8_t>& v,
              const typename Exp::Params& prm) {
  const std::int32_t m = *std::max_element(t.begin(), t.end());
  Direct r;
  r.acc.assign(kDim, 0);
  for (std::size_t j = 0; j < t.size(); ++j) {
    const qflash::Exp2Value e = Exp::apply(m - t[j], prm);
    r.sum += e.weight;
    for (int d = 0; d < kDim; ++d)
      r.acc[static_cast<std::size_t>(d)] += e.p * v[j * kDim + static_cast<std::size_t>(d)];
  }
  return r;
}

std::vector<int> identity_order(int tiles) {
  std::vector<int> o(static_cast<std::size_t>(tiles));
  std::iota(o.begin(), o.end(), 0);
  return o;
}

}  // namespace

TEST_CASE("online_softmax: merging tiles with equal maxima equals the direct computation exactly",
          "[online_softmax][order]") {
  Rng rng(qflash::test::test_seed(0x0de7));
  INFO(qflash::test::seed_text(rng.seed()));
  constexpr int kKeys = 197, kBn = 32, kTiles = (kKeys + kBn - 1) / kBn;
  for (int rep = 0; rep < 50; ++rep) {
    std::vector<std::int32_t> t(kKeys);
    for (auto& x : t) x = rng.uniform32(-(6 << 16), 0);
    for (int tile = 0; tile < kTiles; ++tile) {  // the same maximum in every tile
      const int width = tile == kTiles - 1 ? kKeys - tile * kBn : kBn;
      const auto pick = static_cast<int>(rng.below(static_cast<std::uint64_t>(width)));
      t[static_cast<std::size_t>(tile * kBn + pick)] = 0;
    }
    const auto v = qflash::test::random_int8(rng, kKeys * kDim);
    auto order = identity_order(kTiles);
    for (int k = kTiles - 1; k > 0; --k) {
      std::swap(order[static_cast<std::size_t>(k)],
                order[rng.below(static_cast<std::uint64_t>(k + 1))]);
    }
    const Direct want = direct<Quad>(t, v, {});
    for (const auto& o : {identity_order(kTiles), order}) {
      const RowResult local = merge_tiles<LocalQuad>(t, v, kBn, o, {});
      const RowResult running = merge_tiles<RunningQuad>(t, v, kBn, o, {});
      CHECK(local.factors_applied == 0);
      CHECK(running.factors_applied == 0);
      CHECK(local.acc == want.acc);
      CHECK(running.acc == want.acc);
      CHECK(local.row.sum == want.sum);
      CHECK(running.row.sum == want.sum);
      CHECK(local.row.max == 0);
    }
  }
  // Running mode with the global maximum in the first tile: later tiles use it as their
  // reference, no factor ever differs from 2^30, and the result is the direct one -- also for
  // the paper's exp.
  for (int rep = 0; rep < 50; ++rep) {
    std::vector<std::int32_t> t(kKeys);
    for (auto& x : t) x = rng.uniform32(-(1 << 14), 0);
    t[rng.below(kBn)] = 100;
    const auto v = qflash::test::random_int8(rng, kKeys * kDim);
    const auto prm = paper_params(2000.0);
    const RowResult merged = merge_tiles<RunningPaper>(t, v, kBn, identity_order(kTiles), prm);
    const Direct want = direct<qflash::PaperShiftExp2>(t, v, prm);
    CHECK(merged.factors_applied == 0);
    CHECK(merged.acc == want.acc);
    CHECK(merged.row.sum == want.sum);
    const RowResult merged_quad = merge_tiles<RunningQuad>(t, v, kBn, identity_order(kTiles), {});
    CHECK(merged_quad.acc == direct<Quad>(t, v, {}).acc);
  }
}

namespace {

/// Growing maxima: the merged accumulator and sum against the direct ones, with the bound the
/// documentation implies. For key j (P computed against its tile's reference, later scaled by
/// the factors merged after it):
///   |P_tile(j) F_j - P_direct(j)| <= eps * exact_j + 1 + 2 Degree / 2^G,
/// where exact_j = Pmax 2^-(m - t_j), eps = rel * (2 + number of factors) (the polynomial's
/// relative error in P_tile, in every factor and in P_direct), 1 covers the two roundings to
/// integers (1/2 each) and 2 Degree / 2^G the Horner roundings of the two mantissas; the weight
/// (2^SumBits finer) likewise with 2^(G - SumBits). Each non-identity factor adds at most 1/2 of
/// rounding to the accumulator and to the sum (factors are <= 1: earlier errors never grow).
template <class Softmax, int Degree>
void check_growing(Rng& rng, long double rel) {
  using Exp = typename Softmax::exp_policy;
  constexpr int kKeys = 197, kBn = 32, kTiles = (kKeys + kBn - 1) / kBn;
  ViolationLog log("growing maxima");
  long double worst_fraction = 0;  // largest |error| / bound seen
  long double worst_o = 0;         // largest |O_merged - O_direct| in V units
  for (int rep = 0; rep < 200; ++rep) {
    std::vector<std::int32_t> t(kKeys);
    // Tile k's logits are centred on k * step: every tile raises the maximum.
    const std::int32_t step = rng.uniform32(1, 3 << 15);
    for (int j = 0; j < kKeys; ++j)
      t[static_cast<std::size_t>(j)] = (j / kBn) * step + rng.uniform32(-(4 << 16), 0);
    const auto v = qflash::test::random_int8(rng, kKeys * kDim);
    auto order = identity_order(kTiles);
    if (rng.chance(1, 2)) {
      for (int k = kTiles - 1; k > 0; --k)
        std::swap(order[static_cast<std::size_t>(k)],
                  order[rng.below(static_cast<std::uint64_t>(k + 1))]);
    }
    const RowResult merged = merge_tiles<Softmax>(t, v, kBn, order, {});
    const Direct want = direct<Exp>(t, v, {});
    const std::int32_t m = *std::max_element(t.begin(), t.end());
    CHECK(merged.row.max == m);
    long double sum_bound = 0.5L * merged.factors_applied;
    std::vector<long double> acc_bound(kDim, 0.5L * merged.factors_applied);
    const long double eps = rel * (2 + merged.factors_applied);
    const long double horner_p = std::ldexp(2.0L * Degree, -Exp::guard_bits);
    const long double horner_w = std::ldexp(2.0L * Degree, Exp::sum_bits - Exp::guard_bits);
    for (std::size_t j = 0; j < t.size(); ++j) {
      const long double exact =
          Exp::pmax * std::exp2(-static_cast<long double>(m - t[j]) / 65536.0L);
      const long double per_key = eps * exact + 1.0L + horner_p;
      sum_bound += eps * exact * (1 << Exp::sum_bits) + 1.0L + horner_w;
      for (int d = 0; d < kDim; ++d) {
        acc_bound[static_cast<std::size_t>(d)] +=
            std::abs(v[j * kDim + static_cast<std::size_t>(d)]) * per_key;
      }
    }
    const long double sum_err = std::fabs(static_cast<long double>(merged.row.sum - want.sum));
    worst_fraction = std::fmax(worst_fraction, sum_err / sum_bound);
    log.check(sum_err <= sum_bound, [&] {
      std::ostringstream os;
      os << "rep " << rep << ": sum " << merged.row.sum << " vs direct " << want.sum << ", bound "
         << static_cast<double>(sum_bound);
      return os.str();
    });
    for (int d = 0; d < kDim; ++d) {
      const auto i = static_cast<std::size_t>(d);
      const long double err = std::fabs(static_cast<long double>(merged.acc[i] - want.acc[i]));
      worst_fraction = std::fmax(worst_fraction, err / acc_bound[i]);
      log.check(err <= acc_bound[i], [&] {
        std::ostringstream os;
        os << "rep " << rep << ", d " << d << ": acc " << merged.acc[i] << " vs direct "
           << want.acc[i] << ", bound " << static_cast<double>(acc_bound[i]);
        return os.str();
      });
    }
    // The row's output O = acc 2^SumBits / sum (V units): |a1/s1 - a2/s2| <=
    // (|a1 - a2| + |a2 / s2| |s1 - s2|) / s1 with the two bounds above.
    const long double scale = static_cast<long double>(1 << Exp::sum_bits);
    for (int d = 0; d < kDim; ++d) {
      const auto i = static_cast<std::size_t>(d);
      const long double o_merged = merged.acc[i] * scale / merged.row.sum;
      const long double o_direct = want.acc[i] * scale / want.sum;
      const long double o_bound =
          (acc_bound[i] * scale + std::fabs(o_direct) * sum_bound) / merged.row.sum;
      worst_o = std::fmax(worst_o, std::fabs(o_merged - o_direct));
      log.check(std::fabs(o_merged - o_direct) <= o_bound, [&] {
        std::ostringstream os;
        os << "rep " << rep << ", d " << d << ": O " << static_cast<double>(o_merged)
           << " vs direct " << static_cast<double>(o_direct) << ", bound "
           << static_cast<double>(o_bound);
        return os.str();
      });
    }
  }
  INFO(log.describe());
  INFO("largest error / bound: " << static_cast<double>(worst_fraction)
                                 << ", largest |O_merged - O_direct|: "
                                 << static_cast<double>(worst_o) << " V units");
  CHECK(log.ok());
}

}  // namespace

TEST_CASE(
    "online_softmax: merging tiles with growing maxima stays within the documented "
    "rounding of the direct computation",
    "[online_softmax][order]") {
  Rng rng(qflash::test::test_seed(0x960));
  INFO(qflash::test::seed_text(rng.seed()));
  SECTION("tile_local, quadratic") { check_growing<LocalQuad, 2>(rng, 0.0027L); }
  SECTION("running, quadratic") { check_growing<RunningQuad, 2>(rng, 0.0027L); }
  SECTION("tile_local, cubic") { check_growing<LocalCubic, 3>(rng, 0.00012L); }
}
