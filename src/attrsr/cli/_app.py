"""The shared typer app and the error boundary every command goes through."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from collections.abc import Callable
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from attrsr.errors import AttrsrError
from attrsr.interrupts import Terminated

class _PlainFlags:
    """Help shows on/off switches (``--allow-pickle``, ``--resume``, ``--help``) as plain flags:
    typer's rich help would print them as ``--resume <bool>``, as if they took a value."""

    def get_params(self, ctx):  # type: ignore[no-untyped-def]
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""  # an empty type column; the metavar is used for nothing else on a flag
        return params


class _Command(_PlainFlags, TyperCommand):
    pass


class _Group(_PlainFlags, TyperGroup):
    pass


class _App(typer.Typer):
    def command(self, *args: Any, **kwargs: Any):  # type: ignore[override]
        kwargs.setdefault("cls", _Command)
        return super().command(*args, **kwargs)


app = _App(
    name="attrsr",
    cls=_Group,
    help="Attribution-driven image super-resolution: evaluate, interpret (LAM, DI) and train SR networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for command functions: AttrsrError → ``error: …`` on stderr, exit code 1;
    Ctrl-C → ``interrupted`` (130), SIGTERM while outputs are staged → ``terminated`` (143)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AttrsrError as exc:
            report_user_error(str(exc))
            raise typer.Exit(code=1) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise typer.Exit(code=130) from None
        except Terminated:
            print("terminated", file=sys.stderr)
            raise typer.Exit(code=143) from None

    return wrapper


ERROR_DIR_ENV = "ATTRSR_ERROR_DIR"


def report_user_error(message: str) -> None:
    """Print ``error: message`` — or, in a process started by ``attrsr train --nproc``, leave it for
    the launching process, which prints each distinct message once instead of once per rank."""
    folder = os.environ.get(ERROR_DIR_ENV)
    if folder and "RANK" in os.environ:
        Path(folder, f"rank{os.environ['RANK']}.txt").write_text(message)
        return
    print(f"error: {message}", file=sys.stderr)


@app.callback(invoke_without_command=True)  # so that --version works alone
def _root(
    version: bool = typer.Option(False, "--version", help="Print the attrsr version and exit.", is_eager=True),
) -> None:
    """Attribution-driven image super-resolution."""
    if version:
        from attrsr import __version__

        typer.echo(__version__)
        raise typer.Exit()
