// SPDX-License-Identifier: Apache-2.0
/// @file
/// The public equivalence harness: runs one seeded case through the host reference and through
/// the CUDA kernel of the same configuration and compares the outputs element by element.
///
/// A downstream project that instantiates its own variant (its own policies, bit widths or
/// block size) includes this header in one of its .cu files and calls
///   auto report = qflash::reference::check_equivalence<MyConfig, MyOutput>(case);
///   if (!report.passed()) std::puts(report.describe().c_str());
/// The report names the seed, the mismatch count and the first and last differing indices.
/// No test framework is involved (keep Catch2 out of .cu files).
#pragma once

#if !defined(__CUDACC__)
#error "qflash/reference/equivalence.cuh needs nvcc (it launches the CUDA kernel)"
#endif

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "qflash/device/launch.cuh"
#include "qflash/qflash.hpp"
#include "qflash/reference/equivalence_case.hpp"
#include "qflash/reference/flash_attention_int.hpp"

namespace qflash::reference {

namespace detail {

/// A device buffer freed on scope exit.
template <class T>
struct DeviceBuffer {
  T* ptr = nullptr;
  cudaError_t error = cudaSuccess;
  explicit DeviceBuffer(std::size_t count) {
    error = cudaMalloc(reinterpret_cast<void**>(&ptr), (count == 0 ? 1 : count) * sizeof(T));
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (ptr != nullptr) cudaFree(ptr);
  }
};

template <class T>
double as_double(const T& x) {
  if constexpr (std::is_same_v<T, Float16>) {
    return static_cast<double>(half_bits_to_float(x.bits));
  } else {
    return static_cast<double>(x);
  }
}

template <class T>
bool same_bits(const T& a, const T& b) {
  if constexpr (std::is_same_v<T, Float16>) {
    return a.bits == b.bits;
  } else {
    return a == b;
  }
}

/// [Z, H, N, D] in BHND order with token rows of `row` >= D elements (padding after each row).
template <class T>
Tensor4<T> padded_rows(T* storage, std::int64_t batch, std::int64_t heads, std::int64_t seq,
                       std::int64_t dim, std::int64_t row) {
  return Tensor4<T>{storage, batch, heads, seq, dim, heads * seq * row, seq * row, row, 1};
}

/// Element view of a [Z, H, N, D] tensor in the case's layout, over `storage`.
template <class T>
Tensor4<T> make_view(T* storage, const EquivalenceCase& c, std::int64_t seq) {
  switch (c.layout) {
    case Layout::bnhd:
      return bnhd(storage, c.batch, c.heads, seq, c.head_dim);
    case Layout::padded:
      return padded_rows(storage, c.batch, c.heads, seq, c.head_dim, c.head_dim + 16);
    case Layout::bhnd:
      break;
  }
  return bhnd(storage, c.batch, c.heads, seq, c.head_dim);
}

inline std::int64_t storage_size(const EquivalenceCase& c, std::int64_t seq) {
  const std::int64_t row = c.layout == Layout::padded ? c.head_dim + 16 : c.head_dim;
  return c.batch * c.heads * seq * row;
}

}  // namespace detail

/// Runs `c` through reference::flash_attention and device::flash_attention and compares.
template <KernelConfig Cfg, OutputPolicy Output>
EquivalenceReport check_equivalence(const EquivalenceCase& c, cudaStream_t stream = 0) {
  using OutT = typename Output::value_type;
  EquivalenceReport report;
  report.seed = c.seed;
  std::mt19937_64 rng(c.seed);
  const auto uniform = [&rng](int lo, int hi) {
    return static_cast<std::int8_t>(std::uniform_int_distribution<int>(lo, hi)(rng));
  };

  // Inputs (padding bytes of the padded layout stay at a poison value and must be ignored).
  const std::int64_t d = c.head_dim;
  std::vector<std::int8_t> q(static_cast<std::size_t>(detail::storage_size(c, c.seq_q)), 77);
  std::vector<std::int8_t> k(static_cast<std::size_t>(detail::storage_size(c, c.seq_kv)), 77);
  std::vector<std::int8_t> v(k.size(), 77);
  const Tensor4<std::int8_t> qv = detail::make_view(q.data(), c, c.seq_q);
  const Tensor4<std::int8_t> kv = detail::make_view(k.data(), c, c.seq_kv);
  const Tensor4<std::int8_t> vv = detail::make_view(v.data(), c, c.seq_kv);
  const bool small = c.pattern == InputPattern::small_range;
  for (std::int64_t z = 0; z < c.batch; ++z) {
    for (std::int64_t h = 0; h < c.heads; ++h) {
      for (std::int64_t n = 0; n < c.seq_q; ++n) {
        for (std::int64_t e = 0; e < d; ++e) {
          qv(z, h, n, e) = c.pattern == InputPattern::all_max   ? std::int8_t{127}
                           : c.pattern == InputPattern::all_min ? std::int8_t{-128}
                           : small                              ? uniform(-8, 8)
                                                                : uniform(-127, 127);
        }
      }
      for (std::int64_t n = 0; n < c.seq_kv; ++n) {
        for (std::int64_t e = 0; e < d; ++e) {
          kv(z, h, n, e) = c.pattern == InputPattern::all_max   ? std::int8_t{127}
                           : c.pattern == InputPattern::all_min ? std::int8_t{-128}
                           : small                              ? uniform(-8, 8)
                                                                : uniform(-127, 127);
          vv(z, h, n, e) = c.pattern == InputPattern::all_max   ? std::int8_t{127}
                           : c.pattern == InputPattern::all_min ? std::int8_t{-128}
                                                                : uniform(-127, 127);
        }
      }
      if (c.pattern == InputPattern::dominant_logit) {  // key (z + h) % Nkv matches sign(q)
        const std::int64_t key = (z + h) % c.seq_kv;
        for (std::int64_t e = 0; e < d; ++e) kv(z, h, key, e) = e % 2 == 0 ? 127 : -128;
        for (std::int64_t n = 0; n < c.seq_q; ++n) {
          for (std::int64_t e = 0; e < d; ++e) qv(z, h, n, e) = e % 2 == 0 ? 100 : -100;
        }
      }
    }
  }

  // Bias (Q16 octaves, within a few octaves) and mask.
  const std::int64_t bias_heads = c.bias_shared_by_heads ? 1 : c.heads;
  const std::int64_t table_size = 2 * (c.seq_q + c.seq_kv);
  std::vector<std::int32_t> bias_values;
  std::vector<std::int32_t> bias_index;
  AttentionBias bias{};
  if (c.bias == BiasKind::dense) {
    bias_values.resize(static_cast<std::size_t>(bias_heads * c.seq_q * c.seq_kv));
    for (auto& b : bias_values)
      b = std::uniform_int_distribution<std::int32_t>(-4 << 16, 4 << 16)(rng);
    bias = AttentionBias{BiasKind::dense, nullptr, bias_heads, c.seq_q, c.seq_kv};
  } else if (c.bias == BiasKind::relative_table) {
    // Table stored [entries, heads] as in Swin (stride_head 1, stride_entry heads).
    bias_values.resize(static_cast<std::size_t>(table_size * bias_heads));
    for (auto& b : bias_values)
      b = std::uniform_int_distribution<std::int32_t>(-4 << 16, 4 << 16)(rng);
    bias_index.resize(static_cast<std::size_t>(c.seq_q * c.seq_kv));
    for (std::int64_t i = 0; i < c.seq_q; ++i) {
      for (std::int64_t j = 0; j < c.seq_kv; ++j) {
        bias_index[static_cast<std::size_t>(i * c.seq_kv + j)] =
            static_cast<std::int32_t>((i - j + c.seq_kv) % table_size);
      }
    }
    bias = AttentionBias{BiasKind::relative_table,
                         nullptr,
                         bias_heads,
                         c.seq_q,
                         c.seq_kv,
                         nullptr,
                         table_size,
                         1,
                         bias_heads};
  }
  std::vector<std::uint8_t> mask;
  AttentionMask mask_view{};
  if (c.mask_windows > 0) {
    mask.resize(static_cast<std::size_t>(c.mask_windows * c.seq_q * c.seq_kv));
    for (std::int64_t w = 0; w < c.mask_windows; ++w) {
      for (std::int64_t i = 0; i < c.seq_q; ++i) {
        const bool hide_row = c.masked_rows && (i + w) % 7 == 3;
        for (std::int64_t j = 0; j < c.seq_kv; ++j) {
          const bool visible = !hide_row && std::uniform_int_distribution<int>(0, 3)(rng) != 0;
          mask[static_cast<std::size_t>((w * c.seq_q + i) * c.seq_kv + j)] = visible ? 1 : 0;
        }
      }
    }
    mask_view = AttentionMask{nullptr, c.mask_windows, c.seq_q, c.seq_kv};
  }

  // Calibration.
  const double sm_default = kLog2e / std::sqrt(static_cast<double>(d)) * (4.0 / 127) * (4.0 / 127);
  const double sm_scale = c.inv_sm_scale > 0 ? 1.0 / c.inv_sm_scale : sm_default;
  const double base_qk = std::sqrt(sm_scale * std::sqrt(static_cast<double>(d)) / kLog2e);
  const std::int64_t param_count = c.per_head_params ? c.heads : 1;
  std::vector<float> q_scales, k_scales, v_scales, out_scales;
  for (std::int64_t h = 0; h < param_count; ++h) {
    const double head_factor = 1.0 + 0.125 * static_cast<double>(h % 5);  // differ per head
    q_scales.push_back(static_cast<float>(base_qk * head_factor));
    k_scales.push_back(static_cast<float>(base_qk));
    v_scales.push_back(static_cast<float>(0.03 * head_factor));
    if (c.out_scale_factor > 0)
      out_scales.push_back(static_cast<float>(0.03 * head_factor * c.out_scale_factor));
  }
  std::vector<HeadParams<Cfg, Output>> params(static_cast<std::size_t>(param_count));
  QuantScales scales{q_scales, k_scales, v_scales, out_scales};
  Status s = calibrate<Cfg, Output>(scales, static_cast<int>(d), std::span(params));
  if (s != Status::ok) {
    report.status = s;
    report.failed_step = "calibrate";
    return report;
  }

  // Host reference.
  const std::int64_t out_elems = c.batch * c.heads * c.seq_q * d;
  std::vector<OutT> expected(static_cast<std::size_t>(out_elems));
  AttentionProblem host_problem{qv, kv, vv, bias, mask_view};
  host_problem.bias.values = bias_values.data();
  host_problem.bias.index = bias_index.empty() ? nullptr : bias_index.data();
  host_problem.mask.data = mask.empty() ? nullptr : mask.data();
  const Tensor4<OutT> expected_view = bhnd(expected.data(), c.batch, c.heads, c.seq_q, d);
  s = flash_attention<Cfg, Output>(host_problem, std::span<const HeadParams<Cfg, Output>>(params),
                                   expected_view);
  if (s != Status::ok) {
    report.status = s;
    report.failed_step = "reference";
    return report;
  }

  // Device run (output poisoned first, so unwritten elements show up as mismatches).
  detail::DeviceBuffer<std::int8_t> dq(q.size()), dk(k.size()), dv(v.size());
  detail::DeviceBuffer<std::int32_t> dbias(bias_values.size()), dindex(bias_index.size());
  detail::DeviceBuffer<std::uint8_t> dmask(mask.size());
  // The device output, BHND with token rows of `out_row` elements (D, or D + 1 for the odd
  // stride case).
  const std::int64_t out_row = c.odd_output_stride ? d + 1 : d;
  const auto out_capacity = static_cast<std::size_t>(c.batch * c.heads * c.seq_q * out_row);
  detail::DeviceBuffer<OutT> dout(out_capacity);
  detail::DeviceBuffer<HeadParams<Cfg, Output>> dparams(params.size());
  const auto fail_cuda = [&](cudaError_t e) {
    if (e == cudaSuccess) return false;
    report.status = Status::cuda_error;
    report.failed_step = cudaGetErrorString(e);
    return true;
  };
  for (cudaError_t e : {dq.error, dk.error, dv.error, dbias.error, dindex.error, dmask.error,
                        dout.error, dparams.error}) {
    if (fail_cuda(e)) return report;
  }
  const auto upload = [](void* dst, const void* src, std::size_t bytes) {
    return bytes == 0 ? cudaSuccess : cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice);
  };
  for (cudaError_t e :
       {upload(dq.ptr, q.data(), q.size()), upload(dk.ptr, k.data(), k.size()),
        upload(dv.ptr, v.data(), v.size()),
        upload(dbias.ptr, bias_values.data(), bias_values.size() * sizeof(std::int32_t)),
        upload(dindex.ptr, bias_index.data(), bias_index.size() * sizeof(std::int32_t)),
        upload(dmask.ptr, mask.data(), mask.size()),
        upload(dparams.ptr, params.data(), params.size() * sizeof(params[0]))}) {
    if (fail_cuda(e)) return report;
  }
  AttentionProblem device_problem = host_problem;
  device_problem.q.data = dq.ptr;
  device_problem.k.data = dk.ptr;
  device_problem.v.data = dv.ptr;
  device_problem.bias.values = bias_values.empty() ? nullptr : dbias.ptr;
  device_problem.bias.index = bias_index.empty() ? nullptr : dindex.ptr;
  device_problem.mask.data = mask.empty() ? nullptr : dmask.ptr;
  const Tensor4<OutT> device_out =
      detail::padded_rows(dout.ptr, c.batch, c.heads, c.seq_q, d, out_row);
  // Two runs over differently poisoned outputs: an element the kernel never writes keeps the
  // poison in at least one of them and shows up as a mismatch.
  std::vector<OutT> actual(expected.size());
  for (const int poison : {0xA5, 0x5A}) {
    if (fail_cuda(cudaMemset(dout.ptr, poison, out_capacity * sizeof(OutT)))) return report;
    s = c.device_params ? device::flash_attention<Cfg, Output>(device_problem, dparams.ptr,
                                                               param_count, device_out, stream)
                        : device::flash_attention<Cfg, Output>(
                              device_problem, std::span<const HeadParams<Cfg, Output>>(params),
                              device_out, stream);
    if (s != Status::ok) {
      report.status = s;
      report.failed_step = "device launch";
      return report;
    }
    if (fail_cuda(cudaStreamSynchronize(stream))) return report;
    std::vector<OutT> stored(out_capacity);
    if (fail_cuda(cudaMemcpy(stored.data(), dout.ptr, stored.size() * sizeof(OutT),
                             cudaMemcpyDeviceToHost))) {
      return report;
    }
    std::vector<OutT> run(expected.size());  // the logical [Z, H, Nq, D] elements
    for (std::size_t row = 0; row < run.size() / static_cast<std::size_t>(d); ++row) {
      for (std::int64_t j = 0; j < d; ++j) {
        run[row * static_cast<std::size_t>(d) + static_cast<std::size_t>(j)] =
            stored[row * static_cast<std::size_t>(out_row) + static_cast<std::size_t>(j)];
      }
    }
    if (poison == 0xA5) {
      actual = run;
    } else {
      // Keep, per element, whichever run disagrees with the reference (if any does).
      for (std::size_t i = 0; i < run.size(); ++i) {
        if (!detail::same_bits(run[i], expected[i])) actual[i] = run[i];
      }
    }
  }

  report.elements = out_elems;
  for (std::int64_t i = 0; i < out_elems; ++i) {
    const auto idx = static_cast<std::size_t>(i);
    if (detail::same_bits(expected[idx], actual[idx])) continue;
    if (report.mismatches == 0) {
      report.first = i;
      report.first_expected = detail::as_double(expected[idx]);
      report.first_actual = detail::as_double(actual[idx]);
    }
    report.last = i;
    ++report.mismatches;
  }
  return report;
}

}  // namespace qflash::reference
