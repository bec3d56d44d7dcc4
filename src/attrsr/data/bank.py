"""BSPA's sub-image bank (METHODS.md §3): every training image cut into overlapping LR sub-images,
each scored by a pretrained model's MSE and sorted into long-tail difficulty classes.

    bank = build_bank(images, scorer, size=32, step=16, scale=4, k=10, factor=10)
    write_bank(bank, folder)          # bank.csv + classes.json
    bank = read_bank(folder)          # checked: columns, classes against classes.json
    bank.check_recipe(scale=4, size=32, step=16)   # one error line if built otherwise

``bank.csv`` holds one row per sub-image: ``image`` (file name), ``top``, ``left`` (LR pixels),
``size`` (LR), ``mse``, ``class`` (0 = easiest); ``classes.json`` holds ``k``, ``factor``, ``mu``,
``thresholds``, ``sizes``, the scorer, ``scale``, ``size``, ``step``, the data it was built on and the
count of images too small for a sub-image. Built by ``attrsr bspa bank`` and by the ``bspa`` method
(which reuses a bank given by path).

A *held-aside* bank (the paper's validation classes) scores other images with the same scorer and
geometry and sorts them by a training bank's thresholds instead of its own long-tail split:
``build_bank(..., thresholds_from=train_bank)``; its ``classes.json`` says so under
``thresholds_from`` and its class sizes are whatever the thresholds give.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attrsr.data.longtail import LongTailClasses, classes_by_thresholds, long_tail_classes
from attrsr.errors import AttrsrError

COLUMNS = ["image", "top", "left", "size", "mse", "class"]

# (name, key, compute) -> per-image arrays: the engine's ``ctx.cached_per_image`` or
# :func:`attrsr.data.artifacts.cached_per_image` bound to the decoded images.
PerImageCache = Callable[[str, dict[str, Any], Callable[[int], np.ndarray]], Sequence[np.ndarray]]


@dataclasses.dataclass
class SubImageBank:
    names: list[str]  # image file name of each row
    top: np.ndarray  # (N,) LR pixels
    left: np.ndarray
    mse: np.ndarray  # (N,) float64, the scorer's MSE on [0, 1] RGB
    classes: LongTailClasses
    size: int  # LR side of a sub-image
    step: int
    scale: int
    meta: dict[str, Any]  # scorer, data, skipped_images, …
    source: Path | None = None  # the folder read_bank read it from

    def __len__(self) -> int:
        return len(self.mse)

    @property
    def held_aside(self) -> bool:
        """Classes taken from a training bank's thresholds (``thresholds_from``), not split here."""
        return "thresholds_from" in self.meta

    def classes_json(self) -> dict[str, Any]:
        c = self.classes
        return {**self.meta, "k": c.k, "factor": c.factor, "mu": c.mu, "thresholds": c.thresholds, "sizes": c.sizes,
                "scale": self.scale, "size": self.size, "step": self.step, "n": len(self)}

    def check_recipe(self, *, scale: int, size: int, step: int, k: int | None = None, factor: float | None = None,
                     where: str = "bank") -> None:
        """One error naming the mismatch when the bank was built otherwise than the recipe asks."""
        if self.scale != scale:
            raise AttrsrError(f"{where}: the bank was built at ×{self.scale}, the recipe trains ×{scale}; "
                              f"rebuild it with attrsr bspa bank --scale {scale}")
        if (self.size, self.step) != (size, step):
            raise AttrsrError(f"{where}: the bank's sub-images are {self.size} px with step {self.step}, the recipe's "
                              f"{size} px with step {step}; rebuild it with --size {size} --step {step} (or match sub_size/sub_step)")
        if k is not None and k != self.classes.k:
            raise AttrsrError(f"{where}: the bank has K={self.classes.k} classes, the recipe asks K={k}; "
                              "drop k from the recipe or rebuild the bank with --k")
        if factor is not None and float(factor) != self.classes.factor:
            raise AttrsrError(f"{where}: the bank's imbalance factor is {self.classes.factor:g}, the recipe asks {factor:g}; "
                              "drop factor from the recipe or rebuild the bank with --factor")

    def check_sorted_by(self, train: SubImageBank, *, where: str, train_label: str, train_path: str) -> None:
        """One error unless this is a held-aside bank sorted by ``train``'s thresholds (same scale,
        sub-image geometry and K): only then do its classes mean the training classes."""
        same = (self.scale, self.size, self.step, self.classes.k) == (train.scale, train.size, train.step, train.classes.k)
        if not self.held_aside or not same or list(self.classes.thresholds) != list(train.classes.thresholds):
            raise AttrsrError(f"{where}: not sorted by the thresholds of {train_label}; build it with "
                              f"attrsr bspa bank --data … --thresholds-from {train_path}")

    def image_indices(self, names: Sequence[str], lr_sizes: Sequence[tuple[int, int]], where: str = "bank") -> np.ndarray:
        """Each row's index into a training set's images (``names``, LR ``(h, w)``); one error when a
        row names an image the set lacks or a sub-image runs off its image."""
        index = {n: i for i, n in enumerate(names)}
        unknown = sorted({n for n in self.names if n not in index})
        if unknown:
            raise AttrsrError(f"{where}: {len(unknown)} image(s) of the bank are not in the training set (e.g. {unknown[0]}); "
                              "build the bank on the recipe's data.train (attrsr bspa bank --data …)")
        idx = np.array([index[n] for n in self.names], dtype=np.int64)
        h = np.array([lr_sizes[i][0] for i in idx])
        w = np.array([lr_sizes[i][1] for i in idx])
        off = np.flatnonzero((self.top + self.size > h) | (self.left + self.size > w) | (self.top < 0) | (self.left < 0))
        if len(off):
            j = off[0]
            raise AttrsrError(f"{where}: the sub-image at ({self.top[j]}, {self.left[j]}) of {self.names[j]} runs off its "
                              f"{h[j]}×{w[j]} LR image; the bank was built on other images or another scale: rebuild it")
        return idx


def check_threshold_source(train: SubImageBank, *, scale: int, size: int, step: int, where: str = "--thresholds-from") -> None:
    """One error when held-aside sub-images would be cut or scaled otherwise than ``train``'s, whose
    thresholds are to sort them (the MSEs would not be comparable)."""
    if train.held_aside:
        raise AttrsrError(f"{where}: that bank is itself held-aside (its thresholds come from {train.meta['thresholds_from'].get('bank')}); "
                          "give the training bank")
    if train.scale != scale:
        raise AttrsrError(f"{where}: the training bank is ×{train.scale}, these sub-images ×{scale}; "
                          f"drop --scale or give --scale {train.scale}")
    if (train.size, train.step) != (size, step):
        raise AttrsrError(f"{where}: the training bank's sub-images are {train.size} px with step {train.step}, these {size} px "
                          f"with step {step}; drop --size/--step or give --size {train.size} --step {train.step}")


def check_same_scorer(train: SubImageBank, scorer: torch.nn.Module, lr_of: Callable[[str], np.ndarray],
                      hr_of: Callable[[str], np.ndarray], *, per_class: int = 2, batch: int = 64, rtol: float = 1e-4,
                      where: str = "--thresholds-from") -> None:
    """Re-score a fixed sample of ``train``'s sub-images (``per_class`` of each class) with ``scorer``
    on the training bank's own images; one error when a score differs from the recorded one by more
    than ``rtol`` (another scorer or other LR images: its thresholds would not apply). The recorded
    MSEs have 9 significant digits; batch composition and thread count move float32 scores by ~1e-7."""
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.permutation(np.flatnonzero(train.classes.classes == c))[:per_class] for c in range(train.classes.k)])
    crops = [(lr_of(train.names[r]), hr_of(train.names[r]), int(train.top[r]), int(train.left[r])) for r in rows]
    got = score_crops(scorer, crops, train.size, train.scale, batch)
    bad = np.flatnonzero(~np.isclose(got, train.mse[rows], rtol=rtol, atol=0.0))
    if len(bad):
        r, j = rows[bad[0]], bad[0]
        raise AttrsrError(f"{where}: the scorer gives MSE {got[j]:.6g} on the sub-image at ({train.top[r]}, {train.left[r]}) of "
                          f"{train.names[r]} where the training bank records {train.mse[r]:.6g} ({len(bad)} of {len(rows)} re-scored "
                          f"differ); score with the training bank's scorer ({train.meta.get('scorer')})")


def check_classes(k: int, factor: float) -> None:
    """K and the imbalance factor within the ranges the method accepts (K 2..100, factor 1..1000)."""
    if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= 100:
        raise AttrsrError(f"K (number of classes) must be an integer in 2..100, got {k!r}")
    if not 1 <= factor <= 1000:
        raise AttrsrError(f"the imbalance factor must be in 1..1000, got {factor!r}")


def score_grid(model: torch.nn.Module, lr: np.ndarray, hr: np.ndarray, size: int, step: int, scale: int, batch: int) -> np.ndarray:
    """MSE of ``model`` ([0, 1] RGB, SR clamped) on every sub-image of one image: (rows, cols) float32;
    empty when the image is smaller than a sub-image."""
    h, w = lr.shape[:2]
    tops, lefts = range(0, h - size + 1, step), range(0, w - size + 1, step)
    grid = np.zeros((len(tops), len(lefts)), dtype=np.float32)
    if not len(tops) or not len(lefts):
        return grid
    pos = [(tops[r], lefts[c]) for r in range(len(tops)) for c in range(len(lefts))]
    grid.reshape(-1)[:] = score_crops(model, [(lr, hr, t, l) for t, l in pos], size, scale, batch)
    return grid


def score_crops(model: torch.nn.Module, crops: Sequence[tuple[np.ndarray, np.ndarray, int, int]], size: int, scale: int,
                batch: int, *, psnr_y: bool = False) -> np.ndarray:
    """MSE of ``model`` on LR crops ``(lr image, hr image, top, left)`` of side ``size``, batched;
    with ``psnr_y`` a (N, 2) array: MSE and the Y-PSNR (8-bit SR, border = scale) of each crop."""
    from attrsr.metrics import psnr

    device = next(model.parameters()).device
    out = np.zeros((len(crops), 2 if psnr_y else 1), dtype=np.float64)
    with torch.no_grad():
        for lo in range(0, len(crops), batch):
            chunk = crops[lo : lo + batch]
            lrs = torch.stack([torch.from_numpy(np.array(lr[t : t + size, l : l + size])) for lr, _, t, l in chunk])
            hrs = torch.stack([torch.from_numpy(np.array(hr[scale * t : scale * (t + size), scale * l : scale * (l + size)]))
                               for _, hr, t, l in chunk])
            x = lrs.permute(0, 3, 1, 2).float().div_(255).to(device)
            y = hrs.permute(0, 3, 1, 2).float().div_(255).to(device)
            sr = model(x).clamp(0, 1)
            out[lo : lo + len(chunk), 0] = ((sr - y) ** 2).flatten(1).mean(1).double().cpu().numpy()
            if psnr_y:
                for j in range(len(chunk)):
                    out[lo + j, 1] = psnr(sr[j].cpu(), y[j].cpu(), crop_border=scale)
    return out if psnr_y else out[:, 0]


def pooled_psnr(psnrs) -> float:
    """The PSNR of equal-size crops taken together (their mean squared error pooled): −10·log10 of the mean
    of 10^(−PSNR/10). Unlike the mean of per-crop PSNRs it stays finite when a flat crop is reproduced
    exactly (PSNR = inf)."""
    v = np.asarray(psnrs, dtype=np.float64)
    mean = float(np.mean(10.0 ** (-v / 10.0)))
    return float(-10.0 * np.log10(mean)) if mean > 0 else float("inf")


def build_bank(
    names: Sequence[str],
    lr: Callable[[int], np.ndarray],
    hr: Callable[[int], np.ndarray],
    scorer: torch.nn.Module,
    *,
    size: int,
    step: int,
    scale: int,
    k: int = 10,
    factor: float = 10.0,
    batch: int = 64,
    cache: PerImageCache | None = None,
    meta: dict[str, Any] | None = None,
    thresholds_from: SubImageBank | None = None,
) -> SubImageBank:
    """Score every sub-image of the images (``lr(i)``/``hr(i)`` uint8 H×W×3) and sort them into K
    long-tail classes. ``cache`` keeps the per-image score grids (computed once, resumable, reused);
    the key covers the scorer's weights and the geometry. With ``thresholds_from`` (a training bank of
    the same scale, size and step — checked; the scorer is the caller's to check, see
    :func:`check_same_scorer`) the sub-images are sorted by that bank's thresholds, K and factor."""
    from attrsr.data.artifacts import weights_hash

    if size < 1 or step < 1:
        raise AttrsrError(f"sub-image size and step must be positive, got size {size}, step {step}")
    if getattr(scorer, "scale", scale) != scale:
        raise AttrsrError(f"the scorer is ×{scorer.scale} but the bank is for ×{scale}; give a ×{scale} model")
    if thresholds_from is not None:
        check_threshold_source(thresholds_from, scale=scale, size=size, step=step)
        k, factor = thresholds_from.classes.k, thresholds_from.classes.factor
    check_classes(k, factor)  # before the (long) scoring

    def compute(i: int) -> np.ndarray:
        return score_grid(scorer, lr(i), hr(i), size, step, scale, batch)

    key = {"scorer": weights_hash(scorer), "size": size, "step": step, "scale": scale}
    grids = cache("bspa_scores", key, compute) if cache is not None else [compute(i) for i in range(len(names))]
    rows_names, tops, lefts, mses = [], [], [], []
    skipped = []
    for i, name in enumerate(names):
        g = np.asarray(grids[i])
        if g.size == 0:
            skipped.append(name)
            continue
        r, c = np.meshgrid(np.arange(g.shape[0]), np.arange(g.shape[1]), indexing="ij")
        rows_names += [name] * g.size
        tops.append(r.reshape(-1) * step)
        lefts.append(c.reshape(-1) * step)
        mses.append(g.reshape(-1).astype(np.float64))
    n = sum(len(m) for m in mses)
    if thresholds_from is not None and not n:
        raise AttrsrError(f"no sub-image of {size} px: all {len(names)} images are smaller; give larger images")
    if thresholds_from is None and n < k:
        raise AttrsrError(f"{n} sub-images of {size} px ({len(skipped)} of {len(names)} images smaller than that) "
                          f"cannot fill K={k} classes; lower K or --size")
    mse = np.concatenate(mses)
    info = {**(meta or {}), "skipped_images": len(skipped), "skipped_examples": skipped[:5], "images": len(names) - len(skipped)}
    if thresholds_from is not None:
        t = thresholds_from
        info["thresholds_from"] = {"bank": str(t.source.resolve()) if t.source else None, "data": t.meta.get("data"), "n": len(t), "sizes": t.classes.sizes}
        classes = classes_by_thresholds(mse, t.classes)
    else:
        classes = long_tail_classes(mse, k, factor)
    return SubImageBank(rows_names, np.concatenate(tops), np.concatenate(lefts), mse, classes, size, step, scale, info)


def write_bank(bank: SubImageBank, folder: str | Path) -> None:
    """``bank.csv`` and ``classes.json`` in ``folder`` (each written atomically)."""
    from attrsr.fileio import write_bytes_atomic, write_json_atomic

    folder = Path(folder)
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(COLUMNS)
    for row in zip(bank.names, bank.top.tolist(), bank.left.tolist(), bank.mse.tolist(), bank.classes.classes.tolist()):
        out.writerow([row[0], row[1], row[2], bank.size, f"{row[3]:.9g}", row[4]])  # 9 digits: float32 scores round-trip
    write_bytes_atomic(folder / "bank.csv", buf.getvalue().encode())
    write_json_atomic(folder / "classes.json", bank.classes_json())


def read_bank(folder: str | Path) -> SubImageBank:
    """The bank in ``folder`` (or the folder of a ``bank.csv`` path), checked: files present, columns,
    one sub-image size, classes consistent with ``classes.json``."""
    folder = Path(folder)
    if folder.name in ("bank.csv", "classes.json"):
        folder = folder.parent
    csv_path, json_path = folder / "bank.csv", folder / "classes.json"
    for p in (csv_path, json_path):
        if not p.is_file():
            raise AttrsrError(f"{p}: not found; a bank folder holds bank.csv and classes.json (attrsr bspa bank --out …)")
    try:
        meta = json.loads(json_path.read_text())
        k, factor, scale, size, step = int(meta["k"]), float(meta["factor"]), int(meta["scale"]), int(meta["size"]), int(meta["step"])
        sizes, thresholds = [int(s) for s in meta["sizes"]], [float(t) for t in meta["thresholds"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise AttrsrError(f"{json_path}: not a bank's classes.json ({type(exc).__name__}: {exc}); rebuild the bank") from None
    if not 2 <= k <= 100 or not 1 <= factor <= 1000:
        raise AttrsrError(f"{json_path}: K={k}, factor={factor:g} out of range (K 2..100, factor 1..1000); rebuild the bank")
    with csv_path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header != COLUMNS:
            raise AttrsrError(f"{csv_path}: header {header} is not {','.join(COLUMNS)}; rebuild the bank")
        rows = list(reader)
    try:
        names = [r[0] for r in rows]
        top, left, rsize, cls = (np.array([int(r[j]) for r in rows], dtype=np.int64) for j in (1, 2, 3, 5))
        mse = np.array([float(r[4]) for r in rows], dtype=np.float64)
    except (ValueError, IndexError) as exc:
        raise AttrsrError(f"{csv_path}: a malformed row ({exc}); rebuild the bank") from None
    if len(rows) < (1 if "thresholds_from" in meta else k) or (rsize != size).any():
        raise AttrsrError(f"{csv_path}: {len(rows)} rows with sizes {sorted(set(rsize.tolist()))[:3]} do not match "
                          f"classes.json (K={k}, size {size}); rebuild the bank")
    if (cls < 0).any() or (cls >= k).any() or np.bincount(cls, minlength=k).tolist() != sizes:
        raise AttrsrError(f"{csv_path}: the class counts disagree with classes.json's sizes {sizes}; rebuild the bank")
    mu = float(meta.get("mu", factor ** (-1.0 / (k - 1))))
    classes = LongTailClasses(cls, sizes, thresholds, mu, k, factor)
    rest = {key: v for key, v in meta.items() if key not in ("k", "factor", "mu", "thresholds", "sizes", "scale", "size", "step", "n")}
    return SubImageBank(names, top, left, mse, classes, size, step, scale, rest, folder)
