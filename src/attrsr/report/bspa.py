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

from attrsr.data.bank import SubImageBank, pooled_psnr, score_crops
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


# --------------------------------------------------------------------------------------------
# Finished runs scored on a bank


def select_rows(bank: SubImageBank, per_class: int | None, seed: int = 0) -> np.ndarray:
    """Row indices scored by the runs report: all of them, or a fixed sample of ``per_class`` per class."""
    if not per_class:
        return np.arange(len(bank))
    return np.sort(np.concatenate(list(example_items(bank, per_class, seed).values())))


def score_models(
    models: Sequence[tuple[str, int, torch.nn.Module]],
    bank: SubImageBank,
    lr_of: Callable[[str], np.ndarray],
    hr_of: Callable[[str], np.ndarray],
    rows: np.ndarray,
    *,
    batch: int = 64,
    progress: bool = False,
) -> dict[tuple[str, int], np.ndarray]:
    """{(variant, seed): (len(rows), 2) array of MSE and Y-PSNR} of each model on the bank's sub-images."""
    from attrsr.progress import progress_bar

    crops = [(lr_of(bank.names[r]), hr_of(bank.names[r]), int(bank.top[r]), int(bank.left[r])) for r in rows]
    out = {}
    for variant, seed, model in progress_bar(models, desc="scoring runs on the bank", unit="run", enabled=progress, leave=False):
        if int(getattr(model, "scale", bank.scale)) != bank.scale:
            raise AttrsrError(f"{variant}/seed{seed}: the model is ×{model.scale}, the bank ×{bank.scale}; give runs and a bank of one scale")
        out[(variant, seed)] = score_crops(model.eval(), crops, bank.size, bank.scale, batch, psnr_y=True)
    return out


def _class_of(mse: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    # class c holds the MSEs up to its threshold (inclusive), as the bank's split does
    return np.searchsorted(np.asarray(thresholds), mse, side="left")


def runs_report(scores: dict[tuple[str, int], np.ndarray], bank: SubImageBank, rows: np.ndarray, baseline: str | None = None) -> dict[str, Any]:
    """Per-class Y-PSNR (a class's sub-images pooled, :func:`pooled_psnr`; mean ± std over seeds; paired
    Δ vs ``baseline`` with a 95 % CI over seeds)
    and the share of sub-images each variant's seed-mean MSE puts in each of the bank's classes."""
    from attrsr.report.experiment import paired_ci

    k = bank.classes.k
    cls = bank.classes.classes[rows]
    variants = list(dict.fromkeys(v for v, _ in scores))
    baseline = baseline or variants[0]
    if baseline not in variants:
        raise AttrsrError(f"baseline variant {baseline!r} is not among the runs ({', '.join(variants)})")
    seeds = {v: sorted(s for w, s in scores if w == v) for v in variants}
    per_seed = {key: [pooled_psnr(val[cls == c, 1]) for c in range(k)] for key, val in scores.items()}
    per_class = []
    for v in variants:
        for c in range(k):
            vals = [per_seed[(v, s)][c] for s in seeds[v]]
            row = {"variant": v, "class": c, "n": int((cls == c).sum()), "psnr_y": float(np.mean(vals)),
                   "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else None, "seeds": len(vals)}
            common = [s for s in seeds[v] if s in seeds[baseline]]
            if v != baseline and common:
                diffs = [per_seed[(v, s)][c] - per_seed[(baseline, s)][c] for s in common]
                row["delta"] = float(np.mean(diffs))
                ci = paired_ci(diffs)
                row["ci95"] = list(ci) if ci is not None else None
            per_class.append(row)
    shares = [{"model": "scorer (bank)", **{f"class{c}": float((cls == c).mean()) for c in range(k)},
               "mean_mse": float(bank.mse[rows].mean()), "p99_mse": float(np.percentile(bank.mse[rows], 99))}]
    mean_mse = {}
    for v in variants:
        mse = np.mean([scores[(v, s)][:, 0] for s in seeds[v]], axis=0)
        mean_mse[v] = mse.tolist()
        of = _class_of(mse, bank.classes.thresholds)
        shares.append({"model": v, **{f"class{c}": float((of == c).mean()) for c in range(k)},
                       "mean_mse": float(mse.mean()), "p99_mse": float(np.percentile(mse, 99))})
    return {"baseline": baseline, "variants": variants, "seeds": seeds, "k": k, "sub_images": int(len(rows)),
            "thresholds": bank.classes.thresholds, "per_class": per_class, "shares": shares,
            "per_seed": {f"{v}/seed{s}": per_seed[(v, s)] for v, s in scores}, "mean_mse": mean_mse,
            "bank_mse": bank.mse[rows].tolist()}


def per_class_png(report: dict[str, Any]) -> bytes:
    """Top: Y-PSNR per class per variant (mean ± std over seeds); bottom: Δ vs the baseline (95 % CI)."""
    plt = _plt()
    variants, base, k = report["variants"], report["baseline"], report["k"]
    others = [v for v in variants if v != base]
    fig, axes = plt.subplots(2 if others else 1, 1, figsize=(7.5, 6.4 if others else 3.6), squeeze=False)
    ax = axes[0][0]
    for i, v in enumerate(variants):
        rows = [r for r in report["per_class"] if r["variant"] == v]
        ax.errorbar(np.arange(k) + 0.06 * (i - len(variants) / 2), [r["psnr_y"] for r in rows],
                    yerr=[r["std"] or 0.0 for r in rows], marker="o", ms=3, capsize=3, label=v)
    ax.set_ylabel("Y-PSNR (dB), mean ± std over seeds")
    ax.set_xticks(range(k))
    ax.set_title(f"per-class PSNR on {report['sub_images']} bank sub-images (class 0 = easiest)")
    ax.legend(fontsize=8)
    if others:
        ax = axes[1][0]
        for i, v in enumerate(others):
            rows = [r for r in report["per_class"] if r["variant"] == v]
            d = np.array([r.get("delta", np.nan) for r in rows])
            ci = [r.get("ci95") or [r.get("delta", np.nan)] * 2 for r in rows]
            err = [d - np.array([c[0] for c in ci]), np.array([c[1] for c in ci]) - d]
            ax.errorbar(np.arange(k) + 0.08 * (i - len(others) / 2), d, yerr=err, fmt="o", capsize=3, label=v)
        ax.axhline(0, color="grey", lw=0.8, ls="--")
        ax.set_xticks(range(k))
        ax.set_xlabel("difficulty class")
        ax.set_ylabel(f"Δ vs {base} (dB), 95% CI")
        ax.legend(fontsize=8)
    else:
        ax.set_xlabel("difficulty class")
    fig.tight_layout()
    return _png(fig)


def mse_histogram_png(report: dict[str, Any]) -> bytes:
    """The bank scorer's MSE histogram and each variant's (seed-mean MSE per sub-image), log axis,
    the bank's thresholds dashed: a trained model that shortens the tail moves mass left of them."""
    plt = _plt()
    series = {"scorer (bank)": np.asarray(report["bank_mse"])} | {v: np.asarray(m) for v, m in report["mean_mse"].items()}
    series = {n: _floor(v) for n, v in series.items()}
    bins = _log_bins(list(series.values()))
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for i, (name, v) in enumerate(series.items()):
        ax.hist(v, bins=bins, histtype="step", lw=1.6 if i else 1.2, ls="-" if i else ":", color="k" if not i else None, label=name)
    for t in report["thresholds"]:
        ax.axvline(max(t, bins[0]), color="grey", ls="--", lw=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("MSE per sub-image ([0, 1] RGB, log scale)")
    ax.set_ylabel("sub-images")
    ax.set_title("MSE histogram on the bank: trained models vs the scorer (dashed: class thresholds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _per_class_display(report: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for r in report["per_class"]:
        row = {"variant": r["variant"], "class": r["class"], "n": r["n"],
               "Y-PSNR": f"{r['psnr_y']:.2f} ± {r['std']:.2f}" if r["std"] is not None else f"{r['psnr_y']:.2f}", "seeds": r["seeds"]}
        if "delta" in r:
            ci = r.get("ci95")
            row[f"Δ vs {report['baseline']}"] = f"{r['delta']:+.3f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "")
        out.append(row)
    return out


def write_runs_report(report: dict[str, Any], out: str | Path, title: str = "BSPA: per-class PSNR and MSE tails") -> dict[str, Path]:
    """``bspa_report.json``, ``per_class.csv``, ``shares.csv``, ``per_class.png``, ``mse_hist.png``,
    ``bspa_report.md`` and ``bspa_report.html`` in ``out``."""
    from attrsr.report.experiment import CI_METHOD

    out = Path(out)
    pc, hist = per_class_png(report), mse_histogram_png(report)
    table = [{k: (v if not isinstance(v, list) else " ".join(f"{x:.4f}" for x in v)) for k, v in r.items()} for r in report["per_class"]]
    paths = {
        "json": write_json_atomic(out / "bspa_report.json", report),
        "per_class_csv": write_text_atomic(out / "per_class.csv", to_csv(table)),
        "shares_csv": write_text_atomic(out / "shares.csv", to_csv(report["shares"])),
        "per_class_png": write_bytes_atomic(out / "per_class.png", pc),
        "mse_png": write_bytes_atomic(out / "mse_hist.png", hist),
    }
    runs = ", ".join(f"{v} (seeds {report['seeds'][v]})" for v in report["variants"])
    md = [f"# {title}", "", f"Runs: {runs}; baseline `{report['baseline']}`; {report['sub_images']} bank sub-images. "
          "Y-PSNR (8-bit SR, border = scale) of each class's sub-images pooled (their mean squared error), then mean ± std over seeds.", "",
          "## Per-class Y-PSNR", "", to_markdown(_per_class_display(report)), "", CI_METHOD + ".", "", "![per-class PSNR](per_class.png)", "",
          "## Share of sub-images in each bank class (by the bank's MSE thresholds)", "", to_markdown(report["shares"]), "",
          "![MSE histogram](mse_hist.png)", "", "The bank itself (its histogram, classes and examples): [bank.md](bank.md).", ""]
    paths["md"] = write_text_atomic(out / "bspa_report.md", "\n".join(md))
    page = HtmlPage(title, f"baseline {report['baseline']}; {report['sub_images']} bank sub-images")
    page.paragraph(f"Runs: {runs}.")
    page.image(pc, "Top: Y-PSNR per difficulty class, mean ± std over seeds. Bottom: paired Δ vs the baseline, 95% CI over seeds.")
    page.heading("Per-class Y-PSNR").table(_per_class_display(report)).paragraph(CI_METHOD + ".")
    page.image(hist, "MSE per sub-image: the bank's scorer (dotted) and each variant's seed-mean; dashed: the bank's class thresholds.")
    page.heading("Share of sub-images in each bank class").table(report["shares"], digits=4)
    paths["html"] = page.write(out / "bspa_report.html")
    return paths
