"""LAM — Local Attribution Maps (Gu & Dong, CVPR 2021), exactly as METHODS.md §1, batched.

A = Σ_{i=0}^{N−1} ∇_p D(F(p))|_{p=γ_{i+1}} ⊙ (γ_{i+1} − γ_i): a right-endpoint Riemann sum of
the detector's input gradient along the blur path. The authors' code evaluates the path one point
at a time, with parameter gradients on, and moves every gradient through numpy. Here ``chunk``
path points go through the network per forward/backward pass, the parameters are frozen for the
call (no weight gradients are computed), gradients stay on the model's device, and the sum is
accumulated in float64 (so the chunk size changes speed, not values).

Why LAM is ours and not Captum's: its path is a blur, not the straight line Captum's integrated
gradients use. The same engine (:func:`path_attribution`) computes our straight-line integrated
gradients, which the tests check against Captum's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from attrsr.attribution._common import (
    AttributionResult,
    as_lr_batch,
    finish,
    forward_checked,
    infer_scale,
    objective_for,
    prepared,
)
from attrsr.attribution.objectives import OBJECTIVE_MARGIN, Objective, Window, make_objective
from attrsr.attribution.paths import BlurPath, CroppedPath, LinearPath, Path
from attrsr.errors import AttrsrError
from attrsr.models.registry import body_and_tail

DEFAULT_CHUNK = None
# The default chunk: measured with benchmarks/bench_lam.py (PAN ×4, 64×64 LR, 2-core CPU) 4 path
# points per pass are fastest on the CPU; memory grows linearly with chunk × LR pixels (PAN ×4 at
# 64×64: 0.18 GiB per point), so larger images get smaller chunks. GPUs gain up to larger batches.
CPU_CHUNK, GPU_CHUNK = 4, 16
CPU_PIXELS, GPU_PIXELS = 4 * 64 * 64, 16 * 128 * 128  # LR pixels per pass


def _check_chunk(chunk: Any, device: torch.device | None = None, hw: tuple[int, int] | None = None) -> int:
    """``chunk`` as a positive int; None picks a default for the device and the LR size ``hw``."""
    if chunk is None:
        gpu = device is not None and device.type != "cpu"
        most, budget = (GPU_CHUNK, GPU_PIXELS) if gpu else (CPU_CHUNK, CPU_PIXELS)
        pixels = hw[0] * hw[1] if hw else 1
        return max(1, min(most, budget // max(1, pixels)))
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise AttrsrError(f"chunk must be a positive integer (path points per forward pass), got {chunk!r}")
    return chunk


def path_attribution(
    model: nn.Module,
    path: Path,
    objective: Objective | Sequence[Objective],
    *,
    chunk: int | None = DEFAULT_CHUNK,
    memory_format: torch.memory_format = torch.contiguous_format,
    outputs: Callable[[torch.Tensor], list[torch.Tensor]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor] | list[tuple[torch.Tensor, torch.Tensor]]:
    """Right-endpoint path integral of ∇objective along ``path`` for a *prepared* model.

    Returns (attribution (C,h,w) float64, the objective at γ₁..γ_N (N,) float64).
    NaN gradient entries (the detector's sqrt at 0) are set to 0, per path point, as LAM does.
    A list of objectives (several windows of one image) shares each forward pass — one forward, a
    backward per objective — and returns a list of such pairs. ``outputs`` (default: the model's
    output for every objective) maps a batch of path points to one output per objective, e.g.
    :class:`TailCrop`'s body once and the tail on each window's box.
    """
    several = not callable(objective)
    objectives = list(objective) if several else [objective]
    outputs = outputs or (lambda inp: [model(inp)] * len(objectives))
    chunk = _check_chunk(chunk, path.x.device, tuple(path.x.shape[-2:]))
    n = path.steps
    accs = [torch.zeros_like(path.x, dtype=torch.float64) for _ in objectives]
    values: list[list[torch.Tensor]] = [[] for _ in objectives]
    prev = path.points(0, 1)
    for start in range(1, n + 1, chunk):
        stop = min(start + chunk, n + 1)
        pts = path.points(start, stop)
        deltas = (pts - torch.cat([prev, pts[:-1]])).double()
        prev = pts[-1:]
        inp = pts.contiguous(memory_format=memory_format).requires_grad_(True)
        outs = outputs(inp)
        if not all(torch.isfinite(out).all() for out in outs):
            raise AttrsrError(f"model {_name(model)!r} produced non-finite outputs on path points {start}..{stop - 1}")
        for k, obj in enumerate(objectives):
            d = obj(outs[k])
            if not torch.isfinite(d).all():
                raise AttrsrError(f"model {_name(model)!r} produced non-finite outputs on path points {start}..{stop - 1}")
            # Samples do not interact (eval mode), so the gradient of the batch sum is each sample's own.
            (g,) = torch.autograd.grad(d.sum(), inp, retain_graph=k < len(objectives) - 1)
            g = torch.where(torch.isnan(g), torch.zeros((), dtype=g.dtype, device=g.device), g)
            accs[k] += (g.double() * deltas).sum(0)
            values[k].append(d.detach().double())
            del d, g
        del outs, inp
    pairs = [(acc, torch.cat(v)) for acc, v in zip(accs, values)]
    return pairs if several else pairs[0]


def _name(model: nn.Module) -> str:
    return str(getattr(model, "zoo_name", type(model).__name__))


class TailCrop:
    """Outputs for several windows from one body pass: the network's body on the whole input, its
    upsampling tail only on each window's LR box of the body's grid (:mod:`attrsr.attribution.reach`).

    ``windows`` are in the input's SR coordinates; :attr:`windows` gives each in its own box's
    coordinates (what its objective must read). The boxes are clipped to the body's grid, found from
    ``example`` (an input of the path's shape, (1,C,h,w)): networks that pad do so at the bottom/right,
    so that grid may extend past the image, and a box may use the padded features the whole network sees.
    :attr:`example_outputs` are ``example``'s outputs (the path's baseline), from that same body pass.
    """

    def __init__(self, body_fn, tail_fn, windows: Sequence[Window], scale: int, radius: int, margin: int,
                 example: torch.Tensor) -> None:
        from attrsr.attribution.reach import crop_box

        self.body_fn, self.tail_fn = body_fn, tail_fn
        with torch.no_grad():  # the body's grid: larger than the input where the network pads
            body = body_fn(example)
            grid = tuple(body[0].shape[-2:])
            self.boxes = [crop_box(w, scale, radius, grid, margin) for w in windows]
            self.example_outputs = self._tails(body)  # the example's outputs, from the same body pass
        self.windows = [Window(w.x - b[0] * scale, w.y - b[1] * scale, w.size) for w, b in zip(windows, self.boxes)]

    def _tails(self, body: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        return [self.tail_fn(tuple(t[..., y0:y1, x0:x1] for t in body)) for x0, y0, x1, y1 in self.boxes]

    def __call__(self, inp: torch.Tensor) -> list[torch.Tensor]:
        return self._tails(self.body_fn(inp))


def _tail_crop(model: nn.Module, tail_crop: Any, scale: int) -> int | None:
    """The tail reach to crop with (None: run the whole network), see :func:`lam`'s ``tail_crop``."""
    from attrsr.attribution.reach import tail_reach_of

    if isinstance(tail_crop, bool):
        return tail_reach_of(model, scale).radius if tail_crop else None
    if not isinstance(tail_crop, int) or tail_crop < 0:
        raise AttrsrError(f"tail_crop must be True, False or a tail reach in LR pixels >= 0, got {tail_crop!r}")
    if body_and_tail(model) is None:
        raise AttrsrError(f"tail_crop={tail_crop}: model {_name(model)!r} offers no body/tail split (forward_body/forward_tail)")
    return tail_crop


def _run_path_method(
    method: str,
    model: nn.Module,
    lr: torch.Tensor,
    windows: Sequence[Any],
    make_path,
    *,
    objective: str,
    chunk: int | None,
    channels_last: bool | None,
    crop: bool | int | None,
    params: dict[str, Any],
    tail_crop: bool | int = True,
) -> list[AttributionResult]:
    """The path method for each window of one image; the windows share every forward pass (and one
    crop: the union of theirs). Each result's ``seconds`` is its share of the call's time."""
    started = time.perf_counter()
    x = as_lr_batch(model, lr)
    if not (crop is None or isinstance(crop, bool) or (isinstance(crop, int) and crop >= 0)):
        raise AttrsrError(f"crop must be True, False, None (automatic) or a reach in LR pixels >= 0, got {crop!r}")
    if not windows:
        raise AttrsrError("no window given")
    with prepared(model, channels_last) as fmt:
        x = x.contiguous(memory_format=fmt)
        sr = forward_checked(model, x)
        scale = infer_scale(model, x, sr)
        wins = [objective_for(objective, w, tuple(sr.shape[-2:]))[0] for w in windows]
        hw = tuple(x.shape[-2:])
        boxes = [_crop_box(model, crop, w, scale, hw, OBJECTIVE_MARGIN[objective]) for w in wins]
        box = None if any(b is None for b in boxes) else _union(boxes)
        box = None if box == (0, 0, hw[1], hw[0]) else box
        path = make_path(x[0])
        ox, oy = (box[0] * scale, box[1] * scale) if box is not None else (0, 0)
        if box is not None:  # the windows' own objectives on the crop, in the crop's coordinates
            path = CroppedPath(path, box)
        local = [Window(w.x - ox, w.y - oy, w.size) for w in wins]
        base = path.baseline[None].contiguous(memory_format=fmt)
        tail_radius = _tail_crop(model, tail_crop, scale)
        outputs = None
        if tail_radius is not None:
            outputs = TailCrop(*body_and_tail(model), local, scale, tail_radius, OBJECTIVE_MARGIN[objective], base)
            local = outputs.windows
        objs = [make_objective(objective, w) for w in local]
        chunk = _check_chunk(chunk, x.device, tuple(path.x.shape[-2:]))
        params = {**params, "chunk": chunk, "crop": list(box) if box is not None else None,
                  "tail_crop": [list(b) for b in outputs.boxes] if outputs is not None else None}
        with torch.no_grad():
            outs = outputs.example_outputs if outputs is not None else [model(base)] * len(objs)
            v_base = [float(obj(out).double()) for obj, out in zip(objs, outs)]
        pairs = path_attribution(model, path, objs, chunk=chunk, memory_format=fmt, outputs=outputs)
    results = []
    for win, vb, (attr, values) in zip(wins, v_base, pairs):
        if box is not None:
            whole = torch.zeros(x.shape[1:], dtype=attr.dtype, device=attr.device)
            whole[:, box[1] : box[3], box[0] : box[2]] = attr
            attr = whole
        results.append(finish(
            method, attr, sr[0], win, scale, objective, float(values[-1]), started,
            objective_baseline=vb, steps=path.steps, path_values=values.float().cpu(), params=params,
        ))
    elapsed = time.perf_counter() - started
    for res in results:
        res.seconds = elapsed / len(results)
    return results


def _union(boxes: Sequence[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def _crop_box(model: nn.Module, crop: bool | int | None, win: Window, scale: int, hw: tuple[int, int], margin: int):
    """The LR box to evaluate the network on (None: the whole image), see :mod:`attrsr.attribution.reach`."""
    from attrsr.attribution.reach import AUTO_MIN_PIXELS, crop_box, reach_of

    if crop is False or (crop is None and hw[0] * hw[1] <= AUTO_MIN_PIXELS):
        return None
    if crop is True or crop is None:
        radius = reach_of(model, scale).radius
        if radius is None:
            return None
    else:
        radius = int(crop)
    box = crop_box(win, scale, radius, hw, margin)
    return None if box == (0, 0, hw[1], hw[0]) else box


def lam(
    model: nn.Module,
    lr: torch.Tensor,
    window: Any,
    *,
    sigma: float = 1.2,
    steps: int = 50,
    kernel_size: int = 9,
    chunk: int | None = DEFAULT_CHUNK,
    objective: str = "detector",
    channels_last: bool | None = None,
    crop: bool | int | None = None,
    tail_crop: bool | int = True,
) -> AttributionResult:
    """Local Attribution Map of ``model`` for a window on its SR output.

    lr: (3,h,w) or (1,3,h,w) in [0,1]. window: (x, y[, size]) — top-left corner in SR pixels,
    x = column, y = row, size 16 by default — or a :class:`Window`. ``chunk`` path points are
    evaluated per forward pass (default: 4 on the CPU, 16 on a GPU, fewer for large images); it
    changes speed and memory, not the result. ``channels_last`` (default: on the CPU) runs the
    convolutions in that layout. ``crop`` evaluates the network only on the LR pixels the window can
    depend on (:mod:`attrsr.attribution.reach`: the reach measured once per model, trusted only after
    a check against the whole image; refused for networks with global operations): ``None``
    (default) for LR images over 96×96 pixels, ``True`` always, ``False`` never, an int: that reach
    in LR pixels, unchecked. ``params["crop"]`` says which LR box was evaluated (None: the whole
    image). ``tail_crop`` runs the upsampling tail only on the window's box, for networks that offer
    the body/tail split (:func:`attrsr.models.body_and_tail`): ``True`` (default) once the tail's reach
    is measured and checked against the whole network (:func:`attrsr.attribution.reach.tail_reach_of`),
    ``False`` never, an int: that tail reach, unchecked; ``params["tail_crop"]`` lists the boxes (None:
    the whole network ran). Both crops change speed, not the map (r ≥ 0.9999, measured 1 − 1e-7). Returns an :class:`AttributionResult` (attribution 3×h×w, saliency
    h×w, DI, SR, detector values at the input and at the blurred baseline).
    """
    return lam_windows(model, lr, [window], sigma=sigma, steps=steps, kernel_size=kernel_size, chunk=chunk,
                       objective=objective, channels_last=channels_last, crop=crop, tail_crop=tail_crop)[0]


def lam_windows(
    model: nn.Module,
    lr: torch.Tensor,
    windows: Sequence[Any],
    *,
    sigma: float = 1.2,
    steps: int = 50,
    kernel_size: int = 9,
    chunk: int | None = DEFAULT_CHUNK,
    objective: str = "detector",
    channels_last: bool | None = None,
    crop: bool | int | None = None,
    tail_crop: bool | int = True,
) -> list[AttributionResult]:
    """:func:`lam` of several windows of one image, sharing every forward pass along the path (one
    forward, a backward per window); the same maps as one call per window. With ``crop`` the
    network is evaluated on the union of the windows' crops; with ``tail_crop`` the tail runs on each
    window's own box. Each result's ``seconds`` is its share.
    """
    params = {"sigma": sigma, "steps": steps, "kernel_size": kernel_size, "chunk": chunk, "objective": objective}
    return _run_path_method(
        "lam",
        model,
        lr,
        list(windows),
        lambda x: BlurPath(x, sigma=sigma, steps=steps, kernel_size=kernel_size),
        objective=objective,
        chunk=chunk,
        channels_last=channels_last,
        crop=crop,
        params=params,
        tail_crop=tail_crop,
    )


def integrated_gradients(
    model: nn.Module,
    lr: torch.Tensor,
    window: Any,
    *,
    steps: int = 50,
    baseline: torch.Tensor | None = None,
    chunk: int | None = DEFAULT_CHUNK,
    objective: str = "detector",
    channels_last: bool | None = None,
    crop: bool | int | None = None,
    tail_crop: bool | int = True,
) -> AttributionResult:
    """Integrated gradients on the straight line from ``baseline`` (default black) to ``lr``.

    Same engine and rule as LAM (right-endpoint Riemann sum over ``steps`` points: α = k/N, k = 1..N),
    i.e. Captum's ``IntegratedGradients(method="riemann_right")``. ``crop``, ``tail_crop`` as :func:`lam`.
    """
    if baseline is not None:
        baseline = as_lr_batch(model, baseline)[0]
        lr_shape = tuple(lr.shape[-3:]) if isinstance(lr, torch.Tensor) else None
        if lr_shape is not None and tuple(baseline.shape) != lr_shape:
            raise AttrsrError(f"baseline has shape {tuple(baseline.shape)}, the LR {lr_shape}; they must match")
    params = {"steps": steps, "chunk": chunk, "objective": objective, "baseline": "black" if baseline is None else "given"}
    return _run_path_method(
        "ig",
        model,
        lr,
        [window],
        lambda x: LinearPath(x, None if baseline is None else baseline.to(x), steps=steps),
        objective=objective,
        chunk=chunk,
        channels_last=channels_last,
        crop=crop,
        params=params,
        tail_crop=tail_crop,
    )[0]
