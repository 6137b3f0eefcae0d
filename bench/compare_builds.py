#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Kernel time of one build of libqflash_capi, for comparing builds (tuning experiments).

Prints, per workload, the queued kernel time (bench/benchmark.py's bench_queued: L2 flushed, the
launch enqueued behind a GPU spin) of each preset with s8 output on the int8-quantized inputs of
bench/benchmark.py, the FP16 SDPA backends on the same inputs unless --no-sdpa, and a hash of the
kernel's output, so that builds meant to compute the same function can be checked for it.

One build per process: the instances' registry tables are GNU-unique symbols, so a second copy
of the library loaded into the same process would run the first one's kernels. Compare builds by
running this once per library on the same warm GPU, e.g.

    for lib in a/libqflash_capi.so b/libqflash_capi.so; do
        python3 bench/compare_builds.py --lib $lib --suite large,dims; done

Suites: large, paper (batch 8), sweep (bench/benchmark.py's), dims (D = 80, 96, 128 at
Nq = Nkv = 4096, 197 and 49).
"""
import argparse
import ctypes
import hashlib
import os
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmark as B  # noqa: E402

DIMS = [(f"d{d}-n{n}", z, h, n, d) for d in (80, 96, 128)
        for (z, h, n) in ((4, 16, 4096), (64, 16, 197), (4096, 4, 49))]


def workloads(suites):
    out = []
    for suite in suites:
        if suite == "large":
            out += [(w, 1) for w in B.LARGE]
        elif suite == "paper":
            out += [(w, 8) for w in B.PAPER]
        elif suite == "sweep":
            out += [(w, 1) for w in B.SWEEP]
        elif suite == "dims":
            out += [(w, 1) for w in DIMS]
        else:
            raise SystemExit(f"unknown suite {suite}")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lib", required=True)
    ap.add_argument("--suite", default="large")
    ap.add_argument("--presets", default="fast")
    ap.add_argument("--no-sdpa", action="store_true")
    args = ap.parse_args()
    lib = B.load_lib(args.lib)
    print(f"device {torch.cuda.get_device_name()} lib {args.lib}", flush=True)
    backends = [] if args.no_sdpa else [("cudnn", SDPBackend.CUDNN_ATTENTION),
                                        ("flash", SDPBackend.FLASH_ATTENTION),
                                        ("efficient", SDPBackend.EFFICIENT_ATTENTION)]
    for (name, z, h, n, d), batch in workloads(args.suite.split(",")):
        torch.manual_seed(199)
        zb = z * batch
        qkv = torch.rand(3, zb, h, n, d, device="cuda", dtype=torch.float16) * 8 - 4
        q, k, v = qkv[0], qkv[1], qkv[2]
        cells = []
        for label, backend in backends:
            try:
                with sdpa_kernel(backend):
                    cells.append(f"{label} {B.bench_queued(lambda: F.scaled_dot_product_attention(q, k, v)) * 1e3:.1f}")
            except RuntimeError:
                cells.append(f"{label} -")
        (q8, sq), (k8, sk), (v8, sv) = B.quantize(q), B.quantize(k), B.quantize(v)
        shape = B.i64([zb, h, n, d])
        for preset in args.presets.split(","):
            plan = ctypes.c_void_p()
            scale = lambda x: (ctypes.c_float * 1)(x)  # noqa: E731
            B.check(lib, lib.qflash_plan_create(B.PRESETS[preset], B.OUTPUTS["s8"], d, 1, scale(sq), scale(sk),
                                                scale(sv), None, ctypes.byref(plan)), "plan")
            out = torch.empty(zb, h, n, d, device="cuda", dtype=torch.int8)
            strides = B.i64(list(q8.stride()) + list(k8.stride()) + list(v8.stride()) + list(out.stride()))
            stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)

            def call():
                return lib.qflash_plan_run(plan, q8.data_ptr(), k8.data_ptr(), v8.data_ptr(), out.data_ptr(),
                                           shape, shape, strides, stream)

            B.check(lib, call(), "run")
            torch.cuda.synchronize()
            us = B.bench_queued(call) * 1e3
            digest = hashlib.sha1(out.cpu().numpy().tobytes()).hexdigest()[:10]
            cells.append(f"{preset} {us:.1f} #{digest}")
            lib.qflash_plan_destroy(plan)
        print(f"{name} b{batch}: " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
