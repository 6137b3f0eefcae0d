// SPDX-License-Identifier: Apache-2.0
// Accuracy fuzz: random shapes, value distributions, scales over the whole range `calibrate`
// accepts (and beyond), per-head scales, bias and masks, every preset and output type. Each
// configuration is either rejected by `calibrate` with a named status, or the integer reference's
// output lies, element by element, within the proven bound of reference/accuracy_bound.hpp
// (docs/numerics.md, "Accuracy floors") around exact attention on the same int8 inputs.
//
// QFLASH_ACCURACY_FUZZ_CONFIGS sets the number of configurations (default: a CI-sized run);
// QFLASH_TEST_SEED the seed. docs/testing.md gives the long run's command and numbers.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <map>
#include <qflash/qflash.hpp>
#include <qflash/reference/accuracy_bound.hpp>
#include <qflash/reference/flash_attention_int.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "support/catch.hpp"
#include "support/host_generators.hpp"

namespace {

using namespace qflash;
using qflash::reference::AccuracyReport;
using qflash::reference::HeadScales;
using qflash::test::Rng;

constexpr int kHeadDims[] = {32, 64, 80, 96, 128};

/// One random configuration, independent of preset and output type.
struct FuzzProblem {
  std::int64_t z = 1, h = 1, nq = 1, nkv = 1, d = 32;
  std::vector<std::int8_t> q, k, v;
  std::vector<std::int32_t> bias;  ///< dense [H, Nq, Nkv] Q16 octaves, or empty
  std::vector<std::uint8_t> mask;  ///< [windows, Nq, Nkv], or empty
  std::int64_t windows = 0;
  std::vector<float> q_scale, k_scale, v_scale, out_scale;  ///< 1 or H each (out: maybe empty)
  std::string text;                                         ///< what it is, for failure messages

  AttentionProblem view() const {
    AttentionProblem p{bhnd(q.data(), z, h, nq, d), bhnd(k.data(), z, h, nkv, d),
                       bhnd(v.data(), z, h, nkv, d)};
    if (!bias.empty()) {
      p.bias = AttentionBias{BiasKind::dense, bias.data(), h, nq, nkv};
    }
    if (!mask.empty()) p.mask = AttentionMask{mask.data(), windows, nq, nkv};
    return p;
  }
};

/// Log-uniform integer in [lo, hi].
std::int64_t log_uniform(Rng& rng, std::int64_t lo, std::int64_t hi) {
  const double x = std::exp(std::log(double(lo)) + rng.unit() * std::log(double(hi) / double(lo)));
  return std::clamp<std::int64_t>(std::llround(x), lo, hi);
}

double log_uniform_real(Rng& rng, double lo, double hi) {
  return std::exp(std::log(lo) + rng.unit() * std::log(hi / lo));
}

/// int8 values from one of five distributions; appends its name to `text`.
std::vector<std::int8_t> random_values(Rng& rng, std::size_t count, std::string& text) {
  std::vector<std::int8_t> out(count);
  switch (rng.below(5)) {
    case 0: {
      const int a = static_cast<int>(log_uniform(rng, 1, 127));
      for (auto& x : out) x = rng.int8(-a, a);
      text += "U[-" + std::to_string(a) + "," + std::to_string(a) + "]";
      break;
    }
    case 1:
      for (auto& x : out) x = static_cast<std::int8_t>(rng.chance(1, 2) ? 127 : -127);
      text += "+-127";
      break;
    case 2:
      for (auto& x : out) {
        x = rng.chance(1, 50) ? static_cast<std::int8_t>(rng.chance(1, 2) ? 127 : -128)
                              : rng.int8(-8, 8);
      }
      text += "sparse-outliers";
      break;
    case 3:
      std::fill(out.begin(), out.end(), std::int8_t{-128});
      text += "all-128";
      break;
    default:
      for (auto& x : out) x = rng.int8();
      text += "U[-128,127]";
      break;
  }
  return out;
}

FuzzProblem random_problem(Rng& rng, std::int64_t element_budget) {
  FuzzProblem f;
  std::ostringstream os;
  f.d = kHeadDims[rng.below(5)];
  f.z = rng.uniform(1, 2);
  f.h = rng.uniform(1, 3);
  f.nq = log_uniform(rng, 1, 640);
  f.nkv = rng.chance(1, 3) ? f.nq : log_uniform(rng, 1, 640);
  while (f.z * f.h * f.nq * f.nkv * f.d > element_budget && (f.nq > 1 || f.nkv > 1)) {
    if (f.nq >= f.nkv)
      f.nq = (f.nq + 1) / 2;
    else
      f.nkv = (f.nkv + 1) / 2;
  }
  const auto qn = static_cast<std::size_t>(f.z * f.h * f.nq * f.d);
  const auto kn = static_cast<std::size_t>(f.z * f.h * f.nkv * f.d);
  std::string values = "q ";
  f.q = random_values(rng, qn, values);
  values += ", k ";
  f.k = random_values(rng, kn, values);
  values += ", v ";
  f.v = random_values(rng, kn, values);
  os << "Z" << f.z << " H" << f.h << " Nq" << f.nq << " Nkv" << f.nkv << " D" << f.d << "; "
     << values;
  if (rng.chance(1, 4)) {
    const std::int32_t octaves = std::int32_t{1} << rng.below(7);  // 1..64 octaves
    f.bias = test::random_int32(rng, static_cast<std::size_t>(f.h * f.nq * f.nkv), -octaves * 65536,
                                octaves * 65536);
    os << "; dense bias +-" << octaves << " oct";
  }
  if (rng.chance(1, 4)) {
    f.windows = rng.chance(1, 2) ? 1 : f.z;
    const auto visible_in_8 = rng.uniform(1, 7);
    f.mask.resize(static_cast<std::size_t>(f.windows * f.nq * f.nkv));
    for (auto& m : f.mask) m = rng.chance(static_cast<std::uint64_t>(visible_in_8), 8) ? 1 : 0;
    os << "; mask " << visible_in_8 << "/8 visible, " << f.windows << " window(s)";
  }
  // Scales: sm_scale log-uniform over [2^-24, 2] octaves per unit (both presets' accepted ranges
  // and beyond), split evenly between q and k; per-head factors now and then.
  const double softmax_scale = 1.0 / std::sqrt(double(f.d));
  const double sm = log_uniform_real(rng, 0x1p-24, 2.0);
  const double qk = std::sqrt(sm / (kLog2e * softmax_scale));
  const bool per_head = rng.chance(1, 4);
  for (std::int64_t head = 0; head < (per_head ? f.h : 1); ++head) {
    const double spread = per_head ? log_uniform_real(rng, 0.25, 4.0) : 1.0;
    f.q_scale.push_back(static_cast<float>(qk * spread));
    f.k_scale.push_back(static_cast<float>(qk / std::sqrt(spread)));
    f.v_scale.push_back(static_cast<float>(log_uniform_real(rng, 1e-6, 1e3)));
  }
  os << "; sm_scale " << sm << (per_head ? " per head" : "") << ", s_v " << f.v_scale[0];
  f.text = os.str();
  return f;
}

/// Outcome counts of a run, by preset/output and by status.
struct Tally {
  std::int64_t accepted = 0;
  std::map<std::string, std::int64_t> rejected;
  double min_margin_db = std::numeric_limits<double>::infinity();  ///< min SQNR - floor
  double worst_ratio = 0.0;
  double min_floor_db = std::numeric_limits<double>::infinity();
  std::int64_t elements = 0, unbounded = 0;
};

template <class Cfg, class OutT>
void run_case(const FuzzProblem& f, bool calibrated_out, Rng& rng, Tally& tally,
              const std::string& name) {
  using Output = OutputFor<Cfg, OutT>;
  using Params = HeadParams<Cfg, Output>;
  std::vector<float> out_scale;
  if (calibrated_out) {
    for (float s : f.v_scale)
      out_scale.push_back(static_cast<float>(s * std::exp2(rng.uniform(-3, 3))));
  }
  const std::size_t heads = f.q_scale.size();
  std::vector<Params> params(heads);
  const QuantScales scales{f.q_scale, f.k_scale, f.v_scale, out_scale, 0.0};
  const Status s = calibrate<Cfg, Output>(scales, static_cast<int>(f.d), std::span<Params>(params));
  INFO(name << ": " << f.text);
  if (s != Status::ok) {
    // Rejections must name a range problem of the scales, never a generic failure.
    CHECK((s == Status::logit_range_exceeded || s == Status::scale_out_of_range));
    ++tally.rejected[std::string(to_string(s))];
    return;
  }
  std::vector<HeadScales> head_scales;
  const double softmax_scale = 1.0 / std::sqrt(double(f.d));
  for (std::size_t i = 0; i < heads; ++i) {
    const double sv = f.v_scale[i];
    const double resolved =
        calibrated_out ? double(out_scale[i]) : sv / Output::default_scale_divisor();
    head_scales.push_back(HeadScales{
        kLog2e * softmax_scale * double(f.q_scale[i]) * double(f.k_scale[i]), sv, resolved});
  }
  std::vector<OutT> out(static_cast<std::size_t>(f.z * f.h * f.nq * f.d));
  const auto out_view = bhnd(out.data(), f.z, f.h, f.nq, f.d);
  const AttentionProblem problem = f.view();
  REQUIRE(reference::flash_attention<Cfg, Output>(problem, std::span<const Params>(params),
                                                  out_view) == Status::ok);
  const AccuracyReport r = reference::check_accuracy<Cfg, Output>(
      problem, std::span<const Params>(params), head_scales, out_view);
  INFO("violations " << r.violations << " of " << r.elements << ", worst error/bound "
                     << r.worst_ratio << ", first at flat index " << r.first_violation << ", SQNR "
                     << r.sqnr_db() << " dB, floor " << r.floor_db() << " dB");
  CHECK(r.violations == 0);
  // The polynomial presets guarantee a finite bound everywhere; Paper's 7-bit P against the
  // running maximum does not for rows with many keys near its cut-off (docs/numerics.md).
  if constexpr (Cfg::Softmax::max_mode == MaxMode::tile_local ||
                SoftmaxTraits<typename Cfg::Softmax>::accumulates_in_place) {
    CHECK(r.unbounded == 0);
  }
  tally.unbounded += r.unbounded;
  tally.elements += r.elements;
  ++tally.accepted;
  tally.worst_ratio = std::max(tally.worst_ratio, r.worst_ratio);
  if (r.signal > 0 && r.noise > 0 && r.unbounded == 0) {
    tally.min_margin_db = std::min(tally.min_margin_db, r.sqnr_db() - r.floor_db());
    tally.min_floor_db = std::min(tally.min_floor_db, r.floor_db());
  }
}

template <class Cfg>
void run_outputs(const FuzzProblem& f, Rng& rng, std::map<std::string, Tally>& tallies,
                 const std::string& preset) {
  switch (rng.below(5)) {
    case 0:
      run_case<Cfg, std::int8_t>(f, false, rng, tallies[preset + " s8"], preset + " s8");
      break;
    case 1:
      run_case<Cfg, std::int8_t>(f, true, rng, tallies[preset + " s8 calibrated"],
                                 preset + " s8 calibrated");
      break;
    case 2:
      run_case<Cfg, std::int16_t>(f, false, rng, tallies[preset + " s16"], preset + " s16");
      break;
    case 3:
      run_case<Cfg, std::int32_t>(f, false, rng, tallies[preset + " s32"], preset + " s32");
      break;
    default:
      run_case<Cfg, Float16>(f, false, rng, tallies[preset + " f16"], preset + " f16");
      break;
  }
}

std::int64_t fuzz_configs(std::int64_t fallback) {
  const char* text = std::getenv("QFLASH_ACCURACY_FUZZ_CONFIGS");
  if (text == nullptr || *text == '\0') return fallback;
  char* end = nullptr;
  const long long value = std::strtoll(text, &end, 10);
  return end != nullptr && *end == '\0' && value > 0 ? value : fallback;
}

}  // namespace

TEST_CASE("accuracy fuzz: every accepted configuration meets its proven floor", "[accuracy]") {
  const std::int64_t configs = fuzz_configs(320);
  Rng rng(test::test_seed(0x5eedacc0u));
  INFO(test::seed_text(rng.seed()));
  std::map<std::string, Tally> tallies;
  for (std::int64_t c = 0; c < configs; ++c) {
    const FuzzProblem f = random_problem(rng, std::int64_t{1} << 21);
    switch (rng.below(5)) {
      case 0:
        run_outputs<presets::Paper>(f, rng, tallies, "Paper");
        break;
      case 1:
        run_outputs<presets::Precise>(f, rng, tallies, "Precise");
        break;
      case 2:
        run_outputs<presets::Fast>(f, rng, tallies, "Fast");
        break;
      case 3:
        run_outputs<presets::FastLong>(f, rng, tallies, "FastLong");
        break;
      default:
        run_outputs<presets::PreciseCubic>(f, rng, tallies, "PreciseCubic");
        break;
    }
  }
  std::int64_t accepted = 0;
  std::cout << "accuracy fuzz: " << configs << " configurations, " << test::seed_text(rng.seed())
            << "\n";
  for (const auto& [name, t] : tallies) {
    accepted += t.accepted;
    std::cout << "  " << name << ": " << t.accepted << " accepted (worst error/bound "
              << t.worst_ratio << ", min SQNR - floor " << t.min_margin_db << " dB, min floor "
              << t.min_floor_db << " dB, " << t.unbounded << " of " << t.elements
              << " elements unbounded)";
    for (const auto& [status, n] : t.rejected) std::cout << ", " << n << " " << status;
    std::cout << "\n";
  }
  CHECK(accepted >= configs / 3);  // the run must exercise the accepted range, not only rejections
}
