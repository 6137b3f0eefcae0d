// SPDX-License-Identifier: Apache-2.0
/// @file
/// The bit-exact integer oracle: `flash_step` over the configuration's KV blocks, plain loops.
///
/// The CUDA kernel must equal this function bit for bit for the same configuration. Query rows
/// are independent, so the reference may group them freely (it uses blocks of 16 rows); KV blocks
/// are not (the online softmax rounds once per block), so it walks them exactly as the kernel
/// does: blocks of Cfg::block_n keys from key 0, the last one ragged.
#pragma once

#include <cstdint>
#include <span>

#include "qflash/attention/flash_step.hpp"
#include "qflash/attention/problem.hpp"
#include "qflash/attention/validate.hpp"
#include "qflash/core/concepts.hpp"
#include "qflash/core/tile.hpp"
#include "qflash/policy/calibrate.hpp"

namespace qflash::reference {

namespace detail {

inline constexpr int kRowBlock = 16;

template <KernelConfig Cfg, OutputPolicy Output, int D>
void run_heads(const AttentionProblem& p, std::span<const HeadParams<Cfg, Output>> params,
               const Tensor4<typename Output::value_type>& out) {
  constexpr int BM = kRowBlock;
  constexpr int BN = Cfg::block_n;
  const std::int64_t nq = p.q.seq, nkv = p.k.seq;
  // Large tiles live on the heap-free stack of this frame, not inside the row loop.
  Tile<std::int8_t, BM, D> q{};
  Tile<std::int8_t, BN, D> k{}, v{};
  BlockExtras<BM, BN> extras{};
  Tile<std::int32_t, BM, D> acc{};
  Array<RowState, BM> rows{};

  for (std::int64_t z = 0; z < p.q.batch; ++z) {
    for (std::int64_t h = 0; h < p.q.heads; ++h) {
      const HeadParams<Cfg, Output>& prm =
          params[params.size() == 1 ? 0 : static_cast<std::size_t>(h)];
      for (std::int64_t row0 = 0; row0 < nq; row0 += BM) {
        for (int i = 0; i < BM; ++i) {
          const std::int64_t row = row0 + i;
          for (int d = 0; d < D; ++d) q(i, d) = row < nq ? p.q(z, h, row, d) : std::int8_t{0};
          rows[i] = RowState{};
        }
        acc.fill(0);
        for (std::int64_t key0 = 0; key0 < nkv; key0 += BN) {
          for (int j = 0; j < BN; ++j) {
            const std::int64_t key = key0 + j;
            for (int d = 0; d < D; ++d) {
              k(j, d) = key < nkv ? p.k(z, h, key, d) : std::int8_t{0};
              v(j, d) = key < nkv ? p.v(z, h, key, d) : std::int8_t{0};
            }
          }
          for (int i = 0; i < BM; ++i) {
            const std::int64_t row = row0 + i;
            for (int j = 0; j < BN; ++j) {
              const std::int64_t key = key0 + j;
              const bool in_range = row < nq && key < nkv;
              const bool visible = in_range && p.mask.visible(z, row, key);
              extras.visible(i, j) = visible ? 1 : 0;
              extras.bias(i, j) = visible ? p.bias.at(h, row, key) : 0;
            }
          }
          flash_step<Cfg>(q, k, v, extras, prm.logit, prm.exp, rows, acc);
        }
        for (int i = 0; i < BM && row0 + i < nq; ++i) {
          const typename Output::Row output_row = finalize_row<Output>(rows[i], prm.output);
          for (int d = 0; d < D; ++d) out(z, h, row0 + i, d) = Output::apply(acc(i, d), output_row);
        }
      }
    }
  }
}

}  // namespace detail

/// Integer attention O = softmax(Q K^T * scale + bias, mask) V, computed exactly as the CUDA
/// kernel of configuration Cfg computes it. `params` holds 1 (shared) or H (per-head) entries
/// from `qflash::calibrate` (others are checked with `validate_heads`: invalid_params). Returns a
/// named Status and writes nothing on invalid input.
template <KernelConfig Cfg, OutputPolicy Output>
Status flash_attention(const AttentionProblem& problem,
                       std::span<const HeadParams<Cfg, Output>> params,
                       const Tensor4<typename Output::value_type>& out) {
  Status s = validate<Cfg>(problem, out, params.data(), static_cast<std::int64_t>(params.size()));
  if (s != Status::ok) return s;
  s = validate_heads<Cfg, Output>(params, problem.q.dim);
  if (s != Status::ok) return s;
  s = validate_bias_indices(problem.bias);
  if (s != Status::ok) return s;
  switch (problem.q.dim) {
    case 32:
      detail::run_heads<Cfg, Output, 32>(problem, params, out);
      break;
    case 64:
      detail::run_heads<Cfg, Output, 64>(problem, params, out);
      break;
    case 80:
      detail::run_heads<Cfg, Output, 80>(problem, params, out);
      break;
    case 96:
      detail::run_heads<Cfg, Output, 96>(problem, params, out);
      break;
    case 128:
      detail::run_heads<Cfg, Output, 128>(problem, params, out);
      break;
    default:
      return Status::unsupported_head_dim;
  }
  return Status::ok;
}

}  // namespace qflash::reference
