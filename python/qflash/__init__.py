# SPDX-License-Identifier: Apache-2.0
"""qflash: integer-only FlashAttention as PyTorch custom ops.

    qflash.attention_int8(q8, k8, v8, q_scale, k_scale, v_scale, *, preset="precise",
                          out_dtype=torch.int8, softmax_scale=None, attn_bias=None,
                          attn_mask=None)
        int8 Q/K/V on CUDA, [B, H, N, D] (Nkv may differ from Nq), per-tensor float scales
        (real value = scale * code). Host calibration, then the integer kernel on the current
        stream. out_dtype int8 / int16 / int32 gives integer codes at the library's default
        output scale (v_scale, v_scale / 256, v_scale / 65536); float16 gives real values.
    qflash.reference_int8(...)
        The same call on CPU tensors, through the bit-exact host reference: attention_int8's
        output equals it bit for bit.
    qflash.attention(q, k, v, *, preset="precise", attn_bias=None, attn_mask=None,
                     out_dtype=torch.float16)
        fp16 / bf16 / fp32 Q/K/V on CUDA: device quantize (per tensor) -> calibrate on the
        device -> kernel, fp16 / bf16 / fp32 out, without a host synchronisation. If the device
        calibration rejects the scales (e.g. logits beyond the preset's range), the output is NaN.

attn_bias (every function): None; a dense bias Tensor [Nq, Nkv] or [1 or H, Nq, Nkv], added to the
scaled logits (float: nats, converted to the kernel's Q16 octaves on the tensor's device; int32:
Q16 octaves already); or a RelativePositionBias(table [T, 1 or H], index [Nq, Nkv]) as in Swin
(qflash.relative_position_bias checks the index once). attn_mask: None or a bool Tensor [Nq, Nkv]
or [W, Nq, Nkv], True = the key is visible; batch element b uses window b % W (Swin's shifted
windows: b = image * W + window), B must be a multiple of W. Bias and mask are shared by the
batch, never expanded to [B, H, N, N].

The ops are torch.ops.qflash.{attention_int8, reference_int8, attention}; they have fake (meta)
implementations, so torch.compile(fullgraph=True) traces them, and they allocate nothing but
their output (and a workspace tensor), so CUDA graphs capture them.
"""

import math
from typing import NamedTuple

import torch

from . import _C  # loads the extension: registers torch.ops.qflash.*

__all__ = ["attention_int8", "reference_int8", "attention", "PRESETS", "OUTPUT_DTYPES",
           "default_output_scale", "RelativePositionBias", "relative_position_bias"]
__version__ = "0.1.0"

PRESETS = ("paper", "precise", "precise_cubic", "fast", "fast_long")
OUTPUT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.float16)
HEAD_DIMS = (32, 64, 80, 96, 128)
_PRESET_IDS = {name: i for i, name in enumerate(PRESETS)}  # instances::Preset order
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_OUTPUT_IDS = {torch.int8: 0, torch.int16: 1, torch.int32: 2, torch.float16: 3}
_FLOAT32_MAX = 3.4028234663852886e38


def default_output_scale(v_scale, out_dtype):
    """The real value of one output code of attention_int8: v_scale * this (1.0 for float16)."""
    return {torch.int8: v_scale, torch.int16: v_scale / 256.0, torch.int32: v_scale / 65536.0,
            torch.float16: 1.0}[out_dtype]


class RelativePositionBias(NamedTuple):
    """A Swin relative-position bias: table [T, 1 or H] (timm's relative_position_bias_table
    layout; float nats or int32 Q16 octaves) and index [Nq, Nkv] (int32 or int64, entries in
    [0, T)): the bias of head h, query i, key j is table[index[i, j], h]. The CUDA kernel clamps
    an index outside [0, T) (it cannot report it without a sync) and the host reference rejects
    it: build it with qflash.relative_position_bias, which checks the index once."""
    table: torch.Tensor
    index: torch.Tensor


def relative_position_bias(table, index):
    """RelativePositionBias(table, index) with the index checked (one host sync, so call it once,
    e.g. when a model is patched) and stored as contiguous int32."""
    where = "qflash.relative_position_bias"
    for name, t in (("table", table), ("index", index)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if table.dim() != 2 or table.shape[0] == 0:
        raise ValueError(f"{where}: table must be [T, 1 or H] with T > 0, got shape "
                         f"{list(table.shape)}")
    if index.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"{where}: index must be int32 or int64, got {index.dtype}")
    if index.dim() != 2:
        raise ValueError(f"{where}: index must be [Nq, Nkv], got shape {list(index.shape)}")
    if index.device != table.device:
        raise ValueError(f"{where}: table is on {table.device} and index on {index.device}")
    if index.numel() > 0:
        lo, hi = int(index.min()), int(index.max())
        if lo < 0 or hi >= table.shape[0]:
            raise ValueError(f"{where}: index entries must be in [0, {table.shape[0]}) (rows of "
                             f"the table), got [{lo}, {hi}]")
    return RelativePositionBias(table, index.to(torch.int32).contiguous())


def _check_extras(op, q, k, bias, index, mask):
    """The checks of the C++ op's check_extras, raised from Python (same messages)."""
    b, h, nq, nkv = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    for name, t in (("attn_bias", bias), ("bias_index", index), ("attn_mask", mask)):
        if t is not None and t.device != q.device:
            raise ValueError(f"{op}: {name} must be on {q.device} (the device of the inputs), got "
                             f"{t.device}")
    if bias is not None:
        if bias.dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.int32):
            raise TypeError(f"{op}: attn_bias must be float32, float16 or bfloat16 (nats, added to "
                            f"the scaled logits) or int32 (Q16 octaves), got {bias.dtype}")
        shape = list(bias.shape)
        if index is None:
            if not (shape == [nq, nkv] or (len(shape) == 3 and shape[0] in (1, h)
                                           and shape[1:] == [nq, nkv])):
                raise ValueError(f"{op}: attn_bias must be [Nq, Nkv] or [1 or H, Nq, Nkv] = "
                                 f"[1 or {h}, {nq}, {nkv}], got shape {shape}")
        else:
            if not (len(shape) == 2 and shape[0] > 0 and shape[1] in (1, h)):
                raise ValueError(f"{op}: a relative-position attn_bias must be a table [T, 1 or H]"
                                 f" = [T, 1 or {h}] (timm's relative_position_bias_table), got "
                                 f"shape {shape}")
            if index.dtype not in (torch.int32, torch.int64):
                raise TypeError(f"{op}: bias_index must be int32 or int64, got {index.dtype}")
            if list(index.shape) != [nq, nkv]:
                raise ValueError(f"{op}: bias_index must be [Nq, Nkv] = [{nq}, {nkv}], got shape "
                                 f"{list(index.shape)}")
    if mask is not None:
        if mask.dtype not in (torch.bool, torch.uint8):
            raise TypeError(f"{op}: attn_mask must be torch.bool or torch.uint8 (True / nonzero = "
                            f"the key is visible), got {mask.dtype}; an additive float mask "
                            "belongs in attn_bias")
        shape = list(mask.shape)
        if not (shape == [nq, nkv] or (len(shape) == 3 and shape[0] > 0
                                       and shape[1:] == [nq, nkv])):
            raise ValueError(f"{op}: attn_mask must be [Nq, Nkv] or [W, Nq, Nkv] with Nq = {nq}, "
                             f"Nkv = {nkv}, got shape {shape}")
        windows = 1 if len(shape) == 2 else shape[0]
        if b % windows != 0:
            raise ValueError(f"{op}: attn_mask has {windows} windows but B = {b} is not a "
                             "multiple of it (batch element z uses window z % W)")


def _extras(op, attn_bias, attn_mask):
    """(bias, bias_index, mask) op arguments, type-checked; _check_extras checks the rest."""
    bias = index = None
    if isinstance(attn_bias, RelativePositionBias):
        bias, index = attn_bias.table, attn_bias.index
        for name, t in (("attn_bias.table", bias), ("attn_bias.index", index)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    elif isinstance(attn_bias, torch.Tensor):
        bias = attn_bias
    elif attn_bias is not None:
        raise TypeError(f"{op}: attn_bias must be None, a Tensor (dense bias) or a "
                        f"qflash.RelativePositionBias, got {type(attn_bias).__name__}")
    if attn_mask is not None and not isinstance(attn_mask, torch.Tensor):
        raise TypeError(f"{op}: attn_mask must be None or a bool Tensor, got "
                        f"{type(attn_mask).__name__}")
    return bias, index, attn_mask


# The checks below run in Python, before the op, so that bad input raises a plain Python exception
# whose message names the problem. The C++ ops repeat them (TORCH_CHECK) for direct
# torch.ops.qflash calls.

def _check_preset(op, preset):
    if not isinstance(preset, str):
        raise TypeError(f"{op}: preset must be a str (one of {', '.join(PRESETS)}), "
                        f"got {type(preset).__name__}")
    if preset not in _PRESET_IDS:
        raise ValueError(f"{op}: unknown preset '{preset}' (use 'paper', 'precise', "
                         "'precise_cubic', 'fast' or 'fast_long')")


def _check_out_dtype(op, out_dtype, allowed):
    if not isinstance(out_dtype, torch.dtype):
        raise TypeError(f"{op}: out_dtype must be a torch.dtype, got {type(out_dtype).__name__}")
    if out_dtype not in allowed:
        raise ValueError(f"{op}: unsupported out_dtype {out_dtype} (use "
                         f"{', '.join(str(d) for d in allowed)})")


def _check_scale(op, name, value, optional=False):
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{op}: {name} must be a Python float, got {type(value).__name__}")
    if not (math.isfinite(value) and 0 < value < _FLOAT32_MAX):
        raise ValueError(f"{op}: {name} must be a positive finite float, got {value}")


def _check_qkv(op, tensors, dtype, device_type):
    names = tuple(tensors)
    ts = tuple(tensors.values())
    q = ts[0]
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != dtype:
            raise TypeError(f"{op}: {name} must have dtype {dtype}, got {t.dtype}")
        if device_type == "cuda":
            if t.device.type != "cuda":
                raise ValueError(f"{op}: {name} must be a CUDA tensor, got device {t.device}")
            if t.device != q.device:
                raise ValueError(f"{op}: {', '.join(names)} must be on the same device, {name} is "
                                 f"on {t.device} and {names[0]} on {q.device}")
        elif t.device.type != "cpu":
            raise ValueError(f"{op}: {name} must be a CPU tensor (the host reference runs on the "
                             f"CPU), got device {t.device}")
        if t.dim() != 4:
            raise ValueError(f"{op}: {name} must be 4-D [B, H, N, D], got shape {list(t.shape)}")
        if t.numel() == 0:
            raise ValueError(f"{op}: empty problem: {name} has shape {list(t.shape)} (B, H, N and "
                             "D must be positive)")
    k, v = ts[1], ts[2]
    if (k.shape[0] != q.shape[0] or k.shape[1] != q.shape[1] or k.shape[3] != q.shape[3]
            or v.shape != k.shape):
        raise ValueError(f"{op}: shape mismatch: {names[0]} {list(q.shape)}, {names[1]} "
                         f"{list(k.shape)}, {names[2]} {list(v.shape)} (need {names[0]} "
                         f"[B, H, Nq, D] and {names[1]}, {names[2]} [B, H, Nkv, D])")
    if q.shape[3] not in HEAD_DIMS:
        raise ValueError(f"{op}: unsupported head dim D = {q.shape[3]} (use 32, 64, 80, 96 or 128)")


def _check_kernel_layout(op, name, t):
    """The CUDA kernel reads 16-byte rows: unit stride along D, other strides multiples of 16
    elements (dims of extent 1 are free), 16-byte aligned data."""
    strides = t.stride()
    if strides[3] != 1:
        raise ValueError(f"{op}: {name} needs unit stride along D (the last dim) for the CUDA "
                         f"kernel, got strides {list(strides)}")
    for d in range(3):
        if t.shape[d] != 1 and strides[d] % 16 != 0:
            raise ValueError(f"{op}: {name} needs its B, H and N strides to be non-negative "
                             f"multiples of 16 elements for the CUDA kernel, got strides "
                             f"{list(strides)}")
    # torch's allocations are aligned; the offset into them decides (the op checks the pointer).
    # Inside a traced graph storage_offset() is not traceable: the op's own check runs there.
    if torch.compiler.is_compiling():
        return
    if (t.storage_offset() * t.element_size()) % 16 != 0:
        raise ValueError(f"{op}: {name} data pointer is not 16-byte aligned (needed by the CUDA "
                         f"kernel; storage offset {t.storage_offset()})")


def _check_calibration(op, preset, out_dtype, head_dim, q_scale, k_scale, v_scale,
                       softmax_scale):
    if torch.compiler.is_compiling():  # inside a traced graph the op itself checks at run time
        return
    code = _C.calibration_status(_PRESET_IDS[preset], _OUTPUT_IDS[out_dtype], int(head_dim),
                                 float(q_scale), float(k_scale), float(v_scale),
                                 0.0 if softmax_scale is None else float(softmax_scale))
    if code != 0:
        raise ValueError(f"{op}: calibration rejected the scales (q_scale {q_scale}, k_scale "
                         f"{k_scale}, v_scale {v_scale}, D {head_dim}): {_C.status_name(code)} "
                         f"(qflash::Status {code})")


def _int8_call(op, opname, device_type, q8, k8, v8, q_scale, k_scale, v_scale, preset, out_dtype,
               softmax_scale, attn_bias, attn_mask):
    _check_preset(op, preset)
    _check_out_dtype(op, out_dtype, OUTPUT_DTYPES)
    _check_qkv(op, {"q8": q8, "k8": k8, "v8": v8}, torch.int8, device_type)
    if device_type == "cuda":
        for name, t in (("q8", q8), ("k8", k8), ("v8", v8)):
            _check_kernel_layout(op, name, t)
    _check_scale(op, "q_scale", q_scale)
    _check_scale(op, "k_scale", k_scale)
    _check_scale(op, "v_scale", v_scale)
    _check_scale(op, "softmax_scale", softmax_scale, optional=True)
    _check_calibration(op, preset, out_dtype, q8.shape[3], q_scale, k_scale, v_scale,
                       softmax_scale)
    bias, index, mask = _extras(op, attn_bias, attn_mask)
    _check_extras(op, q8, k8, bias, index, mask)
    return getattr(torch.ops.qflash, opname).default(
        q8, k8, v8, float(q_scale), float(k_scale), float(v_scale), preset=preset,
        out_dtype=out_dtype, softmax_scale=None if softmax_scale is None else float(softmax_scale),
        bias=bias, bias_index=index, mask=mask)


def attention_int8(q8, k8, v8, q_scale, k_scale, v_scale, *, preset="precise",
                   out_dtype=torch.int8, softmax_scale=None, attn_bias=None, attn_mask=None):
    """Integer attention on int8 CUDA tensors [B, H, N, D] (see the module docstring)."""
    return _int8_call("qflash.attention_int8", "attention_int8", "cuda", q8, k8, v8, q_scale,
                      k_scale, v_scale, preset, out_dtype, softmax_scale, attn_bias, attn_mask)


def reference_int8(q8, k8, v8, q_scale, k_scale, v_scale, *, preset="precise",
                   out_dtype=torch.int8, softmax_scale=None, attn_bias=None, attn_mask=None):
    """attention_int8 on CPU tensors through the bit-exact host reference."""
    return _int8_call("qflash.reference_int8", "reference_int8", "cpu", q8, k8, v8, q_scale,
                      k_scale, v_scale, preset, out_dtype, softmax_scale, attn_bias, attn_mask)


def attention(q, k, v, *, preset="precise", attn_bias=None, attn_mask=None,
              out_dtype=torch.float16):
    """Float attention through the integer pipeline on CUDA tensors [B, H, N, D] (fp16, bf16 or
    fp32; bf16 and fp32 are rounded to fp16 on the device before the quantize pass)."""
    op = "qflash.attention"
    _check_preset(op, preset)
    _check_out_dtype(op, out_dtype, FLOAT_DTYPES)
    if isinstance(q, torch.Tensor) and q.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: q must be float16, bfloat16 or float32, got {q.dtype} (int8 "
                        "codes go to qflash.attention_int8)")
    _check_qkv(op, {"q": q, "k": k, "v": v}, q.dtype if isinstance(q, torch.Tensor) else None,
               "cuda")
    bias, index, mask = _extras(op, attn_bias, attn_mask)
    _check_extras(op, q, k, bias, index, mask)
    return torch.ops.qflash.attention.default(q, k, v, preset=preset, out_dtype=out_dtype,
                                              bias=bias, bias_index=index, mask=mask)


# Fake (meta) implementations: shapes and dtypes only, for torch.compile and FakeTensor tracing.
@torch.library.register_fake("qflash::attention_int8")
def _attention_int8_fake(q8, k8, v8, q_scale, k_scale, v_scale, *, preset, out_dtype,
                         softmax_scale, bias=None, bias_index=None, mask=None):
    return torch.empty(q8.shape, dtype=out_dtype, device=q8.device)


@torch.library.register_fake("qflash::reference_int8")
def _reference_int8_fake(q8, k8, v8, q_scale, k_scale, v_scale, *, preset, out_dtype,
                         softmax_scale, bias=None, bias_index=None, mask=None):
    return torch.empty(q8.shape, dtype=out_dtype, device=q8.device)


@torch.library.register_fake("qflash::attention")
def _attention_fake(q, k, v, *, preset, out_dtype, bias=None, bias_index=None, mask=None):
    return torch.empty(q.shape, dtype=out_dtype, device=q.device)
