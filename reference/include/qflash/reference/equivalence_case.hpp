// SPDX-License-Identifier: Apache-2.0
/// @file
/// The case and report types of the equivalence harness (reference/equivalence.cuh). Host-only
/// code (test drivers, Catch2 suites) can build cases and read reports without nvcc.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

#include "qflash/attention/problem.hpp"
#include "qflash/core/status.hpp"

namespace qflash::reference {

/// Input families of the harness (all deterministic in the seed).
enum class InputPattern : std::uint8_t {
  uniform,         ///< Q, K, V uniform in [-127, 127]
  all_max,         ///< every element 127
  all_min,         ///< every element -128
  dominant_logit,  ///< uniform, plus one key per head aligned with every query (a peaked row)
  small_range,     ///< Q, K uniform in [-8, 8] (flat attention), V uniform
};

enum class Layout : std::uint8_t {
  bhnd,    ///< contiguous [Z, H, N, D]
  bnhd,    ///< contiguous [Z, N, H, D]
  padded,  ///< [Z, H, N, D] with every token row padded to D + 16 bytes
};

/// One seeded configuration. Scales: sm_scale = log2(e) / sqrt(D) * s_q * s_k is set from
/// `inv_sm_scale` when positive (1 / sm_scale is the paper's R), else s_q = s_k = 4 / 127.
struct EquivalenceCase {
  std::int64_t batch = 1, heads = 1, seq_q = 197, seq_kv = 197, head_dim = 64;
  Layout layout = Layout::bhnd;
  InputPattern pattern = InputPattern::uniform;
  BiasKind bias = BiasKind::none;
  bool bias_shared_by_heads = false;  ///< bias heads == 1 (broadcast)
  std::int64_t mask_windows = 0;      ///< 0: no mask; else a random [windows, Nq, Nkv] mask
  bool masked_rows = false;           ///< with a mask: some query rows see no key at all
  bool per_head_params = false;       ///< H parameter sets (scales differ per head)
  bool device_params = false;         ///< pass the parameters through device memory
  double inv_sm_scale = 0.0;
  double out_scale_factor = 0.0;  ///< > 0: out_scale = s_v * factor (else the type default)
  /// Device output rows padded to D + 1 elements (an odd token stride): the kernel then writes
  /// element by element instead of in pairs of adjacent columns.
  bool odd_output_stride = false;
  std::uint64_t seed = 1;
};

/// What a comparison found. `status` is the first failing step's status (ok when all ran).
struct EquivalenceReport {
  Status status = Status::ok;
  const char* failed_step = "";
  std::int64_t elements = 0, mismatches = 0, first = -1, last = -1;
  double first_expected = 0, first_actual = 0;
  std::uint64_t seed = 0;

  bool passed() const { return status == Status::ok && mismatches == 0; }
  std::string describe() const {
    char text[320];
    if (status != Status::ok) {
      std::snprintf(text, sizeof text, "seed %llu: %s failed: %s",
                    static_cast<unsigned long long>(seed), failed_step, to_string(status));
    } else {
      std::snprintf(text, sizeof text,
                    "seed %llu: %lld of %lld elements differ (first index %lld: reference %g, "
                    "device %g; last index %lld)",
                    static_cast<unsigned long long>(seed), static_cast<long long>(mismatches),
                    static_cast<long long>(elements), static_cast<long long>(first), first_expected,
                    first_actual, static_cast<long long>(last));
    }
    return text;
  }
};

}  // namespace qflash::reference
