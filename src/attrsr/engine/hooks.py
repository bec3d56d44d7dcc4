"""The method protocol: how a training method (ADD, BSPA, the attribution prior, …) changes the engine.

This module is a leaf: it imports nothing of the trainer, so a method module needs only
``from attrsr.engine.hooks import Method, MethodContext, register_method`` (also re-exported by
:mod:`attrsr.engine`). The engine never imports :mod:`attrsr.methods`: the built-in methods register
themselves when the ``attrsr`` package is imported (its ``__init__`` imports them).

A method is a :class:`Method` subclass overriding only the hooks it needs; the trainer calls them at
fixed points of its loop (see ``Trainer.fit``)::

    setup(ctx)                          once, after model and data exist, before the optimiser and DDP
                                        wrap; ``ctx`` is the method's :class:`MethodContext` (keep it):
                                        read the data, build helpers, wrap/replace ``ctx.model``. The
                                        run folder and its log exist already (``ctx.log`` works); on
                                        resume it runs before the checkpoint's state is loaded
    plan_epoch(epoch, plan, rng)        which patches the epoch draws (samplers: reweighting, BSPA's
                                        class-balanced sub-images); returns a SamplePlan
    augment(batch, gen, rng)            the collated batch on the training device, before the forward
                                        pass (CutBlur/ADD mixes, masks); returns the batch. ``gen``
                                        (torch, on the batch's device) and ``rng`` (numpy: Beta draws)
    forward(model, batch)               the network's output for the training batch (default
                                        ``model(batch["lr"])``): for methods that change what the
                                        network sees (CutBlur's HR-size input through a space-to-depth
                                        head). ``model`` is the DDP-wrapped network when distributed:
                                        call it (``model(x, **kw)``), never its submodules, so that
                                        gradients are synchronised. Overriding it owns the forward pass
                                        (one such method per run). Validation and export use the plain
                                        ``model(lr)``: a method that wraps the network in ``setup``
                                        makes the wrapper's LR→SR ``forward`` right for test time and
                                        says in ``export_note`` what ``model.safetensors`` then holds
                                        (its metadata gets ``zoo_loadable: false`` and that note)
    extra_losses(batch, sr, model)      extra loss terms {name: scalar}, added to the pixel loss;
                                        ``model`` is the network (unwrapped from DDP; extra forward
                                        passes through it are DDP-safe). With ``needs_input_grad`` the
                                        LR input ``batch["lr"]`` requires grad and ``sr`` was computed
                                        from it, so a term may use ∂sr/∂lr with create_graph=True
                                        (double backprop: the attribution prior)
    freezes_model(step)                 True to hold the SR network fixed at loop step ``step`` (1-based,
                                        as ``after_step``): the step's losses are computed without
                                        gradients and logged, no backward, no optimiser step (the
                                        schedule still advances). SR4IR's two-stage baselines; any
                                        method saying True freezes the step
    after_step(step)                    after each optimiser step and before the EMA update (BSPA:
                                        restore frozen weights; the EMA averages what it leaves)
    on_epoch_end(epoch)                 after an epoch's last batch (BSPA: refresh the importance)
    validate(model, step)               at each validation: the method's own rows, e.g. per-class or
                                        region PSNR: ``[{"dataset": NAME, METRIC: number, …}]``, logged
                                        to metrics.jsonl/val.csv like the built-in rows (with ``step``
                                        and ``method``). ``model`` is the validated network (the EMA
                                        when enabled) in eval mode; runs on every rank (collectives
                                        are allowed), rank 0's rows are logged
    evaluate_run(model, run, cfg)       after training (``attrsr experiment``), without training data:
                                        the method's own benchmark results of the finished run in
                                        folder ``run`` (``model``: its exported SR network, eval mode),
                                        ``{name: {METRIC: number, …, "images": {image: {METRIC: number}}}}``;
                                        ``images`` holds the per-image values of the metrics that are
                                        means over images (others are reported per seed only)
    state_dict() / load_state_dict()    the method's own state in checkpoints (torch.save-able with
                                        ``weights_only``: tensors, numbers, strings, lists, dicts)

The ``batch`` is a dict: ``lr`` (B,3,p,p) and ``hr`` (B,3,sp,sp) in [0,1]; ``image``, ``top``,
``left`` (B,) int64 from the sampler; ``aux`` {name: (B,[C,]p,p)} when a method added per-image
auxiliary arrays (:meth:`MethodContext.add_aux`); a method may add keys. If it adds ``loss_mask``
(B,1|3,sp,sp), the pixel loss is averaged over the masked pixels only (Cutout).

What a method may use of the run is its :class:`MethodContext`: ``cfg``, ``device``, ``dist``,
``out``, ``images``, ``train_set``, ``model``, ``step``; ``log``; ``batches`` (any plan through the
data pipeline), ``losses`` (the step's forward pass and losses) and ``optimise`` (the normal
optimisation step) for its own loops; ``add_aux`` (per-image arrays travelling with the patches),
``cached_per_image`` (per-image artifacts computed once, memory-mapped, reused by later runs),
``add_network`` (a second trained network with its own optimiser: checkpointed, resumed,
DDP-wrapped); ``barrier``/``broadcast``/``gather``.

Several methods compose in config order, by these rules:

* plans and batches flow through each method in turn; extra loss terms add up; step, epoch and
  validation hooks all run;
* what a method takes over outright it declares in ``owns`` (``"sampler"``: its plan replaces the
  epoch's; ``"forward"``: it decides what the network sees); two methods owning the same thing is a
  recipe error before the run starts. A sampler that only reweights need not own the sampler;
* each ``augment`` sees only its own ``loss_mask`` (none on entry); the masks of several methods
  multiply (Cutout's dropped pixels stay dropped inside another method's region);
* ``extra_losses`` must return the same term names at every step and on every rank (a zero tensor
  for an inactive term): the log, the running means and DDP rely on it; a change is an error
  naming the method.

Randomness: ``plan_epoch`` gets a numpy generator derived from (seed, epoch, method index) and
``augment`` a torch and a numpy generator derived from (seed, step, rank, method index), so methods
that draw from them are reproducible and resume exactly without carrying RNG state (the global RNGs
are checkpointed per rank too, for code that uses them, e.g. SwinIR's stochastic depth).

Methods are registered by name (:func:`register_method`) and configured in the recipe::

    methods:
      - {name: cutblur, prob: 0.5}

A method's ``Params`` (a pydantic model, ``extra="forbid"``) validates its keys, so a typo in a
method's parameters is reported like any other config typo. A name of the form ``package.module:Class``
imports a method that lives outside attrsr (experiments, tests).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from attrsr.data.samplers import SamplePlan
from attrsr.engine import distributed  # a leaf as well: rank helpers, no trainer

if TYPE_CHECKING:  # pragma: no cover
    from attrsr.config import Config
    from attrsr.data.artifacts import PerImageArrays
    from attrsr.data.cache import DecodedImages
    from attrsr.data.patches import PatchDataset


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclasses.dataclass(eq=False)
class MethodContext:
    """What a method may use of the run: handed to :meth:`Method.setup`, valid for the whole run.

    Everything else about the trainer is private to the engine; a method that needs more should
    ask for it here rather than reach into the trainer.

    Attributes:
        cfg: the validated recipe (read-only by convention).
        device: this process's training device.
        dist: rank, world size, local rank (``dist.is_main``: the process that logs and saves).
        out: the run folder (rank 0 writes it; a method may put its own files there).
        images: the decoded training images (``images.lr(i)``/``images.hr(i)``: H×W×3 uint8 memory maps).
        train_set: the patch dataset (``train_set[PatchRequest]`` → one augmented LR/HR patch).
    """

    cfg: "Config"
    device: torch.device
    dist: distributed.DistInfo
    out: Path
    images: "DecodedImages"
    train_set: "PatchDataset"
    _add_network: Callable[..., Callable[..., Any]] = dataclasses.field(repr=False)
    _get_step: Callable[[], int] = dataclasses.field(repr=False)
    _get_model: Callable[[], torch.nn.Module] = dataclasses.field(repr=False)
    _set_model: Callable[[torch.nn.Module], None] = dataclasses.field(repr=False)
    _log: Callable[[str, dict[str, Any]], None] = dataclasses.field(repr=False)
    _batches: Callable[[SamplePlan, int | None], Iterator[dict[str, Any]]] = dataclasses.field(repr=False)
    _losses: Callable[[dict[str, Any]], tuple[torch.Tensor, dict[str, torch.Tensor]]] = dataclasses.field(repr=False)
    _optimise: Callable[[dict[str, Any]], dict[str, torch.Tensor]] = dataclasses.field(repr=False)

    @property
    def model(self) -> torch.nn.Module:
        """The network being trained (never DDP-wrapped). Assign to it in ``setup`` to wrap or replace
        it; afterwards the optimiser holds its parameters and assigning is an error."""
        return self._get_model()

    @model.setter
    def model(self, model: torch.nn.Module) -> None:
        self._set_model(model)

    @property
    def step(self) -> int:
        """Optimiser steps done so far (the checkpoint's step in ``setup`` when resuming)."""
        return self._get_step()

    def add_network(
        self,
        name: str,
        module: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    ) -> Callable[..., Any]:
        """Train a second network beside the SR model (SR4IR's task network). In ``setup`` only.

        The engine moves it to the device, checkpoints module, optimiser and scheduler in
        ``latest.pt``, restores them on resume (a resumed run must add the same networks), and
        returns what to call for synchronised training: it runs the module through its DDP wrapper
        when distributed (if it has trainable parameters), else the module itself (``.module`` is
        the plain module). Keep that callable, not a wrapper: the engine releases the wrapper
        before the process group is torn down. Stepping its optimiser (and scheduler)
        is the method's job, e.g. in ``after_step``; ``optimizer`` must hold ``module``'s
        parameters (the engine moves the module before any optimiser state exists)."""
        return self._add_network(name, module, optimizer, scheduler)

    def add_aux(self, name: str, arrays: Sequence[np.ndarray]) -> None:
        """Per-image arrays on the LR grid (``arrays[i]``: H×W or H×W×C of image ``i``'s LR size, any
        dtype; memory maps welcome, e.g. from :meth:`cached_per_image`), cropped, flipped and rotated
        with every patch: batches then hold ``batch["aux"][name]`` as (B,p,p) or (B,C,p,p) aligned with
        ``batch["lr"]``, dtype kept. Call it in ``setup``."""
        self.train_set.add_aux(name, arrays)

    def cached_per_image(
        self, name: str, key: dict[str, Any], compute: Callable[[int], np.ndarray], *, progress: bool = True
    ) -> "PerImageArrays":
        """``compute(i)`` for every training image, computed once and stored memory-mapped next to the
        decoded-image cache (:mod:`attrsr.data.artifacts`): local rank 0 computes (with a progress
        bar, resuming a killed build image by image) while the other ranks wait, then every rank opens
        the same files. ``key`` (JSON data) names what the arrays depend on besides the images: the
        model's weights (:func:`attrsr.data.artifacts.weights_hash`), the method's parameters, … A
        later run with the same images and key reuses them."""
        from attrsr.data.artifacts import cached_per_image

        arrays = None
        if self.dist.local_rank == 0:
            arrays = cached_per_image(self.images, name, key, compute, progress=progress and self.dist.is_main)
        self.barrier()
        return arrays or cached_per_image(self.images, name, key, compute, build=False)

    def log(self, kind: str, row: dict[str, Any]) -> None:
        """Append a row to the run's metrics log (``metrics.jsonl``, and ``KIND.csv`` for ``train``/``val``);
        only rank 0 writes, other ranks' calls are ignored. Include ``step``."""
        self._log(kind, row)

    def batches(self, plan: SamplePlan, batch_size: int | None = None) -> Iterator[dict[str, Any]]:
        """Batches of any plan through the training pipeline (crops, flips), on this device, in the
        main process and without method augmentation: for a method's own loops (BSPA's fine-tuning
        and scoring). ``batch_size`` defaults to ``data.batch_size``."""
        return self._batches(plan, batch_size)

    def losses(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Run one batch through the normal training forward pass and losses (pixel loss with the
        batch's ``loss_mask``, every method's extra losses): ``(total, terms)``, with the graph kept
        for the caller's ``backward``. It steps nothing: the caller owns the optimisation (e.g. BSPA
        fine-tuning a copy of the weights). It runs through the DDP wrapper when distributed, so
        every rank must call it the same number of times."""
        return self._losses(batch)

    def optimise(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """One normal optimisation step of the SR model on ``batch``: forward pass and losses as in
        :meth:`losses`, backward, ``optim.grad_clip``, the non-finite check, the optimiser's step.
        Returns the detached terms (``loss``, each term, ``grad_norm``). It does not count as a loop
        step: no schedule step, no ``after_step``, no EMA update, no augmentation (BSPA's fine-tuning
        on inverse-sampled batches). Under DDP every rank must call it equally often."""
        return self._optimise(batch)

    # Distributed helpers (no-ops when undistributed).

    def barrier(self) -> None:
        distributed.barrier(self.dist)

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        return distributed.broadcast_object(self.dist, obj)

    def gather(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order."""
        return distributed.gather_objects(self.dist, obj)


#: What a method can take over exclusively (``Method.owns``), with the words used in error messages.
OWNABLE = {"sampler": "sampler (plan_epoch)", "forward": "forward pass (what the network sees)"}


class Method:
    """Base class of training methods; every hook is optional (the defaults change nothing)."""

    #: What this method takes over exclusively (keys of ``OWNABLE``): a sampler that decides the
    #: epoch's patches outright, or the network's forward pass. Two methods owning the same thing
    #: is a recipe error, reported before anything runs.
    owns: ClassVar[frozenset[str]] = frozenset()

    #: Parameters of the method (a pydantic model with ``extra="forbid"``); ``self.params`` holds them.
    Params: ClassVar[type[BaseModel]] = NoParams
    #: Set when ``extra_losses`` differentiates through the input (the engine marks ``lr`` requires_grad).
    needs_input_grad: ClassVar[bool] = False
    #: When ``setup`` wraps the network so that its weights are no longer the zoo model's: one sentence
    #: saying what the exported ``model.safetensors`` holds (stored in its metadata).
    export_note: ClassVar[str] = ""

    def __init__(self, params: BaseModel | None = None) -> None:
        self.params = params if params is not None else self.Params()
        self.name = type(self).__name__

    def setup(self, ctx: MethodContext) -> None:
        pass

    def plan_epoch(self, epoch: int, plan: SamplePlan, rng: np.random.Generator) -> SamplePlan:
        return plan

    def augment(self, batch: dict[str, Any], gen: torch.Generator, rng: np.random.Generator) -> dict[str, Any]:
        return batch

    def forward(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return model(batch["lr"])

    def extra_losses(self, batch: dict[str, Any], sr: torch.Tensor, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {}

    def freezes_model(self, step: int) -> bool:
        return False

    def after_step(self, step: int) -> None:
        pass

    def on_epoch_end(self, epoch: int) -> None:
        pass

    def validate(self, model: torch.nn.Module, step: int) -> list[dict[str, Any]]:
        return []

    def evaluate_run(self, model: torch.nn.Module, run: Path, cfg: "Config") -> dict[str, dict[str, Any]]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def rebuild(self, model: torch.nn.Module, cfg: "Config") -> torch.nn.Module:
        """The trained network's structure from the recipe's zoo model, without training data: what
        ``setup`` wraps it in (CutBlur's space-to-depth head), so that an exported
        ``model.safetensors`` with ``zoo_loadable: false`` loads for evaluation. Default: unchanged."""
        return model


# ----------------------------------------------------------------------------------------------
# Registry

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
    """Names of the registered methods (the built-in ones register when ``attrsr`` is imported)."""
    return sorted(_METHODS)


def registered_method(name: str) -> type[Method] | None:
    return _METHODS.get(name)
