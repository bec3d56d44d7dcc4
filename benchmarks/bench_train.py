"""Training throughput and data-loading overhead of the engine (EDSR-baseline x4, CPU).

    PYTHONPATH=src python benchmarks/bench_train.py [--iterations 12] [--workers 2] [--threads N]

Trains the paper recipe ``configs/edsr-baseline-x4.yaml`` (48×48 LR patches, batch 16) on the bundled
photos for a few iterations and prints, from the trainer's own timers, iterations/s and the fraction
of step time spent waiting for the next batch (goal: at most 10 %). The first logging interval is
warm-up and is left out. For scale it also prints what assembling one batch would cost if every
patch were decoded from its PNG (what the decode-once cache avoids).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=12, help="total iterations (the first third is warm-up)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()

    from attrsr.config import load_config
    from attrsr.engine import Trainer

    third = max(1, args.iterations // 3)
    with tempfile.TemporaryDirectory() as tmp:
        sets = [
            "data.train=samples:train", "val.data=[]", f"data.num_workers={args.workers}", f"data.cache_dir={tmp}/cache",
            f"train.iterations={3 * third}", f"train.log_every={third}", f"train.checkpoint_every={10 * third}",
        ]
        if args.threads:
            sets.append(f"train.threads={args.threads}")
        cfg = load_config(REPO / "configs" / "edsr-baseline-x4.yaml", sets)
        trainer = Trainer(cfg, out=Path(tmp) / "run", progress=False)
        print(f"EDSR-baseline x4, batch {cfg.data.batch_size} × {cfg.data.patch_size}² LR, {args.workers} workers, "
              f"{cfg.model.name} with {sum(p.numel() for p in trainer.model.parameters()):,} parameters")
        trainer.fit()
        rows = [json.loads(x) for x in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
        timed = [r for r in rows if r["kind"] == "train"][1:]
        it_s = np.mean([r["it_s"] for r in timed])
        wait = np.mean([r["data_wait"] for r in timed])
        batch_ms = _cached_batch_ms(trainer)
    png_ms = _png_batch_ms(cfg.data.batch_size)
    print(f"iterations/s                 {it_s:.3f}  ({1 / it_s:.2f} s per step)")
    print(f"data wait / step time        {100 * wait:.2f} %  (goal <= 10 %)")
    print(f"batch from the cache         {batch_ms:.1f} ms (in the main process)")
    print(f"batch decoding 2K PNGs       {png_ms:.0f} ms (what a decode-per-patch loader would pay)")


def _cached_batch_ms(trainer) -> float:
    plan = trainer._make_plan(99)
    t = time.perf_counter()
    n = 5
    it = trainer.batches(plan, trainer.cfg.data.batch_size)
    for _ in range(n):
        next(it)
    return 1000 * (time.perf_counter() - t) / n


def _png_batch_ms(batch: int) -> float:
    """One batch if each patch decoded a DIV2K-sized PNG (retina, 1411², stands in for a 2K image)."""
    from PIL import Image

    from attrsr.data import load_sample
    from attrsr.images import read_image

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "retina.png"
        Image.fromarray(load_sample("retina")).save(path)
        t = time.perf_counter()
        for _ in range(batch):
            read_image(path)
        return 1000 * (time.perf_counter() - t)


if __name__ == "__main__":
    main()
