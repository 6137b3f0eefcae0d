#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Plots of a bench/benchmark.py TSV (--tsv): the PNGs of docs/benchmarks.md.

  throughput_vs_seqlen.png  TOPS (4 Z H N^2 D / queued time) against N, one panel per head dim,
                            from the rows of `--suite sweep`
  workload_times.png        queued (kernel-alone) time of every other workload, one group per
                            workload, log scale

Usage: python3 bench/plot.py bench.tsv [--out docs/img]   (needs matplotlib)
"""
import argparse
import collections
import math
import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Methods in legend order; rows of other methods are left out.
METHODS = ["sdpa-cudnn-fp16", "sdpa-flash-fp16", "sdpa-efficient-fp16", "qflash-official",
           "qflash-fast-s8", "qflash-fast-f16", "qflash-fast-f16-e2e", "qflash-precise-s8",
           "floor-read-qkv"]
LABELS = {"sdpa-cudnn-fp16": "cuDNN FP16", "sdpa-flash-fp16": "FLASH FP16",
          "sdpa-efficient-fp16": "EFFICIENT FP16", "qflash-official": "released QFlash (int8)",
          "qflash-fast-s8": "qflash Fast (int8 in, s8 out)", "qflash-fast-f16": "qflash Fast (int8 in, f16 out)",
          "qflash-fast-f16-e2e": "qflash Fast fp16 -> fp16 (quantize included)",
          "qflash-precise-s8": "qflash Precise (int8 in, s8 out)", "floor-read-qkv": "read q, k, v once (floor)"}


def read_tsv(path):
    header, rows = "", []
    with open(path) as f:
        for line in f:
            if line.startswith("#"):  # the first comment line is the run's header (device, commit)
                header = header or line[1:].strip()
                continue
            cells = line.rstrip("\n").split("\t")
            if cells[0] == "workload":
                continue
            rows.append({"workload": cells[0], "batch": int(cells[1]), "method": cells[2],
                         "ms": float(cells[3]), "tops": float(cells[4]), "queued_ms": float(cells[6])})
    return header, rows


def plot_sweep(header, rows, out):
    sweep = [r for r in rows if r["workload"].startswith("sweep-")]
    if not sweep:
        return None
    dims = sorted({int(re.match(r"sweep-d(\d+)-n(\d+)", r["workload"]).group(1)) for r in sweep})
    fig, axes = plt.subplots(1, len(dims), figsize=(6.5 * len(dims), 5.2), squeeze=False)
    for ax, d in zip(axes[0], dims):
        series = collections.defaultdict(list)
        for r in sweep:
            m = re.match(r"sweep-d(\d+)-n(\d+)", r["workload"])
            if int(m.group(1)) != d or r["method"] not in METHODS or r["method"] == "floor-read-qkv":
                continue
            n = int(m.group(2))
            z, h = 16384 // n, 2048 // d
            series[r["method"]].append((n, 4 * z * h * n * n * d / (r["queued_ms"] * 1e-3) / 1e12))
        for method in METHODS:
            if method in series:
                pts = sorted(series[method])
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=LABELS[method])
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length N (Z = 16384 / N, H = 2048 / D)")
        ax.set_ylabel("TOPS (4 Z H N² D / kernel time)")
        ax.set_title(f"head dim {d}")
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    fig.suptitle(header, fontsize=8)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    path = os.path.join(out, "throughput_vs_seqlen.png")
    fig.savefig(path, dpi=110)
    return path


def plot_workloads(header, rows, out):
    other = [r for r in rows if not r["workload"].startswith("sweep-") and r["method"] in METHODS]
    if not other:
        return None
    workloads = list(dict.fromkeys(f"{r['workload']} b{r['batch']}" for r in other))
    methods = [m for m in METHODS if any(r["method"] == m for r in other)]
    times = {(f"{r['workload']} b{r['batch']}", r["method"]): r["queued_ms"] * 1000 for r in other}
    fig, ax = plt.subplots(figsize=(min(16, max(8, 0.9 * len(workloads))), 5.8))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        xs = [j + i * width for j in range(len(workloads))]
        ys = [times.get((w, method), math.nan) for w in workloads]
        ax.bar(xs, ys, width, label=LABELS[method])
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(workloads))])
    ax.set_xticklabels(workloads, rotation=30, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("kernel time, queued median (us, log scale)")
    ax.grid(True, axis="y", alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=4, fontsize=8)
    fig.suptitle(header, fontsize=8)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    path = os.path.join(out, "workload_times.png")
    fig.savefig(path, dpi=110)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tsv")
    ap.add_argument("--out", default=".")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    header, rows = read_tsv(args.tsv)
    for path in (plot_sweep(header, rows, args.out), plot_workloads(header, rows, args.out)):
        if path:
            print("wrote", path)


if __name__ == "__main__":
    main()
