#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""How often a warp of the in-place kernel would move its frame, under other frame rules.

The in-place kernel (device/in_place_kernel.cuh) rescales a warp's accumulators whenever the
frame of any of its 16 rows changes at a 64-key step. This float model asks whether a frame
with hysteresis would skip most of those moves. Per row, with t = the step's largest logit in
octaves (log2 units):

  lag = 0, lift = 0    today's FrameSoftmax: the frame follows t down and up
  lag = L              keep the frame while t lies in [F - L, F]; otherwise move to t + lift
  lag = large          a running maximum (moves only up)

Printed per rule: the share of (warp, step) pairs, steps 1..end, in which some row moves, and
the mean distance in octaves between the frame and t (the P resolution given up, in bits).
Headroom limits of the row sum are ignored (they only force extra moves). Only numpy is needed.
"""
import argparse

import numpy as np


def warp_move_share(n_keys, head_dim, lag, lift, dist, rng, rows=256, step=64):
    shape_q, shape_k = (rows, head_dim), (n_keys, head_dim)
    if dist == "u4":  # the demo's inputs: U[-4, 4]
        q, k = rng.uniform(-4, 4, shape_q), rng.uniform(-4, 4, shape_k)
    elif dist == "u1":  # the demo's "flat" workload: U[-1, 1]
        q, k = rng.uniform(-1, 1, shape_q), rng.uniform(-1, 1, shape_k)
    else:  # standard normal
        q, k = rng.standard_normal(shape_q), rng.standard_normal(shape_k)
    logits = (q @ k.T) / np.sqrt(head_dim) * np.log2(np.e)  # octaves
    steps = (n_keys + step - 1) // step
    tile_max = np.stack([logits[:, i * step:(i + 1) * step].max(1) for i in range(steps)], 1)
    frame = tile_max[:, 0] + lift
    moved = np.zeros((rows, steps), bool)
    gap = []
    for t in range(1, steps):
        x = tile_max[:, t]
        new = np.where((x > frame) | (x < frame - lag), x + lift, frame)
        moved[:, t] = new != frame
        gap.append(new - x)
        frame = new
    warp_moves = moved.reshape(rows // 16, 16, steps).any(1)[:, 1:]
    return warp_moves.mean(), float(np.mean(gap)) if gap else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", default="197,1025,4096")
    ap.add_argument("--dists", default="u4,normal,u1")
    ap.add_argument("--rules", default="0:0,0.5:0,1:0,2:0,100:0,100:0.5,100:1,2:1",
                    help="lag:lift pairs in octaves")
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    rules = [tuple(map(float, r.split(":"))) for r in args.rules.split(",")]
    print("dist\tN\t" + "\t".join(f"lag{lag:g}/lift{lift:g}" for lag, lift in rules))
    for dist in args.dists.split(","):
        for n in map(int, args.lengths.split(",")):
            cells = []
            for lag, lift in rules:
                share, gap = warp_move_share(n, args.head_dim, lag, lift, dist, rng)
                cells.append(f"{share:.2f} ({gap:.2f})")
            print(f"{dist}\t{n}\t" + "\t".join(cells))


if __name__ == "__main__":
    main()
