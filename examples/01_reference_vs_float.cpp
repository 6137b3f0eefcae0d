// SPDX-License-Identifier: Apache-2.0
// Example 01: the bit-exact integer reference against the float oracle on one ViT-sized head
// (N = 197 tokens, D = 64), with per-tensor int8 Q, K, V and int8 output at V's scale.
//
// The steps are the whole host-side workflow: float tensors -> symmetric scales -> int8 codes ->
// calibrate (float scales -> integer HeadParams) -> integer attention -> dequantize -> compare.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <qflash/qflash.hpp>
#include <qflash/reference/attention_float.hpp>
#include <qflash/reference/flash_attention_int.hpp>
#include <qflash/reference/metrics.hpp>
#include <qflash/reference/quantize.hpp>
#include <random>
#include <span>
#include <vector>

namespace {

using namespace qflash;
namespace ref = qflash::reference;

constexpr std::int64_t kTokens = 197, kDim = 64;

/// One head's worth of U[-4, 4) values (24 random bits each).
std::vector<float> random_tensor(std::mt19937& rng) {
  std::vector<float> x(static_cast<std::size_t>(kTokens * kDim));
  for (float& value : x) value = (static_cast<float>(rng() >> 8) * 0x1p-23f - 1.0f) * 4.0f;
  return x;
}

Tensor4<const float> view(const std::vector<float>& x) {
  return bhnd<const float>(x.data(), 1, 1, kTokens, kDim);
}

/// Per-tensor int8 codes of x and their scale.
std::vector<std::int8_t> to_int8(const std::vector<float>& x, float& scale) {
  scale = ref::symmetric_scale(ref::amax(view(x)));
  std::vector<std::int8_t> codes(x.size());
  if (ref::quantize(view(x), std::span<const float>(&scale, 1),
                    bhnd(codes.data(), 1, 1, kTokens, kDim)) != Status::ok) {
    std::fprintf(stderr, "quantize failed\n");
    std::exit(1);
  }
  return codes;
}

/// The integer reference of configuration Cfg with int8 output at V's scale, as real values.
template <class Cfg>
std::vector<double> integer_attention(const AttentionProblem& problem, float s_q, float s_k,
                                      float s_v) {
  using Output = OutputFor<Cfg, std::int8_t>;
  HeadParams<Cfg, Output> params[1];
  const QuantScales scales{{&s_q, 1}, {&s_k, 1}, {&s_v, 1}};  // softmax scale: 1 / sqrt(D)
  std::vector<std::int8_t> out(static_cast<std::size_t>(kTokens * kDim));
  if (calibrate<Cfg, Output>(scales, kDim, std::span<HeadParams<Cfg, Output>>(params)) !=
          Status::ok ||
      ref::flash_attention<Cfg, Output>(problem, std::span<const HeadParams<Cfg, Output>>(params),
                                        bhnd(out.data(), 1, 1, kTokens, kDim)) != Status::ok) {
    std::fprintf(stderr, "integer attention failed\n");
    std::exit(1);
  }
  return ref::dequantize(std::span<const std::int8_t>(out), static_cast<double>(s_v));
}

void report(const char* name, const std::vector<double>& oracle, const std::vector<double>& test) {
  const ref::ErrorStats e = ref::compare(oracle, test);
  std::printf("  %-30s %9.2f %10.5f %10.5f %12.8f\n", name, e.sqnr_db, e.max_abs, e.mean_abs,
              e.cosine);
}

}  // namespace

int main() {
  std::mt19937 rng(2024);
  const std::vector<float> q = random_tensor(rng), k = random_tensor(rng), v = random_tensor(rng);
  const double softmax_scale = 1.0 / std::sqrt(static_cast<double>(kDim));

  // The accuracy target: double attention on the float inputs.
  std::vector<double> oracle(q.size());
  if (ref::attention_float(view(q), view(k), view(v), {}, {}, softmax_scale,
                           bhnd(oracle.data(), 1, 1, kTokens, kDim)) != Status::ok) {
    return 1;
  }

  float s_q = 0, s_k = 0, s_v = 0;
  const std::vector<std::int8_t> q8 = to_int8(q, s_q), k8 = to_int8(k, s_k), v8 = to_int8(v, s_v);
  const AttentionProblem problem{bhnd<const std::int8_t>(q8.data(), 1, 1, kTokens, kDim),
                                 bhnd<const std::int8_t>(k8.data(), 1, 1, kTokens, kDim),
                                 bhnd<const std::int8_t>(v8.data(), 1, 1, kTokens, kDim)};

  // The ceiling: exact attention on the dequantized int8 inputs.
  std::vector<float> qd(q.size()), kd(k.size()), vd(v.size());
  for (std::size_t i = 0; i < q.size(); ++i) {
    qd[i] = s_q * static_cast<float>(q8[i]);
    kd[i] = s_k * static_cast<float>(k8[i]);
    vd[i] = s_v * static_cast<float>(v8[i]);
  }
  std::vector<double> ceiling(q.size());
  if (ref::attention_float(view(qd), view(kd), view(vd), {}, {}, softmax_scale,
                           bhnd(ceiling.data(), 1, 1, kTokens, kDim)) != Status::ok) {
    return 1;
  }

  std::printf(
      "One head, N = %lld, D = %lld, q, k, v ~ U[-4, 4), per-tensor int8 "
      "(s_q = %.6f, s_k = %.6f, s_v = %.6f)\n\n",
      static_cast<long long>(kTokens), static_cast<long long>(kDim), s_q, s_k, s_v);
  std::printf("  %-30s %9s %10s %10s %12s\n", "against the float oracle", "SQNR dB", "max |e|",
              "mean |e|", "cosine");
  report("ceiling (exact on int8 inputs)", oracle, ceiling);
  report("Precise, s8 output", oracle, integer_attention<presets::Precise>(problem, s_q, s_k, s_v));
  report("Paper, s8 output", oracle, integer_attention<presets::Paper>(problem, s_q, s_k, s_v));
  return 0;
}
