// Host-only qflash: float scales -> calibrate -> bit-exact integer attention (shown in README.md).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <qflash/qflash.hpp>
#include <qflash/reference/flash_attention_int.hpp>
#include <span>

int main() {
  using namespace qflash;
  using Cfg = presets::Precise;                 // log2-domain logits, polynomial exp2, u8 P
  using Output = OutputFor<Cfg, std::int16_t>;  // s16 output at scale s_v / 256
  using Params = HeadParams<Cfg, Output>;
  constexpr int N = 8, D = 32;  // one head, 8 tokens
  std::int8_t q[N * D] = {}, k[N * D] = {}, v[N * D];
  for (int i = 0; i < N; ++i) {
    q[i * D + i] = k[i * D + i] = 127;  // query i matches key i only
    for (int d = 0; d < D; ++d) v[i * D + d] = static_cast<std::int8_t>(10 * i);  // value i
  }
  const float s_qk = 0.025f, s_v = 0.1f;  // real value = scale * int8 code
  Params params[1];
  Status s = calibrate<Cfg, Output>({{&s_qk, 1}, {&s_qk, 1}, {&s_v, 1}}, D, std::span(params));
  std::int16_t out[N * D];
  const AttentionProblem problem{bhnd<const std::int8_t>(q, 1, 1, N, D),
                                 bhnd<const std::int8_t>(k, 1, 1, N, D),
                                 bhnd<const std::int8_t>(v, 1, 1, N, D)};
  if (s == Status::ok)
    s = reference::flash_attention<Cfg, Output>(problem, std::span<const Params>(params),
                                                bhnd(out, 1, 1, N, D));
  if (s != Status::ok) return std::printf("qflash: %s\n", to_string(s)), 1;
  // Exact softmax: weight e^a on key i (a = 127^2 s_qk^2 / sqrt(D) nats), 1 on each other key.
  const double a = std::exp(127.0 * s_qk * 127.0 * s_qk / std::sqrt(double{D}));
  for (int i = 0; i < N; ++i)
    std::printf("query %d: qflash %.4f  exact %.4f\n", i, out[i * D] * s_v / 256.0,
                (i * a + (28 - i)) / (a + 7));
}
