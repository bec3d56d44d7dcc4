"""``attrsr prior-report RUN... --data Set5 --out DIR``: the attribution prior's evaluation (thesis
Table 4.7, Fig. 4.5) of several trained runs: PSNR on the PoI and the SSRs, DI on LAM windows, the
attribution norm over growing sections and the similar-to-dissimilar ratio; tables (markdown, CSV,
JSON) and a plot, with the paired comparison against a baseline variant."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from attrsr.cli._app import app, user_errors


@app.command("prior-report")
@user_errors
def prior_report_command(
    runs: List[Path] = typer.Argument(..., help="Run folders (config.yaml + model.safetensors), e.g. an experiment's runs/*/seed*; "
                                                "runs/<variant>/seed<k> are grouped by variant and paired by seed."),
    out: Path = typer.Option(..., "--out", "-o", help="Report folder (runs.*, summary.*, prior-report.json/.png)."),
    data: List[str] = typer.Option(["Set5"], "--data", "-d", help="Benchmarks (names under $ATTRSR_DATA/benchmarks, folders, samples:NAME)."),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="Variant the others are compared with (paired by seed), e.g. none."),
    n_ssr: int = typer.Option(5, "--n-ssr", help="SSRs per image for the region PSNR (thesis: 5)."),
    mask_size: int = typer.Option(9, "--mask-size", help="Side of the PoI/SSR squares in LR pixels (9 → 18 SR px at x2)."),
    crop: int = typer.Option(96, "--crop", help="LR centre crop the self-similarity extractor sees."),
    threshold: float = typer.Option(0.5, "--threshold", help="Map score under which an image has no regions (left out, counted)."),
    windows: int = typer.Option(2, "--windows", help="LAM windows per image (0: no DI/section analysis)."),
    window: int = typer.Option(13, "--window", help="LAM window (PoI) side in SR pixels (thesis Fig. 4.5: 13)."),
    sections: int = typer.Option(5, "--sections", help="Growing sections around the PoI."),
    growth: int = typer.Option(20, "--growth", help="Growth of each section in LR pixels (width and height)."),
    sim_threshold: float = typer.Option(0.5, "--sim-threshold", help="NCC at or above which a pixel counts as similar to the PoI."),
    steps: int = typer.Option(50, "--steps", help="LAM path steps."),
    context: int = typer.Option(64, "--context", help="LR crop side LAM runs on, centred on the window (0: the whole image)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Print each run and benchmark as it starts."),
) -> None:
    """Evaluate trained runs the way the attribution-prior thesis does and compare them."""
    from attrsr.errors import AttrsrError
    from attrsr.experiment import load_run_model
    from attrsr.fileio import check_output
    from attrsr.report.prior import RegionSettings, SpreadSettings, evaluate_models, run_label, summarize, write_prior_report

    for name, v, lo in (("--n-ssr", n_ssr, 1), ("--mask-size", mask_size, 1), ("--crop", crop, 2), ("--window", window, 2),
                        ("--sections", sections, 1), ("--growth", growth, 1), ("--steps", steps, 1), ("--windows", windows, 0),
                        ("--context", context, 0)):
        if v < lo:
            raise AttrsrError(f"{name} must be >= {lo}, got {v}")
    for name, v in (("--threshold", threshold), ("--sim-threshold", sim_threshold)):
        if not 0 <= v <= 1:
            raise AttrsrError(f"{name} must be in [0, 1], got {v}")
    if 0 < context < window:
        raise AttrsrError(f"--context {context} is smaller than the {window}-pixel window; use --context 0 or >= {window}")
    regions = RegionSettings(n_ssr=n_ssr, mask_size=mask_size, crop=crop, threshold=threshold)
    regions.check()
    spread = SpreadSettings(windows=windows, window=window, sections=sections, growth=growth, sim_threshold=sim_threshold,
                            steps=steps, context=context) if windows else None
    check_output(out, "--out", "staged")
    models, labels, scales = {}, {}, set()
    for folder in runs:
        key = str(folder)
        if key in models:
            raise AttrsrError(f"{folder}: given twice")
        model = load_run_model(folder)
        models[key], labels[key] = model, run_label(folder.resolve())
        scales.add(int(model.scale))
    if len(scales) > 1:
        raise AttrsrError(f"the runs have different scales ({sorted(scales)}); compare runs of one scale")
    seen: dict[tuple, str] = {}
    for key, lab in labels.items():
        if lab in seen:
            raise AttrsrError(f"{seen[lab]} and {key} are both {lab[0]} seed {lab[1]}; give each variant's seed once")
        seen[lab] = key
    variants = list(dict.fromkeys(v for v, _ in labels.values()))
    if baseline is not None and baseline not in variants:
        raise AttrsrError(f"baseline {baseline!r} is none of the runs' variants: {', '.join(variants)}")
    scale = scales.pop()
    rows = evaluate_models(models, data, scale, regions=regions, spread=spread, labels=labels, echo=typer.echo if progress else None)
    summary = summarize(rows, baseline)
    paths = write_prior_report(rows, summary, out, {"scale": scale, "data": list(data), "baseline": baseline,
                                                    "regions": regions.__dict__, "spread": spread.__dict__ if spread else None})
    typer.echo(f"report: {paths['summary_md']} (runs.md, CSV, JSON, {paths['png'].name})")
