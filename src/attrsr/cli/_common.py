"""Helpers shared by commands: resolving ``--model/--weights`` and printing tables."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from attrsr.errors import AttrsrError


def resolve_model(name: str | None, weights: str | Path | None, scale: int, *, allow_pickle: bool = False) -> nn.Module:
    """``--model``/``--weights`` → a model in eval mode.

    * ``name`` ``None`` (or ``demo``): the model shipped with attrsr for ``scale``;
    * ``bicubic``: the MATLAB-bicubic baseline;
    * a zoo name with ``weights``: that architecture with those weights, loaded strictly;
    * a zoo name without weights is refused: a randomly initialised network gives meaningless
      numbers and maps (use ``attrsr.models.create`` from Python if that is really wanted).
    """
    from attrsr import models
    from attrsr.models.pretrained import load_default
    from attrsr.models.tiling import Bicubic

    if name is None or name.lower() == "demo":
        if weights is not None:
            raise AttrsrError("--weights given without --model; name the architecture with --model NAME")
        return load_default(scale)
    if name.lower() == "bicubic":
        return Bicubic(scale)
    spec = models.spec(name)  # unknown names fail here with the list of valid ones
    if weights is None:
        raise AttrsrError(f"--model {spec.name} needs --weights PATH (a checkpoint for that architecture)")
    return models.load(spec.name, weights=weights, scale=scale, allow_pickle=allow_pickle)


def split_model_arg(arg: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME:WEIGHTS`` (as in ``attrsr interpret --model pan:PANx4.pth``)."""
    name, sep, weights = arg.partition(":")
    return name, (weights if sep else None)


def print_table(headers: list[str], rows: list[list[str]], title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for i, h in enumerate(headers):
        table.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*r)
    Console().print(table)
