"""Typed training recipes: YAML files validated into pydantic models, with ``--set`` overrides.

A recipe (``configs/*.yaml``) is a nested mapping::

    name: edsr-baseline-x2
    seed: 0
    scale: 2
    model: {name: edsr-baseline, args: {}}
    data: {train: /data/DIV2K/DIV2K_train_HR, patch_size: 48, batch_size: 16, repeat: 20}
    optim: {name: adam, lr: 1.0e-4}
    schedule: {name: multistep, milestones: [200000], gamma: 0.5}
    loss: {name: l1}
    train: {iterations: 300000}
    val: {every: 5000, data: [samples:val]}
    methods: []

``base: other.yaml`` (relative to the file) inherits another recipe, deep-merged underneath.
Every section rejects unknown keys, so a typo is an error that lists the keys that do exist;
:func:`load_config` turns all validation problems into one :class:`AttrsrError` line.

Paths inside a recipe (``data.train``, ``val.data``, ``data.cache_dir``, ``train.out``) are taken
relative to the working directory, as on the command line.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from attrsr.errors import AttrsrError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    name: str = Field("edsr-baseline", description="zoo name (attrsr.models.names())")
    args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the zoo builder")
    weights: str | None = Field(None, description="initial weights (fine-tuning); strict load")


class DataConfig(_Section):
    train: str = Field("samples:train", description="HR folder / DIV2K root / 'samples:train'")
    lr: Literal["auto", "files", "bicubic"] = Field(
        "auto", description="LR from files (LR_bicubic/X{s}), made with MATLAB bicubic, or files when present"
    )
    patch_size: int = Field(48, ge=4, description="LR patch side; HR patches are scale times larger")
    batch_size: int = Field(16, ge=1, description="global batch (split across DDP processes)")
    repeat: int = Field(1, ge=1, description="each image appears this many times per epoch (enlarge factor)")
    flip: bool = True
    rot90: bool = True
    num_workers: int = Field(2, ge=0, description="DataLoader worker processes (0: load in the main process)")
    cache_dir: str | None = Field(None, description="decoded-image cache (default $ATTRSR_CACHE or ~/.cache/attrsr)")


class OptimConfig(_Section):
    name: Literal["adam", "adamw"] = "adam"
    lr: float = Field(1e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(None, gt=0, description="max global gradient norm")


class ScheduleConfig(_Section):
    name: Literal["constant", "multistep", "cosine"] = "constant"
    milestones: list[int] = Field(default_factory=list, description="multistep: iterations where lr *= gamma")
    gamma: float = Field(0.5, gt=0)
    warmup: int = Field(0, ge=0, description="linear warm-up iterations from lr/warmup")
    min_lr: float = Field(0.0, ge=0, description="cosine: final learning rate")


class LossConfig(_Section):
    name: Literal["l1", "mse", "charbonnier"] = "l1"
    eps: float = Field(1e-3, gt=0, description="charbonnier epsilon")


class TrainConfig(_Section):
    iterations: int = Field(1000, ge=1)
    ema: float | None = Field(None, ge=0, lt=1, description="EMA decay (e.g. 0.999); validation/export use the EMA")
    checkpoint_every: int = Field(1000, ge=1)
    log_every: int = Field(50, ge=1)
    out: str = Field("runs/{name}", description="output folder; {name} is replaced by the recipe name")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's choice)")


class ValConfig(_Section):
    every: int = Field(1000, ge=0, description="validate every N iterations (0: only at the end)")
    data: list[str] = Field(default_factory=lambda: ["samples:val"], description="datasets (paths or names)")
    border: int | None = Field(None, ge=0, description="pixels cropped before metrics (default: scale)")


class MethodConfig(BaseModel):
    """One method: ``name`` plus that method's own parameters (checked by the method)."""

    model_config = ConfigDict(extra="allow")
    name: str


class Config(_Section):
    name: str = "run"
    seed: int = 0
    scale: int = Field(..., ge=1)
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    val: ValConfig = Field(default_factory=ValConfig)
    methods: list[MethodConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> "Config":
        bad = [m for m in self.schedule.milestones if m <= 0]
        if bad or self.schedule.milestones != sorted(self.schedule.milestones):
            raise ValueError("schedule.milestones must be increasing positive iteration numbers")
        return self

    @property
    def out_dir(self) -> Path:
        return Path(self.train.out.replace("{name}", self.name))

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# --------------------------------------------------------------------------------------------
# Loading


def load_config(source: str | Path | dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """A recipe file (or an already-parsed mapping) plus ``key.sub=value`` overrides → :class:`Config`.

    Override values are parsed as YAML (``optim.lr=2e-4``, ``val.data=[Set5]``,
    ``methods.0.weight=2``). Raises :class:`AttrsrError` with one line naming every problem.
    """
    where = "config"
    if isinstance(source, dict):
        raw = _deep_copy(source)
    else:
        path = Path(source)
        where = str(path)
        raw = _read_yaml(path, seen=())
    set_by = [(_apply_override(raw, item), item) for item in overrides]
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        # Each problem is reported against where the value came from: the --set item that put it
        # there (the last one wins, as for the value), or else the recipe file.
        groups: dict[str, list[str]] = {}
        for err in exc.errors():
            loc = [str(p) for p in err["loc"]]
            source = next((f"--set {item}" for parts, item in reversed(set_by) if loc[: len(parts)] == parts and loc), where)
            groups.setdefault(source, []).append(_describe(err))
        raise AttrsrError("; ".join(f"{source}: " + "; ".join(msgs) for source, msgs in groups.items())) from None


def read_recipe(path: str | Path) -> dict[str, Any]:
    """A recipe file as a raw mapping, its ``base`` chain merged in (not validated yet)."""
    return _read_yaml(Path(path), seen=())


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` deep-merged over ``base`` (mappings merge key by key, anything else replaces)."""
    return _merge(base, top)


def read_yaml_mapping(path: Path, not_a_mapping: str) -> dict[str, Any]:
    """A YAML file that must hold a mapping (recipes, grids): syntax errors name the line;
    ``not_a_mapping`` is the message otherwise (``{kind}`` becomes the type found)."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise AttrsrError(f"{path}: not valid YAML{at} ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict):
        raise AttrsrError(f"{path}: " + not_a_mapping.format(kind=type(raw).__name__))
    return raw


def _read_yaml(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if not path.is_file():
        raise AttrsrError(f"{path}: config file not found")
    if path.resolve() in seen:
        raise AttrsrError(f"{path}: 'base' chain loops back to itself")
    raw = read_yaml_mapping(path, f"a recipe must be a mapping of sections, got {{kind}}")
    base = raw.pop("base", None)
    if base is None:
        return raw
    parent = _read_yaml((path.parent / str(base)), seen + (path.resolve(),))
    return _merge(parent, raw)


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _deep_copy(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _deep_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deep_copy(v) for v in obj]
    return obj


def _apply_override(raw: dict[str, Any], item: str) -> list[str]:
    """Apply ``key.sub=value`` to ``raw``; returns the key's parts."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise AttrsrError(f"--set {item!r}: expected key.sub=value (e.g. --set optim.lr=2e-4)")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    return set_key(raw, key.strip(), value, what="--set ")


def set_key(raw: dict[str, Any], key: str, value: Any, *, what: str = "") -> list[str]:
    """Set dotted ``key`` (``optim.lr``, ``methods.0.weight``) of a raw recipe mapping to ``value``
    (already parsed), creating sections on the way; returns the key's parts. ``what`` prefixes
    error messages."""
    parts = key.split(".")
    node: Any = raw
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise AttrsrError(f"{what}{key}: {'.'.join(parts[:i]) or 'list'} has {len(node)} entries, no index {part!r}")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
            continue
        if not isinstance(node, dict):
            raise AttrsrError(f"{what}{key}: {'.'.join(parts[:i])} is a value, not a section")
        if last:
            node[part] = value
        else:
            node = node.setdefault(part, {})
    return parts


def _describe(err: dict[str, Any]) -> str:
    """One pydantic error → ``data.patch_sise: unknown key; valid keys of data: …``."""
    loc = [str(p) for p in err["loc"]]
    path = ".".join(loc) or "config"
    if err["type"] == "extra_forbidden":
        section = _section_at(loc[:-1])
        keys = list(section.model_fields) if section is not None else []
        close = difflib.get_close_matches(loc[-1], keys, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        where = ".".join(loc[:-1]) or "the top level"
        return f"unknown key {path!r}{hint}; valid keys of {where}: {', '.join(keys) or '?'}"
    if not loc:  # a cross-field check of the whole recipe
        return err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        return f"{path}: required key is missing"
    value = err.get("input")
    shown = f" (got {value!r})" if not isinstance(value, dict) and value is not None else ""
    return f"{path}: {err['msg'].lower()}{shown}"


def _section_at(loc: list[str]) -> type[BaseModel] | None:
    cls: type[BaseModel] = Config
    for part in loc:
        if part.isdigit():
            continue
        field = cls.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        # Unwrap list[X] / X | None to the section class.
        candidates = [ann, *getattr(ann, "__args__", ())]
        sub = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if sub is None:
            return None
        cls = sub
    return cls


def dump_config(cfg: Config) -> str:
    """The resolved recipe as YAML (written next to every run, so a run can be repeated)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
