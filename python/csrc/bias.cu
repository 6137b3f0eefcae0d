// SPDX-License-Identifier: Apache-2.0
// An additive bias in nats (float32) -> the kernel's Q16 octaves (int32), on the current stream:
// qflash::bias_to_q16_octaves element by element, the function the host reference's
// quantize_bias calls, so both sides convert a bias to the same integers.
#include <cuda_runtime.h>

#include <cstdint>

#include "qflash/policy/logit.hpp"

namespace {

__global__ void bias_to_q16_kernel(const float* nats, std::int32_t* q16, std::int64_t count) {
  const std::int64_t step = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += step) {
    q16[i] = qflash::bias_to_q16_octaves(nats[i]);
  }
}

}  // namespace

cudaError_t qflash_py_bias_to_q16(const float* nats, std::int32_t* q16, std::int64_t count,
                                  cudaStream_t stream) {
  if (count <= 0) return cudaSuccess;
  std::int64_t blocks = (count + 255) / 256;
  if (blocks > 1024) blocks = 1024;
  bias_to_q16_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(nats, q16, count);
  return cudaPeekAtLastError();
}
