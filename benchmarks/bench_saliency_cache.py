"""Cost of ADD's saliency cache against the CPU recipe's run, measured in one process.

    PYTHONPATH=src python benchmarks/bench_saliency_cache.py [--images 12] [--threads 1]

CAM saliency (guided IG, 64-px LR tiles) of a spread sample of the 291:train images with each saliency
setting below, scaled to all training images, against a plain training step of the CPU recipe (EDSR-s
×2, batch 16, 32-px LR) × its 3000 iterations. Issue 10's goal: the cache ≤ 10 % of one recipe run.
The cache is built once per (model, settings, images) and reused by every later run and seed, so the
grid's share is also printed (6 ADD runs in configs/experiments/add-cpu.yaml). Interleaved timings;
read the ratios (the machine's load moves both sides).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

SETTINGS = {  # name: (saliency model, weights under $ATTRSR_DATA, CAM steps)
    "demo, 8 steps": ("demo", None, 8),
    "demo, 4 steps (add-cpu grid)": ("demo", None, 4),
    "fsrcnn x2, 8 steps": ("fsrcnn", "weights/fsrcnn/fsrcnn_x2.pth", 8),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--recipe-iterations", type=int, default=3000)
    ap.add_argument("--grid-runs", type=int, default=6)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from attrsr import models
    from attrsr.data import open_dataset
    from attrsr.datadir import data_root
    from attrsr.methods.augment import SaliencySource, saliency_model, cam_tiles

    ds = open_dataset("291:train", 2)
    picks = np.linspace(0, len(ds) - 1, args.images).round().astype(int)
    lrs = [(ds[int(i)].lr.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy() for i in picks]
    share = sum(x.shape[0] * x.shape[1] for x in lrs) / sum(np.prod(ds.lr_size(i)) for i in range(len(ds)))

    torch.manual_seed(0)
    net = models.create("edsr-baseline", scale=2, n_resblocks=8, n_feats=32)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    lr_b, hr_b = torch.rand(16, 3, 32, 32), torch.rand(16, 3, 64, 64)

    def plain_step() -> float:
        t0 = time.perf_counter()
        loss = (net(lr_b) - hr_b).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    sources = {}
    for name, (model, weights, steps) in SETTINGS.items():
        if weights and not (data_root() / weights).is_file():
            print(f"  {name}: skipped ({data_root() / weights} missing)")
            continue
        src = SaliencySource(model=model, weights=str(data_root() / weights) if weights else None, steps=steps)
        sources[name] = (src, saliency_model(src, 2).eval())
    for _ in range(3):
        plain_step()
    step_times, cam_times = [], {name: 0.0 for name in sources}
    for lr in lrs:  # interleaved: each image's CAMs next to a few plain steps
        step_times += [plain_step() for _ in range(3)]
        for name, (src, model) in sources.items():
            t0 = time.perf_counter()
            cam_tiles(model, lr, src)
            cam_times[name] += time.perf_counter() - t0
    step = float(np.median(step_times))
    run_s = step * args.recipe_iterations
    print(f"plain step {step * 1e3:.1f} ms (threads={args.threads}); recipe run ≈ {run_s / 60:.1f} min "
          f"({args.recipe_iterations} steps); sample = {len(lrs)} images, {100 * share:.1f} % of the 291:train LR pixels")
    for name, t in cam_times.items():
        cache_s = t / share
        print(f"  {name:30s} cache {cache_s / 60:5.1f} min = {100 * cache_s / run_s:6.1f} % of one recipe run, "
              f"{100 * cache_s / (args.grid_runs * run_s):5.1f} % of {args.grid_runs} ADD runs that share it")


if __name__ == "__main__":
    main()
