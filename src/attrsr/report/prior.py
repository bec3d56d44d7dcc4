"""The attribution prior's evaluation over several trained runs (``attrsr prior-report``): per-run
rows of :mod:`attrsr.attribution.prior_eval` (region PSNR, DI, attribution norm per section, similar-
to-dissimilar ratio), per-variant summaries with the paired comparison (same seed) against a baseline
variant, tables (markdown, CSV, JSON) and a plot."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from torch import nn

from attrsr.attribution.prior_eval import RegionSettings, SpreadSettings, attribution_spread, region_psnr
from attrsr.errors import AttrsrError

METRICS = ("psnr_y", "psnr_ssr", "psnr_poi", "di")


def run_label(folder: Path) -> tuple[str, int | None]:
    """(variant, seed) of a run folder: ``…/<variant>/seed<k>`` (an experiment's layout) → (variant, k);
    any other folder → (its name, None)."""
    m = re.fullmatch(r"seed(\d+)", folder.name)
    return (folder.parent.name, int(m.group(1))) if m else (folder.name, None)


def evaluate_models(models: dict[str, nn.Module], benchmarks: Sequence[Any], scale: int, *, regions: RegionSettings = RegionSettings(),
                    spread: SpreadSettings | None = SpreadSettings(), labels: dict[str, tuple[str, int | None]] | None = None,
                    echo: Any = None) -> list[dict[str, Any]]:
    """One row per model and benchmark: run, variant, seed, dataset, the region PSNRs, DI and the
    per-section norms (``rel_norm_1`` …, ``sim_ratio_1`` …)."""
    from attrsr.data.datasets import open_dataset

    regions.check()
    data = [b if not isinstance(b, (str, Path)) else open_dataset(b, scale, name=str(b)) for b in benchmarks]
    rows = []
    for name, model in models.items():
        variant, seed = (labels or {}).get(name, (name, None))
        for ds in data:
            if echo:
                echo(f"{name}: {ds.name}")
            row: dict[str, Any] = {"run": name, "variant": variant, "seed": seed, "dataset": ds.name}
            rp = region_psnr(model, ds, scale, regions)
            row.update({k: rp[k] for k in ("psnr_y", "psnr_ssr", "psnr_poi")})
            row["images"], row["skipped"] = len(rp["images"]), len(rp["skipped"])
            if spread is not None:
                sp = attribution_spread(model, ds, scale, spread)
                row["di"] = sp["di"]
                for k, (a, b) in enumerate(zip(sp["relative_norm"], sp["similar_to_dissimilar"]), 1):
                    row[f"rel_norm_{k}"], row[f"sim_ratio_{k}"] = a, b
            rows.append(row)
    return rows


def _metric_keys(rows: list[dict[str, Any]]) -> list[str]:
    keys = [k for k in METRICS if any(k in r for r in rows)]
    extra = sorted({k for r in rows for k in r if re.fullmatch(r"(rel_norm|sim_ratio)_\d+", k)}, key=lambda k: (k.split("_")[0], int(k.rsplit("_", 1)[1])))
    return keys + extra


def summarize(rows: list[dict[str, Any]], baseline: str | None) -> list[dict[str, Any]]:
    """Per variant and dataset: mean and std over its runs of each metric; with a ``baseline`` variant,
    the paired difference (same seed) and its 95 % CI for the region PSNRs and DI."""
    from attrsr.report.experiment import paired_ci

    keys = _metric_keys(rows)
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    if baseline is not None and baseline not in variants:
        raise AttrsrError(f"baseline {baseline!r} is none of the runs' variants: {', '.join(variants)}")
    out = []
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        base = {r["seed"]: r for r in rows if r["dataset"] == ds and r["variant"] == baseline}
        for v in variants:
            mine = [r for r in rows if r["dataset"] == ds and r["variant"] == v]
            s: dict[str, Any] = {"variant": v, "dataset": ds, "runs": len(mine)}
            for k in keys:
                vals = [r[k] for r in mine if k in r and math.isfinite(r[k])]
                s[k] = float(np.mean(vals)) if vals else math.nan
                s[f"{k}_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan
            if baseline is not None and v != baseline:
                for k in [k for k in METRICS if k in keys]:
                    diffs = [r[k] - base[r["seed"]][k] for r in mine if r["seed"] in base and k in r and k in base[r["seed"]]
                             and math.isfinite(r[k] - base[r["seed"]][k])]
                    s[f"d_{k}"] = float(np.mean(diffs)) if diffs else math.nan
                    ci = paired_ci(diffs) if diffs else None
                    s[f"d_{k}_ci"] = list(ci) if ci else None
                    s["pairs"] = len(diffs)
            out.append(s)
    return out


def plot_png(rows: list[dict[str, Any]], summary: list[dict[str, Any]]) -> bytes:
    """Per dataset: region PSNR per variant (mean ± std), relative attribution norm and similar-to-
    dissimilar ratio per section (one line per variant)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(s["dataset"] for s in summary))
    n_sec = max([int(k.rsplit("_", 1)[1]) for r in rows for k in r if k.startswith("rel_norm_")] or [0])
    cols = 3 if n_sec else 1
    fig, axes = plt.subplots(len(datasets), cols, figsize=(4.2 * cols, 3.2 * len(datasets)), squeeze=False)
    for i, ds in enumerate(datasets):
        ss = [s for s in summary if s["dataset"] == ds]
        ax = axes[i][0]
        xs = np.arange(len(ss))
        for j, key in enumerate(("psnr_ssr", "psnr_poi")):
            ax.bar(xs + (j - 0.5) * 0.38, [s[key] for s in ss], 0.38, yerr=[0 if math.isnan(s[f"{key}_std"]) else s[f"{key}_std"] for s in ss],
                   label=key.replace("psnr_", "PSNR on ").upper().replace("PSNR ON", "PSNR on"))
        lo = np.nanmin([s[k] for s in ss for k in ("psnr_ssr", "psnr_poi")] or [0])
        ax.set_ylim(lo - 1.0 if math.isfinite(lo) else 0, None)
        ax.set_xticks(xs, [s["variant"] for s in ss], rotation=30, ha="right")
        ax.set_ylabel("Y-PSNR (dB)")
        ax.set_title(f"{ds}: region PSNR")
        ax.legend(fontsize=7)
        for c, (prefix, title) in enumerate((("rel_norm", "attribution norm / PoI norm"), ("sim_ratio", "similar / dissimilar norm")), 1):
            if c >= cols:
                break
            ax = axes[i][c]
            for s in ss:
                ax.plot(range(1, n_sec + 1), [s.get(f"{prefix}_{k}", math.nan) for k in range(1, n_sec + 1)], marker="o", label=s["variant"])
            ax.set_xlabel("section")
            ax.set_title(f"{ds}: {title}")
            ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_prior_report(rows: list[dict[str, Any]], summary: list[dict[str, Any]], out: str | Path, settings: dict[str, Any]) -> dict[str, Path]:
    """``runs.{csv,md}``, ``summary.{csv,md}``, ``prior-report.json`` and ``prior-report.png`` in ``out``,
    published together (nothing is left half-written)."""
    from attrsr.fileio import staged_dir, write_bytes_atomic, write_json_atomic, write_text_atomic
    from attrsr.report.tables import to_csv, to_markdown

    flat = [{k: (f"[{v[0]:.4f}, {v[1]:.4f}]" if isinstance(v, list) and len(v) == 2 else v) for k, v in s.items()} for s in summary]
    names = {"runs_csv": "runs.csv", "runs_md": "runs.md", "summary_csv": "summary.csv", "summary_md": "summary.md",
             "json": "prior-report.json", "png": "prior-report.png"}
    with staged_dir(out) as stage:
        write_text_atomic(stage / names["runs_csv"], to_csv(rows))
        write_text_atomic(stage / names["runs_md"], to_markdown(rows) + "\n")
        write_text_atomic(stage / names["summary_csv"], to_csv(flat))
        write_text_atomic(stage / names["summary_md"], _summary_markdown(summary))
        write_json_atomic(stage / names["json"], {"settings": settings, "runs": rows, "summary": summary})
        write_bytes_atomic(stage / names["png"], plot_png(rows, summary))
    return {k: Path(out) / v for k, v in names.items()}


def _summary_markdown(summary: list[dict[str, Any]]) -> str:
    from attrsr.report.tables import to_markdown

    table = []
    for s in summary:
        row: dict[str, Any] = {"dataset": s["dataset"], "variant": s["variant"], "runs": s["runs"]}
        for k in METRICS:
            if k in s:
                std = s.get(f"{k}_std")
                row[k] = f"{s[k]:.4f}" + (f" ± {std:.4f}" if std is not None and math.isfinite(std) else "")
                if f"d_{k}" in s:
                    ci = s.get(f"d_{k}_ci")
                    row[f"Δ{k}"] = f"{s[f'd_{k}']:+.4f}" + (f" [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "")
        table.append(row)
    return to_markdown(table) + "\n\nΔ: paired difference to the baseline (same seed), mean [95 % CI].\n"
