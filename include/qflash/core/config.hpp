// SPDX-License-Identifier: Apache-2.0
/// @file
/// Host/device qualifiers and loop pragmas shared by every qflash header.
///
/// One macro marks every function that both compilers see. Under nvcc it expands to
/// `__host__ __device__ __forceinline__`; under a plain C++ compiler it is `inline`, so the same
/// headers build the bit-exact CPU reference without the CUDA toolkit.
#pragma once

#if defined(__CUDACC__)
#define QFLASH_HOST_DEVICE __host__ __device__ __forceinline__
#define QFLASH_DEVICE __device__ __forceinline__
#define QFLASH_HOST __host__ inline
#else
#define QFLASH_HOST_DEVICE inline
#define QFLASH_DEVICE inline
#define QFLASH_HOST inline
#endif

// `#pragma unroll` is unknown to g++ (and -Werror=unknown-pragmas would reject it), so the
// pragma exists only in the device compilation pass.
#if defined(__CUDA_ARCH__)
#define QFLASH_UNROLL _Pragma("unroll")
#define QFLASH_NO_UNROLL _Pragma("unroll 1")
#else
#define QFLASH_UNROLL
#define QFLASH_NO_UNROLL
#endif

#if __cplusplus < 202002L
#error "qflash needs C++20 (g++ -std=c++20, nvcc -std=c++20)"
#endif
