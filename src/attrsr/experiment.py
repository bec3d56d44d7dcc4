"""Fair comparisons: a grid of training variants × seeds, each an ordinary run, evaluated and reported.

A grid file (``attrsr experiment GRID.yaml --out DIR``)::

    base: configs/cpu/edsr-s-x2.yaml     # any recipe (relative to the grid file, else the working directory)
    seeds: [0, 1, 2]
    benchmarks: [Set5, samples:val]       # evaluated after training, border = scale
    baseline: plain                       # default: the first variant
    compare: [[wider, cutblur]]           # optional: extra pairs differenced like variant vs baseline
    set: {train.iterations: 3000}         # overrides applied to every variant (dotted keys, as --set)
    variants:
      plain: {}
      cutblur: {methods: [{name: cutblur}]}
      wider: {model.args.n_feats: 64}

A variant's (and ``set``'s) keys are dotted recipe keys or whole sections; a mapping value is merged
into the section it names (``optim: {lr: 2e-4}`` keeps the other optimiser keys), anything else
replaces. Each variant × seed trains with ``seed`` set to that seed into ``DIR/runs/<variant>/seed<k>``
(the engine's run folder), then its final ``model.safetensors`` is evaluated on every benchmark
(Y-PSNR/SSIM, border = scale) into ``eval.json`` beside it. That file marks a finished run: a re-run
of the grid skips it, resumes a run that has a ``latest.pt`` (exactly, as ``attrsr train --resume``),
and starts the others. When every run is finished the report is written (:mod:`attrsr.report.experiment`).

Everything a user can get wrong — grid keys, recipe keys of every variant, model arguments, method
names and parameters, training and benchmark folders, a run folder trained with another recipe — is
checked by :func:`plan_grid` before any run starts, and nothing is written until it passes.
"""

from __future__ import annotations

import dataclasses
import difflib
import fcntl
import hashlib
import inspect
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from attrsr.config import Config, load_config, merge, read_recipe, read_yaml_mapping, set_key
from attrsr.errors import AttrsrError
from attrsr.fileio import write_json_atomic, write_text_atomic

EVAL_FILE = "eval.json"
# Recipe keys that may differ between the grid's recipe and an existing run folder's: they change
# how a run is executed, not what it computes (threads change the last bits only).
_VOLATILE = (("train", "threads"), ("train", "out"), ("data", "num_workers"), ("data", "cache_dir"))
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class GridConfig(BaseModel):
    """The grid file, validated (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    base: str = Field(..., description="the recipe every variant starts from")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description="one run per variant and seed")
    benchmarks: list[str] = Field(..., min_length=1, description="datasets the final models are evaluated on")
    baseline: str | None = Field(None, description="the variant the others are compared with (default: the first)")
    overrides: dict[str, Any] = Field(default_factory=dict, alias="set", description="recipe overrides for every variant")
    variants: dict[str, dict[str, Any]] = Field(..., min_length=1, description="name → recipe overrides")
    compare: list[tuple[str, str]] = Field(default_factory=list, description="extra [variant, reference] pairs to difference (e.g. [add, cutblur])")

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct, got {seeds}")
        return seeds

    @field_validator("benchmarks")
    @classmethod
    def _distinct_benchmarks(cls, benchmarks: list[str]) -> list[str]:
        if len(set(benchmarks)) != len(benchmarks):
            raise ValueError(f"benchmarks must be distinct, got {benchmarks}")
        return benchmarks

    @model_validator(mode="after")
    def _names(self) -> "GridConfig":
        for name in self.variants:
            if not _NAME.match(name):
                raise ValueError(f"variant name {name!r} must be letters, digits, '.', '_' or '-' (it names a folder)")
        if self.baseline is None:
            self.baseline = next(iter(self.variants))
        elif self.baseline not in self.variants:
            close = difflib.get_close_matches(self.baseline, list(self.variants), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"baseline {self.baseline!r} is not a variant{hint}; variants: {', '.join(self.variants)}")
        for pair in self.compare:
            for name in pair:
                if name not in self.variants:
                    close = difflib.get_close_matches(name, list(self.variants), n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise ValueError(f"compare: {name!r} is not a variant{hint}; variants: {', '.join(self.variants)}")
        return self


@dataclasses.dataclass
class Run:
    """One variant × seed: its resolved recipe and folder."""

    variant: str
    seed: int
    cfg: Config
    folder: Path

    @property
    def key(self) -> str:
        return f"{self.variant}/seed{self.seed}"

    @property
    def eval_path(self) -> Path:
        return self.folder / EVAL_FILE

    def status(self, benchmarks: list[str]) -> str:
        """``done``, ``evaluate`` (trained, benchmarks missing), ``resume@STEP`` or ``new``."""
        if (self.folder / "model.safetensors").is_file():
            done = _read_eval(self.eval_path)
            if done is not None and all(b in done["benchmarks"] for b in benchmarks):
                return "done"
            return "evaluate"
        if (self.folder / "latest.pt").is_file():
            return f"resume@{_checkpoint_step(self.folder / 'latest.pt')}"
        return "new"


@dataclasses.dataclass
class Grid:
    """A validated grid: its file, settings and runs (variants in file order, then seeds)."""

    path: Path
    spec: GridConfig
    base: Path
    out: Path
    runs: list[Run]

    @property
    def scale(self) -> int:
        return self.runs[0].cfg.scale


# --------------------------------------------------------------------------------------------
# Reading and checking a grid


def load_grid(path: str | Path) -> GridConfig:
    path = Path(path)
    if not path.is_file():
        raise AttrsrError(f"{path}: grid file not found")
    raw = read_yaml_mapping(path, "a grid must be a mapping (base, seeds, benchmarks, baseline, set, variants)")
    if isinstance(raw.get("variants"), dict):  # ``plain:`` with nothing after it means no overrides
        raw["variants"] = {k: ({} if v is None else v) for k, v in raw["variants"].items()}
    try:
        return GridConfig.model_validate(raw)
    except ValidationError as exc:
        raise AttrsrError(f"{path}: " + "; ".join(_describe_grid_error(e) for e in exc.errors())) from None


def _describe_grid_error(err: dict[str, Any]) -> str:
    loc = [str(p) for p in err["loc"]]
    keys = [f.alias or n for n, f in GridConfig.model_fields.items()]
    if err["type"] == "extra_forbidden" and len(loc) == 1:
        close = difflib.get_close_matches(loc[0], keys, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown key {loc[0]!r}{hint}; valid keys of a grid: {', '.join(keys)}"
    if err["type"] == "missing":
        return f"{'.'.join(loc)}: required key is missing"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{'.'.join(loc)}: {msg}" if loc else msg


def _find_base(grid_path: Path, base: str) -> Path:
    for candidate in (grid_path.parent / base, Path(base)):
        if candidate.is_file():
            return candidate
    raise AttrsrError(f"{grid_path}: base recipe {base!r} not found (looked beside the grid file and in the working directory)")


def _apply(raw: dict[str, Any], overrides: dict[str, Any], where: str) -> dict[str, Any]:
    for key, value in overrides.items():
        node: Any = raw
        for part in str(key).split("."):  # merge a mapping into the section it names
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(value, dict) and isinstance(node, dict):
            value = merge(node, value)
        set_key(raw, str(key), value, what=f"{where}: ")
    return raw


def plan_grid(path: str | Path, out: str | Path, *, threads: int | None = None) -> Grid:
    """Read and check a grid and everything its runs will need; writes nothing."""
    path = Path(path)
    spec = load_grid(path)
    base = _find_base(path, spec.base)
    base_raw = read_recipe(base)
    out = Path(out)
    runs: list[Run] = []
    checked: set[tuple[str, int]] = set()
    for variant, overrides in spec.variants.items():
        where = f"{path}: variant {variant!r}"
        raw = _apply(_apply(merge({}, base_raw), spec.overrides, f"{path}: set"), overrides, where)
        for seed in spec.seeds:
            raw_seed = merge(raw, {"seed": seed, "name": f"{variant}-seed{seed}"})
            if threads is not None:
                raw_seed = merge(raw_seed, {"train": {"threads": threads}})
            try:
                cfg = load_config(raw_seed)
            except AttrsrError as exc:
                raise AttrsrError(f"{where}: {str(exc).removeprefix('config: ')}") from None
            runs.append(Run(variant, seed, cfg, out / "runs" / variant / f"seed{seed}"))
        _check_variant(runs[-1].cfg, where, checked)
    scales = {r.cfg.scale for r in runs}
    if len(scales) > 1:
        raise AttrsrError(f"{path}: variants train at different scales ({sorted(scales)}); a grid compares one scale")
    for bench in spec.benchmarks:
        _open_checked(bench, runs[0].cfg.scale, f"{path}: benchmark", checked)
    for run in runs:
        _check_existing_run(run)
    return Grid(path, spec, base, out, runs)


def _open_checked(spec: str, scale: int, where: str, checked: set[tuple[str, int]]) -> None:
    from attrsr.data.datasets import open_dataset

    if (spec, scale) in checked:
        return
    try:
        open_dataset(spec, scale)
    except AttrsrError as exc:
        raise AttrsrError(f"{where} {spec!r}: {exc}") from None
    checked.add((spec, scale))


def _check_variant(cfg: Config, where: str, checked: set[tuple[str, int]]) -> None:
    """What ``Trainer.__init__`` would reject, checked up front for every variant."""
    from attrsr import models
    from attrsr.engine.compose import build_methods

    try:
        spec = models.spec(cfg.model.name)
        accepted = [p for p in inspect.signature(spec.build).parameters if p != "scale"]
        for key in cfg.model.args:
            if key not in accepted:
                close = difflib.get_close_matches(key, accepted, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise AttrsrError(f"model.args.{key}: not an argument of {spec.name!r}{hint}; accepted: {', '.join(accepted)}")
        build_methods(cfg.methods, cfg.seed)  # unknown names, parameter typos, two samplers
        if cfg.model.weights and not Path(cfg.model.weights).is_file():
            raise AttrsrError(f"model.weights: {cfg.model.weights} not found")
    except AttrsrError as exc:
        raise AttrsrError(f"{where}: {exc}") from None
    _open_checked(cfg.data.train, cfg.scale, f"{where}: data.train", checked)
    for d in cfg.val.data:
        _open_checked(d, cfg.scale, f"{where}: val.data", checked)


def recipe_digest(cfg: Config) -> str:
    """Hash of what a run computes (its recipe less the execution settings in ``_VOLATILE``)."""
    return hashlib.sha1(json.dumps(_comparable(cfg.to_dict()), sort_keys=True).encode()).hexdigest()[:16]


def _comparable(d: dict[str, Any]) -> dict[str, Any]:
    d = json.loads(json.dumps(d))
    for section, key in _VOLATILE:
        d.get(section, {}).pop(key, None)
    return d


def _check_existing_run(run: Run) -> None:
    """A run folder left by a grid with another recipe must not be resumed or reported as this one."""
    saved = run.folder / "config.yaml"
    if not saved.is_file():
        return
    old = _comparable(yaml.safe_load(saved.read_text()) or {})
    new = _comparable(run.cfg.to_dict())
    if old != new:
        diff = sorted(_diff_keys(old, new))
        raise AttrsrError(
            f"{run.folder}: this run was trained with a different recipe ({', '.join(diff[:4])}); "
            "choose another --out, or delete that run folder to retrain it"
        )


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [prefix.rstrip(".")] if a != b else []


def _read_eval(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _checkpoint_step(path: Path) -> int | str:
    try:
        from attrsr.engine.checkpoint import load_checkpoint

        return int(load_checkpoint(path)["step"])
    except Exception:  # an unreadable checkpoint is reported by the trainer when resuming
        return "?"


# --------------------------------------------------------------------------------------------
# Running


def run_one(run: Run, benchmarks: list[str], *, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) one run, evaluate its final model and write ``eval.json``; returns it."""
    with _run_lock(run):
        trained_s, resumed_at = 0.0, None
        trained = not (run.folder / "model.safetensors").is_file()
        if trained:
            from attrsr.engine import train

            latest = run.folder / "latest.pt"
            resumed_at = _checkpoint_step(latest) if latest.is_file() else None
            t0 = time.perf_counter()
            train(run.cfg, out=run.folder, resume=latest.is_file(), progress=progress)
            trained_s = time.perf_counter() - t0
        previous = _read_eval(run.eval_path) or {}
        results = dict(previous.get("benchmarks", {}))
        todo = [b for b in benchmarks if b not in results]
        t0 = time.perf_counter()
        if todo:
            results.update(_evaluate_run(run, todo))
        method_names = previous.get("method_benchmarks")
        if trained or method_names is None or any(b not in results for b in method_names):
            extra = _method_results(run, benchmarks)
            results.update(extra)
            method_names = list(extra)
        record = {
            "variant": run.variant,
            "seed": run.seed,
            "recipe_digest": recipe_digest(run.cfg),
            "scale": run.cfg.scale,
            "threads": run.cfg.train.threads,
            # This process's training time; a run resumed after a kill counts only the last segment
            # (``resumed_at_step`` says so) — ``loop_s`` sums the logged step times of all segments.
            "train_wall_s": trained_s if trained else previous.get("train_wall_s"),
            "resumed_at_step": resumed_at if trained else previous.get("resumed_at_step"),
            "loop_s": _loop_seconds(run.folder / "metrics.jsonl"),
            "eval_wall_s": previous.get("eval_wall_s", 0.0) + (time.perf_counter() - t0),
            "benchmarks": results,
            "method_benchmarks": method_names,
        }
        write_json_atomic(run.eval_path, record)
        return record


def load_run_model(folder: str | Path, cfg: Config | None = None):
    """The trained network of a finished run folder (its ``config.yaml`` and ``model.safetensors``), in
    eval mode; a method that wrapped the network (CutBlur's head) rebuilds the wrapper first."""
    from attrsr import models

    folder = Path(folder)
    weights = folder / "model.safetensors"
    if cfg is None:
        if not (folder / "config.yaml").is_file():
            raise AttrsrError(f"{folder}: not a run folder (no config.yaml); give the folder of a finished `attrsr train` run")
        cfg = load_config(folder / "config.yaml")
    if not weights.is_file():
        raise AttrsrError(f"{folder}: no model.safetensors (the run has not finished); finish it with `attrsr train --resume`")
    if cfg.methods:  # a method may have wrapped the network (CutBlur's head): rebuild, then load
        from safetensors.torch import load_file

        from attrsr.engine.compose import build_methods

        model = models.create(cfg.model.name, scale=cfg.scale, **cfg.model.args)
        for method in build_methods(cfg.methods, cfg.seed).methods:
            model = method.rebuild(model, cfg)
        model.load_state_dict(load_file(str(weights)), strict=True)
        return model.eval()
    return models.load(cfg.model.name, weights=weights, scale=cfg.scale, **cfg.model.args)


def _evaluate_run(run: Run, benchmarks: list[str]) -> dict[str, Any]:
    from attrsr.data.datasets import open_dataset
    from attrsr.evaluation import evaluate

    cfg = run.cfg
    model = load_run_model(run.folder, cfg)
    data = [open_dataset(b, cfg.scale, name=b) for b in benchmarks]
    return evaluate(model, data, cfg.scale, progress=False)


def _method_results(run: Run, benchmarks: list[str]) -> dict[str, Any]:
    """The methods' own benchmarks of a finished run (``Method.evaluate_run``: SR4IR's task metric)."""
    if not run.cfg.methods:
        return {}
    from attrsr.engine.compose import build_methods

    model = load_run_model(run.folder, run.cfg)
    out: dict[str, Any] = {}
    for method in build_methods(run.cfg.methods, run.cfg.seed).methods:
        for name, result in method.evaluate_run(model, run.folder, run.cfg).items():
            if name in benchmarks or name in out:
                raise AttrsrError(f"method {method.name}: its benchmark {name!r} is named like another benchmark of the grid")
            out[name] = result
    return out


def _loop_seconds(metrics: Path) -> float | None:
    """Seconds spent in training steps, from the logged step rates (all segments of a resumed run)."""
    if not metrics.is_file():
        return None
    total, prev = 0.0, 0
    for line in metrics.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row.get("kind") == "train" and row.get("it_s"):
            total += (row["step"] - prev) / row["it_s"]
            prev = row["step"]
    return total


class _run_lock:
    """An exclusive lock on a run, so two grid processes never train the same folder at once."""

    def __init__(self, run: Run) -> None:
        self.path = run.folder.parent / f".{run.folder.name}.lock"
        self.run = run
        self.fh = None

    def __enter__(self) -> "_run_lock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = self.path.open("w")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.fh.close()
            raise AttrsrError(f"{self.run.folder}: another process is running this run; wait for it or stop it") from None
        return self

    def __exit__(self, *exc: Any) -> None:
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


def run_grid(
    grid: Grid,
    *,
    jobs: int = 1,
    threads: int | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run every unfinished run (``jobs`` at a time, each in its own process when ``jobs`` > 1);
    returns the evaluation records of all runs in grid order."""
    benchmarks = grid.spec.benchmarks
    grid.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(grid.out / "grid.yaml", _grid_record(grid))
    todo = [r for r in grid.runs if r.status(benchmarks) != "done"]
    if len(todo) < len(grid.runs):
        echo(f"{len(grid.runs) - len(todo)} of {len(grid.runs)} runs already finished; {len(todo)} to go")
    if jobs <= 1 or len(todo) <= 1:
        for i, run in enumerate(todo, 1):
            echo(f"[{i}/{len(todo)}] {run.key}: {run.status(benchmarks)}")
            try:
                rec = run_one(run, benchmarks, progress=progress)
            except AttrsrError as exc:
                raise AttrsrError(f"run {run.key} failed: {exc}") from None
            echo(f"[{i}/{len(todo)}] {run.key}: done ({_summary_line(rec)})")
    else:
        _run_parallel(grid, todo, jobs, threads or max(1, (os.cpu_count() or 1) // jobs), echo)
    return [_read_eval(r.eval_path) for r in grid.runs]


def _summary_line(rec: dict[str, Any]) -> str:
    parts = []
    for bench, values in rec["benchmarks"].items():
        metric = "psnr_y" if "psnr_y" in values else next((k for k, v in values.items() if isinstance(v, (int, float))), None)
        if metric is not None:
            parts.append(f"{bench} {values[metric]:.2f} dB" if metric == "psnr_y" else f"{bench} {metric} {values[metric]:.4f}")
    wall = rec.get("train_wall_s")
    # None: trained by a process killed before its evaluation was written (the time was lost with it).
    return ", ".join(parts) + (f"; trained in {wall:.0f}s" if wall is not None else "; training time not recorded")


def _run_parallel(grid: Grid, todo: list[Run], jobs: int, threads: int, echo: Callable[[str], None]) -> None:
    """Each run in a child ``attrsr experiment --only`` process (its output in ``runs/<v>/seed<k>.log``).

    Children die with this process (Linux ``PR_SET_PDEATHSIG``), so a killed grid leaves no run
    training behind; SIGTERM here stops the children and exits, and a re-run resumes them."""
    procs: dict[str, subprocess.Popen] = {}
    lock = threading.Lock()
    failures: list[str] = []
    stopping = threading.Event()

    def one(run: Run) -> None:
        if stopping.is_set():
            return
        log = run.folder.parent / f"{run.folder.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "attrsr", "experiment", str(grid.path), "--out", str(grid.out),
               "--only", run.key, "--threads", str(threads), "--no-progress"]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), PARENT_ENV: str(os.getpid())}
        with log.open("a") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
            with lock:
                procs[run.key] = proc
            echo(f"{run.key}: started ({run.status(grid.spec.benchmarks)}, {threads} thread(s), log {log})")
            code = proc.wait()
        if code == 0:
            echo(f"{run.key}: done ({_summary_line(_read_eval(run.eval_path))})")
        elif not stopping.is_set():
            lines = [ln for ln in log.read_text().splitlines() if ln.startswith("error: ")]
            failures.append(f"run {run.key} failed: {lines[-1][7:] if lines else f'exit code {code}'} (log: {log})")

    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if threading.current_thread() is threading.main_thread() else None
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = [pool.submit(one, r) for r in todo]
        for f in futures:
            while not f.done():
                time.sleep(0.2)  # wait in short slices so that SIGTERM/Ctrl-C are handled promptly
            f.result()
    except BaseException:
        stopping.set()
        with lock:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if failures:
        raise AttrsrError("; ".join(failures))


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


PARENT_ENV = "ATTRSR_GRID_PARENT"


def die_with_parent() -> None:
    """In a run started by ``--jobs``: ask Linux for SIGTERM when the grid process dies, and stop at
    once if it already has (set here in the child rather than with ``preexec_fn``, which is unsafe
    in a process with threads)."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(parent):
        raise AttrsrError("the grid process that started this run has gone; run the grid again to resume it")


def _grid_record(grid: Grid) -> str:
    """The grid as run (base made absolute), kept beside the runs."""
    spec = grid.spec.model_dump(by_alias=True)
    spec["base"] = str(grid.base.resolve())
    return f"# attrsr experiment {grid.path} (as run)\n" + yaml.safe_dump(spec, sort_keys=False)


def find_run(grid: Grid, key: str) -> Run:
    for run in grid.runs:
        if run.key == key:
            return run
    raise AttrsrError(f"--only {key}: no such run; runs: {', '.join(r.key for r in grid.runs)}")


def write_grid_report(grid: Grid, records: list[dict[str, Any]]) -> dict[str, Path]:
    """The report of a finished grid into its output folder (see :mod:`attrsr.report.experiment`)."""
    from attrsr.report.experiment import summarize, write_report

    run_dirs: dict[str, dict[int, str]] = {}
    for run in grid.runs:
        run_dirs.setdefault(run.variant, {})[run.seed] = str(run.folder.relative_to(grid.out))
    # The methods' own benchmarks (task metrics) join the grid's when every run has them.
    method_names = [b for b in (records[0].get("method_benchmarks") or []) if all(b in (r.get("method_benchmarks") or []) for r in records)]
    report = summarize(records, grid.spec.baseline, grid.spec.benchmarks + method_names, run_dirs, grid.spec.compare)
    report["grid"] = str(grid.path)
    report["base"] = str(grid.base)
    report["scale"] = grid.scale
    return write_report(report, grid.out, title=f"attrsr experiment: {grid.path.name}")
