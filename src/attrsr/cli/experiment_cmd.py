"""``attrsr experiment GRID.yaml --out DIR``: variants × seeds of a recipe, trained, evaluated, compared."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from attrsr.cli._app import app, user_errors


@app.command("experiment")
@user_errors
def experiment_command(
    grid_file: Path = typer.Argument(..., help="Grid YAML: base recipe, seeds, benchmarks, baseline, set, variants."),
    out: Path = typer.Option(..., "--out", "-o", help="Experiment folder (runs/<variant>/seed<k>, report.*)."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Runs trained at once, each in its own process."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch threads per run (default: cores / jobs when --jobs > 1, else the recipe's)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the runs and their state; train nothing."),
    only: Optional[str] = typer.Option(None, "--only", help="Run just VARIANT/seedK (no report); used by --jobs.", hidden=True),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Train every variant × seed of a grid (finished runs are skipped, interrupted ones resume),
    evaluate each final model on the grid's benchmarks and write the report (markdown, CSV, JSON, HTML)."""
    from attrsr import experiment
    from attrsr.errors import AttrsrError

    if jobs < 1:
        raise AttrsrError(f"--jobs must be >= 1, got {jobs}")
    if threads is not None and threads < 1:
        raise AttrsrError(f"--threads must be >= 1, got {threads}")
    grid = experiment.plan_grid(grid_file, out, threads=threads)  # every check, before anything is written
    benchmarks = grid.spec.benchmarks
    if dry_run:
        for run in grid.runs:
            typer.echo(f"{run.key:<28} {run.status(benchmarks):<12} {run.folder}")
        typer.echo(f"{len(grid.runs)} runs ({len(grid.spec.variants)} variants × {len(grid.spec.seeds)} seeds); "
                   f"benchmarks: {', '.join(benchmarks)}; baseline: {grid.spec.baseline}")
        return
    if only is not None:
        experiment.die_with_parent()
        experiment.run_one(experiment.find_run(grid, only), benchmarks, progress=progress)
        return
    records = experiment.run_grid(grid, jobs=jobs, threads=threads, progress=progress, echo=typer.echo)
    paths = experiment.write_grid_report(grid, records)
    typer.echo(f"report: {paths['md']} ({paths['html'].name}, {paths['json'].name}, {paths['csv'].name})")
