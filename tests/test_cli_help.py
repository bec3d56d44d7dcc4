"""``--help`` texts: switches shown as switches, and what a user must know to call each command."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from attrsr.cli import app


def _help(*command: str) -> str:
    r = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    return re.sub(r"[ │]+", " ", r.output)  # undo the help box's columns


@pytest.mark.parametrize(
    "command, switches",
    [
        ((), ["--version", "--help"]),
        (("eval",), ["--allow-pickle", "--help"]),
        (("lam",), ["--allow-pickle", "--randomisation-check", "--help"]),
        (("interpret",), ["--allow-pickle", "--help"]),
        (("train",), ["--resume", "--help"]),
        (("demo",), ["--train", "--help"]),
        (("bspa", "bank"), ["--allow-pickle", "--help"]),
    ],
)
def test_switches_are_shown_without_a_value_type(command, switches):
    text = _help(*command)
    for switch in switches:
        line = next(line for line in text.splitlines() if line.strip().startswith(switch + " "))
        assert "<bool>" not in line, line
    assert "<bool>" not in text
    assert "<int>" in text or not command  # options that take values still show their type


def test_lam_help_says_exactly_one_of_lr_and_hr():
    text = " ".join(_help("lam").split())
    assert "exactly one of --lr / --hr" in text


def test_demo_help_lists_the_shipped_scales():
    from attrsr.models.pretrained import shipped_scales

    scales = shipped_scales()
    assert scales == [2, 4]
    text = " ".join(_help("demo").split())
    assert "Upscaling factor of the shipped model: 2 or 4." in text
