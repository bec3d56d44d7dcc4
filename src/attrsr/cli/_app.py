"""The shared typer app and the error boundary every command goes through."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import typer

from attrsr.errors import AttrsrError

app = typer.Typer(
    name="attrsr",
    help="Attribution-driven image super-resolution: evaluate, interpret (LAM, DI) and train SR networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for command functions: AttrsrError → ``error: …`` on stderr, exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AttrsrError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(code=1) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise typer.Exit(code=130) from None

    return wrapper


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the attrsr version and exit.", is_eager=True),
) -> None:
    """Attribution-driven image super-resolution."""
    if version:
        from attrsr import __version__

        typer.echo(__version__)
        raise typer.Exit()
