"""LAM speed and memory: ``attrsr.attribution.integrate`` vs the official algorithm's cost structure.

The *naive loop* evaluates the blur path the way the authors' code does: one path point at a time
(batch 1), parameter gradients on (so every backward also computes weight gradients), the default
memory layout, and every gradient moved through numpy (NaN → 0, times the path step, summed).
Same path, same detector, same right-endpoint rule, so the maps must agree.

Measured in one run, on PAN ×4 (``../shared/data/weights/pan/PANx4_DF2K.pth``) and a 256×256 HR
image (LAM's test image 1 → 64×64 LR), window (110, 150, 16), 50 steps:

* time: ours / naive for each chunk size (goal ≤ 0.5), best of ``--repeat`` interleaved runs;
* agreement: Pearson correlation of the two attribution maps (goal ≥ 0.9999) and max relative diff;
* memory: peak extra RSS of one call (CPU: a fresh child process per chunk size, peak VmHWM over
  the RSS after loading the model) or peak CUDA allocation.

Run: ``PYTHONPATH=src python benchmarks/bench_lam.py [--repeat 3] [--chunks 1,4,8,16] [--threads N]``.
The machine may be shared: ratios come from interleaved runs, each side's best time. On a busy
2-core machine use ``--threads 1``: two OpenMP threads waiting on a core that another process holds
make every small kernel many times slower, for both sides, and the timings turn to noise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ATTRSR_DATA") or ROOT.parent / "shared" / "data")
WEIGHTS = DATA / "weights" / "pan" / "PANx4_DF2K.pth"
IMAGE = DATA / "benchmarks" / "LAM_test_images" / "1.png"
WINDOW = (110, 150, 16)


def setup(device: str):
    from attrsr import models
    from attrsr.images import load_image, modcrop
    from attrsr.resize import downsample

    if not WEIGHTS.is_file() or not IMAGE.is_file():
        sys.exit(f"needs {WEIGHTS} and {IMAGE} (set ATTRSR_DATA)")
    model = models.load("pan", weights=WEIGHTS, scale=4).to(device)
    hr = modcrop(load_image(IMAGE), 4)
    lr = downsample(hr[None], 4)[0]
    return model, lr


def naive_lam(model, lr: torch.Tensor, window, steps: int = 50, sigma: float = 1.2, kernel_size: int = 9) -> np.ndarray:
    """The official algorithm's cost structure: per path point, batch 1, parameter grads on, numpy."""
    from attrsr.attribution.objectives import Window, gradient_detector
    from attrsr.attribution.paths import blur_path

    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    w = Window(*window)
    device = next(model.parameters()).device
    path = blur_path(lr, sigma, steps, kernel_size).numpy()  # (N+1, 3, h, w), as a numpy array
    total = np.zeros(path.shape[1:], np.float64)
    for i in range(steps):
        img = torch.from_numpy(path[i + 1]).to(device)[None].requires_grad_(True)
        out = model(img)
        gradient_detector(out, w).sum().backward()
        grad = img.grad.detach().cpu().numpy()[0]
        grad[np.isnan(grad)] = 0.0
        total += grad * (path[i + 1] - path[i])
        model.zero_grad(set_to_none=False)  # the weight gradients were computed all the same
    return total


def ours(model, lr, chunk: int):
    from attrsr.attribution import lam

    return lam(model, lr, WINDOW, steps=50, chunk=chunk)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss_mib() -> float:
    return _status_mib("VmRSS")


def reset_peak() -> None:
    # Linux ≥ 4.0: writing 5 resets this process's peak RSS (VmHWM). getrusage's ru_maxrss cannot
    # be used: it survives fork/exec, so a child would report its parent's peak.
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def child(chunk: int, device: str) -> None:
    """Peak memory of one LAM call, in a fresh process (CPU peak RSS cannot be reset in-process)."""
    model, lr = setup(device)
    with torch.no_grad():
        model(lr[None].to(device))  # allocator warm-up, so the model's own forward is not counted
    before = rss_mib()
    reset_peak()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    if chunk == 0:
        naive_lam(model, lr, WINDOW)
    else:
        ours(model, lr, chunk)
    if device == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = _status_mib("VmHWM") - before
    print(json.dumps({"chunk": chunk, "peak_mib": peak}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chunks", default="1,4,8,16")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child is not None:
        child(args.child, args.device)
        return
    chunks = [int(c) for c in args.chunks.split(",")]
    model, lr = setup(args.device)
    print(f"PAN x4, LR {lr.shape[-1]}x{lr.shape[-2]}, window {WINDOW}, 50 steps, device {args.device}, "
          f"torch threads {torch.get_num_threads()}")

    # Warm-up both code paths once.
    ours(model, lr, chunks[0])
    naive_ref = naive_lam(model, lr, WINDOW, steps=2)
    del naive_ref

    t_naive, t_ours = [], {c: [] for c in chunks}
    ref = None
    results = {}
    for r in range(args.repeat):
        sync(args.device)
        t = time.perf_counter()
        ref = naive_lam(model, lr, WINDOW)
        sync(args.device)
        t_naive.append(time.perf_counter() - t)
        for c in chunks:
            sync(args.device)
            t = time.perf_counter()
            results[c] = ours(model, lr, c)
            sync(args.device)
            t_ours[c].append(time.perf_counter() - t)
        print(f"  run {r + 1}: naive {t_naive[-1]:.2f}s, " + ", ".join(f"chunk {c} {t_ours[c][-1]:.2f}s" for c in chunks))

    a_ref = ref.ravel()
    best_naive = min(t_naive)
    print(f"\nnaive loop (batch 1, param grads, numpy): best {best_naive:.2f}s")
    print(f"{'chunk':>6} {'best s':>8} {'ratio':>7} {'corr':>10} {'max rel diff':>13} {'DI':>7}")
    for c in chunks:
        a = results[c].attribution.double().numpy().ravel()
        corr = float(np.corrcoef(a, a_ref)[0, 1])
        rel = float(np.abs(a - a_ref).max() / np.abs(a_ref).max())
        best = min(t_ours[c])
        print(f"{c:>6} {best:>8.2f} {best / best_naive:>7.3f} {corr:>10.7f} {rel:>13.2e} {results[c].di:>7.3f}")

    if not args.no_memory:
        print("\npeak memory of one call (extra over the loaded model):")
        for c in [0] + chunks:
            cmd = [sys.executable, __file__, "--child", str(c), "--device", args.device]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
            if out.returncode:
                print(f"  chunk {c}: failed: {out.stderr.strip().splitlines()[-1:]}")
                continue
            rec = json.loads(out.stdout.strip().splitlines()[-1])
            label = "naive" if c == 0 else f"chunk {c}"
            print(f"  {label:>9}: {rec['peak_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
