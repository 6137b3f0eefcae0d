// SPDX-License-Identifier: Apache-2.0
// A device allocation for the GPU test drivers (host code; CUDA runtime API only).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace qflash::test {

inline void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

template <class T>
class GpuBuffer {
 public:
  explicit GpuBuffer(std::size_t count) : count_(count) {
    cuda_check(cudaMalloc(reinterpret_cast<void**>(&ptr_), (count == 0 ? 1 : count) * sizeof(T)),
               "cudaMalloc");
  }
  GpuBuffer(const GpuBuffer&) = delete;
  GpuBuffer& operator=(const GpuBuffer&) = delete;
  ~GpuBuffer() { cudaFree(ptr_); }

  T* get() const { return ptr_; }
  std::size_t size() const { return count_; }
  void upload(const std::vector<T>& host) {
    cuda_check(cudaMemcpy(ptr_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice),
               "upload");
  }
  std::vector<T> download() const {
    std::vector<T> host(count_);
    cuda_check(cudaDeviceSynchronize(), "synchronize");
    cuda_check(cudaMemcpy(host.data(), ptr_, count_ * sizeof(T), cudaMemcpyDeviceToHost),
               "download");
    return host;
  }
  void fill_bytes(int value) { cuda_check(cudaMemset(ptr_, value, count_ * sizeof(T)), "memset"); }

 private:
  T* ptr_ = nullptr;
  std::size_t count_;
};

}  // namespace qflash::test
