"""Which zoo architecture, configuration and scale a state dict holds.

Each architecture module registers a ``detect(state) -> Fit | str`` next to its builder
(``register(..., detect=...)``): it reads the configuration (widths, depths, upsampler type…) and,
where the shapes say it, the scale from the key names and tensor shapes of a state dict (after that
model's ``checkpoint_filter``), or returns the reason the state dict is not of its kind. Members of
one family (``edsr``/``edsr-baseline``/``edsr-t``) share one detector, which names the member in
:attr:`Fit.name`.

:func:`resolve` runs every detector, then *verifies* each claim by building the claimed model on
the meta device (no memory, no time) and comparing every key and shape, so a detector only needs to
be specific enough to read the configuration; the verification decides. attrsr's own safetensors
exports (metadata ``model``, ``scale``, ``config``) skip all this.

Scale is never guessed: it comes from the weights (upsampler shapes), the file's metadata or the
caller; where none of them tells, the caller gets an error naming the flag.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from typing import Any

import torch

from attrsr.errors import AttrsrError

SCALE_FLAG = "--scale (Python: scale=)"


@dataclasses.dataclass(frozen=True)
class Fit:
    """What a detector read from a state dict.

    ``scale``: read from the shapes; ``scales``: the file fits several (a multi-scale file, or
    scales whose tensors have identical shapes) and the caller must choose; neither: the shapes do
    not tell. ``evidence`` says what the scale was read from (or why it cannot be).
    """

    config: dict[str, Any]
    scale: int | None = None
    scales: tuple[int, ...] = ()
    evidence: str = ""
    name: str | None = None


@dataclasses.dataclass(frozen=True)
class Detection:
    name: str
    config: dict[str, Any]
    scale: int
    summary: str  # one line: what was detected and from what


# ------------------------------------------------------------------------------------------------
# Helpers for detectors


def shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...] | None:
    value = state.get(key)
    return None if value is None else tuple(value.shape)


def missing(state: Mapping[str, torch.Tensor], *keys: str) -> str | None:
    """The reason to give when one of ``keys`` is absent, or None."""
    absent = [k for k in keys if k not in state]
    return f"no {absent[0]}" if absent else None


def count_children(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    """How many numbered children ``prefix<N>.`` the state dict has (max N + 1; 0 when none)."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    idx = [int(m.group(1)) for k in state if (m := pattern.match(k))]
    return max(idx) + 1 if idx else 0


def shuffle_scale(state: Mapping[str, torch.Tensor], prefix: str, width: int) -> tuple[int | None, str]:
    """Scale of a sub-pixel upsampler whose convs sit at ``prefix<N>.weight`` (EDSR family, SwinIR):
    log2(s) convs to 4·width channels, or one conv to 9·width channels for x3."""
    outs = [shape(state, f"{prefix}{i}.weight") for i in range(0, 2 * count_children(state, prefix), 2)]
    outs = [o[0] for o in outs if o is not None]
    if len(outs) == 1 and outs[0] == 9 * width:
        return 3, f"one {prefix}* conv to 9×{width} channels"
    if outs and all(o == 4 * width for o in outs):
        return 2 ** len(outs), f"{len(outs)} {prefix}* conv(s) to 4×{width} channels"
    return None, f"{prefix}* convs with {outs} output channels fit no x2/x3/x4/x8 upsampler of width {width}"


def shuffle_factor(channels: int, colours: int) -> int | None:
    """s with channels == colours·s² (one conv + PixelShuffle(s)), else None."""
    s = math.isqrt(channels // colours) if colours and channels % colours == 0 else 0
    return s if s > 0 and colours * s * s == channels else None


# ------------------------------------------------------------------------------------------------
# Resolution


def metadata_of(path: Any) -> dict[str, Any]:
    """The attrsr metadata (``model``, ``scale``, ``config``) of a safetensors export, or {}."""
    from pathlib import Path

    from attrsr import datadir

    if not isinstance(path, (str, Path)) or Path(path).suffix.lower() != ".safetensors":
        return {}
    path = datadir.resolve(path, "weights")  # the file read_checkpoint reads (bare names: the shared folder)
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except Exception:  # unreadable files are reported by read_checkpoint
        return {}
    out: dict[str, Any] = {}
    if "model" in meta:
        out["model"] = meta["model"]
    try:
        if "scale" in meta:
            out["scale"] = int(meta["scale"])
        if "config" in meta:
            config = json.loads(meta["config"])
            out["config"] = config if isinstance(config, dict) else {}
        if "zoo_loadable" in meta:  # the engine's exports: false when a method wrapped the network
            out["zoo_loadable"] = bool(json.loads(meta["zoo_loadable"]))
            out["architecture"] = meta.get("architecture", "")
    except ValueError:
        return {}
    return out


def _meta_state(name: str, scale: int, config: dict[str, Any]) -> dict[str, torch.Tensor]:
    from attrsr.models.registry import spec

    with torch.device("meta"):
        return spec(name).build(scale=scale, **config).state_dict()


def shape_problem(name: str, scale: int, config: dict[str, Any], state: Mapping[str, torch.Tensor]) -> str | None:
    """Why ``state`` does not load strictly into ``name(scale, **config)``, or None when it does."""
    try:
        own = _meta_state(name, scale, config)
    except (ValueError, TypeError, RuntimeError) as exc:
        return f"cannot build it: {exc}"
    absent = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    bad = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    problems = []
    if absent:
        problems.append(f"{len(absent)} missing key(s), e.g. {absent[0]}")
    if extra:
        problems.append(f"{len(extra)} unexpected key(s), e.g. {extra[0]}")
    if bad:
        k = bad[0]
        problems.append(f"{len(bad)} shape mismatch(es), e.g. {k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}")
    return "; ".join(problems) or None


def _filtered(spec_: Any, state: dict[str, torch.Tensor], scale: int | None) -> dict[str, torch.Tensor]:
    return spec_.checkpoint_filter(dict(state), scale) if spec_.checkpoint_filter is not None else state


def _config_text(name: str, config: dict[str, Any]) -> str:
    """The options that differ from the builder's defaults, e.g. ``depths=6x6, embed_dim=60``."""
    import inspect

    from attrsr.models.registry import spec

    defaults = {p.name: p.default for p in inspect.signature(spec(name).build).parameters.values()}

    def same(a: Any, b: Any) -> bool:
        return (tuple(a) == tuple(b)) if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) else a == b

    def fmt(v: Any) -> str:
        return "x".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)

    shown = [f"{k}={fmt(v)}" for k, v in config.items() if k not in defaults or not same(defaults[k], v)]
    return ", ".join(shown) if shown else "default configuration"


def _choose_scale(name: str, fit: Fit | None, scale: int | None, source: str) -> tuple[int, str]:
    """The scale to build at and where it came from; errors name the flag."""
    if fit is not None and fit.scale is not None:
        if scale is not None and scale != fit.scale:
            raise AttrsrError(
                f"{source}: these {name} weights are for scale {fit.scale} ({fit.evidence}), not scale {scale} "
                f"as given; pass {SCALE_FLAG} {fit.scale}"
            )
        return fit.scale, f"x{fit.scale} from {fit.evidence}"
    if fit is not None and fit.scales:
        choices = ", ".join(map(str, fit.scales))
        if scale is None:
            raise AttrsrError(f"{source}: {name} weights for scale {choices} ({fit.evidence}); choose one with {SCALE_FLAG}")
        if scale not in fit.scales:
            raise AttrsrError(
                f"{source}: these {name} weights are for scale {choices} ({fit.evidence}), not scale {scale} as given; "
                f"pass {SCALE_FLAG} with one of {choices}"
            )
        return scale, f"x{scale} from --scale (the file fits {choices})"
    if scale is None:
        why = f" ({fit.evidence})" if fit is not None and fit.evidence else ""
        raise AttrsrError(f"{source}: the {name} weights do not tell their scale{why}; pass {SCALE_FLAG}")
    return scale, f"x{scale} from --scale"


def resolve(
    state: dict[str, torch.Tensor],
    *,
    name: str | None = None,
    scale: int | None = None,
    config: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    source: str = "checkpoint",
) -> Detection:
    """Architecture, configuration and scale for ``state``.

    ``name`` forces the architecture (its detector still reads the configuration and scale when it
    can); ``config`` entries override detected ones; ``scale`` must agree with the weights when they
    tell it. ``metadata`` (an attrsr export's) is used before any shape is read.
    """
    from attrsr.models.registry import spec

    config = dict(config or {})
    metadata = metadata or {}
    try:
        meta_name = spec(str(metadata["model"])).name if metadata.get("model") else None
    except AttrsrError:  # a name this version does not know: read the shapes instead
        meta_name = None
    if meta_name and (name is None or spec(name).name == meta_name):
        fit = Fit(dict(metadata.get("config", {})), metadata.get("scale"), evidence="the file's attrsr metadata")
        chosen, _ = _choose_scale(meta_name, fit, scale, source)
        merged = {**fit.config, **config}
        summary = f"{meta_name} ({_config_text(meta_name, merged)}) x{chosen}, all from the file's attrsr metadata"
        return Detection(meta_name, merged, chosen, summary)

    if name is not None:
        s = spec(name)
        fit = s.detect(_filtered(s, state, scale)) if s.detect is not None else None
        if isinstance(fit, str):  # not of this kind: build what was asked; loading names the mismatch
            fit = None
        if fit is None:
            chosen, _ = _choose_scale(s.name, None, scale, source)
            return Detection(s.name, config, chosen, f"{s.name} x{chosen} (from --model and --scale)")
        chosen, how = _choose_scale(s.name, fit, scale, source)
        merged = {**fit.config, **config}
        return Detection(s.name, merged, chosen, f"{s.name} ({_config_text(s.name, merged)}), {how}; architecture from --model")

    fits: list[tuple[str, Fit]] = []
    rejected: list[tuple[str, str]] = []
    seen: set[int] = set()
    from attrsr.models.registry import all_specs

    for s in all_specs():
        if s.detect is None or id(s.detect) in seen:
            continue
        seen.add(id(s.detect))
        filtered = _filtered(s, state, scale)
        fit = s.detect(filtered)
        if isinstance(fit, str):
            rejected.append((s.name, fit))
            continue
        fit_name = fit.name or s.name
        # Verify at the scale the weights claim, so that a wrong --scale is reported as such below.
        if fit.scale is not None:
            check_scale = fit.scale
        elif fit.scales:
            check_scale = scale if scale in fit.scales else fit.scales[0]
        else:
            check_scale = scale if scale in spec(fit_name).scales else spec(fit_name).scales[0]
        problem = shape_problem(fit_name, check_scale, fit.config, _filtered(spec(fit_name), state, check_scale))
        if problem:
            rejected.append((fit_name, f"read as {_config_text(fit_name, fit.config)} but {problem}"))
        else:
            fits.append((fit_name, fit))
    if not fits:
        raise AttrsrError(_unknown_message(state, rejected, source))
    if len(fits) > 1:
        names = ", ".join(n for n, _ in fits)
        raise AttrsrError(f"{source}: the weights fit several architectures ({names}); choose one with --model NAME")
    fit_name, fit = fits[0]
    chosen, how = _choose_scale(fit_name, fit, scale, source)
    merged = {**fit.config, **config}
    return Detection(fit_name, merged, chosen, f"{fit_name} ({_config_text(fit_name, merged)}), {how}; architecture from the key names and shapes")


def _pattern(key: str) -> str:
    return re.sub(r"\d+", "#", key)


def _unknown_message(state: dict[str, torch.Tensor], rejected: list[tuple[str, str]], source: str) -> str:
    """'no architecture fits', with the closest candidates (most key patterns in common) and why."""
    from attrsr.models.registry import spec

    patterns = {_pattern(k) for k in state}
    scored = []
    for cand, reason in rejected:
        s = spec(cand)
        try:
            own = {_pattern(k) for k in _meta_state(s.name, s.scales[0], {})}
        except Exception:
            own = set()
        overlap = len(patterns & own) / max(1, len(patterns | own))
        scored.append((overlap, cand, reason))
    scored.sort(key=lambda t: -t[0])
    closest = "; ".join(f"{cand} ({reason})" for _, cand, reason in scored[:3])
    example = ", ".join(sorted(state)[:3])
    return (
        f"{source}: no architecture of the zoo fits these weights ({len(state)} tensors, e.g. {example}). "
        f"Closest: {closest}. If it is a zoo model, force it with --model NAME (and --model-arg key=value) to see every mismatch"
    )
