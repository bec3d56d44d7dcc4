"""BSPA's reports (METHODS.md §3; the paper's Figs. 3 and 5).

* :func:`write_bank_report` — a sub-image bank: the MSE histogram (log scale) with the class
  thresholds, the class sizes table, example sub-images of each class (``bank.md``, ``bank.html``,
  ``bank_hist.png``, ``bank_examples.png``).
* :func:`runs_report` / :func:`write_runs_report` — finished training runs scored on one bank: the
  per-class Y-PSNR of each variant (mean ± std over seeds, Δ vs a baseline variant) and the MSE
  histogram of the trained models against the bank's scorer (the "short-tailed" figure), with the
  share of sub-images each model leaves in each of the bank's classes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attrsr.data.bank import SubImageBank, score_crops
from attrsr.errors import AttrsrError
from attrsr.fileio import write_bytes_atomic, write_json_atomic, write_text_atomic
from attrsr.report.html import HtmlPage
from attrsr.report.tables import to_csv, to_markdown


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    _plt().close(fig)
    return buf.getvalue()


def _log_bins(values: Sequence[np.ndarray], n: int = 60) -> np.ndarray:
    allv = np.concatenate([np.asarray(v, dtype=np.float64) for v in values])
    pos = allv[allv > 0]
    lo, hi = (pos.min(), pos.max()) if len(pos) else (1e-8, 1.0)
    if hi <= lo:
        hi = lo * 10
    return np.logspace(math.log10(lo) - 0.02, math.log10(hi) + 0.02, n + 1)


def _floor(v: np.ndarray) -> np.ndarray:
    # a sub-image the model reproduces exactly (a flat patch) has MSE 0: shown in the lowest bin of a log axis
    pos = v[v > 0]
    return np.maximum(v, pos.min() if len(pos) else 1e-12)


def class_rows(bank: SubImageBank) -> list[dict[str, Any]]:
    """One row per class: its size, share, MSE range and mean."""
    rows = []
    n = len(bank)
    for c in range(bank.classes.k):
        m = bank.mse[bank.classes.classes == c]
        rows.append({"class": c, "sub-images": int(len(m)), "share": len(m) / n, "mse_min": float(m.min()),
                     "mse_max": float(m.max()), "mse_mean": float(m.mean()),
                     "psnr_of_mean_mse": float(10 * math.log10(1 / m.mean())) if m.mean() > 0 else math.inf})
    return rows


def bank_histogram_png(bank: SubImageBank) -> bytes:
    """The bank's MSE histogram on a log axis, stacked by class, the thresholds as dashed lines."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.8))
    mse = _floor(bank.mse)
    bins = _log_bins([mse])
    k = bank.classes.k
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.95, k))
    ax.hist([mse[bank.classes.classes == c] for c in range(k)], bins=bins, stacked=True, color=colours,
            label=[f"class {c} ({bank.classes.sizes[c]})" for c in range(k)])
    for t in bank.classes.thresholds:
        ax.axvline(max(t, bins[0]), color="k", ls="--", lw=0.7)
    ax.set_xscale("log")
    ax.set_xlabel("MSE of the scorer on the sub-image ([0, 1] RGB, log scale)")
    ax.set_ylabel("sub-images")
    ax.set_title(f"{len(bank)} sub-images, K={k}, factor {bank.classes.factor:g} (μ = {bank.classes.mu:.4f}); dashed: thresholds")
    ax.legend(fontsize=7, ncol=2, loc="upper right")
    fig.tight_layout()
    return _png(fig)


def example_items(bank: SubImageBank, per_class: int, seed: int = 0) -> dict[int, np.ndarray]:
    """A fixed random sample of each class's rows, sorted by MSE."""
    rng = np.random.default_rng(seed)
    out = {}
    for c in range(bank.classes.k):
        members = np.flatnonzero(bank.classes.classes == c)
        pick = rng.permutation(members)[:per_class]
        out[c] = pick[np.argsort(bank.mse[pick], kind="stable")]
    return out


def bank_examples_png(bank: SubImageBank, hr_of: Callable[[str], np.ndarray], per_class: int = 6) -> bytes:
    """HR crops of ``per_class`` sub-images of each class (rows: class 0 = easiest at the top)."""
    plt = _plt()
    items = example_items(bank, per_class)
    k, s, side = bank.classes.k, bank.scale, bank.size * bank.scale
    fig, axes = plt.subplots(k, per_class, figsize=(1.3 * per_class, 1.35 * k), squeeze=False)
    for c in range(k):
        for j in range(per_class):
            ax = axes[c][j]
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(items[c]):
                r = items[c][j]
                t, l = int(bank.top[r]) * s, int(bank.left[r]) * s
                ax.imshow(np.asarray(hr_of(bank.names[r])[t : t + side, l : l + side]))
                ax.set_title(f"{bank.mse[r]:.1e}", fontsize=6, pad=1)
            if j == 0:
                ax.set_ylabel(f"class {c}", fontsize=7)
    fig.suptitle("example sub-images per class (HR; title: scorer MSE)", fontsize=8)
    fig.tight_layout(pad=0.3, rect=(0, 0, 1, 0.97))
    return _png(fig)


def write_bank_report(bank: SubImageBank, hr_of: Callable[[str], np.ndarray], out: str | Path, *, per_class: int = 6) -> dict[str, Path]:
    """``bank_hist.png``, ``bank_examples.png``, ``bank.md`` and ``bank.html`` in ``out``."""
    out = Path(out)
    hist, examples = bank_histogram_png(bank), bank_examples_png(bank, hr_of, per_class)
    rows = class_rows(bank)
    c = bank.classes
    facts = {"sub-images": len(bank), "images": bank.meta.get("images"), "images smaller than a sub-image (skipped)": bank.meta.get("skipped_images", 0),
             "scale": f"×{bank.scale}", "sub-image": f"{bank.size} px LR ({bank.size * bank.scale} px HR), step {bank.step}",
             "K": c.k, "imbalance factor": f"{c.factor:g}", "μ": f"{c.mu:.4f}", "scorer": str(bank.meta.get("scorer", "")),
             "data": str(bank.meta.get("data", ""))}
    thresholds = ", ".join(f"{t:.3g}" for t in c.thresholds)
    paths = {"hist": write_bytes_atomic(out / "bank_hist.png", hist), "examples": write_bytes_atomic(out / "bank_examples.png", examples)}
    md = ["# BSPA sub-image bank", ""] + [f"- {k}: {v}" for k, v in facts.items()] + [
        f"- class thresholds (upper MSE of classes 0..{c.k - 2}): {thresholds}", "",
        "## Class sizes", "", to_markdown(rows), "", "![MSE histogram](bank_hist.png)", "",
        "![examples](bank_examples.png)", ""]
    paths["md"] = write_text_atomic(out / "bank.md", "\n".join(md))
    page = HtmlPage("BSPA sub-image bank", f"{len(bank)} sub-images in {c.k} classes")
    page.facts({**facts, "thresholds": thresholds})
    page.image(hist, "MSE histogram (log scale), stacked by class; dashed lines: the class thresholds.")
    page.heading("Class sizes").table(rows, digits=4)
    page.heading("Example sub-images").image(examples, "Rows: classes, easiest at the top; titles: the scorer's MSE.")
    paths["html"] = page.write(out / "bank.html")
    return paths
