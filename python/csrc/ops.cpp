// SPDX-License-Identifier: Apache-2.0
// The qflash torch extension: TORCH_LIBRARY(qflash) ops over the project's precompiled kernel
// instances (instances/). Host-only C++ (g++); the kernels live in the instance .cu files.
//
//   qflash::attention_int8  int8 Q/K/V (CUDA) + per-tensor float scales -> host calibrate ->
//                           kernel on torch's current stream; int8/int16/int32 codes or fp16.
//   qflash::reference_int8  the same call on CPU tensors through the bit-exact host reference.
//   qflash::attention       fp16 Q/K/V (CUDA) -> device quantize -> calibrate on device ->
//                           kernel, fp16 out; no host synchronisation.
//
// Every launch is asynchronous on at::cuda::getCurrentCUDAStream(), allocates only its output
// (and, for `attention`, one workspace tensor through torch's allocator), and never syncs, so it
// can be captured in a CUDA graph.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <Python.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>
#include <torch/library.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "qflash_instances.hpp"

// python/csrc/poison.cu
cudaError_t qflash_py_poison_if_failed(const void* status, void* out_half, std::int64_t count,
                                       cudaStream_t stream);
// python/csrc/bias.cu
cudaError_t qflash_py_bias_to_q16(const float* nats, std::int32_t* q16, std::int64_t count,
                                  cudaStream_t stream);

namespace {

using qflash::Status;
namespace qi = qflash::instances;

// Error messages format numbers with std::to_string / snprintf, never by streaming them into
// TORCH_CHECK: on the GPU image's toolchain (H100 machine, 2026-12-05) streaming an int64 into
// the message of a failing check inside this extension ended the process with a segfault, while
// checks whose messages held only strings and devices raised normally.
std::string num(std::int64_t x) { return std::to_string(x); }
std::string num(double x) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.9g", x);
  return buf;
}
std::string dims(c10::IntArrayRef v) {
  std::string s = "[";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}
std::string shape_str(const at::Tensor& t) { return dims(t.sizes()); }

/// torch's Python name of a dtype ("torch.int8"), for messages.
std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kChar:
      return "torch.int8";
    case at::kByte:
      return "torch.uint8";
    case at::kShort:
      return "torch.int16";
    case at::kInt:
      return "torch.int32";
    case at::kLong:
      return "torch.int64";
    case at::kHalf:
      return "torch.float16";
    case at::kBFloat16:
      return "torch.bfloat16";
    case at::kFloat:
      return "torch.float32";
    case at::kDouble:
      return "torch.float64";
    case at::kBool:
      return "torch.bool";
    default:
      return c10::toString(t);
  }
}

qi::Preset parse_preset(const char* op, c10::string_view preset) {
  const std::string p(preset.data(), preset.size());
  if (p == "paper") return qi::Preset::paper;
  if (p == "precise") return qi::Preset::precise;
  if (p == "precise_cubic") return qi::Preset::precise_cubic;
  if (p == "fast") return qi::Preset::fast;
  if (p == "fast_long") return qi::Preset::fast_long;
  TORCH_CHECK_VALUE(false, op, ": unknown preset '", p,
                    "' (use 'paper', 'precise', 'precise_cubic', 'fast' or 'fast_long')");
  return qi::Preset::precise;  // unreachable
}

qi::OutputType parse_output(const char* op, at::ScalarType t) {
  switch (t) {
    case at::kChar:
      return qi::OutputType::s8;
    case at::kShort:
      return qi::OutputType::s16;
    case at::kInt:
      return qi::OutputType::s32;
    case at::kHalf:
      return qi::OutputType::f16;
    default:
      break;
  }
  TORCH_CHECK_VALUE(false, op, ": unsupported out_dtype ", dtype_name(t),
                    " (use torch.int8, torch.int16, torch.int32 or torch.float16)");
  return qi::OutputType::s8;  // unreachable
}

bool supported_head_dim(std::int64_t d) {
  return d == 32 || d == 64 || d == 80 || d == 96 || d == 128;
}

/// Checks dtype, device, rank and shapes of Q, K, V ([B, H, Nq, D], [B, H, Nkv, D] twice).
void check_qkv(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
               at::ScalarType dtype, bool on_cuda, const char* const (&names)[3]) {
  const at::Tensor* ts[3] = {&q, &k, &v};
  for (int i = 0; i < 3; ++i) {
    const at::Tensor& t = *ts[i];
    TORCH_CHECK_VALUE(t.defined(), op, ": ", names[i], " is undefined");
    TORCH_CHECK_TYPE(t.scalar_type() == dtype, op, ": ", names[i], " must have dtype ",
                     dtype_name(dtype), ", got ", dtype_name(t.scalar_type()));
    if (on_cuda) {
      TORCH_CHECK_VALUE(t.is_cuda(), op, ": ", names[i], " must be a CUDA tensor, got device ",
                        t.device());
      TORCH_CHECK_VALUE(t.device() == q.device(), op, ": ", names[0], ", ", names[1], " and ",
                        names[2], " must be on the same device, ", names[i], " is on ", t.device(),
                        " and ", names[0], " on ", q.device());
    } else {
      TORCH_CHECK_VALUE(t.device().is_cpu(), op, ": ", names[i],
                        " must be a CPU tensor (the host reference runs on the CPU), got device ",
                        t.device());
    }
    TORCH_CHECK_VALUE(t.dim() == 4, op, ": ", names[i], " must be 4-D [B, H, N, D], got shape ",
                      shape_str(t));
    TORCH_CHECK_VALUE(t.numel() > 0, op, ": empty problem: ", names[i], " has shape ", shape_str(t),
                      " (B, H, N and D must be positive)");
  }
  TORCH_CHECK_VALUE(k.size(0) == q.size(0) && k.size(1) == q.size(1) && k.size(3) == q.size(3) &&
                        v.sizes() == k.sizes(),
                    op, ": shape mismatch: ", names[0], " ", shape_str(q), ", ", names[1], " ",
                    shape_str(k), ", ", names[2], " ", shape_str(v), " (need ", names[0],
                    " [B, H, Nq, D] and ", names[1], ", ", names[2], " [B, H, Nkv, D])");
  TORCH_CHECK_VALUE(supported_head_dim(q.size(3)), op,
                    ": unsupported head dim D = ", num(q.size(3)), " (use 32, 64, 80, 96 or 128)");
}

/// The strides the CUDA kernel needs: unit stride along D, 16-element multiples elsewhere (dims
/// of extent 1 are free), 16-byte aligned data.
void check_kernel_layout(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.stride(3) == 1, op, ": ", name,
                    " needs unit stride along D (the last dim) for the CUDA kernel, got strides ",
                    dims(t.strides()));
  for (int d = 0; d < 3; ++d) {
    TORCH_CHECK_VALUE(t.size(d) == 1 || (t.stride(d) >= 0 && t.stride(d) % 16 == 0), op, ": ", name,
                      " needs its B, H and N strides to be non-negative multiples of 16 elements "
                      "for the CUDA kernel, got strides ",
                      dims(t.strides()));
  }
  TORCH_CHECK_VALUE(reinterpret_cast<std::uintptr_t>(t.data_ptr()) % 16 == 0, op, ": ", name,
                    " data pointer is not 16-byte aligned (needed by the CUDA kernel)");
}

template <class T>
qflash::Tensor4<const T> view4(const at::Tensor& t) {
  // Extent-1 dims never move the pointer: give them stride 0 so that any stride torch chose for
  // them is accepted.
  const auto st = [&](int d) { return t.size(d) == 1 ? std::int64_t{0} : t.stride(d); };
  return qflash::Tensor4<const T>{static_cast<const T*>(t.data_ptr()),
                                  t.size(0),
                                  t.size(1),
                                  t.size(2),
                                  t.size(3),
                                  st(0),
                                  st(1),
                                  st(2),
                                  st(3)};
}

float check_scale(const char* op, const char* name, double value) {
  const auto f = static_cast<float>(value);
  TORCH_CHECK_VALUE(std::isfinite(value) && value > 0.0 && std::isfinite(f) && f > 0.0f, op, ": ",
                    name, " must be a positive finite float, got ", num(value));
  return f;
}

std::string status_message(Status s) {
  std::string m = qflash::to_string(s);
  m += " (qflash::Status ";
  m += std::to_string(static_cast<int>(s));
  m += ")";
  if (s == Status::cuda_error) {
    m += ": ";
    m += cudaGetErrorString(cudaGetLastError());
  }
  return m;
}

/// Errors from a launch that the checks above did not catch: an input problem as ValueError,
/// anything else (CUDA, device) as RuntimeError.
void check_launch(const char* op, const char* what, Status s) {
  if (s == Status::ok) return;
  const bool input_problem = s != Status::cuda_error && s != Status::no_cuda_device &&
                             s != Status::unsupported_device && s != Status::null_pointer;
  TORCH_CHECK_VALUE(!input_problem, op, ": ", what, ": ", status_message(s));
  TORCH_CHECK(false, op, ": ", what, ": ", status_message(s));
}

/// Host calibration of one (preset, output) pair from per-tensor scales.
std::vector<std::max_align_t> calibrate(const char* op, const qi::Ops& ops, int head_dim,
                                        double q_scale, double k_scale, double v_scale,
                                        std::optional<double> softmax_scale) {
  const float qs = check_scale(op, "q_scale", q_scale);
  const float ks = check_scale(op, "k_scale", k_scale);
  const float vs = check_scale(op, "v_scale", v_scale);
  double sm = 0.0;  // 0: 1 / sqrt(D)
  if (softmax_scale.has_value()) {
    sm = *softmax_scale;
    TORCH_CHECK_VALUE(std::isfinite(sm) && sm > 0.0, op,
                      ": softmax_scale must be a positive finite float or None, got ", num(sm));
  }
  std::vector<std::max_align_t> params((ops.params_size + sizeof(std::max_align_t) - 1) /
                                       sizeof(std::max_align_t));
  qflash::QuantScales scales{{&qs, 1}, {&ks, 1}, {&vs, 1}};
  scales.softmax_scale = sm;
  const Status s = ops.calibrate(scales, head_dim, params.data(), 1);
  TORCH_CHECK_VALUE(s == Status::ok, op, ": calibration rejected the scales (q_scale ",
                    num(q_scale), ", k_scale ", num(k_scale), ", v_scale ", num(v_scale), ", D ",
                    num(std::int64_t{head_dim}), "): ", status_message(s));
  return params;
}

/// The optional bias and mask of a call, converted to what the kernel reads, plus the tensors
/// that own the converted data (alive until the op returns; the launch is stream-ordered, and
/// torch's caching allocator keeps the memory for the stream's pending work).
struct Extras {
  at::Tensor bias_q16, index32, mask8;
  qflash::AttentionBias bias{};
  qflash::AttentionMask mask{};
};

/// A float bias in nats -> int32 Q16 octaves (qflash::bias_to_q16_octaves, on q's device); an
/// int32 bias is taken as Q16 octaves already. The dtype was checked by check_extras.
at::Tensor bias_in_q16(const char* op, const at::Tensor& bias, bool on_cuda) {
  if (bias.scalar_type() == at::kInt) return bias.contiguous();
  const at::Tensor nats = bias.to(at::kFloat).contiguous();
  at::Tensor q16 = at::empty(nats.sizes(), nats.options().dtype(at::kInt));
  const auto* src = nats.data_ptr<float>();
  auto* dst = q16.data_ptr<std::int32_t>();
  if (on_cuda) {
    cudaStream_t stream = at::cuda::getCurrentCUDAStream(nats.device().index()).stream();
    const cudaError_t e = qflash_py_bias_to_q16(src, dst, nats.numel(), stream);
    TORCH_CHECK(e == cudaSuccess, op, ": bias conversion launch failed: ", cudaGetErrorString(e));
  } else {
    for (std::int64_t i = 0; i < nats.numel(); ++i) dst[i] = qflash::bias_to_q16_octaves(src[i]);
  }
  return q16;
}

/// Checks attn_bias (dense [Nq, Nkv] / [Hb, Nq, Nkv], or with bias_index a relative-position
/// table [T, Hb] in timm's layout and an index map [Nq, Nkv]) and attn_mask (bool or uint8
/// [Nq, Nkv] / [W, Nq, Nkv], nonzero = visible, batch element z uses window z % W, B a multiple
/// of W). Hb is 1 (shared by all heads) or H. Runs before any device work.
void check_extras(const char* op, const at::Tensor& q, const at::Tensor& k,
                  const std::optional<at::Tensor>& bias,
                  const std::optional<at::Tensor>& bias_index,
                  const std::optional<at::Tensor>& mask) {
  const std::int64_t batch = q.size(0), heads = q.size(1), nq = q.size(2), nkv = k.size(2);
  const auto same_device = [&](const at::Tensor& t, const char* name) {
    TORCH_CHECK_VALUE(t.device() == q.device(), op, ": ", name, " must be on ", q.device(),
                      " (the device of the inputs), got ", t.device());
  };
  const auto heads_ok = [&](std::int64_t hb) { return hb == 1 || hb == heads; };
  TORCH_CHECK_VALUE(!bias_index.has_value() || bias.has_value(), op,
                    ": bias_index given without attn_bias (the relative-position table)");
  if (bias.has_value()) {
    const at::Tensor& b = *bias;
    same_device(b, "attn_bias");
    const at::ScalarType t = b.scalar_type();
    TORCH_CHECK_TYPE(t == at::kFloat || t == at::kHalf || t == at::kBFloat16 || t == at::kInt, op,
                     ": attn_bias must be float32, float16 or bfloat16 (nats, added to the "
                     "scaled logits) or int32 (Q16 octaves), got ",
                     dtype_name(t));
    if (!bias_index.has_value()) {  // dense
      const bool dense_ok =
          (b.dim() == 2 && b.size(0) == nq && b.size(1) == nkv) ||
          (b.dim() == 3 && heads_ok(b.size(0)) && b.size(1) == nq && b.size(2) == nkv);
      TORCH_CHECK_VALUE(dense_ok, op, ": attn_bias must be [Nq, Nkv] or [1 or H, Nq, Nkv] = [1 or ",
                        num(heads), ", ", num(nq), ", ", num(nkv), "], got shape ", shape_str(b));
    } else {  // relative-position table [T, Hb] + index [Nq, Nkv]
      const at::Tensor& idx = *bias_index;
      same_device(idx, "bias_index");
      const bool table_ok = b.dim() == 2 && b.size(0) > 0 && heads_ok(b.size(1));
      TORCH_CHECK_VALUE(
          table_ok, op, ": a relative-position attn_bias must be a table [T, 1 or H] = [T, 1 or ",
          num(heads), "] (timm's relative_position_bias_table), got shape ", shape_str(b));
      TORCH_CHECK_TYPE(idx.scalar_type() == at::kInt || idx.scalar_type() == at::kLong, op,
                       ": bias_index must be int32 or int64, got ", dtype_name(idx.scalar_type()));
      TORCH_CHECK_VALUE(idx.dim() == 2 && idx.size(0) == nq && idx.size(1) == nkv, op,
                        ": bias_index must be [Nq, Nkv] = [", num(nq), ", ", num(nkv),
                        "], got shape ", shape_str(idx));
    }
  }
  if (mask.has_value()) {
    const at::Tensor& m = *mask;
    same_device(m, "attn_mask");
    TORCH_CHECK_TYPE(m.scalar_type() == at::kBool || m.scalar_type() == at::kByte, op,
                     ": attn_mask must be torch.bool or torch.uint8 (True / nonzero = the key is "
                     "visible), got ",
                     dtype_name(m.scalar_type()));
    const bool shape_ok = (m.dim() == 2 && m.size(0) == nq && m.size(1) == nkv) ||
                          (m.dim() == 3 && m.size(0) > 0 && m.size(1) == nq && m.size(2) == nkv);
    TORCH_CHECK_VALUE(shape_ok, op,
                      ": attn_mask must be [Nq, Nkv] or [W, Nq, Nkv] with Nq = ", num(nq),
                      ", Nkv = ", num(nkv), ", got shape ", shape_str(m));
    const std::int64_t windows = m.dim() == 2 ? 1 : m.size(0);
    TORCH_CHECK_VALUE(batch % windows == 0, op, ": attn_mask has ", num(windows),
                      " windows but B = ", num(batch),
                      " is not a multiple of it (batch element z uses window z % W)");
  }
}

/// The checked bias and mask converted to what the kernel reads (on the current device), with
/// the tensors that own the converted data.
Extras prepare_extras(const char* op, const at::Tensor& q, const std::optional<at::Tensor>& bias,
                      const std::optional<at::Tensor>& bias_index,
                      const std::optional<at::Tensor>& mask, bool on_cuda) {
  Extras e;
  const std::int64_t nq = q.size(2);
  if (bias.has_value()) {
    const at::Tensor& b = *bias;
    e.bias_q16 = bias_in_q16(op, b, on_cuda);
    if (!bias_index.has_value()) {  // dense
      e.bias.kind = qflash::BiasKind::dense;
      e.bias.heads = b.dim() == 2 ? 1 : b.size(0);
      e.bias.cols = b.size(b.dim() - 1);
    } else {
      e.index32 = bias_index->to(at::kInt).contiguous();
      e.bias.kind = qflash::BiasKind::relative_table;
      e.bias.heads = b.size(1);
      e.bias.index = e.index32.data_ptr<std::int32_t>();
      e.bias.table_size = b.size(0);
      e.bias.stride_head = 1;
      e.bias.stride_entry = b.size(1);
      e.bias.cols = bias_index->size(1);
    }
    e.bias.values = e.bias_q16.data_ptr<std::int32_t>();
    e.bias.rows = nq;
  }
  if (mask.has_value()) {
    const at::Tensor& m = *mask;
    e.mask8 = m.to(at::kByte).contiguous();
    e.mask = qflash::AttentionMask{e.mask8.data_ptr<std::uint8_t>(), m.dim() == 2 ? 1 : m.size(0),
                                   nq, m.size(m.dim() - 1)};
  }
  return e;
}

at::Tensor int8_op(const char* op, bool on_cuda, const at::Tensor& q8, const at::Tensor& k8,
                   const at::Tensor& v8, double q_scale, double k_scale, double v_scale,
                   c10::string_view preset, at::ScalarType out_dtype,
                   std::optional<double> softmax_scale, const std::optional<at::Tensor>& bias,
                   const std::optional<at::Tensor>& bias_index,
                   const std::optional<at::Tensor>& mask) {
  const qi::Preset p = parse_preset(op, preset);
  const qi::OutputType o = parse_output(op, out_dtype);
  check_qkv(op, q8, k8, v8, at::kChar, on_cuda, {"q8", "k8", "v8"});
  if (on_cuda) {
    check_kernel_layout(op, "q8", q8);
    check_kernel_layout(op, "k8", k8);
    check_kernel_layout(op, "v8", v8);
  }
  const qi::Ops& ops = qi::ops(p, o);
  const auto params =
      calibrate(op, ops, static_cast<int>(q8.size(3)), q_scale, k_scale, v_scale, softmax_scale);

  check_extras(op, q8, k8, bias, bias_index, mask);
  c10::cuda::OptionalCUDAGuard guard;
  if (on_cuda) guard.set_device(q8.device());
  const Extras extras = prepare_extras(op, q8, bias, bias_index, mask, on_cuda);
  at::Tensor out = at::empty(q8.sizes(), q8.options().dtype(out_dtype));
  const std::int64_t out_strides[4] = {out.stride(0), out.stride(1), out.stride(2), out.stride(3)};
  const qflash::AttentionProblem problem{view4<std::int8_t>(q8), view4<std::int8_t>(k8),
                                         view4<std::int8_t>(v8), extras.bias, extras.mask};
  if (on_cuda) {
    cudaStream_t stream = at::cuda::getCurrentCUDAStream(q8.device().index()).stream();
    check_launch(op, "kernel launch",
                 ops.launch(problem, params.data(), 1, out.data_ptr(), out_strides, stream));
  } else {
    check_launch(op, "host reference",
                 ops.reference(problem, params.data(), 1, out.data_ptr(), out_strides));
  }
  return out;
}

at::Tensor attention_int8_cuda(const at::Tensor& q8, const at::Tensor& k8, const at::Tensor& v8,
                               double q_scale, double k_scale, double v_scale,
                               c10::string_view preset, at::ScalarType out_dtype,
                               std::optional<double> softmax_scale,
                               const std::optional<at::Tensor>& bias,
                               const std::optional<at::Tensor>& bias_index,
                               const std::optional<at::Tensor>& mask) {
  return int8_op("qflash.attention_int8", true, q8, k8, v8, q_scale, k_scale, v_scale, preset,
                 out_dtype, softmax_scale, bias, bias_index, mask);
}

at::Tensor reference_int8_cpu(const at::Tensor& q8, const at::Tensor& k8, const at::Tensor& v8,
                              double q_scale, double k_scale, double v_scale,
                              c10::string_view preset, at::ScalarType out_dtype,
                              std::optional<double> softmax_scale,
                              const std::optional<at::Tensor>& bias,
                              const std::optional<at::Tensor>& bias_index,
                              const std::optional<at::Tensor>& mask) {
  return int8_op("qflash.reference_int8", false, q8, k8, v8, q_scale, k_scale, v_scale, preset,
                 out_dtype, softmax_scale, bias, bias_index, mask);
}

std::int64_t align256(std::int64_t x) { return (x + 255) / 256 * 256; }

at::Tensor attention_half_cuda(const at::Tensor& q_in, const at::Tensor& k_in,
                               const at::Tensor& v_in, c10::string_view preset,
                               at::ScalarType out_dtype, const std::optional<at::Tensor>& bias,
                               const std::optional<at::Tensor>& bias_index,
                               const std::optional<at::Tensor>& mask) {
  const char* op = "qflash.attention";
  const qi::Preset p = parse_preset(op, preset);
  TORCH_CHECK_VALUE(out_dtype == at::kHalf || out_dtype == at::kBFloat16 || out_dtype == at::kFloat,
                    op, ": unsupported out_dtype ", dtype_name(out_dtype),
                    " (use torch.float16, torch.bfloat16 or torch.float32; "
                    "qflash.attention_int8 gives integer codes)");
  const at::ScalarType in_dtype = q_in.defined() ? q_in.scalar_type() : at::kHalf;
  TORCH_CHECK_TYPE(in_dtype == at::kHalf || in_dtype == at::kBFloat16 || in_dtype == at::kFloat, op,
                   ": q must be float16, bfloat16 or float32, got ", dtype_name(in_dtype));
  check_qkv(op, q_in, k_in, v_in, in_dtype, true, {"q", "k", "v"});
  // The quantize pass reads binary16: other float types are rounded to it first (one extra pass;
  // magnitudes beyond 65504 become inf, which the device calibration rejects -> NaN output).
  check_extras(op, q_in, k_in, bias, bias_index, mask);  // shapes only: before any device work
  const at::Tensor q = q_in.to(at::kHalf), k = k_in.to(at::kHalf), v = v_in.to(at::kHalf);
  const qi::Ops& ops = qi::ops(p, qi::OutputType::f16);

  const c10::cuda::CUDAGuard guard(q.device());
  const Extras extras = prepare_extras(op, q, bias, bias_index, mask, true);
  cudaStream_t stream = at::cuda::getCurrentCUDAStream(q.device().index()).stream();
  at::Tensor out = at::empty(q.sizes(), q.options().dtype(at::kHalf));

  // Workspace, laid out as bench/capi.cpp's qflash_half_run: int8 Q, K, V (BHND), 3 scales,
  // 3 amax, one parameter set, one status.
  const std::int64_t qn = q.numel(), kvn = k.numel();
  const auto params_bytes = static_cast<std::int64_t>(ops.params_size);
  const std::int64_t params_off = align256(qn) + 2 * align256(kvn) + 2 * align256(12);
  const std::int64_t status_off = params_off + align256(params_bytes);
  const std::int64_t total = status_off + align256(16);
  at::Tensor workspace = at::empty({total}, q.options().dtype(at::kByte));
  auto* base = static_cast<unsigned char*>(workspace.data_ptr());
  qi::HalfPipelineWorkspace ws;
  ws.q8 = reinterpret_cast<std::int8_t*>(base);
  ws.k8 = reinterpret_cast<std::int8_t*>(base + align256(qn));
  ws.v8 = reinterpret_cast<std::int8_t*>(base + align256(qn) + align256(kvn));
  ws.scales = reinterpret_cast<float*>(base + align256(qn) + 2 * align256(kvn));
  ws.amax = reinterpret_cast<float*>(base + align256(qn) + 2 * align256(kvn) + align256(12));
  ws.params = base + params_off;
  ws.statuses = reinterpret_cast<Status*>(base + status_off);
  ws.count = 1;

  // A head whose device calibration fails keeps its old parameter bytes: start from zeros, and
  // turn the output into NaN afterwards when the status says so (no silent wrong answer, no
  // host sync).
  TORCH_CHECK(cudaMemsetAsync(base + params_off, 0, static_cast<std::size_t>(total - params_off),
                              stream) == cudaSuccess,
              op, ": cudaMemsetAsync failed: ", cudaGetErrorString(cudaGetLastError()));
  const std::int64_t out_strides[4] = {out.stride(0), out.stride(1), out.stride(2), out.stride(3)};
  check_launch(op, "fp16 pipeline launch",
               ops.launch_from_half(view4<std::uint16_t>(q), view4<std::uint16_t>(k),
                                    view4<std::uint16_t>(v), extras.bias, extras.mask,
                                    out.data_ptr(), out_strides, ws, stream));
  const cudaError_t e =
      qflash_py_poison_if_failed(ws.statuses, out.data_ptr(), out.numel(), stream);
  TORCH_CHECK(e == cudaSuccess, op, ": status check launch failed: ", cudaGetErrorString(e));
  return out_dtype == at::kHalf ? out : out.to(out_dtype);
}

}  // namespace

TORCH_LIBRARY(qflash, m) {
  m.def(
      "attention_int8(Tensor q8, Tensor k8, Tensor v8, float q_scale, float k_scale, "
      "float v_scale, *, str preset, ScalarType out_dtype, float? softmax_scale, "
      "Tensor? bias=None, Tensor? bias_index=None, Tensor? mask=None) -> Tensor");
  m.def(
      "reference_int8(Tensor q8, Tensor k8, Tensor v8, float q_scale, float k_scale, "
      "float v_scale, *, str preset, ScalarType out_dtype, float? softmax_scale, "
      "Tensor? bias=None, Tensor? bias_index=None, Tensor? mask=None) -> Tensor");
  m.def(
      "attention(Tensor q, Tensor k, Tensor v, *, str preset, ScalarType out_dtype, "
      "Tensor? bias=None, Tensor? bias_index=None, Tensor? mask=None) -> Tensor");
}

// The CUDA ops are registered for CPU too (and the reference for CUDA), so that a tensor on the
// wrong device gets a message naming the problem instead of a missing-kernel error.
TORCH_LIBRARY_IMPL(qflash, CUDA, m) {
  m.impl("attention_int8", &attention_int8_cuda);
  m.impl("reference_int8", &reference_int8_cpu);
  m.impl("attention", &attention_half_cuda);
}

TORCH_LIBRARY_IMPL(qflash, CPU, m) {
  m.impl("attention_int8", &attention_int8_cuda);
  m.impl("reference_int8", &reference_int8_cpu);
  m.impl("attention", &attention_half_cuda);
}

// Plain Python functions of the module (no C++ exception can leave them): the Python wrappers
// check calibration with these before calling an op, so that rejected scales raise a ValueError
// carrying qflash::to_string's message from Python.
namespace {

/// calibration_status(preset, output, head_dim, q_scale, k_scale, v_scale, softmax_scale) -> int:
/// the qflash::Status of host calibration (0 = ok); softmax_scale 0 means 1 / sqrt(D).
PyObject* py_calibration_status(PyObject* /*self*/, PyObject* args) {
  int preset = 0, output = 0, head_dim = 0;
  double q = 0, k = 0, v = 0, sm = 0;
  if (!PyArg_ParseTuple(args, "iiidddd", &preset, &output, &head_dim, &q, &k, &v, &sm)) {
    return nullptr;
  }
  if (preset < 0 || preset > 3 || output < 0 || output > 3) {
    PyErr_SetString(PyExc_ValueError, "calibration_status: preset must be 0-3 and output 0-3");
    return nullptr;
  }
  const qi::Ops& ops =
      qi::ops(static_cast<qi::Preset>(preset), static_cast<qi::OutputType>(output));
  std::vector<std::max_align_t> params((ops.params_size + sizeof(std::max_align_t) - 1) /
                                       sizeof(std::max_align_t));
  const auto qs = static_cast<float>(q), ks = static_cast<float>(k), vs = static_cast<float>(v);
  qflash::QuantScales scales{{&qs, 1}, {&ks, 1}, {&vs, 1}};
  scales.softmax_scale = sm;
  const Status s = ops.calibrate(scales, head_dim, params.data(), 1);
  return PyLong_FromLong(static_cast<long>(s));
}

/// status_name(code) -> str: qflash::to_string of a Status code.
PyObject* py_status_name(PyObject* /*self*/, PyObject* args) {
  int code = 0;
  if (!PyArg_ParseTuple(args, "i", &code)) return nullptr;
  if (code < 0 || code > 255) return PyUnicode_FromString("unknown status");
  return PyUnicode_FromString(qflash::to_string(static_cast<Status>(code)));
}

PyMethodDef module_methods[] = {
    {"calibration_status", py_calibration_status, METH_VARARGS,
     "calibration_status(preset, output, head_dim, q_scale, k_scale, v_scale, softmax_scale)"},
    {"status_name", py_status_name, METH_VARARGS, "status_name(code) -> str"},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

// `import qflash._C` loads this library (and with it the registrations above).
extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module_def = {PyModuleDef_HEAD_INIT,
                                   "_C",
                                   "qflash torch ops (torch.ops.qflash) and calibration helpers",
                                   -1,
                                   module_methods,
                                   nullptr,
                                   nullptr,
                                   nullptr,
                                   nullptr};
  return PyModule_Create(&module_def);
}
