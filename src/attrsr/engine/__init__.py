"""The training engine: :class:`Trainer` (loop, checkpoints, exact resume, DDP) and the method protocol.

    from attrsr.config import load_config
    from attrsr.engine import train
    summary = train(load_config("configs/demo-x2.yaml"))

Methods plug in through :class:`Method` (see :mod:`attrsr.engine.hooks`). The trainer is imported
lazily, so ``from attrsr.engine import Method`` (what a method module does) loads only the protocol.
"""

from typing import Any

from attrsr.data.samplers import PatchRequest, SamplePlan
from attrsr.engine.hooks import Method, MethodContext, method_names, register_method

__all__ = [
    "Method", "MethodContext", "NonFiniteLoss", "PatchRequest", "SamplePlan", "Trainer", "method_names", "register_method", "train",
]

_LAZY = {"Trainer", "NonFiniteLoss", "train"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from attrsr.engine import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'attrsr.engine' has no attribute {name!r}")
