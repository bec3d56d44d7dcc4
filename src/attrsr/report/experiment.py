"""The report of an experiment grid: statistics over seeds, paired differences, tables and a chart.

Input: one evaluation record per run (``eval.json``, see :mod:`attrsr.experiment`). Statistics:

* per benchmark, variant and metric: the mean and the sample standard deviation (``ddof=1``; ``None``
  with one seed) over seeds of the benchmark value (the mean over its images), and each seed's value;
* each variant against the baseline: the **paired difference** ``d = variant − baseline`` for every
  (image, seed) pair — same image, same seed, so image difficulty and seed luck cancel — with the 95 %
  confidence interval of its mean from the paired t distribution, ``mean ± t(0.975, n−1)·sd/√n``
  over the ``n`` = images × seeds differences (:func:`paired_ci`). Its mean equals the difference
  of the two variants' means. Because the images of one seed share a model, these ``n`` values are not
  independent: the interval reflects how consistent the gain is across images, and underrates seed
  noise. ``ci95_seeds`` is the conservative companion: the paired t interval over the per-seed
  benchmark differences (``n`` = seeds, ``None`` with one seed). A gain is real when both exclude 0.

Metrics are whatever numbers a benchmark's records hold: Y-PSNR/SSIM for SR benchmarks; a method's
own benchmark (``Method.evaluate_run``, e.g. SR4IR's task metric and RGB PSNR) may hold a
dataset-level metric without per-image values (mIoU from one confusion matrix): its difference and
interval are then per seed only (``ci95_<metric>`` is ``None``).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from attrsr.fileio import write_bytes_atomic, write_json_atomic, write_text_atomic
from attrsr.report.html import HtmlPage
from attrsr.report.tables import to_csv, to_markdown

METRICS = ("psnr_y", "ssim_y")
CI_METHOD = (
    "paired t: 95% CI of the mean of per-(image, seed) differences variant - baseline "
    "(mean ± t(0.975, n-1)·sd/sqrt(n)); ci95_seeds: the same over per-seed benchmark differences"
)


def paired_ci(diffs: list[float], level: float = 0.95) -> tuple[float, float] | None:
    """Paired-t confidence interval of the mean of ``diffs``; ``None`` for fewer than 2 values.

    All-equal differences (e.g. two identical variants: exactly 0) give the degenerate interval
    ``(d, d)``."""
    from scipy import stats

    n = len(diffs)
    if n < 2:
        return None
    mean = math.fsum(diffs) / n
    sd = math.sqrt(math.fsum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return (mean - half, mean + half)


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    n = len(values)
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return mean, std


def summarize(records: list[dict[str, Any]], baseline: str, benchmarks: list[str], run_dirs: dict[str, dict[int, str]],
              compare: list[tuple[str, str]] = ()) -> dict[str, Any]:
    """``report.json``'s content from the runs' evaluation records. ``compare``: extra (variant,
    reference) pairs to difference besides each variant vs the baseline (e.g. ADD vs CutBlur)."""
    by_variant: dict[str, dict[int, dict[str, Any]]] = {}
    for rec in records:
        by_variant.setdefault(rec["variant"], {})[int(rec["seed"])] = rec
    seeds = sorted({int(r["seed"]) for r in records})
    metrics = {bench: _metrics_of(records, bench) for bench in benchmarks}
    variants: dict[str, Any] = {}
    for name, runs in by_variant.items():
        entry: dict[str, Any] = {
            "runs": {str(s): run_dirs[name][s] for s in sorted(runs)},
            "wall_s": {str(s): runs[s].get("train_wall_s") for s in sorted(runs)},
            "loop_s": {str(s): runs[s].get("loop_s") for s in sorted(runs)},
            "benchmarks": {},
        }
        for bench in benchmarks:
            row = {}
            for metric in metrics[bench]:
                per_seed = {s: float(runs[s]["benchmarks"][bench][metric]) for s in sorted(runs)}
                mean, std = _mean_std(list(per_seed.values()))
                row[metric] = {"mean": mean, "std": std, "per_seed": {str(s): v for s, v in per_seed.items()}}
            row["images"] = len(next(iter(runs.values()))["benchmarks"][bench].get("images") or {})
            entry["benchmarks"][bench] = row
        variants[name] = entry
    paired = {name: _paired(runs, by_variant[baseline], metrics)
              for name, runs in by_variant.items() if name != baseline}
    extra = [{"variant": a, "reference": b, "benchmarks": _paired(by_variant[a], by_variant[b], metrics)}
             for a, b in compare if a in by_variant and b in by_variant]
    return {
        "baseline": baseline,
        "seeds": seeds,
        "benchmarks": benchmarks,
        "metrics": metrics,
        "variants": variants,
        "paired": paired,
        "compare": extra,
        "ci_method": CI_METHOD,
    }


def _metrics_of(records: list[dict[str, Any]], bench: str) -> list[str]:
    """The numeric metrics of a benchmark that every run has, in the first run's order (SR
    benchmarks: psnr_y, ssim_y; a method's benchmark: its task metric first)."""
    entries = [r["benchmarks"][bench] for r in records]
    return [k for k, v in entries[0].items() if k != "images" and isinstance(v, (int, float)) and not isinstance(v, bool)
            and all(isinstance(e.get(k), (int, float)) for e in entries)]


def _paired(runs: dict[int, dict[str, Any]], base_runs: dict[int, dict[str, Any]], metrics: dict[str, list[str]]) -> dict[str, Any]:
    """Per benchmark: the paired differences ``runs − base_runs`` over their common seeds. A metric
    without per-image values (mIoU from one confusion matrix) is differenced per seed only."""
    out: dict[str, Any] = {}
    common = sorted(set(runs) & set(base_runs))
    for bench, names in metrics.items():
        row: dict[str, Any] = {"seeds": common}
        for metric in names:
            diffs, seed_diffs, per_image = [], [], True
            for s in common:
                a, b = runs[s]["benchmarks"][bench], base_runs[s]["benchmarks"][bench]
                seed_diffs.append(a[metric] - b[metric])
                images_a, images_b = a.get("images") or {}, b.get("images") or {}
                if images_b and all(metric in images_b[i] and metric in (images_a.get(i) or {}) for i in images_b):
                    diffs += [images_a[img][metric] - images_b[img][metric] for img in sorted(images_b)]
                else:
                    per_image = False
            ci = paired_ci(diffs) if per_image else None
            ci_seeds = paired_ci(seed_diffs)
            row[f"delta_{metric}"] = math.fsum(diffs) / len(diffs) if per_image and diffs else math.fsum(seed_diffs) / len(seed_diffs)
            row[_ci_key(metric)] = list(ci) if ci else None
            row[_ci_key(metric) + "_seeds"] = list(ci_seeds) if ci_seeds else None
            row[f"n_{metric}"] = len(diffs) if per_image else len(seed_diffs)
            row.setdefault("n", row[f"n_{metric}"])  # the first metric's (Y-PSNR for SR benchmarks)
        out[bench] = row
    return out


def _ci_key(metric: str) -> str:
    # The schema names the PSNR interval plainly "ci95".
    return "ci95" if metric == "psnr_y" else f"ci95_{metric}"


def _verdict(ci: list[float] | None) -> str:
    if ci is None:
        return "n/a"
    if ci[0] > 0:
        return "better"
    if ci[1] < 0:
        return "worse"
    return "no difference shown"


def _metrics(report: dict[str, Any], bench: str) -> list[str]:
    return report.get("metrics", {}).get(bench) or list(METRICS)


def _combined_verdict(ci: list[float] | None, ci_seeds: list[float] | None) -> str:
    """A difference is called only when every available interval agrees."""
    verdicts = {_verdict(c) for c in (ci, ci_seeds) if c is not None}
    return verdicts.pop() if len(verdicts) == 1 else ("n/a" if not verdicts else "no difference shown")


def tables(report: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(per-variant rows, paired rows) for CSV/markdown/HTML. Paired rows: one per benchmark,
    variant and reference, with the Y-PSNR/SSIM columns for SR benchmarks and, for a method's
    benchmark, ``delta``/intervals of each of its metrics (``<metric>_delta`` …)."""
    rows = []
    for name, v in report["variants"].items():
        for bench, b in v["benchmarks"].items():
            row: dict[str, Any] = {"benchmark": bench, "variant": name, "images": b["images"]}
            metrics = _metrics(report, bench)
            for metric in metrics:
                row[f"{metric}_mean"] = b[metric]["mean"]
                row[f"{metric}_std"] = b[metric]["std"]
            for seed, value in b[metrics[0]]["per_seed"].items():
                row[f"{metrics[0]}_seed{seed}"] = value
            walls = [w for w in v["wall_s"].values() if w is not None]
            row["train_wall_s_mean"] = sum(walls) / len(walls) if walls else None
            rows.append(row)
    rows.sort(key=lambda r: report["benchmarks"].index(r["benchmark"]))
    paired_rows = [_paired_row(bench, name, report["baseline"], p, _metrics(report, bench))
                   for name, per_bench in report["paired"].items() for bench, p in per_bench.items()]
    paired_rows.sort(key=lambda r: report["benchmarks"].index(r["benchmark"]))
    compare_rows = [_paired_row(bench, c["variant"], c["reference"], p, _metrics(report, bench))
                    for c in report.get("compare", []) for bench, p in c["benchmarks"].items()]
    compare_rows.sort(key=lambda r: report["benchmarks"].index(r["benchmark"]))
    return rows, paired_rows + compare_rows


def _paired_row(bench: str, name: str, reference: str, p: dict[str, Any], metrics: list[str] = METRICS) -> dict[str, Any]:
    if list(metrics) == list(METRICS):  # an SR benchmark: the established columns
        return {
            "benchmark": bench,
            "variant": name,
            "baseline": reference,
            "delta_psnr_y": p["delta_psnr_y"],
            "ci95_lo": p["ci95"][0] if p["ci95"] else None,
            "ci95_hi": p["ci95"][1] if p["ci95"] else None,
            "ci95_seeds_lo": p["ci95_seeds"][0] if p["ci95_seeds"] else None,
            "ci95_seeds_hi": p["ci95_seeds"][1] if p["ci95_seeds"] else None,
            "delta_ssim_y": p["delta_ssim_y"],
            "n": p["n"],
            "verdict": _combined_verdict(p["ci95"], p["ci95_seeds"]),
        }
    row: dict[str, Any] = {"benchmark": bench, "variant": name, "baseline": reference}
    for metric in metrics:
        ci, ci_seeds = p[_ci_key(metric)], p[_ci_key(metric) + "_seeds"]
        row[f"{metric}_delta"] = p[f"delta_{metric}"]
        row[f"{metric}_ci95_lo"], row[f"{metric}_ci95_hi"] = (ci[0], ci[1]) if ci else (None, None)
        row[f"{metric}_ci95_seeds_lo"], row[f"{metric}_ci95_seeds_hi"] = (ci_seeds[0], ci_seeds[1]) if ci_seeds else (None, None)
        row[f"{metric}_n"] = p.get(f"n_{metric}", p["n"])
        row[f"{metric}_verdict"] = _combined_verdict(ci, ci_seeds)
    return row


def run_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per run: folder and wall time."""
    out = []
    for name, v in report["variants"].items():
        for seed, folder in v["runs"].items():
            out.append({"variant": name, "seed": int(seed), "run": folder, "train_wall_s": v["wall_s"][seed], "loop_s": v["loop_s"][seed]})
    return out


def chart_png(report: dict[str, Any]) -> bytes:
    """Top: each benchmark's first metric (Y-PSNR; a method benchmark's task metric) mean ± std over
    seeds per variant (dots: seeds); bottom: Δ vs baseline with its 95 % CI (the per-seed interval
    where the metric has no per-image values)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = report["benchmarks"]
    names = list(report["variants"])
    others = [n for n in names if n != report["baseline"]]
    fig, axes = plt.subplots(2 if others else 1, len(benches), figsize=(max(4.0, 2.2 + 1.1 * len(names)) * len(benches) / 1.6, 6.4 if others else 3.4), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, bench in enumerate(benches):
        ax = axes[0][j]
        metric = _metrics(report, bench)[0]
        label = "Y-PSNR (dB)" if metric == "psnr_y" else metric
        means = [report["variants"][n]["benchmarks"][bench][metric]["mean"] for n in names]
        stds = [report["variants"][n]["benchmarks"][bench][metric]["std"] or 0.0 for n in names]
        ax.bar(range(len(names)), means, yerr=stds, capsize=4, color=[colours[i % len(colours)] for i in range(len(names))], alpha=0.8)
        for i, n in enumerate(names):
            vals = list(report["variants"][n]["benchmarks"][bench][metric]["per_seed"].values())
            ax.plot([i] * len(vals), vals, "k.", ms=4)
        lo = min(m - s for m, s in zip(means, stds))
        hi = max(m + s for m, s in zip(means, stds))
        pad = max(0.05 if metric == "psnr_y" else 0.005, 0.3 * (hi - lo))
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_xticks(range(len(names)), names, rotation=20)
        ax.set_title(bench)
        ax.set_ylabel(f"{label}, mean ± std")
        if others:
            ax = axes[1][j]
            deltas = [report["paired"][n][bench][f"delta_{metric}"] for n in others]
            cis = [report["paired"][n][bench][_ci_key(metric)] or report["paired"][n][bench][_ci_key(metric) + "_seeds"] or [d, d]
                   for n, d in zip(others, deltas)]
            err = [[d - c[0] for d, c in zip(deltas, cis)], [c[1] - d for d, c in zip(deltas, cis)]]
            ax.errorbar(range(len(others)), deltas, yerr=err, fmt="o", capsize=5, color="k")
            ax.axhline(0.0, color="grey", lw=0.8, ls="--")
            ax.set_xticks(range(len(others)), others, rotation=20)
            ax.set_xlim(-0.6, len(others) - 0.4)
            ax.set_ylabel(f"Δ {label} vs {report['baseline']}, 95% CI")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def write_report(report: dict[str, Any], out: str | Path, title: str = "attrsr experiment") -> dict[str, Path]:
    """``report.json``, ``report.csv``, ``paired.csv``, ``runs.csv``, ``report.md``, ``report.png``,
    ``report.html`` in ``out`` (each written atomically)."""
    out = Path(out)
    rows, paired_rows = tables(report)
    runs = run_rows(report)
    png = chart_png(report)
    paths = {
        "json": write_json_atomic(out / "report.json", report),
        "csv": write_text_atomic(out / "report.csv", to_csv(rows)),
        "paired_csv": write_text_atomic(out / "paired.csv", to_csv(paired_rows)),
        "runs_csv": write_text_atomic(out / "runs.csv", to_csv(runs)),
        "png": write_bytes_atomic(out / "report.png", png),
    }
    md = [f"# {title}", "", f"Baseline: `{report['baseline']}`; seeds {report['seeds']}. Y channel, border = scale.", ""]
    md += ["## Mean ± std over seeds", "", to_markdown(_display_rows(report)), ""]
    if paired_rows:
        heading = f"Paired difference vs `{report['baseline']}`" + (" (and the grid's `compare` pairs)" if report.get("compare") else "")
        md += [f"## {heading}", "", to_markdown(paired_rows), "", CI_METHOD + ".", ""]
    md += ["## Runs", "", to_markdown(runs, digits=1), "", "![chart](report.png)", ""]
    paths["md"] = write_text_atomic(out / "report.md", "\n".join(md))
    page = HtmlPage(title, f"baseline {report['baseline']}; seeds {report['seeds']}; Y channel, border = scale")
    page.image(png, "Top: each benchmark's first metric, mean ± std over seeds (dots: each seed). Bottom: paired difference vs the baseline with its 95% CI.")
    page.heading("Mean ± std over seeds").table(_display_rows(report), digits=4)
    page.heading("Each seed (first metric)").table(rows, digits=4)
    if paired_rows:
        page.heading(f"Paired difference vs {report['baseline']}").table(paired_rows, digits=4).paragraph(CI_METHOD + ".")
    page.heading("Runs").table(runs, digits=1)
    paths["html"] = page.write(out / "report.html")
    return paths


def _display_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    names = {"psnr_y": ("Y-PSNR", 2), "ssim_y": ("Y-SSIM", 4)}
    out = []
    for bench in report["benchmarks"]:
        for name, v in report["variants"].items():
            b = v["benchmarks"][bench]
            row: dict[str, Any] = {"benchmark": bench, "variant": name}
            for metric in _metrics(report, bench):
                label, digits = names.get(metric, (metric, 4))
                m, sd = b[metric]["mean"], b[metric]["std"]
                row[label] = f"{m:.{digits}f} ± {sd:.{digits}f}" if sd is not None else f"{m:.{digits}f}"
            row["seeds"] = len(b[_metrics(report, bench)[0]]["per_seed"])
            out.append(row)
    return out
