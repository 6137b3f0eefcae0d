# SPDX-License-Identifier: Apache-2.0
"""Bias, mask and input/output dtypes of the qflash ops (Swin's relative-position table and
shifted-window mask, dense biases, bf16/fp32 inputs). Skipped without a CUDA device."""
import math

import pytest

torch = pytest.importorskip("torch")  # CI has no torch: the module reports skipped
import torch.nn.functional as F  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

if torch.cuda.is_available():
    import qflash
else:  # keep collection working on machines without the extension
    qflash = pytest.importorskip("qflash")

PRESETS = ["paper", "precise", "precise_cubic", "fast", "fast_long"]
Q_SCALE, K_SCALE, V_SCALE = 4.0 / 127, 4.0 / 127, 0.05
WIN = 7  # Swin-T windows: 7 x 7 = 49 tokens, relative table (2 * 7 - 1)^2 = 169 entries


def _codes(shape, gen):
    return torch.randint(-127, 128, shape, dtype=torch.int8, generator=gen)


def _bits(t):
    return t.view(torch.int16) if t.dtype in (torch.float16, torch.bfloat16) else t


def _sqnr_db(ref, out):
    ref = ref.double()
    return (20 * torch.log10(ref.norm() / (out.double() - ref).norm())).item()


def relative_index(win=WIN):
    """timm's relative_position_index of a win x win window: [win^2, win^2] in [0, (2 win - 1)^2)."""
    coords = torch.stack(torch.meshgrid(torch.arange(win), torch.arange(win), indexing="ij"))
    flat = coords.flatten(1)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0) + (win - 1)
    return rel[..., 0] * (2 * win - 1) + rel[..., 1]


def shifted_window_mask(windows, gen, n=WIN * WIN):
    """[windows, n, n] bool, each query sees itself and a random half of the other keys."""
    m = torch.rand((windows, n, n), generator=gen) < 0.5
    return m | torch.eye(n, dtype=torch.bool)


def _extras(kind, h, nq, nkv, gen):
    """(attn_bias, attn_mask) on the CPU for one kind of extra input."""
    table = torch.randn(((2 * WIN - 1) ** 2, h), generator=gen) * 2
    if kind == "dense-heads":
        return torch.randn((h, nq, nkv), generator=gen) * 3, None
    if kind == "dense-shared-int32":  # Q16 octaves directly
        return torch.randint(-(5 << 16), 5 << 16, (nq, nkv), dtype=torch.int32, generator=gen), None
    if kind == "relative":
        return qflash.RelativePositionBias(table, relative_index().to(torch.int32)), None
    if kind == "mask":
        return None, shifted_window_mask(2, gen)
    if kind == "swin":  # table shared by the batch + shifted-window mask
        return qflash.RelativePositionBias(table, relative_index()), shifted_window_mask(2, gen)
    if kind == "swin-one-head":
        t1 = table[:, :1].contiguous()
        return qflash.RelativePositionBias(t1, relative_index()), shifted_window_mask(4, gen)
    raise AssertionError(kind)


def _to(x, device):
    if x is None:
        return None
    if isinstance(x, qflash.RelativePositionBias):
        return qflash.RelativePositionBias(x.table.to(device), x.index.to(device))
    return x.to(device)


def _float_bias(attn_bias, attn_mask, b, h, n):
    """The same extras as one additive float bias [B, H, N, N] in nats (for SDPA / float64)."""
    bias = torch.zeros((b, h, n, n), dtype=torch.float64)
    if isinstance(attn_bias, qflash.RelativePositionBias):
        t = attn_bias.table.double()[attn_bias.index.long()]  # [N, N, Hb]
        bias += t.permute(2, 0, 1)
    elif attn_bias is not None:
        dense = attn_bias.double()
        if attn_bias.dtype == torch.int32:
            dense = dense / (65536 * math.log2(math.e))
        bias += dense
    if attn_mask is not None:
        w = attn_mask.shape[0]
        hidden = ~attn_mask.repeat(b // w, 1, 1)[:, None]
        bias = bias.masked_fill(hidden, -math.inf)
    return bias


KINDS = ["dense-heads", "dense-shared-int32", "relative", "mask", "swin", "swin-one-head"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("preset", PRESETS)
def test_int8_bias_mask_bit_exact_vs_reference(preset, kind):
    b, h, n, d = 4, 3, WIN * WIN, 32
    gen = torch.Generator().manual_seed(sum(map(ord, kind)))
    q8, k8, v8 = (_codes((b, h, n, d), gen) for _ in range(3))
    bias, mask = _extras(kind, h, n, n, gen)
    for out_dtype in (torch.int8, torch.int16, torch.float16):
        got = qflash.attention_int8(q8.cuda(), k8.cuda(), v8.cuda(), Q_SCALE, K_SCALE, V_SCALE,
                                    preset=preset, out_dtype=out_dtype,
                                    attn_bias=_to(bias, "cuda"), attn_mask=_to(mask, "cuda"))
        ref = qflash.reference_int8(q8, k8, v8, Q_SCALE, K_SCALE, V_SCALE, preset=preset,
                                    out_dtype=out_dtype, attn_bias=bias, attn_mask=mask)
        assert torch.equal(_bits(got.cpu()), _bits(ref)), (kind, out_dtype)
    # and close to exact attention on the same codes with the same bias and mask
    exact = F.scaled_dot_product_attention(
        q8.double() * Q_SCALE, k8.double() * K_SCALE, v8.double() * V_SCALE,
        attn_mask=_float_bias(bias, mask, b, h, n))
    o16 = qflash.reference_int8(q8, k8, v8, Q_SCALE, K_SCALE, V_SCALE, preset=preset,
                                out_dtype=torch.int16, attn_bias=bias, attn_mask=mask)
    sq = _sqnr_db(exact, o16.double() * qflash.default_output_scale(V_SCALE, torch.int16))
    # host run, 2026-12-05: Paper 37.3-38.5 dB, Fast 50.2-52.0, Precise(Cubic) 52.7-54.7
    assert sq >= (33.0 if preset == "paper" else 45.0), (preset, kind, sq)


@pytest.mark.parametrize("kind", ["dense-heads", "swin", "swin-one-head"])
def test_attention_float_bias_mask_vs_sdpa(kind):
    b, h, n, d = 4, 3, WIN * WIN, 32
    gen = torch.Generator().manual_seed(21)
    q, k, v = ((torch.rand((b, h, n, d), generator=gen) * 4 - 2) for _ in range(3))
    bias, mask = _extras(kind, h, n, n, gen)
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(),
                                         attn_mask=_float_bias(bias, mask, b, h, n))
    for preset in PRESETS:
        out = qflash.attention(q.half().cuda(), k.half().cuda(), v.half().cuda(), preset=preset,
                               attn_bias=_to(bias, "cuda"), attn_mask=_to(mask, "cuda"))
        sq = _sqnr_db(ref, out.cpu())
        assert sq >= (20.0 if preset == "paper" else 30.0), (preset, kind, sq)


def test_attention_bf16_fp32_inputs_and_outputs():
    """bf16 / fp32 inputs are rounded to fp16 first: the same result as fp16 inputs; bf16 / fp32
    outputs are the fp16 output converted."""
    gen = torch.Generator().manual_seed(4)
    q, k, v = ((torch.rand((2, 4, 77, 64), generator=gen) * 6 - 3).cuda() for _ in range(3))
    want = qflash.attention(q.half(), k.half(), v.half())
    got32 = qflash.attention(q, k, v)  # fp32 in
    assert torch.equal(_bits(got32), _bits(want))
    qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()
    assert torch.equal(_bits(qflash.attention(qb, kb, vb)),
                       _bits(qflash.attention(qb.half(), kb.half(), vb.half())))
    for out_dtype in (torch.bfloat16, torch.float32):
        o = qflash.attention(q, k, v, out_dtype=out_dtype)
        assert o.dtype == out_dtype
        assert torch.equal(o, want.to(out_dtype))


def test_graph_capture_and_compile_with_bias_and_mask():
    b, h, n, d = 4, 3, WIN * WIN, 32
    gen = torch.Generator().manual_seed(8)
    bias, mask = _extras("swin", h, n, n, gen)
    bias, mask = _to(bias, "cuda"), _to(mask, "cuda")
    q, k, v = ((torch.rand((b, h, n, d), generator=gen) * 4 - 2).half().cuda() for _ in range(3))

    def fn(q, k, v, table, index, mask):
        return qflash.attention(q, k, v, attn_bias=qflash.RelativePositionBias(table, index),
                                attn_mask=mask)

    eager = fn(q, k, v, bias.table, bias.index, mask)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn(q, k, v, bias.table, bias.index, mask)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn(q, k, v, bias.table, bias.index, mask)
    bias.table.mul_(0.5)  # new bias values, read at replay
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(_bits(out), _bits(fn(q, k, v, bias.table, bias.index, mask)))
    assert not torch.equal(_bits(out), _bits(eager))
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True)
    assert torch.equal(_bits(compiled(q, k, v, bias.table, bias.index, mask)),
                       _bits(fn(q, k, v, bias.table, bias.index, mask)))


def test_relative_position_bias_checks_the_index():
    table = torch.zeros((169, 3), device="cuda")
    idx = relative_index().cuda()
    rb = qflash.relative_position_bias(table, idx)
    assert rb.index.dtype == torch.int32 and rb.index.is_contiguous()
    with pytest.raises(ValueError, match=r"index entries must be in \[0, 100\)"):
        qflash.relative_position_bias(table[:100], idx)
    with pytest.raises(TypeError, match="index must be int32 or int64"):
        qflash.relative_position_bias(table, idx.float())
    # the host reference rejects an index outside the table by name
    c = torch.zeros((1, 3, 49, 32), dtype=torch.int8)
    bad = qflash.RelativePositionBias(torch.zeros((100, 3)), relative_index())
    with pytest.raises(ValueError, match="host reference"):
        qflash.reference_int8(c, c, c, Q_SCALE, K_SCALE, V_SCALE, attn_bias=bad)


def _q(shape=(4, 3, 49, 32)):
    return torch.randint(-127, 128, shape, dtype=torch.int8, device="cuda")


def _call(**kw):
    q = _q()
    return qflash.attention_int8(q, q, q, Q_SCALE, K_SCALE, V_SCALE, **kw)


ERROR_CASES = [
    ("bias-shape", lambda: _call(attn_bias=torch.zeros((3, 49, 48), device="cuda")), ValueError,
     r"attn_bias must be \[Nq, Nkv\] or \[1 or H, Nq, Nkv\]"),
    ("bias-heads", lambda: _call(attn_bias=torch.zeros((2, 49, 49), device="cuda")), ValueError,
     "attn_bias must be"),
    ("bias-dtype", lambda: _call(attn_bias=torch.zeros((49, 49), dtype=torch.int64,
                                                       device="cuda")), TypeError,
     "attn_bias must be float32, float16 or bfloat16"),
    ("bias-device", lambda: _call(attn_bias=torch.zeros((49, 49))), ValueError,
     "attn_bias must be on cuda"),
    ("bias-type", lambda: _call(attn_bias=[0.0]), TypeError, "attn_bias must be None, a Tensor"),
    ("table-shape", lambda: _call(attn_bias=qflash.RelativePositionBias(
        torch.zeros((169, 2), device="cuda"), relative_index().cuda())), ValueError,
     "relative-position attn_bias must be a table"),
    ("index-shape", lambda: _call(attn_bias=qflash.RelativePositionBias(
        torch.zeros((169, 3), device="cuda"), relative_index(6).cuda())), ValueError,
     r"bias_index must be \[Nq, Nkv\]"),
    ("index-dtype", lambda: _call(attn_bias=qflash.RelativePositionBias(
        torch.zeros((169, 3), device="cuda"), relative_index().float().cuda())), TypeError,
     "bias_index must be int32 or int64"),
    ("mask-dtype", lambda: _call(attn_mask=torch.zeros((49, 49), device="cuda")), TypeError,
     "attn_mask must be torch.bool"),
    ("mask-shape", lambda: _call(attn_mask=torch.ones((2, 49, 50), dtype=torch.bool,
                                                      device="cuda")), ValueError,
     "attn_mask must be"),
    ("mask-windows", lambda: _call(attn_mask=torch.ones((3, 49, 49), dtype=torch.bool,
                                                        device="cuda")), ValueError,
     "not a multiple"),
    ("mask-device", lambda: _call(attn_mask=torch.ones((49, 49), dtype=torch.bool)), ValueError,
     "attn_mask must be on cuda"),
]


@pytest.mark.parametrize("case", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_bias_mask_errors(case):
    _, fn, exc, pattern = case
    with pytest.raises(exc, match=pattern):
        fn()


OP_ERROR_CASES = [c[0] for c in ERROR_CASES if c[0] != "bias-type"]  # a list: no op argument

_OP_CHILD = r"""
import sys, torch, qflash
sys.path.insert(0, {tests!r})
import test_bias_mask as T
# skip every Python check of bias and mask: the C++ op itself must raise
qflash._check_extras = lambda *a: None
def _split(op, attn_bias, attn_mask):
    if isinstance(attn_bias, qflash.RelativePositionBias):
        return attn_bias.table, attn_bias.index, attn_mask
    return attn_bias, None, attn_mask
qflash._extras = _split
name, fn, exc, pattern = next(c for c in T.ERROR_CASES if c[0] == {case!r})
try:
    fn()
except exc as e:
    import re
    print("RAISED", type(e).__name__, bool(re.search(pattern, str(e))), str(e)[:200])
else:
    print("NO ERROR")
"""


@pytest.mark.parametrize("case", OP_ERROR_CASES)
def test_bias_mask_errors_from_the_op_itself(case):
    """The C++ op checks the same things for direct torch.ops.qflash calls. Each case runs in its
    own process, so that a crash is reported as this test's failure, not the session's end."""
    import os
    import subprocess
    import sys
    child = _OP_CHILD.format(tests=os.path.dirname(os.path.abspath(__file__)), case=case)
    r = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"exit {r.returncode}: {r.stdout[-500:]} {r.stderr[-1500:]}"
    exc = next(c[2] for c in ERROR_CASES if c[0] == case)
    assert r.stdout.split()[:3] == ["RAISED", exc.__name__, "True"], r.stdout


@pytest.mark.parametrize("kind", ["dense-f16-cross", "table-noncontiguous-cross"])
def test_cross_attention_layouts(kind):
    """Nq != Nkv, an fp16 dense bias, a non-contiguous table, a uint8 mask: the layouts the
    bit-exact tests above (Nq == Nkv, contiguous) cannot tell apart, checked against exact
    attention on the same codes."""
    b, h, nq, nkv, d = 2, 3, 40, 72, 32
    gen = torch.Generator().manual_seed(sum(map(ord, kind)))
    q8 = _codes((b, h, nq, d), gen)
    k8, v8 = _codes((b, h, nkv, d), gen), _codes((b, h, nkv, d), gen)
    mask = (torch.rand((b, nq, nkv), generator=gen) < 0.6).to(torch.uint8)  # window z = batch z
    mask[:, :, 0] = 1  # every query sees a key
    if kind == "dense-f16-cross":
        bias = (torch.randn((h, nq, nkv), generator=gen) * 2).half()
        dense = bias.double()
    else:
        table = (torch.randn((h, 50), generator=gen) * 2).t()  # [50, H], not contiguous
        assert not table.is_contiguous()
        index = torch.randint(0, 50, (nq, nkv), generator=gen)
        bias = qflash.relative_position_bias(table, index)
        dense = table.double()[index].permute(2, 0, 1)
    exact = F.scaled_dot_product_attention(
        q8.double() * Q_SCALE, k8.double() * K_SCALE, v8.double() * V_SCALE,
        attn_mask=dense.expand(b, h, nq, nkv).masked_fill(~mask.bool()[:, None], -math.inf))
    for preset in PRESETS:
        ref = qflash.reference_int8(q8, k8, v8, Q_SCALE, K_SCALE, V_SCALE, preset=preset,
                                    out_dtype=torch.int16, attn_bias=bias, attn_mask=mask)
        got = qflash.attention_int8(q8.cuda(), k8.cuda(), v8.cuda(), Q_SCALE, K_SCALE, V_SCALE,
                                    preset=preset, out_dtype=torch.int16,
                                    attn_bias=_to(bias, "cuda"), attn_mask=mask.cuda())
        assert torch.equal(got.cpu(), ref), (kind, preset)
        sq = _sqnr_db(exact, ref.double() * qflash.default_output_scale(V_SCALE, torch.int16))
        assert sq >= (33.0 if preset == "paper" else 45.0), (kind, preset, sq)
