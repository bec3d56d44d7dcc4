"""Helpers shared by commands: resolving ``--model/--weights`` and printing tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from attrsr.errors import AttrsrError


CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors", ".bin")

MODEL_HELP = (
    "Zoo model NAME, NAME:WEIGHTS, or 'bicubic'. Optional with --weights: the architecture, its "
    "configuration and the scale are read from the weights. Default: the shipped demo model."
)
MODEL_ARG_HELP = "Builder option KEY=VALUE for the model (repeatable), e.g. --model-arg multi_scale=false."


def parse_model_spec(model: str | None, weights: str | Path | None = None) -> tuple[str | None, Path | None]:
    """``--model`` (``NAME``, ``NAME:WEIGHTS`` or a checkpoint path) and ``--weights`` → (name, weights).

    The one parser behind ``eval``, ``lam`` and ``interpret``.
    """
    weights = Path(weights) if weights is not None else None
    if model is None:
        return None, weights
    name, sep, inline = model.partition(":")
    if sep:
        if not name:
            raise AttrsrError(f"--model {model}: no model name before ':'; give NAME:WEIGHTS, or the weights alone")
        if not inline:
            raise AttrsrError(
                f"--model {model}: no weights after ':'; give {name}:PATH (the checkpoint), or {name} with --weights PATH"
            )
        if weights is not None:
            raise AttrsrError(f"--model {model} and --weights {weights}: weights given twice; use one of the two")
        return name, Path(inline)
    if model.lower().endswith(CHECKPOINT_SUFFIXES):  # a checkpoint given where a name was expected
        if weights is not None:
            raise AttrsrError(f"--model {model} and --weights {weights}: weights given twice; use one of the two")
        return None, Path(model)
    return model, weights


def parse_model_args(items: list[str] | None) -> dict[str, Any]:
    """``--model-arg key=value`` items → builder options; values are read as YAML scalars/lists
    (``false``, ``4``, ``0.1``, ``[6, 6]``), anything else is a string."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise AttrsrError(f"--model-arg {item}: give KEY=VALUE, e.g. --model-arg multi_scale=false")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def resolve_model(
    name: str | None,
    weights: str | Path | None,
    scale: int | None,
    *,
    allow_pickle: bool = False,
    model_args: dict[str, Any] | None = None,
    echo: bool = True,
) -> nn.Module:
    """(``--model``, ``--weights``, ``--scale``, ``--model-arg``) → a model in eval mode.

    * weights without a name: architecture, configuration and scale detected from the weights;
    * a zoo name with weights: that architecture (configuration and scale still read from them);
    * no name and no weights (or ``demo``): the model shipped with attrsr for ``scale``;
    * ``bicubic``: the MATLAB-bicubic baseline;
    * a zoo name without weights is refused: a randomly initialised network gives meaningless
      numbers and maps (use ``attrsr.models.create`` from Python if that is really wanted).

    With ``echo``, prints (stdout) the one line saying what was detected and from what.
    """
    import typer

    from attrsr import models
    from attrsr.models.pretrained import load_default
    from attrsr.models.tiling import Bicubic

    model_args = model_args or {}
    key = name.lower() if name else None
    if key in ("demo", "bicubic"):
        if weights is not None:
            what = "the shipped demo model comes with its own weights" if key == "demo" else "bicubic has no weights"
            raise AttrsrError(
                f"--model {name} and --weights {weights}: {what}; drop --weights, or drop --model to detect "
                "the architecture of the weights (or name it with --model NAME)"
            )
        if model_args:
            raise AttrsrError(f"--model {name} takes no --model-arg")
    if key is None and weights is None or key == "demo":
        if scale is None:
            raise AttrsrError("give --scale for the shipped demo model, or --weights PATH to evaluate a checkpoint")
        return load_default(scale)
    if key == "bicubic":
        if scale is None:
            raise AttrsrError("--model bicubic needs --scale")
        return Bicubic(scale)
    if name is not None:
        spec = models.spec(name)  # unknown names fail here, naming the close ones
        if weights is None:
            raise AttrsrError(f"--model {spec.name} needs weights: --weights PATH or --model {spec.name}:PATH")
        name = spec.name
    net = models.load(name, weights=weights, scale=scale, allow_pickle=allow_pickle, **model_args)
    if echo:
        typer.echo(f"model: {net.detection} [{Path(weights).name}]")  # stdout: stderr is for the one error line
    return net


def print_table(headers: list[str], rows: list[list[str]], title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for i, h in enumerate(headers):
        table.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*r)
    Console().print(table)
