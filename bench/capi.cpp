// SPDX-License-Identifier: Apache-2.0
// A C ABI over the project's kernel instantiations, for the Python benchmark (ctypes) and any
// other foreign caller. Pointers are device pointers; strides are in elements; the stream is a
// cudaStream_t (0 = legacy default stream). Every function returns a qflash::Status code.
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include "qflash_instances.hpp"

namespace {

using namespace qflash;

struct Plan {
  instances::Preset preset;
  instances::OutputType output;
  std::int64_t count;
  std::vector<unsigned char> params;  // count * ops.params_size bytes
};

bool valid_ids(int preset, int output) {
  return preset >= 0 && preset < instances::kPresetCount && output >= 0 && output <= 3;
}

/// A [Z, H, N, D] view of device data from a shape[4] and strides[4] (elements).
template <class T>
Tensor4<const T> view(const void* data, const std::int64_t* shape, const std::int64_t* strides) {
  return Tensor4<const T>{static_cast<const T*>(data),
                          shape[0],
                          shape[1],
                          shape[2],
                          shape[3],
                          strides[0],
                          strides[1],
                          strides[2],
                          strides[3]};
}

}  // namespace

extern "C" {

/// Calibrates a plan: scale arrays of length `scale_count` (1 or heads); out_scales may be null.
int qflash_plan_create(int preset, int output, int head_dim, int scale_count, const float* q_scales,
                       const float* k_scales, const float* v_scales, const float* out_scales,
                       void** plan_out) {
  if (plan_out == nullptr || q_scales == nullptr || k_scales == nullptr || v_scales == nullptr) {
    return static_cast<int>(Status::null_pointer);
  }
  if (!valid_ids(preset, output) || scale_count <= 0) {
    return static_cast<int>(Status::param_count_mismatch);
  }
  auto plan = std::make_unique<Plan>();
  plan->preset = static_cast<instances::Preset>(preset);
  plan->output = static_cast<instances::OutputType>(output);
  plan->count = scale_count;
  const instances::Ops& ops = instances::ops(plan->preset, plan->output);
  plan->params.resize(static_cast<std::size_t>(scale_count) * ops.params_size);
  const auto n = static_cast<std::size_t>(scale_count);
  QuantScales scales{{q_scales, n}, {k_scales, n}, {v_scales, n}};
  if (out_scales != nullptr) scales.out = {out_scales, n};
  const Status s = ops.calibrate(scales, head_dim, plan->params.data(), scale_count);
  if (s != Status::ok) return static_cast<int>(s);
  *plan_out = plan.release();
  return 0;
}

void qflash_plan_destroy(void* plan) { delete static_cast<Plan*>(plan); }

/// Runs a plan. shapes: q[4] = (Z, H, Nq, D) and kv[4] = (Z, H, Nkv, D); strides[16] = q, k, v,
/// out.
int qflash_plan_run(const void* plan_ptr, const void* q, const void* k, const void* v, void* out,
                    const std::int64_t* q_shape, const std::int64_t* kv_shape,
                    const std::int64_t* strides, void* stream) {
  if (plan_ptr == nullptr || q_shape == nullptr || kv_shape == nullptr || strides == nullptr) {
    return static_cast<int>(Status::null_pointer);
  }
  const auto* plan = static_cast<const Plan*>(plan_ptr);
  AttentionProblem p{view<std::int8_t>(q, q_shape, strides),
                     view<std::int8_t>(k, kv_shape, strides + 4),
                     view<std::int8_t>(v, kv_shape, strides + 8)};
  const std::int64_t out_strides[4] = {strides[12], strides[13], strides[14], strides[15]};
  return static_cast<int>(
      instances::ops(plan->preset, plan->output)
          .launch(p, plan->params.data(), plan->count, out, out_strides, stream));
}

/// fp16 end to end: quantize (per tensor, on the device) -> calibrate on the device -> attention.
/// `workspace` is device memory of at least qflash_half_workspace_bytes(...) bytes.
std::int64_t qflash_half_workspace_bytes(int preset, int output, const std::int64_t* q_shape,
                                         const std::int64_t* kv_shape) {
  if (!valid_ids(preset, output) || q_shape == nullptr || kv_shape == nullptr) return -1;
  const std::int64_t qn = q_shape[0] * q_shape[1] * q_shape[2] * q_shape[3];
  const std::int64_t kvn = kv_shape[0] * kv_shape[1] * kv_shape[2] * kv_shape[3];
  const auto params =
      static_cast<std::int64_t>(instances::ops(static_cast<instances::Preset>(preset),
                                               static_cast<instances::OutputType>(output))
                                    .params_size);
  const auto align = [](std::int64_t x) { return (x + 255) / 256 * 256; };
  return align(qn) + 2 * align(kvn) + 2 * align(3 * 4) + align(params) + align(16);
}

int qflash_half_run(int preset, int output, const void* q, const void* k, const void* v, void* out,
                    const std::int64_t* q_shape, const std::int64_t* kv_shape,
                    const std::int64_t* strides, void* workspace, void* stream) {
  if (workspace == nullptr || q_shape == nullptr || kv_shape == nullptr || strides == nullptr) {
    return static_cast<int>(Status::null_pointer);
  }
  if (!valid_ids(preset, output)) return static_cast<int>(Status::param_count_mismatch);
  const instances::Ops& ops = instances::ops(static_cast<instances::Preset>(preset),
                                             static_cast<instances::OutputType>(output));
  const std::int64_t qn = q_shape[0] * q_shape[1] * q_shape[2] * q_shape[3];
  const std::int64_t kvn = kv_shape[0] * kv_shape[1] * kv_shape[2] * kv_shape[3];
  const auto align = [](std::int64_t x) { return (x + 255) / 256 * 256; };
  auto* base = static_cast<unsigned char*>(workspace);
  instances::HalfPipelineWorkspace ws;
  ws.q8 = reinterpret_cast<std::int8_t*>(base);
  ws.k8 = reinterpret_cast<std::int8_t*>(base + align(qn));
  ws.v8 = reinterpret_cast<std::int8_t*>(base + align(qn) + align(kvn));
  ws.scales = reinterpret_cast<float*>(base + align(qn) + 2 * align(kvn));
  ws.amax = reinterpret_cast<float*>(base + align(qn) + 2 * align(kvn) + align(12));
  ws.params = base + align(qn) + 2 * align(kvn) + 2 * align(12);
  ws.statuses = reinterpret_cast<Status*>(base + align(qn) + 2 * align(kvn) + 2 * align(12) +
                                          align(static_cast<std::int64_t>(ops.params_size)));
  ws.count = 1;
  const std::int64_t out_strides[4] = {strides[12], strides[13], strides[14], strides[15]};
  return static_cast<int>(ops.launch_from_half(
      view<std::uint16_t>(q, q_shape, strides), view<std::uint16_t>(k, kv_shape, strides + 4),
      view<std::uint16_t>(v, kv_shape, strides + 8), AttentionBias{}, AttentionMask{}, out,
      out_strides, ws, stream));
}

const char* qflash_status_name(int status) { return to_string(static_cast<Status>(status)); }

}  // extern "C"
