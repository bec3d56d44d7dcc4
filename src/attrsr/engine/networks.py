"""Networks trained by a run beside the SR model (SR4IR's task network): each with its own optimiser
and schedule, checkpointed, restored on resume and DDP-wrapped like the SR model.

A method registers one in ``setup`` with :meth:`attrsr.engine.hooks.MethodContext.add_network` and
steps its optimiser itself (e.g. SR4IR's phase 2 in ``after_step``); the trainer owns everything
else: device placement, the DDP wrapper, ``latest.pt`` (under ``networks``), exact resume, and the
check that a resumed run has the same networks.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from attrsr.errors import AttrsrError


@dataclasses.dataclass
class Network:
    """One extra trained network: ``module`` (plain), ``wrapped`` (DDP when distributed: call it for
    forward passes whose gradients should be synchronised), its optimiser and optional scheduler."""

    module: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    wrapped: nn.Module | None = None

    def forwarder(self) -> "Forwarder":
        return Forwarder(self)

    def state_dict(self) -> dict[str, Any]:
        return {
            "module": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])


class Forwarder:
    """What a method calls to run an extra network: forwards to its DDP wrapper while training. The
    wrapper itself stays with the engine, which releases it before the process group is destroyed
    (a method holding the wrapper would keep gloo's threads alive at exit: issue 14)."""

    def __init__(self, net: Network) -> None:
        self._net = net

    @property
    def module(self) -> nn.Module:
        return self._net.module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._net.wrapped(*args, **kwargs)  # type: ignore[misc]


def networks_state(networks: dict[str, Network]) -> dict[str, dict[str, Any]]:
    return {name: net.state_dict() for name, net in networks.items()}


def restore_networks(networks: dict[str, Network], state: dict[str, dict[str, Any]] | None, where: str) -> None:
    """Load each network's state; the checkpoint must hold exactly the registered networks."""
    saved = set(state or {})
    if saved != set(networks):
        raise AttrsrError(
            f"{where}: the checkpoint holds networks {sorted(saved) or 'none'} besides the model, this run registers "
            f"{sorted(networks) or 'none'}; resume with the same methods"
        )
    for name, net in networks.items():
        net.load_state_dict(state[name])  # type: ignore[index]
