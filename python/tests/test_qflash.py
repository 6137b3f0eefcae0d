# SPDX-License-Identifier: Apache-2.0
"""Tests of the qflash torch extension. Run from the repository root after installing:

    python3 -m pip install --no-build-isolation ./python
    python3 -m pytest -q python/tests

Every test needs a CUDA device and is skipped without one.
"""
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
OUT_DTYPES = [torch.int8, torch.int16, torch.int32, torch.float16]
# (B, H, Nq, Nkv, D)
SHAPES = [(1, 6, 197, 197, 64), (4, 3, 49, 49, 32), (1, 2, 77, 130, 80), (2, 1, 16, 33, 128)]
# Scales all three presets accept at every head dim (codes of data in [-4, 4]; the Paper preset
# rejects much smaller Q K scales: scale_out_of_range).
Q_SCALE, K_SCALE, V_SCALE = 4.0 / 127, 4.0 / 127, 0.05


def _codes(shape, gen):
    return torch.randint(-127, 128, shape, dtype=torch.int8, generator=gen)


def _bits(t):
    """Bitwise view for exact comparison (fp16 NaNs compare equal bit for bit)."""
    return t.view(torch.int16) if t.dtype == torch.float16 else t


def _sqnr_db(ref, out):
    ref = ref.double()
    return (20 * torch.log10(ref.norm() / (out.double() - ref).norm())).item()


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("preset", PRESETS)
def test_int8_bit_exact_vs_reference(preset, shape):
    b, h, nq, nkv, d = shape
    gen = torch.Generator().manual_seed(nq * 1000 + d)
    q8, k8, v8 = _codes((b, h, nq, d), gen), _codes((b, h, nkv, d), gen), _codes((b, h, nkv, d), gen)
    qc, kc, vc = q8.cuda(), k8.cuda(), v8.cuda()
    for out_dtype in OUT_DTYPES:
        got = qflash.attention_int8(qc, kc, vc, Q_SCALE, K_SCALE, V_SCALE, preset=preset,
                                    out_dtype=out_dtype)
        ref = qflash.reference_int8(q8, k8, v8, Q_SCALE, K_SCALE, V_SCALE, preset=preset,
                                    out_dtype=out_dtype)
        assert got.dtype == out_dtype and ref.dtype == out_dtype
        assert got.shape == (b, h, nq, d) and got.is_cuda and not ref.is_cuda
        assert torch.equal(_bits(got.cpu()), _bits(ref)), (preset, out_dtype)


def test_int8_strided_bnhd_and_softmax_scale():
    """BNHD views (q.transpose(1, 2) of [B, N, H, D]) and an explicit softmax scale."""
    gen = torch.Generator().manual_seed(7)
    b, n, h, d = 2, 49, 3, 32
    q8, k8, v8 = (_codes((b, n, h, d), gen).transpose(1, 2) for _ in range(3))
    qc, kc, vc = (t.cuda() for t in (q8, k8, v8))  # .cuda() keeps the strides
    assert not qc.is_contiguous()
    for preset in PRESETS:
        got = qflash.attention_int8(qc, kc, vc, Q_SCALE, K_SCALE, V_SCALE, preset=preset,
                                    out_dtype=torch.int16, softmax_scale=0.2)
        ref = qflash.reference_int8(q8, k8, v8, Q_SCALE, K_SCALE, V_SCALE, preset=preset,
                                    out_dtype=torch.int16, softmax_scale=0.2)
        assert torch.equal(got.cpu(), ref)
    # Against float attention on the same codes: the int16 codes are at v_scale / 256.
    real = qflash.attention_int8(qc, kc, vc, Q_SCALE, K_SCALE, V_SCALE, out_dtype=torch.int16)
    exact = F.scaled_dot_product_attention(qc.double() * Q_SCALE, kc.double() * K_SCALE,
                                           vc.double() * V_SCALE)
    scale = qflash.default_output_scale(V_SCALE, torch.int16)
    assert _sqnr_db(exact, real.double() * scale) > 30


def test_attention_fp16_sqnr_vs_sdpa():
    gen = torch.Generator().manual_seed(0)
    q, k, v = ((torch.rand((1, 6, 197, 64), generator=gen) * 8 - 4).half().cuda()
               for _ in range(3))
    out = qflash.attention(q, k, v)
    assert out.dtype == torch.float16 and out.shape == q.shape
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    sqnr = _sqnr_db(ref, out.float())
    assert sqnr >= 30.0, sqnr
    for preset in PRESETS:  # every preset runs and is finite
        o = qflash.attention(q, k, v, preset=preset)
        assert torch.isfinite(o).all()
        assert _sqnr_db(ref, o.float()) >= 25.0, preset


def test_attention_fp16_matches_int8_path_on_its_own_quantization():
    """attention == attention_int8 on the codes of the library's per-tensor quantization."""
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn((2, 3, 49, 32), generator=gen).half().cuda() for _ in range(3))

    def quantize(x):  # symmetric per-tensor, round half even (the device pass's convention)
        scale = (x.abs().amax().float() / 127.0).item()
        return torch.clamp(torch.round(x.float() / scale), -127, 127).to(torch.int8), scale

    (q8, qs), (k8, ks), (v8, vs) = quantize(q), quantize(k), quantize(v)
    out = qflash.attention(q, k, v)
    ref = qflash.attention_int8(q8, k8, v8, qs, ks, vs, out_dtype=torch.float16)
    # Same codes and scales up to the last ulp of the scale division: nearly identical output.
    assert _sqnr_db(ref.float(), out.float()) > 40


def test_attention_fp16_rejected_scales_give_nan():
    """Logits beyond the preset's range: the device calibration fails and the output is NaN."""
    gen = torch.Generator().manual_seed(1)
    q, k, v = ((torch.rand((1, 2, 64, 64), generator=gen) * 200 - 100).half().cuda()
               for _ in range(3))
    out = qflash.attention(q, k, v)
    assert torch.isnan(out).all()
    # the int8 path says why
    with pytest.raises(ValueError, match="logits exceed"):
        qflash.attention_int8(torch.ones_like(q, dtype=torch.int8),
                              torch.ones_like(k, dtype=torch.int8),
                              torch.ones_like(v, dtype=torch.int8), 100 / 127, 100 / 127, 1.0)


def test_cuda_graph_capture_and_replay_equals_eager():
    gen = torch.Generator().manual_seed(5)
    q, k, v = ((torch.rand((1, 6, 197, 64), generator=gen) * 8 - 4).half().cuda()
               for _ in range(3))
    q8, k8, v8 = (_codes((2, 3, 49, 32), gen).cuda() for _ in range(3))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture
        for _ in range(2):
            qflash.attention(q, k, v)
            qflash.attention_int8(q8, k8, v8, Q_SCALE, K_SCALE, V_SCALE, out_dtype=torch.int16)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = qflash.attention(q, k, v)
        out8 = qflash.attention_int8(q8, k8, v8, Q_SCALE, K_SCALE, V_SCALE, out_dtype=torch.int16)
    for step in range(2):  # new inputs each time, written in place
        q.copy_(torch.rand(q.shape, generator=gen).half().cuda() * 8 - 4)
        v.copy_(torch.rand(v.shape, generator=gen).half().cuda() * 8 - 4)
        q8.copy_(_codes(q8.shape, gen).cuda())
        graph.replay()
        torch.cuda.synchronize()
        eager = qflash.attention(q, k, v)
        eager8 = qflash.attention_int8(q8, k8, v8, Q_SCALE, K_SCALE, V_SCALE,
                                       out_dtype=torch.int16)
        assert torch.equal(_bits(out), _bits(eager)), step
        assert torch.equal(out8, eager8), step


def test_torch_compile_fullgraph_equals_eager():
    torch._dynamo.reset()

    def fn(q, k, v, q8, k8, v8):
        a = qflash.attention(q, k, v, preset="precise")
        b = qflash.attention_int8(q8, k8, v8, Q_SCALE, K_SCALE, V_SCALE, out_dtype=torch.int32)
        return a.float() * 2.0, b + 1

    gen = torch.Generator().manual_seed(11)
    q, k, v = ((torch.rand((1, 6, 197, 64), generator=gen) * 8 - 4).half().cuda()
               for _ in range(3))
    q8, k8, v8 = (_codes((1, 2, 64, 64), gen).cuda() for _ in range(3))
    compiled = torch.compile(fn, fullgraph=True)
    got_a, got_b = compiled(q, k, v, q8, k8, v8)
    want_a, want_b = fn(q, k, v, q8, k8, v8)
    assert torch.equal(got_a, want_a)
    assert torch.equal(got_b, want_b)


def test_fake_tensor_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        q = torch.empty((2, 3, 50, 64), dtype=torch.float16, device="cuda")
        k = torch.empty((2, 3, 70, 64), dtype=torch.float16, device="cuda")
        out = torch.ops.qflash.attention(q, k, k, preset="precise", out_dtype=torch.float16)
        assert out.shape == (2, 3, 50, 64) and out.dtype == torch.float16
        q8 = torch.empty((2, 3, 50, 64), dtype=torch.int8, device="cuda")
        k8 = torch.empty((2, 3, 70, 64), dtype=torch.int8, device="cuda")
        o8 = qflash.attention_int8(q8, k8, k8, 0.01, 0.01, 0.01, out_dtype=torch.int16)
        assert o8.shape == (2, 3, 50, 64) and o8.dtype == torch.int16


# ---- every bad input raises, with a message naming the problem -------------------------------

def _int8(shape=(1, 2, 32, 64), device="cuda"):
    return torch.randint(-127, 128, shape, dtype=torch.int8, device=device)


def _half(shape=(1, 2, 32, 64)):
    return torch.randn(shape, dtype=torch.float16, device="cuda")


def _call8(q=None, k=None, v=None, scales=(Q_SCALE, K_SCALE, V_SCALE), **kw):
    q = _int8() if q is None else q
    k = _int8(q.shape, q.device) if k is None else k
    v = _int8(k.shape, k.device) if v is None else v
    return qflash.attention_int8(q, k, v, *scales, **kw)


ERROR_CASES_INT8 = [
    ("dtype", lambda: _call8(q=_half()), TypeError, "must have dtype"),
    ("dtype-k", lambda: _call8(k=_half()), TypeError, "k8 must have dtype torch.int8"),
    ("device", lambda: _call8(q=_int8(device="cpu"), k=_int8(device="cpu"),
                              v=_int8(device="cpu")), ValueError, "must be a CUDA tensor"),
    ("device-mixed", lambda: _call8(v=_int8(device="cpu")), ValueError, "CUDA tensor"),
    ("rank", lambda: _call8(q=_int8((2, 32, 64))), ValueError, "4-D"),
    ("shape", lambda: _call8(q=_int8((1, 2, 32, 64)), k=_int8((1, 3, 32, 64))), ValueError,
     "shape mismatch"),
    ("shape-kv", lambda: _call8(k=_int8((1, 2, 32, 64)), v=_int8((1, 2, 48, 64))), ValueError,
     "shape mismatch"),
    ("empty", lambda: _call8(q=_int8((1, 2, 0, 64))), ValueError, "empty problem"),
    ("head-dim", lambda: _call8(q=_int8((1, 2, 32, 48))), ValueError, "head dim"),
    ("stride-d", lambda: _call8(q=_int8((1, 2, 32, 128))[..., ::2]), ValueError,
     "unit stride along D"),
    ("stride-16", lambda: _call8(q=_int8((1, 2, 32, 72))[..., :64]), ValueError,
     "multiples of 16"),
    ("alignment", lambda: _call8(q=_int8((1, 2, 32, 80))[..., 8:72]), ValueError,
     "16-byte aligned"),
    ("scale-zero", lambda: _call8(scales=(0.0, K_SCALE, V_SCALE)), ValueError, "q_scale"),
    ("scale-negative", lambda: _call8(scales=(Q_SCALE, -1.0, V_SCALE)), ValueError, "k_scale"),
    ("scale-nan", lambda: _call8(scales=(Q_SCALE, K_SCALE, math.nan)), ValueError, "v_scale"),
    ("scale-inf", lambda: _call8(scales=(math.inf, K_SCALE, V_SCALE)), ValueError, "q_scale"),
    ("scale-type", lambda: _call8(scales=("0.1", K_SCALE, V_SCALE)), TypeError, "q_scale"),
    ("softmax-scale", lambda: _call8(softmax_scale=-0.5), ValueError, "softmax_scale"),
    ("logit-range", lambda: _call8(scales=(1.0, 1.0, V_SCALE)), ValueError, "logits exceed"),
    ("preset", lambda: _call8(preset="fastest"), ValueError, "unknown preset 'fastest'"),
    ("preset-type", lambda: _call8(preset=1), TypeError, "preset"),
    ("out-dtype", lambda: _call8(out_dtype=torch.float32), ValueError, "out_dtype"),
    ("out-dtype-type", lambda: _call8(out_dtype="int8"), TypeError, "out_dtype"),
]


@pytest.mark.parametrize("case", ERROR_CASES_INT8, ids=[c[0] for c in ERROR_CASES_INT8])
def test_attention_int8_errors(case):
    _, fn, exc, pattern = case
    with pytest.raises(exc, match=pattern):
        fn()


ERROR_CASES_HALF = [
    ("dtype-mixed", lambda: qflash.attention(_half().float(), _half(), _half()), TypeError,
     "k must have dtype torch.float32"),
    ("dtype-int8", lambda: qflash.attention(_int8(), _int8(), _int8()), TypeError,
     "q must be float16, bfloat16 or float32"),
    ("dtype-f64", lambda: qflash.attention(*(_half().double() for _ in range(3))), TypeError,
     "q must be float16, bfloat16 or float32"),
    ("device", lambda: qflash.attention(_half().cpu(), _half().cpu(), _half().cpu()), ValueError,
     "must be a CUDA tensor"),
    ("rank", lambda: qflash.attention(_half((2, 32, 64)), _half(), _half()), ValueError, "4-D"),
    ("shape", lambda: qflash.attention(_half(), _half((1, 2, 32, 32)), _half()), ValueError,
     "shape mismatch"),
    ("head-dim", lambda: qflash.attention(*(_half((1, 2, 32, 40)) for _ in range(3))),
     ValueError, "head dim"),
    ("preset", lambda: qflash.attention(_half(), _half(), _half(), preset="Precise!"),
     ValueError, "unknown preset"),
    ("out-dtype", lambda: qflash.attention(_half(), _half(), _half(), out_dtype=torch.int8),
     ValueError, "out_dtype"),
]


@pytest.mark.parametrize("case", ERROR_CASES_HALF, ids=[c[0] for c in ERROR_CASES_HALF])
def test_attention_errors(case):
    _, fn, exc, pattern = case
    with pytest.raises(exc, match=pattern):
        fn()


def test_reference_int8_errors():
    with pytest.raises(ValueError, match="must be a CPU tensor"):
        qflash.reference_int8(_int8(), _int8(), _int8(), Q_SCALE, K_SCALE, V_SCALE)
    cpu = _int8(device="cpu")
    with pytest.raises(ValueError, match="head dim"):
        c = _int8((1, 2, 32, 16), device="cpu")
        qflash.reference_int8(c, c, c, Q_SCALE, K_SCALE, V_SCALE)
    with pytest.raises(ValueError, match="v_scale"):
        qflash.reference_int8(cpu, cpu, cpu, Q_SCALE, K_SCALE, -V_SCALE)
    with pytest.raises(ValueError, match="unknown preset"):
        qflash.reference_int8(cpu, cpu, cpu, Q_SCALE, K_SCALE, V_SCALE, preset="nope")
