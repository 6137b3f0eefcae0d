// SPDX-License-Identifier: Apache-2.0
/// @file
/// `Status`: the one error vocabulary of qflash. Every entry point that can reject its input
/// returns one, names the problem, and writes nothing when it is not `Status::ok`.
#pragma once

#include <cstdint>

namespace qflash {

enum class Status : std::uint8_t {
  ok = 0,
  null_pointer,             ///< a required tensor, bias, mask or parameter pointer is null
  empty_problem,            ///< Z, H, N or D is zero or negative
  unsupported_head_dim,     ///< D is not one of 32, 64, 80, 96, 128
  shape_mismatch,           ///< Q, K, V and O disagree on Z, H, D, or K and V on N
  invalid_stride,           ///< a negative stride, a view past the address space, an output
                            ///< whose elements overlap
  bias_shape_mismatch,      ///< bias extents do not fit [H, Nq, Nkv] (or table/index shapes)
  bias_index_out_of_range,  ///< a relative-position index points outside the bias table
  mask_shape_mismatch,      ///< mask extents do not fit [windows, Nq, Nkv], or Z % windows != 0
  sequence_too_long,        ///< Nkv exceeds the int32 accumulator bound of the configuration
  param_count_mismatch,     ///< head parameters given for neither 1 nor H heads
  invalid_scale,            ///< a scale is zero, negative, NaN or infinite
  scale_out_of_range,       ///< a finite scale whose integer multipliers cannot be represented
  unsupported_stride,       ///< the CUDA kernel needs unit stride along D (and 16-byte rows)
  misaligned_pointer,       ///< the CUDA kernel needs 16-byte aligned Q, K, V
  too_many_heads,           ///< H above the device launcher's limit
  cuda_error,               ///< a CUDA runtime call failed (query cudaGetLastError for details)
  no_cuda_device,           ///< no CUDA device is visible
  unsupported_device,       ///< the device is older than sm_80 (integer mma.sync m16n8k32)
  logit_range_exceeded,     ///< the scales let Q K^T logits span more than the logit domain
  output_overlaps_input,    ///< the output's memory overlaps Q, K, V, the bias or the mask
  invalid_params,           ///< head parameters outside the ranges calibrate produces
};

/// A short, stable, human-readable name for a status.
constexpr const char* to_string(Status s) noexcept {
  switch (s) {
    case Status::ok:
      return "ok";
    case Status::null_pointer:
      return "null pointer";
    case Status::empty_problem:
      return "empty problem (Z, H, N or D is not positive)";
    case Status::unsupported_head_dim:
      return "unsupported head dim (use 32, 64, 80, 96 or 128)";
    case Status::shape_mismatch:
      return "shape mismatch between Q, K, V and O";
    case Status::invalid_stride:
      return "invalid stride (negative, overflowing, or overlapping output)";
    case Status::bias_shape_mismatch:
      return "bias shape does not fit [H, Nq, Nkv]";
    case Status::bias_index_out_of_range:
      return "relative-position index outside the bias table";
    case Status::mask_shape_mismatch:
      return "mask shape does not fit [windows, Nq, Nkv]";
    case Status::sequence_too_long:
      return "Nkv exceeds the int32 accumulator bound";
    case Status::param_count_mismatch:
      return "head parameters must be given for 1 or H heads";
    case Status::invalid_scale:
      return "invalid scale (zero, negative, NaN or infinite)";
    case Status::scale_out_of_range:
      return "scale out of the representable range";
    case Status::unsupported_stride:
      return "unsupported stride for the CUDA kernel";
    case Status::misaligned_pointer:
      return "pointer not 16-byte aligned for the CUDA kernel";
    case Status::too_many_heads:
      return "too many heads for the device launcher";
    case Status::cuda_error:
      return "CUDA runtime error";
    case Status::no_cuda_device:
      return "no CUDA device";
    case Status::unsupported_device:
      return "CUDA device older than sm_80";
    case Status::logit_range_exceeded:
      return "scales let logits exceed the configuration's logit range";
    case Status::output_overlaps_input:
      return "output memory overlaps an input";
    case Status::invalid_params:
      return "head parameters outside the ranges calibrate produces";
  }
  return "unknown status";
}

}  // namespace qflash
