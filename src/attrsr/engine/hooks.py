"""The method protocol: how a training method (ADD, BSPA, the attribution prior, …) changes the engine.

A method is a :class:`Method` subclass overriding only the hooks it needs; the trainer calls them at
fixed points of its loop (see ``Trainer.fit``)::

    setup(trainer)                      once, after model and data exist, before the optimiser and DDP
                                        wrap: read the data, build helpers, wrap/replace trainer.model
    plan_epoch(epoch, plan, rng)        which patches the epoch draws (samplers: reweighting, BSPA's
                                        class-balanced sub-images); returns a SamplePlan
    augment(batch, gen)                 the collated batch on the training device, before the forward
                                        pass (CutBlur/ADD mixes, masks); returns the batch
    extra_losses(batch, sr, model)      extra loss terms {name: scalar}, added to the pixel loss;
                                        ``model`` is the network (unwrapped from DDP; extra forward
                                        passes through it are DDP-safe). With ``needs_input_grad`` the
                                        LR input ``batch["lr"]`` requires grad and ``sr`` was computed
                                        from it, so a term may use ∂sr/∂lr with create_graph=True
                                        (double backprop: the attribution prior)
    after_step(step)                    after each optimiser step and before the EMA update (BSPA:
                                        restore frozen weights; the EMA averages what it leaves)
    on_epoch_end(epoch)                 after an epoch's last batch (BSPA: refresh the importance)
    state_dict() / load_state_dict()    the method's own state in checkpoints (torch.save-able with
                                        ``weights_only``: tensors, numbers, strings, lists, dicts)

The ``batch`` is a dict: ``lr`` (B,3,p,p) and ``hr`` (B,3,sp,sp) in [0,1]; ``image``, ``top``,
``left`` (B,) int64 from the sampler; a method may add keys. If it adds ``loss_mask`` (B,1|3,sp,sp),
the pixel loss is averaged over the masked pixels only (Cutout).

Several methods compose in config order: plans and batches flow through each method in turn, extra
loss terms add up, step/epoch hooks all run. Randomness: ``plan_epoch`` gets a numpy generator
derived from (seed, epoch, method index) and ``augment`` a torch generator derived from (seed, step,
rank, method index), so methods that draw from them are reproducible and resume exactly without
carrying RNG state (the global RNGs are checkpointed too, for methods that use them).

Methods are registered by name (:func:`register_method`) and configured in the recipe::

    methods:
      - {name: cutblur, prob: 0.5}

A method's ``Params`` (a pydantic model, ``extra="forbid"``) validates its keys, so a typo in a
method's parameters is reported like any other config typo. A name of the form ``package.module:Class``
imports a method that lives outside attrsr (experiments, tests).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from attrsr.data.samplers import SamplePlan
from attrsr.errors import AttrsrError

if TYPE_CHECKING:  # pragma: no cover
    from attrsr.config import MethodConfig
    from attrsr.engine.trainer import Trainer


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Method:
    """Base class of training methods; every hook is optional (the defaults change nothing)."""

    #: Parameters of the method (a pydantic model with ``extra="forbid"``); ``self.params`` holds them.
    Params: ClassVar[type[BaseModel]] = NoParams
    #: Set when ``extra_losses`` differentiates through the input (the engine marks ``lr`` requires_grad).
    needs_input_grad: ClassVar[bool] = False

    def __init__(self, params: BaseModel | None = None) -> None:
        self.params = params if params is not None else self.Params()
        self.name = type(self).__name__

    def setup(self, trainer: "Trainer") -> None:
        pass

    def plan_epoch(self, epoch: int, plan: SamplePlan, rng: np.random.Generator) -> SamplePlan:
        return plan

    def augment(self, batch: dict[str, Any], gen: torch.Generator) -> dict[str, Any]:
        return batch

    def extra_losses(self, batch: dict[str, Any], sr: torch.Tensor, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {}

    def after_step(self, step: int) -> None:
        pass

    def on_epoch_end(self, epoch: int) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


_METHODS: dict[str, type[Method]] = {}


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: make a :class:`Method` available to recipes as ``methods: [{name: …}]``."""

    def deco(cls: type[Method]) -> type[Method]:
        if name in _METHODS and _METHODS[name] is not cls:
            raise ValueError(f"method {name!r} registered twice")
        _METHODS[name] = cls
        return cls

    return deco


def method_names() -> list[str]:
    import attrsr.methods  # noqa: F401  -- importing registers the built-in methods

    return sorted(_METHODS)


def _resolve(name: str) -> type[Method]:
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise AttrsrError(f"method {name!r}: cannot import it ({exc})") from None
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise AttrsrError(f"method {name!r} is not a subclass of attrsr.engine.Method")
        return cls
    known = method_names()
    if name not in _METHODS:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise AttrsrError(f"unknown method {name!r}{hint}; available: {', '.join(known) or 'none'} (or module:Class)")
    return _METHODS[name]


def build_method(cfg: "MethodConfig", index: int = 0) -> Method:
    """A configured method instance; parameter typos are one-line errors listing the valid keys."""
    cls = _resolve(cfg.name)
    raw = dict(cfg.model_extra or {})
    try:
        params = cls.Params.model_validate(raw)
    except ValidationError as exc:
        probs = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                probs.append(f"unknown key {key!r}; valid keys: {', '.join(cls.Params.model_fields) or 'none'}")
            else:
                probs.append(f"{key}: {err['msg'].lower()}")
        raise AttrsrError(f"methods.{index} ({cfg.name}): " + "; ".join(probs)) from None
    method = cls(params)
    method.name = cfg.name
    return method


class MethodStack:
    """Several methods acting as one: the trainer only ever talks to this."""

    def __init__(self, methods: list[Method], seed: int) -> None:
        self.methods = methods
        self.seed = seed
        keys = [m.name for m in methods]
        # State is stored per method; the same method twice gets an index to keep the keys apart.
        self.keys = [k if keys.count(k) == 1 else f"{k}#{i}" for i, k in enumerate(keys)]

    @property
    def needs_input_grad(self) -> bool:
        return any(m.needs_input_grad for m in self.methods)

    def setup(self, trainer: "Trainer") -> None:
        for m in self.methods:
            m.setup(trainer)

    def plan_epoch(self, epoch: int, plan: SamplePlan) -> SamplePlan:
        from attrsr.data.samplers import epoch_rng

        for i, m in enumerate(self.methods):
            plan = m.plan_epoch(epoch, plan, epoch_rng(self.seed, epoch, stream=i + 1))
            if not isinstance(plan, SamplePlan):
                raise TypeError(f"method {m.name}: plan_epoch must return a SamplePlan, got {type(plan).__name__}")
        return plan

    def augment(self, batch: dict[str, Any], step: int, rank: int) -> dict[str, Any]:
        for i, m in enumerate(self.methods):
            gen = torch.Generator(device=batch["lr"].device)
            gen.manual_seed(int(np.random.SeedSequence([self.seed, step, rank, i]).generate_state(1, np.uint64)[0] >> 1))
            batch = m.augment(batch, gen)
        return batch

    def extra_losses(self, batch: dict[str, Any], sr: torch.Tensor, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for key, m in zip(self.keys, self.methods):
            for term, value in m.extra_losses(batch, sr, model).items():
                out[f"{key}.{term}"] = value
        return out

    def after_step(self, step: int) -> None:
        for m in self.methods:
            m.after_step(step)

    def on_epoch_end(self, epoch: int) -> None:
        for m in self.methods:
            m.on_epoch_end(epoch)

    def state_dict(self) -> dict[str, Any]:
        return {k: m.state_dict() for k, m in zip(self.keys, self.methods)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = [k for k in self.keys if k not in state]
        if missing:
            raise AttrsrError(f"checkpoint has no state for method(s) {', '.join(missing)}; was it saved with other methods?")
        for k, m in zip(self.keys, self.methods):
            m.load_state_dict(state[k])
