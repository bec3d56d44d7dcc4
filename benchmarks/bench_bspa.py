"""BSPA's costs at the CPU cadences, measured in one run: the method's defaults on the CPU recipe
(EDSR-s ×4 of configs/cpu/edsr-s-x4.yaml, batch 16 of 32-px LR patches; a refresh every 500 of 3000
iterations = 50 inverse fine-tuning steps + parameter IG over M = 20 path points on 2 batches) and the
shortened grid configs/experiments/bspa-cpu.yaml (every 150 of 500 iterations, 25 fine-tuning steps):

    PYTHONPATH=src python benchmarks/bench_bspa.py [--repeats 5] [--threads 1] [--measure-points 4]

1. the amortised refresh cost (fine-tuning + IG) as a fraction of the run's time (issue 11's goal: ≤ 10 %):
   refresh / (every × plain step + refresh), and over the whole run;
2. the bank's scoring throughput (sub-images/s through :func:`attrsr.data.bank.score_crops`, i.e. crop
   stacking, the forward pass and the MSE) against a bare forward loop over the same, pre-stacked crops.

A fine-tuning step is a plain optimisation step (the method calls the engine's ``ctx.optimise``), so
only the IG's cost per path point relative to a plain step is timed (its
:func:`attrsr.attribution.parameters.parameter_integrated_gradients` itself); every ratio is timed in
interleaved rounds (medians), so a busy machine's load moves both sides alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--every", type=int, default=500)
    ap.add_argument("--iterations", type=int, default=3000)
    ap.add_argument("--finetune-steps", type=int, default=50)
    ap.add_argument("--ig-steps", type=int, default=20)
    ap.add_argument("--ig-batches", type=int, default=2)
    ap.add_argument("--sub-images", type=int, default=512, help="sub-images scored in the throughput part")
    ap.add_argument("--measure-points", type=int, default=4, help="IG path points per timed round")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from skimage import data

    from attrsr import models
    from attrsr.attribution.parameters import parameter_integrated_gradients
    from attrsr.data.bank import score_crops
    from attrsr.models.pretrained import load_default
    from attrsr.resize import imresize

    scale, size, batch = 4, 32, 16
    torch.manual_seed(0)
    photos = [torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im in (data.astronaut(), data.chelsea(), data.coffee())]
    rng = np.random.default_rng(0)

    def batch_of(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        hr = []
        for _ in range(n):
            p = photos[rng.integers(len(photos))]
            t, l = rng.integers(0, p.shape[1] - size * scale), rng.integers(0, p.shape[2] - size * scale)
            hr.append(p[:, t : t + size * scale, l : l + size * scale])
        hr = torch.stack(hr)
        return torch.stack([imresize(x, 1 / scale) for x in hr]).clamp(0, 1), hr

    model = models.create("edsr-baseline", scale=scale, n_resblocks=8, n_feats=32)
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)
    lr, hr = batch_of(batch)

    def step() -> None:
        loss = (model(lr) - hr).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up
    ig_data = [batch_of(batch) for _ in range(args.ig_batches)]
    theta_us = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for _ in range(3):
        step()
    theta_is = {k: v.detach().clone() for k, v in model.state_dict().items()}

    # A fine-tuning step *is* a plain step (the method calls the engine's ctx.optimise), so a refresh
    # costs finetune_steps + M × (IG path point / plain step) steps. That ratio is timed interleaved,
    # round by round, so both sides see the same load (median over rounds).
    m = args.measure_points
    point_ratio, t_steps = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        step()
        t1 = time.perf_counter()
        parameter_integrated_gradients(model, theta_us, theta_is, ig_data, steps=m)
        t2 = time.perf_counter()
        t_steps.append(t1 - t0)
        point_ratio.append((t2 - t1) / m / (t1 - t0))
    ratio = statistics.median(point_ratio)
    print(f"plain step (EDSR-s x4, batch {batch} of {size}-px LR): {1000 * statistics.median(t_steps):.0f} ms (median); "
          f"an IG path point on {args.ig_batches} batches = {ratio:.2f} plain steps (median of {args.repeats} interleaved "
          f"rounds, M = {m} per round, the endpoint losses included: slightly high)")
    cadences = [("the method's defaults", args.every, args.finetune_steps, args.ig_steps, args.iterations)]
    if (args.every, args.finetune_steps, args.iterations) != (150, 25, 500):
        cadences.append(("bspa-cpu.yaml grid", 150, 25, args.ig_steps, 500))
    for label, every, ft, steps_m, total in cadences:
        refresh = ft + steps_m * ratio  # in plain steps
        n_refresh = len(range(every, total, every))
        print(f"{label}: refresh every {every} of {total} iterations = {ft} fine-tuning steps + IG M={steps_m} = "
              f"{refresh:.0f} steps; amortised {100 * refresh / (every + refresh):.1f} % of run time per cycle, "
              f"{100 * n_refresh * refresh / (total + n_refresh * refresh):.1f} % over the run ({n_refresh} refreshes) [goal <= 10 %]")

    scorer = load_default(scale).eval()
    big = [(np.ascontiguousarray((p.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))) for p in photos]
    big_lr = [(imresize(p, 1 / scale).clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for p in photos]
    crops = []
    for _ in range(args.sub_images):
        i = int(rng.integers(len(big)))
        h, w = big_lr[i].shape[:2]
        crops.append((big_lr[i], big[i], int(rng.integers(0, h - size)), int(rng.integers(0, w - size))))
    stacked = [torch.stack([torch.from_numpy(np.array(lr_[t : t + size, l : l + size])).permute(2, 0, 1).float() / 255
                            for lr_, _, t, l in crops[lo : lo + 64]]) for lo in range(0, len(crops), 64)]

    def bare() -> None:
        with torch.no_grad():
            for x in stacked:
                scorer(x)

    score_crops(scorer, crops[:64], size, scale, 64)  # warm-up
    rates, ratios = [], []
    for _ in range(args.repeats):  # interleaved, as above
        t0 = time.perf_counter()
        score_crops(scorer, crops, size, scale, 64)
        t1 = time.perf_counter()
        bare()
        t2 = time.perf_counter()
        rates.append((len(crops) / (t1 - t0), len(crops) / (t2 - t1)))
        ratios.append((t1 - t0) / (t2 - t1))
    print(f"bank scoring (demo x4 scorer, batch 64): {statistics.median(r[0] for r in rates):.0f} sub-images/s; bare forward "
          f"loop {statistics.median(r[1] for r in rates):.0f} sub-images/s; scoring/bare time {statistics.median(ratios):.2f}x "
          f"(median of {args.repeats} interleaved rounds)")


if __name__ == "__main__":
    main()
