"""Running a command on several local processes with torchrun's launcher (``--nproc N``).

The launcher runs in-process, so a failure becomes one ``error:`` line here instead of a launcher
traceback plus one line per rank: ranks leave their user errors in a shared folder
(``ATTRSR_ERROR_DIR``, see ``_app.report_user_error``) and each distinct message is printed once.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import typer


def command_argv(ctx: typer.Context, drop: set[str]) -> list[str]:
    """The options of the running command as a command line, without the parameters named in
    ``drop`` (e.g. ``nproc``); options left at their default are not repeated."""
    args: list[str] = []
    for param in ctx.command.params:
        if param.name in drop or param.param_type_name != "option":
            continue
        value: Any = ctx.params.get(param.name)
        if value is None or value == param.default:
            continue
        flag = next(o for o in param.opts if o.startswith("--"))
        if param.is_flag:
            if param.secondary_opts and not value:
                args.append(param.secondary_opts[0])
            elif value:
                args.append(flag)
        elif param.multiple:
            for v in value:
                args += [flag, str(v)]
        else:
            args += [flag, str(value)]
    return args


def launch_local(nproc: int, args: list[str], what: str) -> int:
    """Run ``python -m attrsr <args>`` on ``nproc`` local ranks; the exit code to return.

    ``what`` names a rank's work in the message for a rank that failed without a user error.
    """
    import logging
    import tempfile

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from attrsr.cli._app import ERROR_DIR_ENV

    # Each process gets an equal share of the cores unless the user chose otherwise.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    launch = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"attrsr-{os.getpid()}",
        rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
    )
    with tempfile.TemporaryDirectory(prefix="attrsr-ddp-errors-") as errors:
        os.environ[ERROR_DIR_ENV] = errors
        try:
            elastic_launch(launch, sys.executable)("-m", "attrsr", *args)
        except ChildFailedError as exc:
            messages = sorted({p.read_text().strip() for p in Path(errors).glob("rank*.txt")})
            for message in messages:
                print(f"error: {message}", file=sys.stderr)
            if not messages:
                rank, failure = exc.get_first_failure()
                print(f"error: {what} process of rank {rank} failed (exit code {failure.exitcode}); "
                      "its output is above", file=sys.stderr)
            return 1
        except SignalException as exc:
            # SIGTERM/SIGINT reached the launcher, which has stopped the ranks: say so in one word,
            # as for one process, instead of the launcher's traceback.
            print("terminated" if exc.sigval == signal.SIGTERM else "interrupted", file=sys.stderr)
            return 128 + int(exc.sigval)
        finally:
            os.environ.pop(ERROR_DIR_ENV, None)
    return 0
