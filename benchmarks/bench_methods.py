"""Per-step overhead of the training methods against a plain training step (EDSR-s ×2, batch 16,
32-px LR patches — the CPU recipe's step), measured in one run, interleaved, median of repeats.

    PYTHONPATH=src python benchmarks/bench_methods.py [--repeats 15] [--threads 1]

Prints for each augmentation op (issue 10's goal: ≤ 5 % of a step) the op's own time as a fraction
of a plain step, and for the attribution prior (issue 12's goal: ≤ 1.6×; the thesis reports 2×) the
prior step's time as a multiple of a plain step and the self-similarity extractor's share of it, with
the fast conv double backprop (the method's default) and with PyTorch's own.
Timings are wall-clock medians; ratios are what to read (the machine's load moves both sides).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from skimage import data

    from attrsr import models
    from attrsr.attribution import double_backprop
    from attrsr.attribution.prior import attribution_prior_loss, region_input_gradient
    from attrsr.attribution.selfsim import prior_regions
    from attrsr.data import augment as aug
    from attrsr.resize import imresize

    torch.manual_seed(0)
    model = models.create("edsr-baseline", scale=2, n_resblocks=8, n_feats=32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    photo = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float() / 255
    rng = np.random.default_rng(0)
    corners = rng.integers(0, 512 - 64, size=(16, 2))
    hr = torch.stack([photo[:, r : r + 64, c : c + 64] for r, c in corners])
    lr = torch.stack([imresize(x, 0.5) for x in hr]).clamp(0, 1)

    def plain() -> None:
        loss = (model(lr) - hr).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    def prior_step(fast: bool) -> float:
        attachment = double_backprop.attach(model) if fast else None
        x = lr.clone().requires_grad_(True)
        t0 = time.perf_counter()
        regions = prior_regions(x.detach(), n_ssr=3, threshold=0.0)
        extractor = time.perf_counter() - t0
        sr = model(x)
        loss = (sr - hr).abs().mean() + 1e-4 * attribution_prior_loss(region_input_gradient(sr, x, regions.poi, 2), regions).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if attachment is not None:
            attachment.remove()
        return extractor

    ops = {
        "blend": lambda: aug.blend(lr, hr, rng), "rgb": lambda: aug.rgb_permute(lr, hr, rng),
        "mixup": lambda: aug.mixup(lr, hr, rng), "cutout": lambda: aug.cutout(lr, hr, rng, 2),
        "cutmix": lambda: aug.cutmix(lr, hr, rng, 2), "cutmixup": lambda: aug.cutmixup(lr, hr, rng, 2),
        "cutblur": lambda: aug.cutblur(lr, hr, rng, 2),
        "add boxes": lambda: aug.saliency_boxes(torch.rand(16, 32, 32), 22, 22),
        "add+ blocks": lambda: aug.saliency_blocks(torch.rand(16, 32, 32), 11, 11, 3),
    }
    times: dict[str, list[float]] = {k: [] for k in ["plain", "prior", "extractor", "prior torch", *ops]}
    for _ in range(2):  # warm-up
        plain(), prior_step(True), prior_step(False)
    for _ in range(args.repeats):
        t0 = time.perf_counter(); plain(); times["plain"].append(time.perf_counter() - t0)
        t0 = time.perf_counter(); ext = prior_step(True); times["prior"].append(time.perf_counter() - t0); times["extractor"].append(ext)
        t0 = time.perf_counter(); prior_step(False); times["prior torch"].append(time.perf_counter() - t0)
        for name, fn in ops.items():
            t0 = time.perf_counter(); fn(); times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"plain step (EDSR-s x2, batch 16, 32-px LR): {med['plain'] * 1e3:.1f} ms, threads={args.threads}")
    for name in ops:
        print(f"  {name:12s} {100 * med[name] / med['plain']:6.2f} % of a plain step")
    print(f"attribution prior step: {med['prior'] / med['plain']:.2f}x a plain step "
          f"(extractor {100 * med['extractor'] / med['prior']:.1f} % of it); with PyTorch's own conv double "
          f"backward (fast_double_backprop: false): {med['prior torch'] / med['plain']:.2f}x")


if __name__ == "__main__":
    main()
