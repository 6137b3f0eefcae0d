// SPDX-License-Identifier: Apache-2.0
// Example 02: the CUDA kernel from a user's point of view, checked against the host reference.
//
// Host int8 Q/K/V -> calibrate -> device::flash_attention on the GPU -> compare with
// reference::flash_attention element for element. Prints "bit-exact" or the first mismatch.
#include <cuda_runtime.h>

#include <cstdio>
#include <random>
#include <vector>

#include "qflash/device/launch.cuh"
#include "qflash/qflash.hpp"
#include "qflash/reference/flash_attention_int.hpp"

int main() {
  using namespace qflash;
  using Cfg = presets::Precise;
  using Output = OutputFor<Cfg, std::int8_t>;  // int8 output at V's scale

  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::puts("example 02: no CUDA device, nothing to run");
    return 0;
  }

  // A ViT-S head group: Z = 2 images, H = 6 heads, N = 197 tokens, D = 64.
  const std::int64_t z = 2, h = 6, n = 197, d = 64;
  std::vector<std::int8_t> q(z * h * n * d), k(q.size()), v(q.size());
  std::mt19937 rng(42);
  std::uniform_int_distribution<int> code(-127, 127);
  for (auto* t : {&q, &k, &v}) {
    for (auto& x : *t) x = static_cast<std::int8_t>(code(rng));
  }

  // Per-tensor scales (real value = scale * code) -> integer parameters.
  const float q_scale = 4.0f / 127, k_scale = 4.0f / 127, v_scale = 4.0f / 127;
  HeadParams<Cfg, Output> params[1];
  Status s = calibrate<Cfg, Output>(QuantScales{{&q_scale, 1}, {&k_scale, 1}, {&v_scale, 1}},
                                    static_cast<int>(d), std::span(params));
  if (s != Status::ok) return std::printf("calibrate: %s\n", to_string(s)), 1;

  // Device copies.
  std::int8_t *dq, *dk, *dv, *dout;
  const std::size_t bytes = q.size();
  cudaMalloc(&dq, bytes);
  cudaMalloc(&dk, bytes);
  cudaMalloc(&dv, bytes);
  cudaMalloc(&dout, bytes);
  cudaMemcpy(dq, q.data(), bytes, cudaMemcpyHostToDevice);
  cudaMemcpy(dk, k.data(), bytes, cudaMemcpyHostToDevice);
  cudaMemcpy(dv, v.data(), bytes, cudaMemcpyHostToDevice);

  // The kernel: BHND tensors, stream-ordered, no host synchronisation inside.
  const AttentionProblem gpu{bhnd<const std::int8_t>(dq, z, h, n, d),
                             bhnd<const std::int8_t>(dk, z, h, n, d),
                             bhnd<const std::int8_t>(dv, z, h, n, d)};
  s = device::flash_attention<Cfg, Output>(gpu, std::span<const HeadParams<Cfg, Output>>(params),
                                           bhnd(dout, z, h, n, d));
  if (s != Status::ok) return std::printf("launch: %s\n", to_string(s)), 1;
  std::vector<std::int8_t> out(q.size());
  cudaMemcpy(out.data(), dout, bytes, cudaMemcpyDeviceToHost);  // synchronises

  // The same computation on the host.
  std::vector<std::int8_t> expected(q.size());
  const AttentionProblem cpu{bhnd<const std::int8_t>(q.data(), z, h, n, d),
                             bhnd<const std::int8_t>(k.data(), z, h, n, d),
                             bhnd<const std::int8_t>(v.data(), z, h, n, d)};
  s = reference::flash_attention<Cfg, Output>(cpu, std::span<const HeadParams<Cfg, Output>>(params),
                                              bhnd(expected.data(), z, h, n, d));
  if (s != Status::ok) return std::printf("reference: %s\n", to_string(s)), 1;

  for (auto* p : {dq, dk, dv, dout}) cudaFree(p);
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (out[i] != expected[i]) {
      std::printf("mismatch at %zu: gpu %d, reference %d\n", i, out[i], expected[i]);
      return 1;
    }
  }
  std::printf("example 02: %zu outputs, GPU == host reference bit-exact\n", out.size());
  return 0;
}
