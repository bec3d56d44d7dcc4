"""LAM speed and memory: ``attrsr.attribution.integrate`` vs two loops over the same path.

* The *official structure* (``naive``) evaluates the blur path the way the authors' code does: one
  path point at a time (batch 1), parameter gradients on (every backward also computes weight
  gradients), the default memory layout, every gradient moved through numpy (NaN → 0, times the
  path step, summed).
* The *plain loop*: the same in torch alone — batch 1, ``steps`` sequential forward+backward passes,
  parameter gradients on, the sum kept in torch. The issue's goal is ≤ 0.25× its time.

Same path, same detector, same right-endpoint rule, so the maps must agree. Each speed-up is
measured on and off in the same run: chunk sizes, channels-last, threads (with ``--threads N``:
also 1), several windows sharing each forward pass (``lam_windows``, 3 windows), the tail crop (the
upsampling tail run only on the window's box), the receptive-field crop (on a larger, 128×128 LR
image: on the 64×64 one PAN's reach of 36 LR px covers the whole image), and with ``--compile``
``torch.compile`` of the network (falls back with a message where it fails).

Measured in one run, on PAN ×4 (``../shared/data/weights/pan/PANx4_DF2K.pth``) and a 256×256 HR
image (LAM's test image 1 → 64×64 LR), window (110, 150, 16), 50 steps:

* time: ours / plain loop and ours / naive for each variant, best of ``--repeat`` interleaved runs;
* agreement: Pearson correlation of the two attribution maps (goal ≥ 0.9999) and max relative diff;
* memory: peak extra RSS of one call (CPU: a fresh child process per chunk size, peak VmHWM over
  the RSS after loading the model) or peak CUDA allocation.

Run: ``PYTHONPATH=src python benchmarks/bench_lam.py [--repeat 3] [--chunks 1,4,8,16] [--threads N]
[--steps 50] [--compile] [--no-memory]``.
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


def plain_lam(model, lr: torch.Tensor, window, steps: int = 50, sigma: float = 1.2, kernel_size: int = 9) -> torch.Tensor:
    """The plain torch loop: per path point, batch 1, parameter grads on, the sum in torch."""
    from attrsr.attribution.objectives import Window, gradient_detector
    from attrsr.attribution.paths import BlurPath

    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    w = Window(*window)
    path = BlurPath(lr, sigma, steps, kernel_size)
    total = torch.zeros_like(lr, dtype=torch.float64)
    prev = path.points(0, 1)[0]
    for i in range(1, steps + 1):
        pt = path.points(i, i + 1)[0]
        img = pt[None].clone().requires_grad_(True)
        gradient_detector(model(img), w).sum().backward()
        total += torch.nan_to_num(img.grad[0], nan=0.0).double() * (pt - prev).double()
        prev = pt
        model.zero_grad(set_to_none=False)
    return total


STEPS = 50


def ours(model, lr, chunk: int | None, window=WINDOW, **options):
    from attrsr.attribution import lam

    return lam(model, lr, window, steps=STEPS, chunk=chunk, **options)


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
        naive_lam(model, lr, WINDOW, steps=STEPS)
    else:
        ours(model, lr, chunk)
    if device == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = _status_mib("VmHWM") - before
    print(json.dumps({"chunk": chunk, "peak_mib": peak}))


WINDOWS3 = [WINDOW, (40, 60, 16), (170, 200, 16)]  # for the shared forward pass
BIG_WINDOW = (220, 300, 16)  # on the 128×128 LR image, SR 512×512


def big_lr() -> torch.Tensor:
    """LAM image 1 at 128×128 LR (MATLAB-bicubic ×2 down of its 256×256 HR): the crop's case."""
    from attrsr.images import load_image, modcrop
    from attrsr.resize import downsample

    return downsample(modcrop(load_image(IMAGE), 2)[None], 2)[0]


def compiled(model):
    """``torch.compile`` of the network, or None with the reason printed (compilation runs lazily,
    at the first call, so it is forced here on a small input)."""
    try:
        net = torch.compile(model, dynamic=False)
        from attrsr.attribution import lam

        lam(net, torch.rand(3, 24, 24), (8, 8, 16), steps=1, crop=False)
        net.scale = model.scale
        return net
    except Exception as exc:  # noqa: BLE001 - any compiler failure means: measure without it
        print(f"torch.compile failed, measured without it: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}")
        return None


def main() -> None:
    global STEPS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chunks", default="1,4,8,16")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile of the network")
    ap.add_argument("--no-crop", action="store_true", help="skip the 128×128 crop case")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    STEPS = args.steps
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child is not None:
        child(args.child, args.device)
        return
    from attrsr.attribution import lam_windows

    chunks = [int(c) for c in args.chunks.split(",")]
    threads = torch.get_num_threads()
    model, lr = setup(args.device)
    lr = lr.to(args.device)
    print(f"PAN x4, LR {lr.shape[-1]}x{lr.shape[-2]}, window {WINDOW}, {STEPS} steps, device {args.device}, "
          f"torch threads {threads}, load average {os.getloadavg()[0]:.1f}")

    def with_threads(n, fn):
        def run():
            before = torch.get_num_threads()
            torch.set_num_threads(n)
            try:
                return fn()
            finally:
                torch.set_num_threads(before)
        return run

    # name → (function returning an attribution (3,h,w) or a list of results, number of windows it explains)
    cases = {
        "official structure (numpy)": (lambda: torch.from_numpy(naive_lam(model, lr.cpu(), WINDOW, steps=STEPS)), 1),
        "plain loop": (lambda: plain_lam(model, lr, WINDOW, steps=STEPS), 1),
    }
    for c in chunks:
        cases[f"ours chunk {c}"] = (lambda c=c: ours(model, lr, c), 1)
    cases["ours, no tail crop"] = (lambda: ours(model, lr, None, tail_crop=False), 1)
    cases["ours, contiguous layout"] = (lambda: ours(model, lr, None, channels_last=False), 1)
    if threads > 1:
        cases["ours, 1 thread"] = (with_threads(1, lambda: ours(model, lr, None)), 1)
    cases["ours, 3 windows one by one"] = (lambda: [ours(model, lr, None, w) for w in WINDOWS3], 3)
    cases["ours, 3 windows sharing each forward"] = (lambda: lam_windows(model, lr, WINDOWS3, steps=STEPS), 3)
    cases["ours, 3 windows sharing, no tail crop"] = (lambda: lam_windows(model, lr, WINDOWS3, steps=STEPS, tail_crop=False), 3)
    if args.compile:
        net = compiled(model)
        if net is not None:
            cases["ours, torch.compile"] = (lambda: ours(net, lr, None, crop=False), 1)
    if not args.no_crop:
        big = big_lr().to(args.device)
        cases["128px: plain loop"] = (lambda: plain_lam(model, big, BIG_WINDOW, steps=STEPS), 1)
        cases["128px: ours, whole image"] = (lambda: ours(model, big, None, BIG_WINDOW, crop=False, tail_crop=False), 1)
        cases["128px: ours, tail crop"] = (lambda: ours(model, big, None, BIG_WINDOW, crop=False), 1)
        from attrsr.attribution.reach import reach_of

        t = time.perf_counter()
        reach = reach_of(model, 4)
        print(f"reach of PAN: {reach.reason} ({time.perf_counter() - t:.1f}s, once per model)")
        cases["128px: ours, receptive-field crop"] = (lambda: ours(model, big, None, BIG_WINDOW, crop=True, tail_crop=False), 1)
        cases["128px: ours, both crops"] = (lambda: ours(model, big, None, BIG_WINDOW, crop=True), 1)

    from attrsr.attribution.reach import tail_reach_of

    t = time.perf_counter()
    print(f"tail reach of PAN: {tail_reach_of(model, 4).reason} ({time.perf_counter() - t:.1f}s, once per model)")
    # Warm-up of both code paths (short paths), not timed.
    ours(model, lr, chunks[0])
    naive_lam(model, lr.cpu(), WINDOW, steps=2)
    times: dict[str, list[float]] = {k: [] for k in cases}
    results: dict[str, object] = {}
    for r in range(args.repeat):
        for name, (fn, _) in cases.items():
            sync(args.device)
            t = time.perf_counter()
            results[name] = fn()
            sync(args.device)
            times[name].append(time.perf_counter() - t)
        print(f"  run {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items()), flush=True)

    from attrsr.attribution._common import saliency_map
    from attrsr.attribution.di import diffusion_index

    def maps(name):
        out = results[name]
        if isinstance(out, torch.Tensor):
            return [out.double().cpu()], [diffusion_index(saliency_map(out))]
        if isinstance(out, list):
            return [o.attribution.double() for o in out], [o.di for o in out]
        return [out.attribution.double()], [out.di]

    def per_window(name):
        return min(times[name]) / cases[name][1]

    ref = {"": maps("plain loop")[0][0]}
    if not args.no_crop:
        ref["128px"] = maps("128px: plain loop")[0][0]
    base_di = {"": maps("plain loop")[1][0]}
    if not args.no_crop:
        base_di["128px"] = maps("128px: plain loop")[1][0]
    print("\nbest time per window explained; ratios to the plain loop and to the official structure "
          "(same image); corr/diff/DI: map and DI vs the plain loop's")
    print(f"{'variant':<40} {'s/window':>9} {'/plain':>7} {'/official':>9} {'corr':>10} {'max rel diff':>12} {'DI diff':>8}")
    for name in cases:
        big_case = name.startswith("128px")
        plain = per_window("128px: plain loop" if big_case else "plain loop")
        official = None if big_case else per_window("official structure (numpy)")
        a_ref = ref["128px" if big_case else ""]
        ms, dis = maps(name)
        a = ms[0]  # the first window's map is WINDOW's (or BIG_WINDOW's)
        corr = float(np.corrcoef(a.numpy().ravel(), a_ref.numpy().ravel())[0, 1])
        rel = float((a - a_ref).abs().max() / a_ref.abs().max())
        ddi = f"{dis[0] - base_di['128px' if big_case else '']:+.4f}"
        t = per_window(name)
        print(f"{name:<40} {t:>9.2f} {t / plain:>7.3f} {'' if official is None else f'{t / official:.3f}':>9} {corr:>10.7f} {rel:>12.2e} {ddi:>8}")
    if not args.no_crop:
        a = results["128px: ours, whole image"]
        b = results["128px: ours, both crops"]
        print(f"crops: LR box {b.params['crop']} of 128x128, tail box {b.params['tail_crop'][0]} of the LR box; "
              f"DI {b.di:.4f} vs whole image {a.di:.4f}")

    if not args.no_memory:
        print("\npeak memory of one call (extra over the loaded model):")
        for c in [0] + chunks:
            cmd = [sys.executable, __file__, "--child", str(c), "--device", args.device, "--steps", str(STEPS)]
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
