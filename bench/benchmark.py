#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""qflash benchmark: our integer kernel next to PyTorch's FP16 SDPA backends, same process, same GPU.

Times are medians of triton.testing.do_bench (warm-up 10 ms, 100 ms of repeats, CUDA events, L2
flushed before every call), the method of the baseline anchors in shared/data. A second time per
row, "queued", is the kernel alone: the same flush and events, but each call is enqueued behind a
~0.1 ms GPU spin (torch.cuda._sleep), so the host's launch latency never shows in the timed
interval (do_bench can include it when the host falls behind the GPU, which on 10 us kernels is
part of the run-to-run spread). Rows:
  sdpa-{cudnn,flash,efficient}-fp16   torch.nn.functional.scaled_dot_product_attention, one backend
  qflash-<preset>-<out>               our kernel alone on int8 Q/K/V (inputs already quantized)
  qflash-<preset>-f16-e2e             fp16 in -> device quantize + calibrate -> kernel -> fp16 out
  qflash-official                     the released QFlash Triton kernel, if --official is given
  floor-read-qkv                      torch's amax over the fp16 q, k, v (one read of each, no
                                      write): the memory floor that issue 12's fp16 -> fp16
                                      target counts in (e2e <= kernel + 2 x this)
SQNR is against float64 attention on the same fp16 inputs. With --energy, each row also gets the
GPU's energy per call in mJ: NVML's total-energy counter (nvmlDeviceGetTotalEnergyConsumption,
read through ctypes from libnvidia-ml) over back-to-back calls for about 0.5 s, divided by the
number of calls; that includes the idle power of the card while it runs the calls.

Usage: python3 bench/benchmark.py --lib build/bench/libqflash_capi.so [--suite paper|large|sweep|all
       or a comma list, e.g. large,sweep]
       [--presets fast,precise,paper] [--official path/to/qflash-repo] [--energy] [--tsv out.tsv [--append]]
"""
import argparse
import ctypes
import datetime
import importlib.util
import math
import os
import subprocess
import sys

import torch
import torch.nn.functional as F
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel

PAPER = [("A1", 1, 3, 197, 64), ("A2", 1, 6, 197, 64), ("A3", 1, 12, 197, 64),
         ("A4", 64, 3, 49, 32), ("A5", 16, 6, 49, 32), ("A6", 4, 12, 49, 32), ("A7", 1, 24, 49, 32)]
LARGE = [("L1-vitb384", 32, 12, 577, 64), ("L2-vitl512", 16, 16, 1025, 64),
         ("L3-sam4096", 4, 12, 4096, 64), ("L4-d128", 4, 16, 4096, 128),
         ("L5-16k", 1, 8, 16384, 64), ("vitb-b256", 256, 12, 197, 64),
         ("swinT-s1-b64", 4096, 3, 49, 32)]
# Throughput against sequence length, FlashAttention's plot convention: 16k tokens per batch
# (Z = 16384 / N) and a model width of 2048 (H = 2048 / D).
SWEEP = [(f"sweep-d{d}-n{n}", 16384 // n, 2048 // d, n, d) for d in (64, 128)
         for n in (512, 1024, 2048, 4096, 8192, 16384)]
PRESETS = {"paper": 0, "precise": 1, "precise_cubic": 2, "fast": 3, "fast_long": 4}
OUTPUTS = {"s8": 0, "s16": 1, "s32": 2, "f16": 3}
TORCH_OUT = {"s8": torch.int8, "s16": torch.int16, "s32": torch.int32, "f16": torch.float16}


def load_lib(path):
    lib = ctypes.CDLL(path)
    i64p = ctypes.POINTER(ctypes.c_int64)
    fp = ctypes.POINTER(ctypes.c_float)
    lib.qflash_plan_create.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, fp, fp,
                                       fp, fp, ctypes.POINTER(ctypes.c_void_p)]
    lib.qflash_plan_run.argtypes = [ctypes.c_void_p] * 5 + [i64p, i64p, i64p, ctypes.c_void_p]
    lib.qflash_half_workspace_bytes.argtypes = [ctypes.c_int, ctypes.c_int, i64p, i64p]
    lib.qflash_half_workspace_bytes.restype = ctypes.c_int64
    lib.qflash_half_run.argtypes = [ctypes.c_int, ctypes.c_int] + [ctypes.c_void_p] * 4 + \
        [i64p, i64p, i64p, ctypes.c_void_p, ctypes.c_void_p]
    lib.qflash_status_name.restype = ctypes.c_char_p
    lib.qflash_plan_destroy.argtypes = [ctypes.c_void_p]
    return lib


def i64(values):
    return (ctypes.c_int64 * len(values))(*values)


def check(lib, status, what):
    if status != 0:
        raise RuntimeError(f"{what}: {lib.qflash_status_name(status).decode()}")


def quantize(x):
    """Per-tensor symmetric int8, the library's convention (scale = amax / 127, round half even)."""
    scale = (x.abs().amax().float() / 127.0).item()
    return torch.clamp(torch.round(x.float() / scale), -127, 127).to(torch.int8), scale


def sqnr_db(ref, out):
    ref = ref.double()
    return (20 * torch.log10(ref.norm() / (out.double() - ref).norm())).item()


def bench(fn):
    return triton.testing.do_bench(fn, warmup=10, rep=100, return_mode="median")


_FLUSH = None


def bench_queued(fn, calls=200, spin_cycles=200_000):
    """Median kernel time in ms with the launch queued before the timed interval opens."""
    global _FLUSH
    if _FLUSH is None:
        _FLUSH = torch.empty(256 * 1024 * 1024 // 4, dtype=torch.int, device="cuda")
    fn()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(calls)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(calls)]
    for start, end in zip(starts, ends):
        _FLUSH.zero_()
        torch.cuda._sleep(spin_cycles)  # the GPU waits here while the host enqueues the rest
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    times = sorted(start.elapsed_time(end) for start, end in zip(starts, ends))
    return times[len(times) // 2]


class Nvml:
    """The total-energy counter of the GPU that torch uses (NVML index = CUDA index 0 here)."""

    def __init__(self):
        self.lib = ctypes.CDLL("libnvidia-ml.so.1")
        if self.lib.nvmlInit_v2() != 0:
            raise RuntimeError("nvmlInit failed")
        self.handle = ctypes.c_void_p()
        bus = torch.cuda.get_device_properties(torch.cuda.current_device())
        pci = f"{bus.pci_domain_id:08x}:{bus.pci_bus_id:02x}:{bus.pci_device_id:02x}.0".encode()
        if self.lib.nvmlDeviceGetHandleByPciBusId_v2(pci, ctypes.byref(self.handle)) != 0:
            raise RuntimeError(f"no NVML device at {pci.decode()}")

    def millijoules(self):
        value = ctypes.c_ulonglong()
        if self.lib.nvmlDeviceGetTotalEnergyConsumption(self.handle, ctypes.byref(value)) != 0:
            raise RuntimeError("nvmlDeviceGetTotalEnergyConsumption failed")
        return value.value


_NVML = None


def energy_per_call(fn, seconds=0.5):
    """mJ per call: back-to-back calls for about `seconds`, NVML energy before and after."""
    fn()
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        fn()
    end.record()
    torch.cuda.synchronize()
    calls = max(20, int(seconds * 1000 / max(start.elapsed_time(end) / 10, 1e-3)))
    before = _NVML.millijoules()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (_NVML.millijoules() - before) / calls


def official_launcher(official, q, k, v):
    """The released kernel's launch closure: the function its latency mode hands to do_bench."""
    captured = {}
    real = triton.testing.do_bench

    def capture(fn, *args, **kwargs):
        captured["fn"] = fn
        return 0.0

    triton.testing.do_bench = capture
    try:
        official.qflash_forward(q, k, v, return_mode="latency")
    finally:
        triton.testing.do_bench = real
    return captured.get("fn")


def tsv_row(r):
    return f"{r[0]}\t{r[1]}\t{r[2]}\t{r[3]:.4f}\t{r[4]:.1f}\t{r[5]:.2f}\t{r[6]:.4f}\t{r[7]:.3f}\n"


def run_workload(lib, name, z, h, n, d, batch, args, rows, official, sqnr=True):
    torch.manual_seed(199)
    zb = z * batch
    qkv = torch.rand(3, zb, h, n, d, device="cuda", dtype=torch.float16) * 8 - 4
    q, k, v = qkv[0], qkv[1], qkv[2]
    ops = 4 * zb * h * n * n * d
    # float64 reference (the math backend materializes Z*H*N*N scores); the sweep skips it (NaN SQNR)
    ref = (F.scaled_dot_product_attention(q.double(), k.double(), v.double())
           if sqnr and zb * h * n * n <= 2**31 else None)

    def add(method, ms, out=None, scale=1.0, fn=None):
        s = sqnr_db(ref, out.float() * scale) if (ref is not None and out is not None) else float("nan")
        queued = bench_queued(fn) if fn is not None else float("nan")
        mj = energy_per_call(fn) if (fn is not None and _NVML is not None) else float("nan")
        rows.append((name, batch, method, ms, ops / (ms * 1e-3) / 1e12, s, queued, mj))
        if args.tsv:  # row by row, so that an interrupted run keeps what it measured
            with open(args.tsv, "a") as f:
                f.write(tsv_row(rows[-1]))
        print(f"{name:>13} b{batch:<4} {method:<28} {ms * 1000:9.1f} us {ops / (ms * 1e-3) / 1e12:8.1f} TOPS "
              f"{s:7.2f} dB   queued {queued * 1000:7.1f} us {mj:8.2f} mJ", flush=True)

    for label, backend in (("sdpa-cudnn-fp16", SDPBackend.CUDNN_ATTENTION),
                           ("sdpa-flash-fp16", SDPBackend.FLASH_ATTENTION),
                           ("sdpa-efficient-fp16", SDPBackend.EFFICIENT_ATTENTION)):
        try:
            with sdpa_kernel(backend):
                out = F.scaled_dot_product_attention(q, k, v)
                sdpa = lambda: F.scaled_dot_product_attention(q, k, v)  # noqa: E731
                add(label, bench(sdpa), out, fn=sdpa)
        except RuntimeError as err:
            print(f"{label}: unavailable ({err})".splitlines()[0])

    read_qkv = lambda: qkv.amax()  # noqa: E731
    add("floor-read-qkv", bench(read_qkv), fn=read_qkv)

    q8, sq = quantize(q)
    k8, sk = quantize(k)
    v8, sv = quantize(v)
    q8, k8, v8 = q8.contiguous(), k8.contiguous(), v8.contiguous()
    shape = i64([zb, h, n, d])
    for preset in args.presets:
        for out_name in args.outputs:
            plan = ctypes.c_void_p()
            fs = lambda x: (ctypes.c_float * 1)(x)
            check(lib, lib.qflash_plan_create(PRESETS[preset], OUTPUTS[out_name], d, 1, fs(sq), fs(sk), fs(sv),
                                              None, ctypes.byref(plan)), "plan")
            out = torch.empty(zb, h, n, d, device="cuda", dtype=TORCH_OUT[out_name])
            strides = i64(list(q8.stride()) + list(k8.stride()) + list(v8.stride()) + list(out.stride()))
            stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)

            def call():
                return lib.qflash_plan_run(plan, q8.data_ptr(), k8.data_ptr(), v8.data_ptr(), out.data_ptr(),
                                           shape, shape, strides, stream)

            check(lib, call(), "run")
            torch.cuda.synchronize()
            divisor = {"s8": 1.0, "s16": 256.0, "s32": 65536.0, "f16": None}[out_name]
            scale = 1.0 if divisor is None else sv / divisor
            add(f"qflash-{preset}-{out_name}", bench(call), out, scale, fn=call)
            lib.qflash_plan_destroy(plan)

        # fp16 in -> fp16 out, quantization and calibration on the device.
        out = torch.empty(zb, h, n, d, device="cuda", dtype=torch.float16)
        ws_bytes = lib.qflash_half_workspace_bytes(PRESETS[preset], OUTPUTS["f16"], shape, shape)
        ws = torch.empty(ws_bytes, device="cuda", dtype=torch.uint8)
        strides = i64(list(q.stride()) + list(k.stride()) + list(v.stride()) + list(out.stride()))
        stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)

        def call_e2e():
            return lib.qflash_half_run(PRESETS[preset], OUTPUTS["f16"], q.data_ptr(), k.data_ptr(), v.data_ptr(),
                                       out.data_ptr(), shape, shape, strides, ws.data_ptr(), stream)

        check(lib, call_e2e(), "e2e")
        torch.cuda.synchronize()
        add(f"qflash-{preset}-f16-e2e", bench(call_e2e), out, fn=call_e2e)

    if official is not None:
        out = official.qflash_forward(q, k, v)
        add("qflash-official", official.qflash_forward(qkv[0], qkv[1], qkv[2], return_mode="latency"), out,
            fn=official_launcher(official, qkv[0], qkv[1], qkv[2]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", default="build/bench/libqflash_capi.so")
    ap.add_argument("--suite", default="paper",
                    help="paper, large, sweep (N = 512..16384 at D = 64 and 128), all (= large,paper), "
                         "or a comma list")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--presets", default="precise,paper")
    ap.add_argument("--outputs", default="s8")
    ap.add_argument("--official", default=None, help="path of a checkout of the released QFlash code")
    ap.add_argument("--tsv", default=None)
    ap.add_argument("--append", action="store_true",
                    help="add this run's rows (after a comment line with its header) to an existing --tsv")
    ap.add_argument("--energy", action="store_true", help="NVML energy per call for every row")
    args = ap.parse_args()
    if args.energy:
        global _NVML
        _NVML = Nvml()
    args.presets = args.presets.split(",")
    args.outputs = args.outputs.split(",")
    lib = load_lib(args.lib)
    official = None
    if args.official:
        spec = importlib.util.spec_from_file_location("qflash_official_kernel",
                                                      os.path.join(args.official, "qflash", "kernel.py"))
        official = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(official)
    commit = os.environ.get("QFLASH_COMMIT") or subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip() or "unknown"
    header = (f"# {torch.cuda.get_device_name()} | torch {torch.__version__} | triton {triton.__version__} | "
              f"{datetime.date.today()} | commit {commit}")
    print(header)
    if args.tsv and args.append and os.path.exists(args.tsv):
        with open(args.tsv, "a") as f:
            f.write(header + "\n")
    elif args.tsv:
        with open(args.tsv, "w") as f:
            f.write(header + "\n")
            f.write("workload\tbatch\tmethod\tms\tTOPS\tSQNR_dB\tqueued_ms\tmJ_per_call\n")
    rows = []
    suites = {"paper": [(w, b) for w in PAPER for b in map(int, args.batches.split(","))],
              "large": [(w, 1) for w in LARGE], "sweep": [(w, 1) for w in SWEEP]}
    names = ["large", "paper"] if args.suite == "all" else args.suite.split(",")
    unknown = [n for n in names if n not in suites]
    if unknown:
        ap.error(f"--suite: unknown {', '.join(unknown)} (paper, large, sweep, all)")
    todo = [(item, n != "sweep") for n in names for item in suites[n]]
    for ((name, z, h, n, d), batch), sqnr in todo:
        run_workload(lib, name, z, h, n, d, batch, args, rows, official, sqnr=sqnr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
