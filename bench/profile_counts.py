#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""One kernel launch per preset on one shape, for Nsight Compute's instruction counts.

Run under ncu, e.g. (docs/benchmarks.md, "instructions per score"):
  ncu --kernel-name regex:attention --metrics smsp__inst_executed.sum,sm__warps_active.avg.pct_of_peak_sustained_active \
      python3 bench/profile_counts.py --lib build/bench/libqflash_capi.so --presets fast,precise,paper
Each launch is preceded by a line naming the preset and the number of scores (Z*H*N*N), so that
thread-instructions per score = 32 * smsp__inst_executed.sum / scores.
"""
import argparse
import ctypes
import sys

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import benchmark as bm  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", default="build/bench/libqflash_capi.so")
    ap.add_argument("--shape", default="1,12,4096,64", help="Z,H,N,D")
    ap.add_argument("--presets", default="fast,precise,paper")
    ap.add_argument("--output", default="s8")
    args = ap.parse_args()
    z, h, n, d = map(int, args.shape.split(","))
    lib = bm.load_lib(args.lib)
    torch.manual_seed(199)
    q8, k8, v8 = (torch.randint(-127, 128, (z, h, n, d), device="cuda", dtype=torch.int8) for _ in range(3))
    shape = bm.i64([z, h, n, d])
    fs = lambda x: (ctypes.c_float * 1)(x)  # noqa: E731
    for preset in args.presets.split(","):
        plan = ctypes.c_void_p()
        bm.check(lib, lib.qflash_plan_create(bm.PRESETS[preset], bm.OUTPUTS[args.output], d, 1, fs(0.03),
                                             fs(0.03), fs(0.03), None, ctypes.byref(plan)), "plan")
        out = torch.empty(z, h, n, d, device="cuda", dtype=bm.TORCH_OUT[args.output])
        strides = bm.i64(list(q8.stride()) + list(k8.stride()) + list(v8.stride()) + list(out.stride()))
        stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
        print(f"profile: preset {preset} output {args.output} shape {args.shape} scores {z * h * n * n}", flush=True)
        bm.check(lib, lib.qflash_plan_run(plan, q8.data_ptr(), k8.data_ptr(), v8.data_ptr(), out.data_ptr(), shape,
                                          shape, strides, stream), "run")
        torch.cuda.synchronize()
        lib.qflash_plan_destroy(plan)
    return 0


if __name__ == "__main__":
    sys.exit(main())
