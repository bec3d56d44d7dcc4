"""The training engine: :class:`Trainer` (loop, checkpoints, exact resume, DDP) and the method protocol.

    from attrsr.config import load_config
    from attrsr.engine import train
    summary = train(load_config("configs/demo-x2.yaml"))

Methods plug in through :class:`Method` (see :mod:`attrsr.engine.hooks`).
"""

from attrsr.data.samplers import PatchRequest, SamplePlan
from attrsr.engine.hooks import Method, method_names, register_method
from attrsr.engine.trainer import NonFiniteLoss, Trainer, train

__all__ = ["Method", "NonFiniteLoss", "PatchRequest", "SamplePlan", "Trainer", "method_names", "register_method", "train"]
