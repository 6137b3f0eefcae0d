# SPDX-License-Identifier: Apache-2.0
"""qflash inside timm models: swap the attention computation of timm's attention modules.

    import timm, qflash.timm
    model = timm.create_model("vit_small_patch16_224", pretrained=False).cuda().eval()
    names = qflash.timm.patch(model, preset="precise")   # dynamic per-call scales (fp16 path)
    qflash.timm.calibrate(model, batches)                # static per-layer scales (int8 path)
    qflash.timm.unpatch(model)                           # timm's own forward again

patch(model, *, preset="precise", scales=None, int_out_dtype=torch.int16, strict=False)
    Replaces the forward of every `timm.models.vision_transformer.Attention` (timm.layers.Attention)
    in `model` by one that computes q, k, v exactly as timm does (qkv Linear, reshape/permute,
    q_norm / k_norm) and then runs qflash instead of softmax(q k^T * scale) v; the output
    transpose/reshape, `norm` (scale_norm), gate, proj and proj_drop are timm's. The qkv, norm and
    proj modules (and their weights) stay as they are. Returns the names of the patched modules.

    Without static scales a patched module calls `qflash.attention(q.half(), k.half(), v.half())`:
    per-tensor scales computed on the device on every call, fp16 output, cast back to the model's
    dtype. With static scales (`scales=` or `calibrate`) it quantizes q, k, v with torch
    (code = clamp(round(x / scale), -127, 127), round half to even, int8), calls
    `qflash.attention_int8(..., out_dtype=int_out_dtype)` and dequantizes the output with
    `qflash.default_output_scale(v_scale, int_out_dtype)`: this is how a deployment runs.

    Swin `timm.models.swin_transformer.WindowAttention` modules are patched too: q, k, v from
    timm's qkv Linear, the learned relative_position_bias_table passed as a
    qflash.RelativePositionBias (never expanded; the module's own relative_position_index is read
    on every call, its range checked once at patch time), and the shifted-window mask that timm
    passes (0 = visible, -100 = hidden, [nW, N, N]) as a bool mask (mask == 0). A -100 bias
    and a hidden key differ by exp(-100) ~ 4e-44 of a weight; any other mask value raises
    ValueError (checked in eager mode, once per mask tensor).

    Not patched (a warning lists them with the reason; strict=True raises instead):
      * Attention / WindowAttention subclasses that override forward, and head dims qflash has
        no kernel for (it supports 32, 64, 80, 96 and 128).
    A patched module called with an attention mask or is_causal=True raises NotImplementedError
    (qflash.timm does not map ViT attention masks). The qflash ops have no backward: patched models are for
    inference (no attention dropout is applied).

calibrate(model, batches, *, int_out_dtype=None)
    Runs the model on each batch (a Tensor -> model(b), a tuple/list -> model(*b), a dict ->
    model(**b)) under torch.no_grad() with float attention (torch's scaled_dot_product_attention
    in the model's dtype), records every patched module's per-tensor amax of q, k and v over all
    batches, and stores scales = amax / 127 on the modules; later calls use the int8 path with
    these static scales. Returns {module name: (q_scale, k_scale, v_scale)}. Raises ValueError
    if the model has no patched module, if a patched module never ran, or if qflash's calibration
    rejects a layer's scales for the preset (e.g. logits beyond its range).

get_scales(model) / set_scales(model, scales)
    Read / set the static scales of the patched modules ({name: (q, k, v)}; None: dynamic path).

torch.compile(fullgraph=True) traces patched models (the ops have fake implementations; static
scales are Python floats, i.e. graph constants), and CUDA graphs capture them (the ops and the
torch quantization neither allocate outside the caching allocator nor synchronise).
"""

import math
import types
import warnings

import torch
import torch.nn.functional as F

import qflash

__all__ = ["patch", "unpatch", "calibrate", "get_scales", "set_scales", "patched_modules",
           "unpatchable_modules"]

_INT_OUT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.float16)
_SWIN_MASK_HIDDEN = -100.0  # timm's shifted-window mask value for a key of another window


def _timm_classes():
    """(vit Attention class, Swin WindowAttention class or None) of the installed timm."""
    try:
        import timm.models.vision_transformer as vit
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("qflash.timm needs timm (pip install timm)") from e
    attn = getattr(vit, "Attention", None)
    if attn is None:  # pragma: no cover - very old or very new timm
        from timm.layers import Attention as attn
    try:
        import timm.models.swin_transformer as swin
        window = getattr(swin, "WindowAttention", None)
    except ImportError:  # pragma: no cover
        window = None
    return attn, window


def _head_dim(m):
    hd = getattr(m, "head_dim", None)
    if hd is None:
        hd = m.qkv.out_features // (3 * m.num_heads)
    return int(hd)


def _is_window(m, window_cls):
    return window_cls is not None and isinstance(m, window_cls)


def _why_not(m, attn_cls, window_cls):
    """None if `m` can be patched, else the reason (str); also None-ish for unrelated modules."""
    if _is_window(m, window_cls):
        if type(m).forward is not window_cls.forward:
            return (f"{type(m).__name__} overrides WindowAttention.forward; qflash.timm only "
                    "reproduces timm's WindowAttention.forward")
        for attr in ("relative_position_bias_table", "relative_position_index", "qkv", "proj"):
            if getattr(m, attr, None) is None:
                return f"WindowAttention without '{attr}' (another timm version?)"
    elif not isinstance(m, attn_cls):
        return None
    elif type(m).forward is not attn_cls.forward:
        return (f"{type(m).__name__} overrides Attention.forward; qflash.timm only reproduces "
                "timm's Attention.forward")
    if getattr(m, "gate", None) is not None and not isinstance(m.gate, torch.nn.Module):
        return "unexpected 'gate' attribute"
    d = _head_dim(m)
    if d not in qflash.HEAD_DIMS:
        return f"head dim {d} (qflash supports {', '.join(map(str, qflash.HEAD_DIMS))})"
    return None


def _is_target(m, attn_cls, window_cls):
    return isinstance(m, attn_cls) or (window_cls is not None and isinstance(m, window_cls))


def _check_triple(where, name, triple):
    if not (isinstance(triple, (tuple, list)) and len(triple) == 3):
        raise TypeError(f"{where}: scales['{name}'] must be a (q_scale, k_scale, v_scale) triple, "
                        f"got {triple!r}")
    out = []
    for label, s in zip(("q_scale", "k_scale", "v_scale"), triple):
        if isinstance(s, torch.Tensor):
            s = s.item()
        qflash._check_scale(where, f"scales['{name}'].{label}", s)
        out.append(float(s))
    return tuple(out)


def _validate_for_preset(where, name, m, triple):
    """qflash's host calibration must accept the static scales for this module's preset."""
    sm = float(m.scale)
    d = _head_dim(m)
    soft = None if _is_default_softmax_scale(sm, d) else sm
    try:
        qflash._check_calibration(where, m._qflash_preset, m._qflash_int_out_dtype, d, *triple,
                                  soft)
    except ValueError as e:
        raise ValueError(f"{e} [module '{name}', preset '{m._qflash_preset}']") from None


def _is_default_softmax_scale(sm, d):
    return abs(sm * math.sqrt(d) - 1.0) < 1e-6


# ---- the patched forward ---------------------------------------------------------------------

def _quantize(t, scale):
    return torch.clamp(torch.round(t.float() / scale), -127, 127).to(torch.int8).contiguous()


def _attend(self, q, k, v, bias=None, mask=None, float_bias=None):
    """softmax(q k^T * self.scale + bias) v over the visible keys through qflash (or float while
    calibrating); [B, H, N, D]. bias: None or a qflash.RelativePositionBias; mask: None or bool
    [nW, N, N]; float_bias: a callable giving the same bias and mask as one float SDPA attn_mask
    (calibration only)."""
    dtype = q.dtype
    d = q.shape[-1]
    sm = float(self.scale)
    default_sm = _is_default_softmax_scale(sm, d)
    calib = self._qflash_calib
    if calib is not None:  # calibration: float attention, record per-tensor amax
        for i, t in enumerate((q, k, v)):
            a = t.detach().abs().amax().float()
            calib[i] = a if calib[i] is None else torch.maximum(calib[i], a)
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=None if float_bias is None else float_bias(q.dtype), scale=sm)
    scales = self._qflash_scales
    if scales is not None:  # static scales: the int8 deployment path
        qs, ks, vs = scales
        out_dtype = self._qflash_int_out_dtype
        o = qflash.attention_int8(_quantize(q, qs), _quantize(k, ks), _quantize(v, vs), qs, ks, vs,
                                  preset=self._qflash_preset, out_dtype=out_dtype,
                                  softmax_scale=None if default_sm else sm, attn_bias=bias,
                                  attn_mask=mask)
        return (o.float() * qflash.default_output_scale(vs, out_dtype)).to(dtype)
    if not default_sm:  # qflash.attention always uses 1/sqrt(D): fold the difference into q
        q = q * (sm * math.sqrt(d))
    o = qflash.attention(q.half(), k.half(), v.half(), preset=self._qflash_preset,
                         attn_bias=bias, attn_mask=mask)
    return o.to(dtype)


def _vit_forward(self, x, attn_mask=None, is_causal=False):
    """timm's Attention.forward with the attention product replaced by qflash."""
    if attn_mask is not None or is_causal:
        raise NotImplementedError(
            "qflash.timm: a patched Attention got an attention mask or is_causal=True; qflash has "
            "does not map ViT attention masks (qflash.timm.unpatch the model for masked attention)")
    B, N, _ = x.shape
    gate = self.gate(x).sigmoid() if getattr(self, "gate", None) is not None else None
    qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, _head_dim(self)).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q_norm, k_norm = getattr(self, "q_norm", None), getattr(self, "k_norm", None)
    if q_norm is not None:
        q = q_norm(q)
    if k_norm is not None:
        k = k_norm(k)
    x = _attend(self, q, k, v)
    x = x.transpose(1, 2).reshape(B, N, -1)
    norm = getattr(self, "norm", None)
    if norm is not None:
        x = norm(x)
    if gate is not None:
        x = x * gate
    x = self.proj(x)
    x = self.proj_drop(x)
    return x


def _visible(self, mask):
    """timm's shifted-window mask (float [nW, N, N], 0 = visible, -100 = hidden) as qflash's bool
    mask. In eager mode each new mask tensor is checked once for other values (one host sync)."""
    if torch.compiler.is_compiling():  # nothing below may be traced (a bool, a host sync)
        return mask == 0
    if not (mask.is_cuda and torch.cuda.is_current_stream_capturing()):
        key = (mask.data_ptr(), mask._version, tuple(mask.shape), mask.device)
        if self._qflash_mask_checked != key:
            if not bool(((mask == 0) | (mask <= _SWIN_MASK_HIDDEN)).all()):
                raise ValueError(
                    "qflash.timm: a patched WindowAttention got a mask with values other than 0 "
                    f"(visible) and <= {_SWIN_MASK_HIDDEN} (hidden); qflash takes a visible/hidden "
                    "mask only (qflash.timm.unpatch the model for other masks)")
            self._qflash_mask_checked = key
    return mask == 0


def _swin_forward(self, x, mask=None):
    """timm's WindowAttention.forward with the attention product replaced by qflash."""
    B_, N, _ = x.shape
    qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    table = self.relative_position_bias_table.detach()
    # timm's live index (set_window_size may replace it), [N, N]; its range was checked at patch
    # time, and the op converts int64 to int32 on the device
    index = self.relative_position_index.view(N, N)
    bias = qflash.RelativePositionBias(table, index)

    def float_bias(dtype):  # timm's own float attn_mask, for calibration
        b = table[index.long()].permute(2, 0, 1).unsqueeze(0)  # [1, H, N, N]
        if mask is None:
            return b.to(dtype)
        nw = mask.shape[0]
        full = b + mask.view(1, nw, 1, N, N).expand(B_ // nw, -1, self.num_heads, -1, -1).reshape(
            -1, self.num_heads, N, N)
        return full.to(dtype)

    visible = None if mask is None else _visible(self, mask)
    x = _attend(self, q, k, v, bias, visible, float_bias)
    x = x.transpose(1, 2).reshape(B_, N, -1)
    x = self.proj(x)
    x = self.proj_drop(x)
    return x


# ---- public API ------------------------------------------------------------------------------

def patched_modules(model):
    """Names of the modules of `model` that qflash.timm.patch has patched."""
    return [n for n, m in model.named_modules() if getattr(m, "_qflash_patched", False)]


def unpatchable_modules(model):
    """[(name, reason)] for the timm attention modules of `model` that patch() cannot patch."""
    attn_cls, window_cls = _timm_classes()
    out = []
    for n, m in model.named_modules():
        if _is_target(m, attn_cls, window_cls):
            why = _why_not(m, attn_cls, window_cls)
            if why is not None:
                out.append((n, why))
    return out


def patch(model, *, preset="precise", scales=None, int_out_dtype=torch.int16, strict=False):
    """Make `model`'s timm attention modules run qflash; returns the patched module names.

    preset: "paper", "precise", "precise_cubic", "fast" or "fast_long". scales: None (dynamic,
    fp16 path) or {module name: (q_scale, k_scale, v_scale)} for every patched module (static,
    int8 path).
    int_out_dtype: the attention_int8 output type of the static path (int8/int16/int32 codes,
    dequantized with qflash.default_output_scale, or float16). Patching an already patched model
    updates preset, int_out_dtype and (when given) scales. Unpatchable modules (overridden
    forward, unsupported head dim) are listed in a warning, or raise NotImplementedError if strict.
    """
    where = "qflash.timm.patch"
    qflash._check_preset(where, preset)
    qflash._check_out_dtype(where, int_out_dtype, _INT_OUT_DTYPES)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{where}: model must be a torch.nn.Module, got {type(model).__name__}")
    if scales is not None and not isinstance(scales, dict):
        raise TypeError(f"{where}: scales must be None or a dict {{module name: (q, k, v)}}, got "
                        f"{type(scales).__name__}")
    attn_cls, window_cls = _timm_classes()
    targets, skipped = [], []
    for name, m in model.named_modules():
        if not _is_target(m, attn_cls, window_cls):
            continue
        why = _why_not(m, attn_cls, window_cls)
        if why is None:
            targets.append((name, m))
        else:
            skipped.append((name, why))
    if skipped:
        msg = (f"{where}: {len(skipped)} attention module(s) not patched, they keep timm's "
               "attention: " + "; ".join(f"'{n}': {why}" for n, why in skipped))
        if strict:
            raise NotImplementedError(msg)
        warnings.warn(msg, stacklevel=2)
    names = [n for n, _ in targets]
    static = {} if scales is None else _checked_scales(where, scales, names)
    for name, m in targets:
        if not getattr(m, "_qflash_patched", False):
            # an instance-level forward (rare) is kept and restored by unpatch
            m._qflash_own_forward = m.__dict__.get("forward", None)
            m._qflash_scales = None
            m._qflash_calib = None
            if _is_window(m, window_cls):
                idx = m.relative_position_index
                n = math.isqrt(idx.numel())
                # checks the index against the table once (one host sync); forward reads timm's
                # own index and table on every call
                qflash.relative_position_bias(m.relative_position_bias_table.detach(),
                                              idx.reshape(n, n))
                m._qflash_mask_checked = None
                m.forward = types.MethodType(_swin_forward, m)
            else:
                m.forward = types.MethodType(_vit_forward, m)
            m._qflash_patched = True
        m._qflash_preset = preset
        m._qflash_int_out_dtype = int_out_dtype
        if scales is not None:
            _validate_for_preset(where, name, m, static[name])
            m._qflash_scales = static[name]
    return names


def unpatch(model):
    """Restore timm's forward on every patched module (scales are dropped); returns their names."""
    names = []
    for name, m in model.named_modules():
        if not getattr(m, "_qflash_patched", False):
            continue
        own = m._qflash_own_forward
        del m.forward
        if own is not None:
            m.forward = own
        for attr in ("_qflash_patched", "_qflash_own_forward", "_qflash_scales", "_qflash_calib",
                     "_qflash_preset", "_qflash_int_out_dtype",
                     "_qflash_mask_checked"):
            if hasattr(m, attr):
                delattr(m, attr)
        names.append(name)
    return names


def get_scales(model):
    """{name: (q_scale, k_scale, v_scale) or None} of the patched modules."""
    return {n: m._qflash_scales for n, m in model.named_modules()
            if getattr(m, "_qflash_patched", False)}


def _checked_scales(where, scales, names):
    """{name: (q, k, v) scales} for exactly the modules `names`, each triple checked."""
    if not isinstance(scales, dict):
        raise TypeError(f"{where}: scales must be None or a dict, got {type(scales).__name__}")
    unknown = sorted(set(scales) - set(names))
    missing = [n for n in names if n not in scales]
    if unknown or missing:
        raise ValueError(f"{where}: scales must have one entry per patched module; unknown: "
                         f"{unknown}, missing: {missing}")
    return {n: _check_triple(where, n, scales[n]) for n in names}


def set_scales(model, scales):
    """Set static scales ({name: triple} for every patched module) or None (dynamic path)."""
    _set_scales(model, scales, "qflash.timm.set_scales")


def _set_scales(model, scales, where):
    mods = {n: m for n, m in model.named_modules() if getattr(m, "_qflash_patched", False)}
    if not mods:
        raise ValueError(f"{where}: the model has no qflash-patched module (call patch first)")
    if scales is None:
        for m in mods.values():
            m._qflash_scales = None
        return
    checked = _checked_scales(where, scales, list(mods))
    for n, m in mods.items():
        _validate_for_preset(where, n, m, checked[n])
    for n, m in mods.items():
        m._qflash_scales = checked[n]


def calibrate(model, batches, *, int_out_dtype=None):
    """Record static per-layer q/k/v amax on `batches` (float attention) and switch the patched
    modules to the int8 path with scales amax / 127; returns {name: (q, k, v scales)}."""
    where = "qflash.timm.calibrate"
    mods = {n: m for n, m in model.named_modules() if getattr(m, "_qflash_patched", False)}
    if not mods:
        raise ValueError(f"{where}: the model has no qflash-patched module (call "
                         "qflash.timm.patch(model) first)")
    if int_out_dtype is not None:
        qflash._check_out_dtype(where, int_out_dtype, _INT_OUT_DTYPES)
        for m in mods.values():
            m._qflash_int_out_dtype = int_out_dtype
    for m in mods.values():
        m._qflash_calib = [None, None, None]
    count = 0
    try:
        with torch.no_grad():
            for b in batches:
                if isinstance(b, torch.Tensor):
                    model(b)
                elif isinstance(b, dict):
                    model(**b)
                elif isinstance(b, (tuple, list)):
                    model(*b)
                else:
                    raise TypeError(f"{where}: a batch must be a Tensor, tuple/list or dict, got "
                                    f"{type(b).__name__}")
                count += 1
        amax = {n: m._qflash_calib for n, m in mods.items()}
    finally:
        for m in mods.values():
            m._qflash_calib = None
    if count == 0:
        raise ValueError(f"{where}: no batches")
    never = [n for n, a in amax.items() if a[0] is None]
    if never:
        raise ValueError(f"{where}: patched module(s) never ran on the batches: {never}")
    scales = {}
    for n, a in amax.items():
        vals = [max(float(t.item()), 1e-12) / 127.0 for t in a]  # one host sync per value, once
        scales[n] = tuple(vals)
    _set_scales(model, scales, where)
    return scales
