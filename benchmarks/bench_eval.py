"""Speed of the foundation, as ratios measured in one run (no absolute goals; machines differ).

1. ``attrsr.resize.imresize`` vs the independent ``bicubic-pytorch`` on the same batch
   (×1/4 down and ×4 up of 512² photos). Goal: ratio ≤ 1 (we are no slower than the reference).
2. ``attrsr.evaluate`` of PAN ×4 on Set5 vs the bare forward passes of the same images. The
   difference is the cost of decoding, 8-bit rounding, Y conversion and PSNR/SSIM. Goal: ≤ 1.3×.

Run: ``python benchmarks/bench_eval.py`` (needs ``pip install -e .[test]``; step 2 needs ../shared/data).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch


def best_of(fn, repeat: int = 5) -> float:
    fn()  # warm-up: builds cached weight matrices, allocator pools
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_resize() -> None:
    from bicubic_pytorch import core as reference
    from skimage import data as skdata

    from attrsr.images import to_tensor
    from attrsr.resize import imresize

    batch = torch.stack([to_tensor(skdata.astronaut()), to_tensor(skdata.immunohistochemistry())])
    small = imresize(batch, scale=0.25)
    for label, x, s in [("down x1/4, 2×512²", batch, 0.25), ("up x4, 2×128²", small, 4)]:
        ours = best_of(lambda: imresize(x, scale=s))
        ref = best_of(lambda: reference.imresize(x, scale=s))
        print(f"imresize {label:>20}: ours {ours * 1e3:7.1f} ms, bicubic-pytorch {ref * 1e3:7.1f} ms, ratio {ours / ref:.2f}")


def bench_eval() -> None:
    import attrsr
    from attrsr import models

    data = Path(os.environ.get("ATTRSR_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
    set5 = data / "benchmarks" / "Set5"
    weights = data / "weights" / "pan" / "PANx4_DF2K.pth"
    if not weights.exists():
        print("eval: skipped (shared data not found at", data, ")")
        return
    model = models.load("pan", weights=weights, scale=4)
    ds = attrsr.data.open_dataset(set5, 4)
    lrs = [ds[i].lr[None] for i in range(len(ds))]

    def forwards():
        with torch.inference_mode():
            for lr in lrs:
                model(lr)

    fwd = best_of(forwards, repeat=2)
    full = best_of(lambda: attrsr.evaluate(model, set5, 4, progress=False), repeat=2)
    print(f"eval PAN x4 Set5: evaluate {full:.2f} s, bare forwards {fwd:.2f} s, ratio {full / fwd:.2f} (goal ≤ 1.3)")


if __name__ == "__main__":
    torch.set_num_threads(os.cpu_count() or 1)
    bench_resize()
    bench_eval()
