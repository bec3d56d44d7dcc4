"""How configured methods are built and composed into the one object the trainer talks to.

The protocol itself (what a method is and may do) is :mod:`attrsr.engine.hooks`.
"""

from __future__ import annotations

import difflib
import importlib
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pydantic import ValidationError

from attrsr.data.samplers import SamplePlan, epoch_rng
from attrsr.engine.hooks import OWNABLE, Method, MethodContext, method_names, registered_method
from attrsr.errors import AttrsrError

if TYPE_CHECKING:  # pragma: no cover
    from attrsr.config import MethodConfig


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
    cls = registered_method(name)
    if cls is None:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise AttrsrError(f"unknown method {name!r}{hint}; available: {', '.join(known) or 'none'} (or module:Class)")
    return cls


def build_methods(configs: "list[MethodConfig]", seed: int) -> "MethodStack":
    """The methods of a recipe, built and checked for conflicts (unknown names, parameter typos, two
    owners of the sampler or forward pass): one :class:`AttrsrError` line, before anything runs —
    also usable to validate a recipe without training it (``attrsr experiment``)."""
    return MethodStack([build_method(m, i) for i, m in enumerate(configs)], seed)


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
            else:  # a cross-field check of the method (empty location) reads as its own sentence
                msg = err["msg"].removeprefix("Value error, ").lower()
                probs.append(f"{key}: {msg}" if key else msg)
        raise AttrsrError(f"methods.{index} ({cfg.name}): " + "; ".join(probs)) from None
    method = cls(params)
    method.name = cfg.name
    return method


def _exclusive_owners(methods: list[Method]) -> dict[str, int]:
    """What each method owns exclusively (``Method.owns``) → the index of its owner; two owners of one
    thing is a recipe error (two samplers cannot both decide an epoch's patches)."""
    owners: dict[str, int] = {}
    for i, m in enumerate(methods):
        unknown = set(m.owns) - set(OWNABLE)
        if unknown:
            raise TypeError(f"method {m.name}: owns {sorted(unknown)}, but only {', '.join(OWNABLE)} can be owned")
        owns = set(m.owns) | ({"forward"} if type(m).forward is not Method.forward else set())  # a forward hook owns it
        for thing in sorted(owns):
            if thing in owners:
                j = owners[thing]
                raise AttrsrError(
                    f"methods.{j} ({methods[j].name}) and methods.{i} ({m.name}) both take over the {OWNABLE[thing]}; "
                    "a run can have only one of them: remove one from methods"
                )
            owners[thing] = i
    return owners


class LossTermsChanged(AttrsrError):
    """A method returned different loss-term names at another step or on another rank."""


def augment_generators(seed: int, step: int, rank: int, index: int, device: torch.device) -> tuple[torch.Generator, np.random.Generator]:
    """The torch and numpy generators of method ``index``'s ``augment`` at ``step`` on ``rank``: a pure
    function of those numbers, so a resumed run redraws exactly what the crashed one would have."""
    seq = np.random.SeedSequence([seed, step, rank, index])
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seq.generate_state(1, np.uint64)[0] >> 1))
    return gen, np.random.default_rng(seq.spawn(1)[0])


class MethodStack:
    """Several methods acting as one: the trainer only ever talks to this."""

    def __init__(self, methods: list[Method], seed: int) -> None:
        self.methods = methods
        self.seed = seed
        keys = [m.name for m in methods]
        # State is stored per method; the same method twice gets an index to keep the keys apart.
        self.keys = [k if keys.count(k) == 1 else f"{k}#{i}" for i, k in enumerate(keys)]
        self.term_names: list[list[str] | None] = [None] * len(methods)
        self.owners = _exclusive_owners(methods)

    @property
    def needs_input_grad(self) -> bool:
        return any(m.needs_input_grad for m in self.methods)

    def setup(self, ctx: MethodContext) -> None:
        for m in self.methods:
            m.setup(ctx)

    def plan_epoch(self, epoch: int, plan: SamplePlan) -> SamplePlan:
        for i, m in enumerate(self.methods):
            plan = m.plan_epoch(epoch, plan, epoch_rng(self.seed, epoch, stream=i + 1))
            if not isinstance(plan, SamplePlan):
                raise TypeError(f"method {m.name}: plan_epoch must return a SamplePlan, got {type(plan).__name__}")
        return plan

    def augment(self, batch: dict[str, Any], step: int, rank: int) -> dict[str, Any]:
        mask = batch.pop("loss_mask", None)
        for i, m in enumerate(self.methods):
            gen, rng = augment_generators(self.seed, step, rank, i, batch["lr"].device)
            batch = m.augment(batch, gen, rng)
            # Each method sees (and sets) only its own mask; the masks of several methods multiply.
            own = batch.pop("loss_mask", None)
            mask = own if mask is None else mask if own is None else mask * own
        if mask is not None:
            batch["loss_mask"] = mask
        return batch

    def forward(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """The network's output for the batch: the owning method's ``forward`` or ``model(batch["lr"])``."""
        owner = self.owners.get("forward")
        return model(batch["lr"]) if owner is None else self.methods[owner].forward(model, batch)

    def export_note(self) -> str:
        """What the exported weights are when a method wrapped the network (its ``export_note``)."""
        notes = [f"{k}: {m.export_note}" for k, m in zip(self.keys, self.methods) if m.export_note]
        return "; ".join(notes) or (
            "the network as wrapped by the method(s) " + ", ".join(self.keys) + " (not the zoo model's parameter layout)"
        )

    def extra_losses(self, batch: dict[str, Any], sr: torch.Tensor, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for i, (key, m) in enumerate(zip(self.keys, self.methods)):
            terms = m.extra_losses(batch, sr, model)
            names = sorted(terms)
            if self.term_names[i] is None:
                self.term_names[i] = names
            elif names != self.term_names[i]:
                # The log's columns, the running averages and DDP's gradient buckets all assume a fixed set.
                raise LossTermsChanged(
                    f"method {key}: extra_losses returned terms {names} after returning {self.term_names[i]}; "
                    "a method must return the same terms at every step (a zero tensor when a term is inactive)"
                )
            for term, value in terms.items():
                out[f"{key}.{term}"] = value
        return out

    def check_terms_across_ranks(self, names_per_rank: list[list[str]]) -> None:
        """Every rank must log the same loss terms (``names_per_rank``: each rank's sorted term names)."""
        first = names_per_rank[0]
        for rank, names in enumerate(names_per_rank[1:], start=1):
            if names != first:
                differ = sorted(set(names) ^ set(first))
                owners = sorted({self._owner(n) for n in differ})
                raise LossTermsChanged(
                    f"method {', '.join(owners)}: loss terms differ between ranks (rank 0: {first}, rank {rank}: {names}); "
                    "a method must return the same terms on every rank (a zero tensor when a term is inactive)"
                )

    def _owner(self, term: str) -> str:
        return next((k for k in self.keys if term.startswith(k + ".")), "(engine)")

    def freezes_model(self, step: int) -> bool:
        return any(m.freezes_model(step) for m in self.methods)

    def after_step(self, step: int) -> None:
        for m in self.methods:
            m.after_step(step)

    def on_epoch_end(self, epoch: int) -> None:
        for m in self.methods:
            m.on_epoch_end(epoch)

    def validate(self, model: torch.nn.Module, step: int) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        was_training = model.training
        model.eval()
        try:
            for key, m in zip(self.keys, self.methods):
                for row in m.validate(model, step):
                    if not isinstance(row, dict) or not isinstance(row.get("dataset"), str):
                        raise TypeError(f"method {key}: validate must return dicts with a 'dataset' name, got {row!r}")
                    rows.append({"dataset": row["dataset"], "method": key, **{k: v for k, v in row.items() if k != "dataset"}})
        finally:
            model.train(was_training)
        return rows

    def state_dict(self) -> dict[str, Any]:
        return {k: m.state_dict() for k, m in zip(self.keys, self.methods)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = [k for k in self.keys if k not in state]
        if missing:
            raise AttrsrError(f"checkpoint has no state for method(s) {', '.join(missing)}; was it saved with other methods?")
        for k, m in zip(self.keys, self.methods):
            m.load_state_dict(state[k])
