"""``attrsr`` command line: one typer app; each command lives in its own module of this package.

Commands turn :class:`attrsr.errors.AttrsrError` into one line on stderr and exit code 1 (see
:func:`run_command`), so users never see a traceback for a problem they can fix.
"""

from __future__ import annotations

import sys

from attrsr.cli._app import app

# Command modules register on ``app`` when imported. One line per module.
from attrsr.cli import eval_cmd  # noqa: F401,E402
from attrsr.cli import lam_cmd  # noqa: F401,E402
from attrsr.cli import interpret_cmd  # noqa: F401,E402
from attrsr.cli import train_cmd  # noqa: F401,E402
from attrsr.cli import demo_cmd  # noqa: F401,E402
from attrsr.cli import experiment_cmd  # noqa: F401,E402
from attrsr.cli import augment_cmd  # noqa: F401,E402
from attrsr.cli import prior_cmd  # noqa: F401,E402
from attrsr.cli import bspa_cmd  # noqa: F401,E402


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
