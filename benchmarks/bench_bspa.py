"""BSPA's costs at the CPU cadences, measured in one run: the method's defaults on the CPU recipe
(EDSR-s ×4 of configs/cpu/edsr-s-x4.yaml, batch 16 of 32-px LR patches; a refresh every 500 of 3000
iterations = 50 inverse fine-tuning steps + parameter IG over M = 20 path points on 2 batches) and the
shortened grid configs/experiments/bspa-cpu.yaml (every 150 of 500 iterations, 25 fine-tuning steps):

    PYTHONPATH=src python benchmarks/bench_bspa.py [--repeats 5] [--threads 1] [--measure-steps 10 --measure-points 5]

1. the amortised refresh cost (fine-tuning + IG) as a fraction of the run's time (issue 11's goal: ≤ 10 %):
   refresh / (every × plain step + refresh), and over the whole recipe (5 refreshes in 3000 iterations);
2. the bank's scoring throughput (sub-images/s through :func:`attrsr.data.bank.score_crops`, i.e. crop
   stacking, the forward pass and the MSE) against a bare forward loop over the same, pre-stacked crops.

A fine-tuning step is a plain optimisation step (the method calls the engine's ``ctx.optimise``); the
IG is :func:`attrsr.attribution.parameters.parameter_integrated_gradients` itself. Wall-clock medians;
read the ratios (the machine's load moves both sides).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


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
    ap.add_argument("--measure-steps", type=int, default=0, help="fine-tuning steps timed (0: all); the rest scaled linearly")
    ap.add_argument("--measure-points", type=int, default=0, help="IG path points timed (0: all); the rest scaled linearly")
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
    t_step = _median_time(step, args.repeats * 3)

    ig_data = [batch_of(batch) for _ in range(args.ig_batches)]

    # Costs are linear in the counts: on a busy machine time fewer fine-tuning steps / IG path points
    # (--measure-steps, --measure-points) and scale to the recipe's (said in the output).
    n_ft = min(args.measure_steps or args.finetune_steps, args.finetune_steps)
    m_hi = min(args.measure_points or args.ig_steps, args.ig_steps)
    theta_us = {k: v.detach().clone() for k, v in model.state_dict().items()}
    t0 = time.perf_counter()
    for _ in range(n_ft):
        step()
    t_ft = (time.perf_counter() - t0) * args.finetune_steps / n_ft
    theta_is = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def ig(m: int) -> float:
        return _median_time(lambda: parameter_integrated_gradients(model, theta_us, theta_is, ig_data, steps=m), max(1, args.repeats // 2))

    t_hi = ig(m_hi)
    per_point = t_hi / m_hi  # the endpoint losses spread over the points: slightly high when scaled up
    scaled = f" (timed {n_ft} steps and M = {m_hi}; scaled linearly)" if (n_ft, m_hi) != (args.finetune_steps, args.ig_steps) else ""
    print(f"plain step (EDSR-s x4, batch {batch} of {size}-px LR): {1000 * t_step:.1f} ms; fine-tuning step "
          f"{1000 * t_ft / args.finetune_steps:.1f} ms; IG path point on {args.ig_batches} batches {1000 * per_point:.1f} ms "
          f"({per_point / t_step:.2f} steps){scaled}")
    cadences = [("this run's", args.every, args.finetune_steps, args.ig_steps, args.iterations)]
    if (args.every, args.finetune_steps, args.iterations) != (150, 25, 500):
        cadences.append(("bspa-cpu.yaml grid", 150, 25, args.ig_steps, 500))
    for label, every, ft, m, total in cadences:
        t_refresh = ft * t_ft / args.finetune_steps + m * per_point
        n_refresh = len(range(every, total, every))
        per_cycle = t_refresh / (every * t_step + t_refresh)
        whole = n_refresh * t_refresh / (total * t_step + n_refresh * t_refresh)
        print(f"{label} cadence (refresh every {every} of {total} iterations: {ft} fine-tuning steps + IG M={m}): refresh "
              f"{t_refresh:.2f} s = {t_refresh / t_step:.0f} steps; amortised {100 * per_cycle:.1f} % of run time per cycle, "
              f"{100 * whole:.1f} % over the run ({n_refresh} refreshes) [goal <= 10 %]")

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
    t_bank = _median_time(lambda: score_crops(scorer, crops, size, scale, 64), args.repeats)
    t_bare = _median_time(bare, args.repeats)
    n = len(crops)
    print(f"bank scoring (demo x4 scorer, batch 64): {n / t_bank:.0f} sub-images/s; bare forward loop {n / t_bare:.0f} "
          f"sub-images/s; scoring/bare time ratio {t_bank / t_bare:.2f}")


if __name__ == "__main__":
    main()
