"""BSPA's reports (METHODS.md §3; the paper's Figs. 3 and 5).

* :func:`write_bank_report` — a sub-image bank: the MSE histogram (log scale) with the class
  thresholds, the class sizes table, example sub-images of each class (``bank.md``, ``bank.html``,
  ``bank_hist.png``, ``bank_examples.png``).
* :func:`runs_report` / :func:`write_runs_report` — finished training runs scored on one bank: the
  per-class Y-PSNR of each variant (mean ± std over seeds, Δ vs a baseline variant) and the MSE
  histogram of the trained models against the bank's scorer (the "short-tailed" figure), with the
  share of sub-images each model leaves in each of the bank's classes. With a held-aside bank sorted
  by the training bank's thresholds (``report["val"]``, :func:`attach_val`), train and val classes
  side by side (the paper's Fig. 3: two panels).
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
from attrsr.data.longtail import assign_classes
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
        if not len(m):  # a held-aside bank's class may be empty
            rows.append({"class": c, "sub-images": 0, "share": 0.0, "mse_min": None, "mse_max": None, "mse_mean": None, "psnr_of_mean_mse": None})
            continue
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
    if bank.held_aside:
        facts["classes"] = f"held aside: sorted by the thresholds of {bank.meta['thresholds_from'].get('bank')} (sizes need not follow the long-tail law)"
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
    # a held-aside bank's class may be empty: no PSNR there (None)
    per_seed = {key: [pooled_psnr(val[cls == c, 1]) if (cls == c).any() else None for c in range(k)] for key, val in scores.items()}
    per_class = []
    for v in variants:
        for c in range(k):
            n = int((cls == c).sum())
            vals = [per_seed[(v, s)][c] for s in seeds[v]]
            row = {"variant": v, "class": c, "n": n, "psnr_y": float(np.mean(vals)) if n else None,
                   "std": float(np.std(vals, ddof=1)) if n and len(vals) > 1 else None, "seeds": len(vals)}
            common = [s for s in seeds[v] if s in seeds[baseline]]
            if v != baseline and common and n:
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
        of = assign_classes(mse, bank.classes.thresholds)
        shares.append({"model": v, **{f"class{c}": float((of == c).mean()) for c in range(k)},
                       "mean_mse": float(mse.mean()), "p99_mse": float(np.percentile(mse, 99))})
    return {"baseline": baseline, "variants": variants, "seeds": seeds, "k": k, "sub_images": int(len(rows)),
            "thresholds": bank.classes.thresholds, "per_class": per_class, "shares": shares,
            "per_seed": {f"{v}/seed{s}": per_seed[(v, s)] for v, s in scores}, "mean_mse": mean_mse,
            "bank_mse": bank.mse[rows].tolist()}


def attach_val(report: dict[str, Any], val: dict[str, Any]) -> dict[str, Any]:
    """``report`` (train classes) with ``val`` (the same runs on a held-aside bank sorted by the same
    thresholds: :func:`runs_report` on it) under ``"val"``; one error when they do not pair up."""
    if (val["variants"], val["seeds"], val["baseline"], val["k"]) != (report["variants"], report["seeds"], report["baseline"], report["k"]):
        raise AttrsrError("the val report's runs, baseline or K differ from the train report's")
    if list(val["thresholds"]) != list(report["thresholds"]):
        raise AttrsrError("the val bank's thresholds differ from the train bank's: build it with --thresholds-from the train bank")
    return {**report, "val": val}


def _nan(v: Any) -> float:
    return np.nan if v is None else float(v)


def _per_class_panels(axes_col, report: dict[str, Any], what: str) -> None:
    """One column of the per-class figure: Y-PSNR per class per variant (top), Δ vs baseline (bottom)."""
    variants, base, k = report["variants"], report["baseline"], report["k"]
    others = [v for v in variants if v != base]
    ax = axes_col[0]
    for i, v in enumerate(variants):
        rows = [r for r in report["per_class"] if r["variant"] == v]
        ax.errorbar(np.arange(k) + 0.06 * (i - len(variants) / 2), [_nan(r["psnr_y"]) for r in rows],
                    yerr=[r["std"] or 0.0 for r in rows], marker="o", ms=3, capsize=3, label=v)
    ax.set_ylabel("Y-PSNR (dB), mean ± std over seeds")
    ax.set_xticks(range(k))
    ax.set_title(f"{what}: {report['sub_images']} sub-images (class 0 = easiest)", fontsize=10)
    ax.legend(fontsize=8)
    if not others:
        ax.set_xlabel("difficulty class")
        return
    ax = axes_col[1]
    for i, v in enumerate(others):
        rows = [r for r in report["per_class"] if r["variant"] == v]
        d = np.array([_nan(r.get("delta")) for r in rows])
        ci = [r.get("ci95") or [_nan(r.get("delta"))] * 2 for r in rows]
        err = [d - np.array([c[0] for c in ci]), np.array([c[1] for c in ci]) - d]
        ax.errorbar(np.arange(k) + 0.08 * (i - len(others) / 2), d, yerr=err, fmt="o", capsize=3, label=v)
    ax.axhline(0, color="grey", lw=0.8, ls="--")
    ax.set_xticks(range(k))
    ax.set_xlabel("difficulty class")
    ax.set_ylabel(f"Δ vs {base} (dB), 95% CI")
    ax.legend(fontsize=8)


def per_class_png(report: dict[str, Any]) -> bytes:
    """Top: Y-PSNR per class per variant (mean ± std over seeds); bottom: Δ vs the baseline (95 % CI).
    With ``report["val"]`` two columns: train classes (left) and held-aside val classes (right)."""
    plt = _plt()
    others = [v for v in report["variants"] if v != report["baseline"]]
    parts = [(report, "train classes (bank)")] + ([(report["val"], "val classes (held aside, train thresholds)")] if "val" in report else [])
    nrows = 2 if others else 1
    fig, axes = plt.subplots(nrows, len(parts), figsize=(7.5 * len(parts), 6.4 if others else 3.6), squeeze=False, sharex=True)
    for j, (part, what) in enumerate(parts):
        _per_class_panels([axes[r][j] for r in range(nrows)], part, what)
    if len(parts) > 1:  # one PSNR scale per row, so the panels compare at a glance
        for r in range(nrows):
            lo = min(axes[r][j].get_ylim()[0] for j in range(len(parts)))
            hi = max(axes[r][j].get_ylim()[1] for j in range(len(parts)))
            for j in range(len(parts)):
                axes[r][j].set_ylim(lo, hi)
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


def _psnr_cell(r: dict[str, Any]) -> str:
    if r["psnr_y"] is None:
        return "—"
    return f"{r['psnr_y']:.2f} ± {r['std']:.2f}" if r["std"] is not None else f"{r['psnr_y']:.2f}"


def _delta_cell(r: dict[str, Any]) -> str:
    if "delta" not in r:
        return ""
    ci = r.get("ci95")
    return f"{r['delta']:+.3f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "")


def _per_class_display(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (variant, class); with ``report["val"]`` the val classes' columns beside the train ones."""
    base = report["baseline"]
    val = {(r["variant"], r["class"]): r for r in report["val"]["per_class"]} if "val" in report else None
    out = []
    for r in report["per_class"]:
        if val is None:
            row = {"variant": r["variant"], "class": r["class"], "n": r["n"], "Y-PSNR": _psnr_cell(r), "seeds": r["seeds"]}
            if r["variant"] != base:
                row[f"Δ vs {base}"] = _delta_cell(r)
        else:
            w = val[(r["variant"], r["class"])]
            row = {"variant": r["variant"], "class": r["class"], "seeds": r["seeds"], "train n": r["n"], "train Y-PSNR": _psnr_cell(r),
                   f"train Δ vs {base}": _delta_cell(r), "val n": w["n"], "val Y-PSNR": _psnr_cell(w), f"val Δ vs {base}": _delta_cell(w)}
        out.append(row)
    return out


def wide_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Variants (seed means) and their Δ vs the baseline as rows, classes as columns (as the paper's figure reads)."""
    k, base = report["k"], report["baseline"]
    by = {(r["variant"], r["class"]): r for r in report["per_class"]}
    rows = [{"": v, **{f"class {c}": by[(v, c)]["psnr_y"] for c in range(k)}} for v in report["variants"]]
    rows += [{"": f"{v} − {base}", **{f"class {c}": by[(v, c)].get("delta") for c in range(k)}} for v in report["variants"] if v != base]
    rows.append({"": "sub-images", **{f"class {c}": by[(base, c)]["n"] for c in range(k)}})
    return rows


def _wide_markdown(report: dict[str, Any]) -> str:
    rows = [{key: (f"{v:+.3f}" if "−" in str(r[""]) else f"{v:.2f}") if isinstance(v, float) else ("—" if v is None else v)
             for key, v in r.items()} for r in wide_rows(report)]
    return to_markdown(rows)


# the per-class Δ pairs seeds (one pooled PSNR per class and seed), not images: report.experiment's CI_METHOD does not apply
CLASS_CI = "Δ: mean over seeds of the paired difference variant − baseline of the class's pooled PSNR; [95% CI]: paired t over those seeds"


def write_runs_report(report: dict[str, Any], out: str | Path, title: str = "BSPA: per-class PSNR and MSE tails") -> dict[str, Path]:
    """``bspa_report.json``, ``per_class.csv``, ``shares.csv``, ``per_class.png``, ``mse_hist.png``,
    ``bspa_report.md`` and ``bspa_report.html`` in ``out``."""
    out = Path(out)
    val = report.get("val")
    pc, hist = per_class_png(report), mse_histogram_png(report)

    def flat(r: dict[str, Any], split: str) -> dict[str, Any]:
        return {"split": split, **{k: (v if not isinstance(v, list) else " ".join(f"{x:.4f}" for x in v)) for k, v in r.items()}}

    table = [flat(r, "train") for r in report["per_class"]] + ([flat(r, "val") for r in val["per_class"]] if val else [])
    paths = {
        "json": write_json_atomic(out / "bspa_report.json", report),
        "per_class_csv": write_text_atomic(out / "per_class.csv", to_csv(table)),
        "shares_csv": write_text_atomic(out / "shares.csv", to_csv(report["shares"])),
        "per_class_png": write_bytes_atomic(out / "per_class.png", pc),
        "mse_png": write_bytes_atomic(out / "mse_hist.png", hist),
    }
    if val:
        val_hist = mse_histogram_png(val)
        paths["val_shares_csv"] = write_text_atomic(out / "shares_val.csv", to_csv(val["shares"]))
        paths["val_mse_png"] = write_bytes_atomic(out / "mse_hist_val.png", val_hist)
    runs = ", ".join(f"{v} (seeds {report['seeds'][v]})" for v in report["variants"])
    where = f"{report['sub_images']} bank sub-images" + (f" (train classes) and {val['sub_images']} held-aside sub-images sorted by the same thresholds (val classes)" if val else "")
    md = [f"# {title}", "", f"Runs: {runs}; baseline `{report['baseline']}`; {where}. "
          "Y-PSNR (8-bit SR, border = scale) of each class's sub-images pooled (their mean squared error), then mean ± std over seeds.", "",
          "## Per-class Y-PSNR", "", to_markdown(_per_class_display(report)), "", CLASS_CI + ".", "", "![per-class PSNR](per_class.png)", "",
          "### Train classes (seed means, dB)", "", _wide_markdown(report), ""]
    if val:
        md += ["### Val classes (held aside, seed means, dB)", "", _wide_markdown(val), ""]
    md += ["## Share of sub-images in each bank class (by the bank's MSE thresholds)", "", to_markdown(report["shares"]), "",
           "![MSE histogram](mse_hist.png)", ""]
    if val:
        md += ["### Val sub-images", "", to_markdown(val["shares"]), "", "![MSE histogram, val](mse_hist_val.png)", ""]
    md += ["The bank itself (its histogram, classes and examples): [bank.md](bank.md).", ""]
    paths["md"] = write_text_atomic(out / "bspa_report.md", "\n".join(md))
    page = HtmlPage(title, f"baseline {report['baseline']}; {where}")
    page.paragraph(f"Runs: {runs}.")
    page.image(pc, "Top: Y-PSNR per difficulty class, mean ± std over seeds. Bottom: paired Δ vs the baseline, 95% CI over seeds."
               + (" Left: train classes; right: held-aside val classes (the train bank's thresholds)." if val else ""))
    page.heading("Per-class Y-PSNR").table(_per_class_display(report)).paragraph(CLASS_CI + ".")
    page.image(hist, "MSE per sub-image: the bank's scorer (dotted) and each variant's seed-mean; dashed: the bank's class thresholds.")
    page.heading("Share of sub-images in each bank class").table(report["shares"], digits=4)
    if val:
        page.image(val_hist, "The same on the held-aside (val) sub-images.")
        page.heading("Share of val sub-images in each class").table(val["shares"], digits=4)
    paths["html"] = page.write(out / "bspa_report.html")
    return paths
