"""Model registry, the DESIGN.md I/O contract, and strict checkpoint loading.

Every zoo entry is a *builder* ``build(scale, **config) -> nn.Module`` registered under a name.
The module it returns must satisfy the contract: RGB float in [0,1] of shape (B,3,h,w) in,
(B,3,s*h,s*w) in [0,1]-range out (not clamped), and an attribute ``scale``.

Architectures keep the parameter names of the authors' official release so that published
checkpoints load unchanged. When an architecture works in [0,255], on the Y channel, or needs
another adaptation, wrap it in :class:`ContractWrapper`: the wrapper converts the data but is
transparent to ``state_dict``/``load_state_dict`` (no ``net.`` prefix appears or is expected).
Foreign key layouts (an older release, BasicSR's names) are adapted by a per-model
``checkpoint_filter`` instead of forking the architecture (timm's pattern). A per-model ``detect``
reads the configuration and scale from a state dict (:mod:`attrsr.models.detection`), so
``load(weights=PATH)`` needs no name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attrsr import datadir
from attrsr.errors import AttrsrError

Builder = Callable[..., nn.Module]
CheckpointFilter = Callable[[dict[str, torch.Tensor], "int | None"], dict[str, torch.Tensor]]
Detector = Callable[[dict[str, torch.Tensor]], Any]  # -> detection.Fit, or the reason (str) it does not fit


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Builder
    scales: tuple[int, ...] = (2, 3, 4)
    aliases: tuple[str, ...] = ()
    checkpoint_filter: CheckpointFilter | None = None
    description: str = ""
    detect: Detector | None = None


_REGISTRY: dict[str, ModelSpec] = {}
_ALIASES: dict[str, str] = {}


def register(
    name: str,
    *,
    scales: tuple[int, ...] = (2, 3, 4),
    aliases: tuple[str, ...] = (),
    checkpoint_filter: CheckpointFilter | None = None,
    description: str = "",
    detect: Detector | None = None,
) -> Callable[[Builder], Builder]:
    """Decorator: register ``build(scale, **config)`` under ``name`` (and aliases).

    ``detect(state) -> Fit | str`` reads configuration and scale from a (filtered) state dict, or
    says why it is not this architecture; family members may share one detector.
    """

    def deco(build: Builder) -> Builder:
        key = name.lower()
        if key in _REGISTRY or key in _ALIASES:
            raise ValueError(f"model name {name!r} registered twice")
        _REGISTRY[key] = ModelSpec(key, build, tuple(scales), tuple(aliases), checkpoint_filter, description, detect)
        for alias in aliases:
            _ALIASES[alias.lower()] = key
        return build

    return deco


def names() -> list[str]:
    """Registered model names (aliases not included), sorted."""
    return sorted(_REGISTRY)


def all_specs() -> list[ModelSpec]:
    """Every registered model, in registration order."""
    return list(_REGISTRY.values())


def spec(name: str) -> ModelSpec:
    key = name.lower()
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        import difflib

        close = difflib.get_close_matches(key, [*_REGISTRY, *_ALIASES], n=1)
        hint = f" (did you mean {_ALIASES.get(close[0], close[0])!r}?)" if close else ""
        raise AttrsrError(f"unknown model {name!r}{hint}; choose one of: {', '.join(names())}")
    return _REGISTRY[key]


def builder_options(name: str) -> list[str]:
    """The keyword options the builder of ``name`` accepts (besides ``scale``)."""
    import inspect

    params = inspect.signature(spec(name).build).parameters.values()
    return [p.name for p in params if p.name != "scale" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


def create(name: str, scale: int, **config: Any) -> nn.Module:
    """Build a freshly initialised model of the registered architecture ``name`` at ``scale``."""
    s = spec(name)
    if scale is None:
        raise AttrsrError(f"model {s.name!r}: no scale given; pass --scale (Python: scale=)")
    if s.scales and scale not in s.scales:
        raise AttrsrError(
            f"model {s.name!r} does not support scale {scale}; supported: {', '.join(map(str, s.scales))} "
            "(pass one of these as --scale / scale=)"
        )
    try:
        model = s.build(scale=scale, **config)
    except TypeError as exc:
        if "argument" not in str(exc):
            raise
        raise AttrsrError(
            f"model {s.name!r}: {exc}; accepted: {', '.join(builder_options(s.name)) or 'none'}"
        ) from None
    model.scale = scale
    return model


# --------------------------------------------------------------------------------------------
# The contract wrapper


class ContractWrapper(nn.Module):
    """Adapts a network with another I/O convention to the attrsr contract.

    ``pre``/``post`` are applied around ``net``; the default handles ``value_range`` (e.g. 255 for
    networks trained on [0,255] data). The wrapper's state dict is exactly ``net``'s (no prefix),
    so official checkpoints load into the wrapped model directly.
    """

    def __init__(self, net: nn.Module, scale: int, value_range: float = 1.0) -> None:
        super().__init__()
        self.net = net
        self.scale = scale
        self.value_range = float(value_range)
        self._register_state_dict_hook(_strip_net_prefix)
        self._register_load_state_dict_pre_hook(_add_net_prefix)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.value_range != 1.0:
            return self.net(x * self.value_range) / self.value_range
        return self.net(x)

    # The body/tail split (see :func:`body_and_tail`), passed through with the value range.
    def forward_body(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.net.forward_body(x * self.value_range if self.value_range != 1.0 else x)

    def forward_tail(self, body: tuple[torch.Tensor, ...]) -> torch.Tensor:
        out = self.net.forward_tail(body)
        return out / self.value_range if self.value_range != 1.0 else out


# --------------------------------------------------------------------------------------------
# The body/tail split


def body_and_tail(model: nn.Module):
    """The model's (forward_body, forward_tail) pair, or None where it offers none.

    The split lets attribution run the expensive upsampling tail only where a window needs it
    (:mod:`attrsr.attribution.reach`). A network offers it with two methods:

    * ``forward_body(x)`` → a tuple of tensors (B,C_i,h',w') on the LR pixel grid of x (h' ≥ h,
      w' ≥ w: networks that pad to a multiple of something pad at the bottom/right only), all the
      reconstruction reads — x itself where a global residual needs it;
    * ``forward_tail(body)`` → (B,3,s·h',s·w'), made of local operations only, without the final
      crop to s·h × s·w;

    so that ``forward(x) == forward_tail(forward_body(x))[..., :s·h, :s·w]``. Whether the tail
    really is local is measured and checked, never assumed (:func:`attrsr.attribution.reach.tail_reach_of`).
    A wrapper that adapts anything but the value range (the luma wrapper) offers no split. A network
    that has both methods declines the split, for a configuration whose body is not on x's grid
    (RRDBNet x2/x1: pixel-unshuffled), by a false ``offers_body_tail_split`` (attribute or property).
    """
    net = model
    if isinstance(model, ContractWrapper):
        if type(model).forward is not ContractWrapper.forward:
            return None
        net = model.net
    if not (callable(getattr(net, "forward_body", None)) and callable(getattr(net, "forward_tail", None))):
        return None
    if not getattr(net, "offers_body_tail_split", True):
        return None
    return model.forward_body, model.forward_tail


def _strip_net_prefix(module: nn.Module, state_dict: dict, prefix: str, local_metadata: Any) -> None:
    inner = prefix + "net."
    for key in list(state_dict):
        if key.startswith(inner):
            state_dict[prefix + key[len(inner):]] = state_dict.pop(key)


def _add_net_prefix(state_dict: dict, prefix: str, *args: Any) -> None:
    inner = prefix + "net."
    for key in list(state_dict):
        if key.startswith(prefix) and not key.startswith(inner):
            state_dict[inner + key[len(prefix):]] = state_dict.pop(key)


# --------------------------------------------------------------------------------------------
# Checkpoints

_CONTAINER_KEYS = ("params_ema", "params", "state_dict", "model", "net", "network", "generator")


def read_checkpoint(path: str | Path, *, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.pth/.pt/.ckpt`` (torch) or ``.safetensors``.

    Containers (``params_ema`` preferred over ``params``, ``state_dict``, ``model``…) are unwrapped and
    ``module.`` prefixes (DataParallel) stripped. ``allow_pickle=False`` uses ``weights_only=True``;
    a legacy pickle that needs more raises an error that names the flag to pass. A relative path
    that does not exist is looked up in the shared data folder (``PANx4_DF2K.pth`` →
    ``$ATTRSR_DATA/weights/pan/PANx4_DF2K.pth``, see :mod:`attrsr.datadir`).
    """
    given = path
    path = datadir.resolve(path, "weights")
    if path.is_dir():
        found = sorted(p.name for p in path.iterdir() if p.suffix in (".pth", ".pt", ".ckpt", ".safetensors"))
        hint = f" (it holds: {', '.join(found[:6])}{', …' if len(found) > 6 else ''})" if found else ""
        raise AttrsrError(f"{path}: is a folder, not a checkpoint file; pass the checkpoint file itself{hint}")
    if not path.is_file():
        raise AttrsrError(f"{path}: checkpoint file not found{datadir.looked_in(given, 'weights')}")
    if path.stat().st_size == 0:
        raise AttrsrError(f"{path}: checkpoint file is empty")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            if ends_early(path, exc):
                raise AttrsrError(f"{path}: {ENDS_EARLY}") from None
            raise AttrsrError(f"{path}: not a readable safetensors file ({exc}); is it complete?") from None
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
        except Exception as exc:
            if ends_early(path, exc):
                raise AttrsrError(f"{path}: {ENDS_EARLY}") from None
            text = str(exc)
            if "WeightsUnpickler error:" in text:  # torch's long weights_only message: keep the cause
                text = text.split("WeightsUnpickler error:", 1)[1]
            msg = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
            # Only a pickle that refers to Python classes/functions needs full unpickling; other
            # weights_only failures ("Unsupported operand …") mean the file is not a checkpoint.
            if not allow_pickle and "Unsupported global" in str(exc):
                raise AttrsrError(
                    f"{path}: this checkpoint needs full unpickling, which can run arbitrary code; "
                    "pass allow_pickle=True (CLI: --allow-pickle) only if you trust the file"
                ) from None
            raise AttrsrError(
                f"{path}: cannot read checkpoint ({type(exc).__name__}: {msg}); "
                "pass a complete PyTorch .pth/.pt or .safetensors file"
            ) from None
    return unwrap_state_dict(obj, source=str(path))


ENDS_EARLY = "the file ends early — incomplete download? Download it again (or copy it again)"

# What torch's legacy (non-zip) unpickler says when the data stop before the pickle does.
_LEGACY_EOF = ("unexpected eof", "ran out of input", "pickle data was truncated", "unpack requires a buffer")


def ends_early(path: str | Path, exc: BaseException) -> bool:
    """Whether a checkpoint that failed to load is cut short (an interrupted download or copy),
    judged from the file's own structure where it has one, not only from the error text."""
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        if path.suffix.lower() == ".safetensors":
            # 8-byte little-endian header length, a JSON header, then the tensors it lays out.
            if len(head) < 8:
                return True
            n = int.from_bytes(head, "little")
            if size < 8 + n:
                return True
            try:
                import json

                header = json.loads(fh.read(n))
                end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
            except (ValueError, KeyError, TypeError, IndexError):
                return False
            return size < 8 + n + end
    if head.startswith(b"PK\x03\x04"):  # torch's zip format: a complete file ends with the zip directory
        import zipfile

        return not zipfile.is_zipfile(path)
    return isinstance(exc, EOFError) or any(s in str(exc).lower() for s in _LEGACY_EOF)


def unwrap_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    for _ in range(3):  # nested containers, e.g. {"model": {"state_dict": ...}}
        if not isinstance(obj, Mapping):
            break
        if any(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in _CONTAINER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise AttrsrError(f"{source}: no state dict of tensors found in the checkpoint")
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], *, strict: bool = True, source: str = "checkpoint") -> None:
    """Load ``state`` into ``model``; mismatches become one readable :class:`AttrsrError`."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if strict and missing:
        problems.append(f"{len(missing)} missing key(s) (e.g. {', '.join(missing[:3])})")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s) (e.g. {', '.join(unexpected[:3])})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es) (e.g. {'; '.join(shapes[:2])})")
    if problems:
        name = getattr(model, "zoo_name", type(model).__name__)
        raise AttrsrError(
            f"{source}: does not fit model {name!r} at scale {getattr(model, 'scale', '?')}: "
            + "; ".join(problems)
            + ". Check --model and --scale (or the model config) against the checkpoint."
        )
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=strict)


def load(
    name: str | None = None,
    weights: str | Path | Mapping[str, torch.Tensor] | None = None,
    scale: int | None = None,
    *,
    strict: bool = True,
    allow_pickle: bool = False,
    **config: Any,
) -> nn.Module:
    """Build a zoo model and load ``weights`` (a path or a state dict) into it, strictly.

    Without ``name`` the architecture and its configuration are detected from the weights (see
    :mod:`attrsr.models.detection`); with it they are forced, and ``config`` overrides detected
    options either way. ``scale`` is never guessed: it comes from the weights, an attrsr export's
    metadata, or the caller, and must agree with the weights when they tell it. The returned model
    (eval mode) has ``zoo_name`` and ``detection`` (one line: what was detected and from what).
    ``allow_pickle`` as in :func:`read_checkpoint`.
    """
    from attrsr.models import detection

    if weights is None:
        if name is None:
            raise AttrsrError("load() needs a model name or weights (or both)")
        s = spec(name)
        model = create(s.name, scale=scale, **config)
        model.zoo_name = s.name
        return model.eval()
    if isinstance(weights, Mapping):
        source = "state dict"
        state = unwrap_state_dict(dict(weights), source=source)
        meta: dict[str, Any] = {}
    else:
        source = str(weights)
        state = read_checkpoint(weights, allow_pickle=allow_pickle)
        meta = detection.metadata_of(weights)
        if meta.get("zoo_loadable") is False:
            raise AttrsrError(
                f"{source}: holds a network that a training method wrapped, not a zoo model "
                f"({meta.get('architecture') or 'see the file metadata'}); rebuild that structure before loading "
                "(attrsr experiment does, through the methods' rebuild)")
    found = detection.resolve(state, name=name, scale=scale, config=config, metadata=meta, source=source)
    s = spec(found.name)
    try:
        model = create(s.name, scale=found.scale, **found.config)
    except AttrsrError as exc:
        raise AttrsrError(f"{source}: {exc}") from None
    model.zoo_name = s.name
    model.detection = found.summary
    if s.checkpoint_filter is not None:
        state = s.checkpoint_filter(state, found.scale)
    load_weights(model, state, strict=strict, source=source)
    return model.eval()
