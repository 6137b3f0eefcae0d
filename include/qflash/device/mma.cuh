// SPDX-License-Identifier: Apache-2.0
/// @file
/// PTX wrappers ("atoms") for the integer tensor-core path: mma.sync m16n8k32 with s8 x s8 and
/// u8 x s8 operands, ldmatrix, and cp.async. sm_80 or newer.
///
/// Fragment layout of mma.sync.m16n8k32 (PTX ISA, "Matrix Fragments for mma.m16n8k32"), with
/// group = lane / 4 and quad = lane % 4:
///   A (16 x 32, row):  a0 = row group,   k = 4 quad .. 4 quad + 3   (4 bytes, low k in byte 0)
///                      a1 = row group+8, same k;  a2, a3 = a0, a1 at k + 16
///   B (32 x 8, col):   b0 = column group, k = 4 quad .. 4 quad + 3;  b1 = same at k + 16
///   C (16 x 8, s32):   c0, c1 = row group,   columns 2 quad, 2 quad + 1;  c2, c3 = row group+8
/// Integer accumulation is exact, so these products equal the scalar loops of tile_ops.hpp.
#pragma once

#if !defined(__CUDACC__)
#error "qflash/device/*.cuh needs nvcc (CUDA C++)"
#endif

#include <cstdint>

#include "qflash/core/config.hpp"

namespace qflash::device {

namespace detail {
template <class>
inline constexpr bool always_false = false;
}  // namespace detail

/// True in the device pass for an architecture with integer mma.sync m16n8k32 (sm_80+).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define QFLASH_ARCH_UNSUPPORTED 1
#else
#define QFLASH_ARCH_UNSUPPORTED 0
#endif

/// D = A * B + C, A s8 (16x32), B s8 (32x8), C/D s32 (16x8).
template <class Unused = void>
QFLASH_DEVICE void mma_s8s8(std::int32_t (&d)[4], const std::uint32_t (&a)[4],
                            const std::uint32_t (&b)[2]) {
#if QFLASH_ARCH_UNSUPPORTED
  static_assert(detail::always_false<Unused>,
                "qflash: integer mma.sync m16n8k32 needs sm_80 or newer (compile for sm_80+)");
#else
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

/// D = A * B + C, A u8 (16x32), B s8 (32x8), C/D s32 (16x8): P (0..255) times V.
template <class Unused = void>
QFLASH_DEVICE void mma_u8s8(std::int32_t (&d)[4], const std::uint32_t (&a)[4],
                            const std::uint32_t (&b)[2]) {
#if QFLASH_ARCH_UNSUPPORTED
  static_assert(detail::always_false<Unused>,
                "qflash: integer mma.sync m16n8k32 needs sm_80 or newer (compile for sm_80+)");
#else
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

/// Four 8x8 b16 matrices from shared memory (lane l gives the row address of matrix l / 8).
/// On 8-bit data each lane receives 4 consecutive bytes of row lane / 4 at byte 4 (lane % 4):
/// exactly an A or B fragment register of mma.m16n8k32.
QFLASH_DEVICE void ldmatrix_x4(std::uint32_t (&r)[4], const void* smem_row) {
  const auto addr = static_cast<std::uint32_t>(__cvta_generic_to_shared(smem_row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

/// 16-byte asynchronous copy global -> shared; `valid == false` writes 16 zero bytes and reads
/// nothing (the source address must still be a valid pointer value).
QFLASH_DEVICE void cp_async_16(void* smem, const void* gmem, bool valid) {
  const auto addr = static_cast<std::uint32_t>(__cvta_generic_to_shared(smem));
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(addr), "l"(gmem),
               "r"(src_bytes));
}

QFLASH_DEVICE void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

/// Waits until at most `Pending` committed groups are still in flight.
template <int Pending>
QFLASH_DEVICE void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending));
}

}  // namespace qflash::device
