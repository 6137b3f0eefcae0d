# SPDX-License-Identifier: Apache-2.0
"""Train a small timm ViT and a small Swin on scikit-learn's digits; compare attention kernels.

    python3 python/experiments/train_digits.py                 # GPU (needs qflash installed)
    OUT=/some/dir python3 python/experiments/train_digits.py   # also writes $OUT/digits_table.md
    python3 python/experiments/train_digits.py --device cpu --epochs 1 --skip-qflash   # dry run

Data: sklearn.datasets.load_digits (1,797 8x8 grey images, 16 levels, 10 classes; shipped with
scikit-learn, no download), pixels / 16, split with train_test_split(test_size=360,
random_state=0, stratify=labels): 1,437 train / 360 test.

Models (pretrained=False, random init, seeded; trained in fp32 with AdamW + cosine schedule and
random +-1 pixel shifts, then evaluated in eval mode with fp32 weights):
  ViT   timm VisionTransformer(img_size=8, patch_size=2, in_chans=1, embed_dim=64, depth=4,
        num_heads=2 -> head dim 32, mlp_ratio=2, class token): 16 patch tokens + 1 class token.
  Swin  timm SwinTransformer(img_size=8, patch_size=1, in_chans=1, embed_dim=64, depths=(2, 2),
        num_heads=(2, 4) -> head dim 32, window_size=4, mlp_ratio=2): stage 1 has 8 x 8 tokens in
        four 4 x 4 windows (N = 16), its second block shifted (timm's -100 mask); stage 2 has one
        4 x 4 window. Every window adds its learned relative-position bias (a 49 x heads table).
        A token is one pixel value here, and this model reaches only about 75 % Top-1 in 100
        epochs (patch_size=2 with window_size=2 reached 98.3 % in FP32 on the CPU, but its qflash
        rows have not been run on a GPU yet, so the table keeps this configuration).

The attention product softmax(q k^T / sqrt(D) + bias) v is computed by:

  FP32                 timm's own attention (unpatched; torch SDPA in fp32)
  FP16 SDPA            torch.nn.functional.scaled_dot_product_attention on q, k, v (and the
                       bias) cast to fp16
  qflash Paper/Precise qflash.timm.patch(model, preset=...): qflash.attention on fp16 q, k, v with
                       dynamic per-call, per-tensor scales (device calibration); Swin: the
                       relative-position table and the shifted-window mask as qflash inputs
  qflash * static      qflash.timm.calibrate on 4 training batches (512 images): static per-layer
                       per-tensor scales, int8 q/k/v codes, qflash.attention_int8 (int16 out)
  released QFlash      the paper's released Triton kernel (qflash_forward of --official, default
                       .baselines/qflash_official): its own per-call scales; Swin: its masked
                       kernel with timm's float bias + mask expanded to [B, H, N, N]
  I-ViT Shiftmax       an emulation, in PyTorch integer arithmetic, of I-ViT's Shiftmax (Li & Gu,
                       "I-ViT: Integer-only Quantization for Efficient Vision Transformer
                       Inference", ICCV 2023), see shiftmax_attention below

Every row reports Top-1 on the 360 test images, the agreement of its predictions with FP32's, the
SQNR of its logits against FP32's logits, and Top-1 / agreement on the 9 one-pixel shifts of the
test images (3,240 evaluations: one image is 0.03 points there, 0.28 on the plain split).
"""

import argparse
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (dry run)")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--calib-batches", type=int, default=4, help="batches of 128 training images")
    p.add_argument("--models", default="vit,swin", help="comma-separated: vit, swin")
    p.add_argument("--official", default=os.path.join(ROOT, ".baselines", "qflash_official"),
                   help="checkout of the released QFlash code (its row is skipped if missing)")
    p.add_argument("--skip-qflash", action="store_true",
                   help="skip the qflash rows (for a dry run without the qflash extension/GPU)")
    p.add_argument("--out", default=os.environ.get("OUT"),
                   help="directory for digits_table.md (default: $OUT, if set)")
    return p.parse_args()


# ---- data and model ---------------------------------------------------------------------------

def load_data(device):
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as e:
        sys.exit(f"train_digits.py needs scikit-learn (pip install scikit-learn): {e}")
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32) / 16.0   # [1797, 8, 8] in [0, 1]
    y = torch.tensor(d.target, dtype=torch.long)
    idx = torch.arange(len(y)).numpy()
    tr, te = train_test_split(idx, test_size=360, random_state=0, stratify=d.target)
    assert len(tr) == 1437 and len(te) == 360, (len(tr), len(te))
    xs = (x - 0.5) / 0.5
    xs = xs.unsqueeze(1)  # [N, 1, 8, 8]
    tr, te = torch.as_tensor(tr), torch.as_tensor(te)
    return (xs[tr].to(device), y[tr].to(device), xs[te].to(device), y[te].to(device))


def make_model(kind):
    try:
        from timm.models.swin_transformer import SwinTransformer
        from timm.models.vision_transformer import VisionTransformer
    except ImportError as e:
        sys.exit(f"train_digits.py needs timm (pip install timm): {e}")
    if kind == "vit":
        return VisionTransformer(img_size=8, patch_size=2, in_chans=1, num_classes=10,
                                 embed_dim=64, depth=4, num_heads=2, mlp_ratio=2.0, qkv_bias=True,
                                 class_token=True, global_pool="token", drop_rate=0.0,
                                 attn_drop_rate=0.0, proj_drop_rate=0.0, drop_path_rate=0.05)
    if kind == "swin":
        return SwinTransformer(img_size=8, patch_size=1, in_chans=1, num_classes=10, embed_dim=64,
                               depths=(2, 2), num_heads=(2, 4), window_size=4, mlp_ratio=2.0,
                               drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.05)
    raise ValueError(f"unknown model '{kind}' (use vit or swin)")


MODEL_LABELS = {
    "vit": "ViT img 8 / patch 2 / dim 64 / depth 4 / 2 heads of 32 (17 tokens)",
    "swin": "Swin img 8 / patch 1 / dim 64 / depths (2, 2) / heads (2, 4) of 32 / window 4 "
            "(16 tokens per window, shifted-window mask, relative-position bias)",
}


def shift_augment(x, gen):
    """Random shifts by -1, 0 or +1 pixel in each direction (zero padded, i.e. -1 after norm)."""
    n = x.shape[0]
    pad = F.pad(x, (1, 1, 1, 1), value=-1.0)
    dx = torch.randint(0, 3, (n,), generator=gen, device="cpu")
    dy = torch.randint(0, 3, (n,), generator=gen, device="cpu")
    out = torch.empty_like(x)
    for a in range(3):
        for b in range(3):
            sel = ((dy == a) & (dx == b)).nonzero().flatten().to(x.device)
            if sel.numel():
                out[sel] = pad[sel, :, a:a + 8, b:b + 8]
    return out


def train(model, xtr, ytr, args):
    gen = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    steps_per_epoch = math.ceil(len(ytr) / args.batch_size)
    total = max(1, args.epochs * steps_per_epoch)
    warm = min(100, total // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm
        else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm))))
    model.train()
    for epoch in range(args.epochs):
        perm = torch.randperm(len(ytr), generator=gen).to(ytr.device)
        for i in range(steps_per_epoch):
            idx = perm[i * args.batch_size:(i + 1) * args.batch_size]
            xb = shift_augment(xtr[idx], gen)
            loss = F.cross_entropy(model(xb), ytr[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if epoch == 0 or (epoch + 1) % 20 == 0 or epoch + 1 == args.epochs:
            print(f"epoch {epoch + 1:3d}/{args.epochs}  loss {loss.item():.4f}", flush=True)
    model.eval()


# ---- attention overrides for the non-qflash rows ----------------------------------------------

class override_attention:
    """Context manager: timm Attention / WindowAttention modules compute q, k, v as timm does and
    then `attend(q, k, v, scale, bias)` ([B, H, N, D] each; bias None or timm's float attn_mask
    [B or 1, H, N, N]: relative-position bias plus the shifted-window -100 mask) instead of timm's
    attention product."""

    def __init__(self, model, attend):
        from timm.models.swin_transformer import WindowAttention
        from timm.models.vision_transformer import Attention
        self.mods = [m for m in model.modules() if isinstance(m, (Attention, WindowAttention))]
        if not self.mods:
            raise RuntimeError("no timm attention module in the model")
        self.window_cls = WindowAttention
        self.attend = attend

    def __enter__(self):
        attend = self.attend

        def vit_forward(m, x, attn_mask=None, is_causal=False):
            assert attn_mask is None and not is_causal
            B, N, _ = x.shape
            qkv = m.qkv(x).reshape(B, N, 3, m.num_heads, m.head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
            q, k = m.q_norm(q), m.k_norm(k)
            o = attend(q, k, v, m.scale, None).to(x.dtype)
            o = o.transpose(1, 2).reshape(B, N, -1)
            o = m.norm(o) if hasattr(m, "norm") else o
            return m.proj_drop(m.proj(o))

        def swin_forward(m, x, mask=None):
            B_, N, _ = x.shape
            qkv = m.qkv(x).reshape(B_, N, 3, m.num_heads, -1).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
            bias = m._get_rel_pos_bias()  # [1, H, N, N]
            if mask is not None:
                nw = mask.shape[0]
                bias = bias + mask.view(1, nw, 1, N, N).expand(B_ // nw, -1, m.num_heads, -1, -1
                                                                ).reshape(-1, m.num_heads, N, N)
            o = attend(q, k, v, m.scale, bias).to(x.dtype)
            return m.proj_drop(m.proj(o.transpose(1, 2).reshape(B_, N, -1)))

        for m in self.mods:
            fwd = swin_forward if isinstance(m, self.window_cls) else vit_forward
            m.forward = fwd.__get__(m)
        return self

    def __exit__(self, *exc):
        for m in self.mods:
            del m.forward
        return False


def sdpa_fp16(q, k, v, scale, bias):
    if q.device.type == "cpu":  # CPU fp16 SDPA support varies by torch build: emulate the rounding
        o = F.scaled_dot_product_attention(
            q.half().float(), k.half().float(), v.half().float(), scale=scale,
            attn_mask=None if bias is None else bias.half().float())
        return o.half()
    return F.scaled_dot_product_attention(q.half(), k.half(), v.half(), scale=scale,
                                          attn_mask=None if bias is None else bias.half())


def load_official(path):
    """The released QFlash kernel module (qflash/kernel.py of a checkout), or None."""
    kernel = os.path.join(path, "qflash", "kernel.py")
    if not os.path.isfile(kernel):
        return None
    import importlib.util
    spec = importlib.util.spec_from_file_location("qflash_official_kernel", kernel)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def official_attention(official):
    def attend(q, k, v, scale, bias):
        if bias is not None:  # its masked kernel reads a [B, H, N, N] bias
            bias = bias.expand(q.shape[0], q.shape[1], -1, -1).float().contiguous()
        return official.qflash_forward(q.float().contiguous(), k.float().contiguous(),
                                       v.float().contiguous(), attn_mask=bias, scale=scale)
    return attend


def _quant8(t):
    """Symmetric per-tensor int8 quantization (dynamic amax), codes as float64, scale."""
    s = max(t.detach().abs().amax().item(), 1e-12) / 127.0
    return torch.clamp(torch.round(t.double() / s), -127, 127), s


def shiftmax_attention(q, k, v, scale, bias):
    """I-ViT-style integer attention, emulated exactly with integer-valued tensors.

    1. q, k, v -> int8 codes with dynamic symmetric per-tensor scales s_q, s_k, s_v.
    2. Integer logits L = q8 . k8 (int32 range; held in float64, exact), real value
       L * s_q * s_k * scale (+ the float bias for Swin).
    3. 8-bit logits: requantize to I = clamp(round(L * s_q s_k scale / S), -127, 127) with the
       dynamic per-tensor scale S = amax|logit| / 127 (I-ViT feeds Shiftmax low-bit scores).
    4. Shiftmax (I-ViT Eq. 10-13), all integer ops (>> is an arithmetic shift, i.e. floor):
         d   = I - rowmax(I)                        (<= 0)
         p   = d + (d >> 1) - (d >> 4)              (d * log2(e), 1.4375 for 1.4427)
         n   = max(1, floor(1 / S))                 (the integer standing for 1.0)
         qq  = floor(-p / n), r = -p - qq * n       (p * S = -qq - r * S, r * S in [0, 1))
         e   = (n + ((-r) >> 1)) >> min(qq, 31)     (2^(-r S) ~ 1 - r S / 2, linear fraction)
         f   = floor((2^31 - 1) / rowsum(e))
         P   = (e * f) >> 15                        (16-bit P at scale 2^-16, P <= 65535)
    5. O = P @ v8 (integer accumulation, exact in float64), real value O * 2^-16 * s_v.
    """
    q8, sq = _quant8(q)
    k8, sk = _quant8(k)
    v8, sv = _quant8(v)
    logits_int = q8 @ k8.transpose(-2, -1)                          # exact integers
    real = logits_int * (sq * sk * scale)
    if bias is not None:  # Swin: the float bias (and -100 mask) added before the 8-bit requantize
        real = real + bias.double()
    S = max(real.abs().amax().item(), 1e-12) / 127.0
    I = torch.clamp(torch.round(real / S), -127, 127).to(torch.int64)  # 8-bit logits
    d = I - I.amax(dim=-1, keepdim=True)
    p = d + (d >> 1) - (d >> 4)
    n = max(1, int(math.floor(1.0 / S)))
    qq = torch.div(-p, n, rounding_mode="floor")
    r = -p - qq * n
    e = (n + ((-r) >> 1)) >> torch.clamp(qq, max=31)
    f = torch.div(torch.full_like(e[..., :1], 2 ** 31 - 1), e.sum(dim=-1, keepdim=True),
                  rounding_mode="floor")
    P = (e * f) >> 15
    out = (P.double() @ v8) * (sv / 65536.0)
    return out.to(q.dtype)


# ---- evaluation -------------------------------------------------------------------------------

@torch.no_grad()
def logits_of(model, x):
    return model(x).float()


def sqnr_db(ref, out):
    err = (out.double() - ref.double()).norm()
    if err == 0:
        return float("inf")
    return (20 * torch.log10(ref.double().norm() / err)).item()


def check_qflash_device(args):
    if not args.skip_qflash and not args.device.startswith("cuda"):
        sys.exit("train_digits.py: the qflash rows need a CUDA device (add --skip-qflash)")


def shifted_nine(x):
    """The 9 one-pixel shifts (dx, dy in -1, 0, 1; -1 padding as in training) of every image, as
    one batch [9 N, 1, 8, 8]: a 9x larger evaluation of the same test images, so that Top-1
    resolves 0.03 points instead of 0.28."""
    pad = F.pad(x, (1, 1, 1, 1), value=-1.0)
    return torch.cat([pad[:, :, a:a + 8, b:b + 8] for a in range(3) for b in range(3)])


def evaluate(model, kind, xtr, xte, yte, args, official):
    """[(row name, (logits, logits on the 9 shifts) or None, note)] of one trained model."""
    rows = []
    x9 = shifted_nine(xte)

    def both(m):
        return logits_of(m, xte), logits_of(m, x9)

    ref = both(model)
    rows.append(("FP32 (timm, unpatched)", ref, "torch SDPA, fp32"))
    with override_attention(model, sdpa_fp16):
        rows.append(("FP16 SDPA", both(model), "q, k, v (and bias) cast to fp16"))
    n_attn = len(override_attention(model, None).mods)
    if args.skip_qflash:
        for name in ("qflash Paper (dynamic)", "qflash Precise (dynamic)",
                     "qflash Paper (static, calibrated)", "qflash Precise (static, calibrated)"):
            rows.append((name, None, "skipped (--skip-qflash)"))
    else:
        import qflash.timm as qt
        calib = [xtr[i * 128:(i + 1) * 128] for i in range(args.calib_batches)]
        for preset, label in (("paper", "Paper"), ("precise", "Precise")):
            names = qt.patch(model, preset=preset, strict=True)
            assert len(names) == n_attn, names
            lg = both(model)
            note = "qflash.attention, fp16 q/k/v, per-call scales"
            if kind == "swin":
                note += ", relative-position table + window mask"
            if not torch.isfinite(lg[0]).all():  # the device calibration rejected some scales
                note += " (NaN: scales outside the preset's range in some layer)"
            rows.append((f"qflash {label} (dynamic)", lg, note))
            try:
                scales = qt.calibrate(model, calib)
            except ValueError as e:  # the preset cannot represent a layer's scales
                print(f"{label} calibration rejected: {e}", flush=True)
                rows.append((f"qflash {label} (static, calibrated)", None,
                             "calibration rejected the scales: " + str(e).split(": ")[-1]))
            else:
                rows.append((f"qflash {label} (static, calibrated)", both(model),
                             f"attention_int8, int16 out, scales from {len(calib) * 128} "
                             "train images"))
                print(f"{kind} {label} static scales (q, k, v) per layer: " + ", ".join(
                    "(" + ", ".join(f"{s:.4g}" for s in t) + ")" for t in scales.values()),
                    flush=True)
            qt.unpatch(model)
        again = logits_of(model, xte)
        assert torch.equal(again, ref[0]), "unpatch did not restore the FP32 model"

    if official is None or args.device == "cpu":
        rows.append(("released QFlash (Triton)", None,
                     f"not run: no checkout at {args.official}" if official is None
                     else "not run: needs a CUDA device"))
    else:
        try:
            with override_attention(model, official_attention(official)):
                rows.append(("released QFlash (Triton)", both(model),
                             "qflash_forward, its own per-call scales"
                             + (", masked kernel, [B, H, N, N] bias" if kind == "swin" else "")))
        except Exception as e:  # report, do not hide, a failure of the released kernel
            rows.append(("released QFlash (Triton)", None,
                         f"failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}"))
    with override_attention(model, shiftmax_attention):
        rows.append(("I-ViT Shiftmax (emulated)", both(model),
                     "int8 q/k/v, 8-bit logits, shift exp, 16-bit P"))
    return rows


def table_of(rows, yte, header):
    ref, ref9 = rows[0][1]
    y9 = yte.repeat(9)
    lines = ["| Attention | Top-1 (%) | agrees with FP32 (%) | logits SQNR vs FP32 (dB) | "
             "Top-1, 9 shifts (%) | agrees, 9 shifts (%) | notes |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for name, lgs, note in rows:
        if lgs is None:
            lines.append(f"| {name} | - | - | - | - | - | {note} |")
            continue
        lg, lg9 = lgs
        if not (torch.isfinite(lg).all() and torch.isfinite(lg9).all()):
            note += "; NON-FINITE logits"
        top1 = 100.0 * (lg.argmax(-1) == yte).float().mean().item()
        agree = 100.0 * (lg.argmax(-1) == ref.argmax(-1)).float().mean().item()
        top9 = 100.0 * (lg9.argmax(-1) == y9).float().mean().item()
        agree9 = 100.0 * (lg9.argmax(-1) == ref9.argmax(-1)).float().mean().item()
        sq = sqnr_db(ref, lg)
        sq_s = "exact" if math.isinf(sq) else f"{sq:.1f}"
        lines.append(f"| {name} | {top1:.2f} | {agree:.2f} | {sq_s} | {top9:.2f} | {agree9:.2f} "
                     f"| {note} |")
    return header + "\n\n" + "\n".join(lines) + "\n"


def main():
    args = parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("train_digits.py: no CUDA device (use --device cpu --skip-qflash for a dry run)")
    check_qflash_device(args)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device(args.device)
    official = load_official(args.official)
    t0 = time.time()
    xtr, ytr, xte, yte = load_data(device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    tables = []
    for kind in [m.strip() for m in args.models.split(",") if m.strip()]:
        torch.manual_seed(args.seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(args.seed)
        model = make_model(kind).to(device)
        nparams = sum(p.numel() for p in model.parameters())
        print(f"digits: {len(ytr)} train / {len(yte)} test; {kind} {nparams} params, "
              f"device {device}", flush=True)
        t1 = time.time()
        train(model, xtr, ytr, args)
        print(f"{kind} trained in {time.time() - t1:.1f} s", flush=True)
        rows = evaluate(model, kind, xtr, xte, yte, args, official)
        header = (f"Digits (sklearn load_digits, 1,437 train / 360 test, seed {args.seed}), "
                  f"{MODEL_LABELS[kind]}, {nparams} parameters, {args.epochs} epochs, {gpu}, "
                  f"torch {torch.__version__}")
        tables.append(table_of(rows, yte, header))
        print()
        print(tables[-1], flush=True)
    print(f"total {time.time() - t0:.1f} s", flush=True)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, "digits_table.md")
        with open(path, "w") as f:
            f.write("\n".join(tables))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
