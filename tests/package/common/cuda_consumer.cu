// SPDX-License-Identifier: Apache-2.0
// A downstream CUDA program: a trivial __global__ that calls a policy's `apply` on the device and
// compares with the host. Built by both consumer projects; without a GPU it exits with 77
// ("built, not run"), which the package test accepts.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <qflash/qflash.hpp>

namespace {

using Exp = qflash::PolyExp2<>;
constexpr int kCount = 256;

__global__ void exp2_kernel(const std::int32_t* u, std::int32_t* p, int count) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < count) p[i] = Exp::apply(u[i], Exp::Params{}).p;
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::puts("cuda consumer: no CUDA device, built but not run");
    return 77;
  }
  std::int32_t host_u[kCount], host_p[kCount];
  for (int i = 0; i < kCount; ++i) host_u[i] = i * 4099;  // 0 .. ~16 octaves in Q16
  std::int32_t *u = nullptr, *p = nullptr;
  const std::size_t bytes = sizeof(host_u);
  if (cudaMalloc(&u, bytes) != cudaSuccess || cudaMalloc(&p, bytes) != cudaSuccess ||
      cudaMemcpy(u, host_u, bytes, cudaMemcpyHostToDevice) != cudaSuccess) {
    std::puts("cuda consumer: allocation or copy failed");
    return 1;
  }
  exp2_kernel<<<1, kCount>>>(u, p, kCount);
  if (cudaGetLastError() != cudaSuccess ||
      cudaMemcpy(host_p, p, bytes, cudaMemcpyDeviceToHost) != cudaSuccess) {
    std::puts("cuda consumer: kernel failed");
    return 1;
  }
  cudaFree(u);
  cudaFree(p);
  int mismatches = 0;
  for (int i = 0; i < kCount; ++i) mismatches += host_p[i] != Exp::apply(host_u[i]).p;
  std::printf("cuda consumer: %d of %d device values differ from the host\n", mismatches, kCount);
  return mismatches == 0 ? 0 : 1;
}
