"""The training engine: one readable loop, with method hooks, exact resume and DDP.

    trainer = Trainer(load_config("configs/demo-x2.yaml"))
    summary = trainer.fit()

``Trainer.__init__`` first locks the run folder (an OS lock held until ``fit`` ends: a second
training on the same folder fails at once, naming the holder's PID), then does everything that can
fail on user input (config, model, data folders, patch sizes, scale, methods and their parameters,
method conflicts, resume compatibility) *before* any of the run's files is written; a bad run removes
the folder again if it created it. ``config.yaml`` and the log are written just before the methods'
``setup`` (which may log, and may take long); a failure in ``setup`` leaves only those, and the next
fresh run starts new logs. ``fit`` then runs the loop; what each method may change is documented in
:mod:`attrsr.engine.hooks`.

Run folder (``train.out``)::

    config.yaml        the resolved recipe
    latest.pt          full training state (model, optimiser, scheduler, EMA, RNGs, plan position,
                       method state, methods' extra networks with their optimisers and schedules),
                       rewritten atomically every ``train.checkpoint_every`` steps
    best.safetensors   weights with the best validation Y-PSNR on the first ``val.data`` set
    model.safetensors  final weights (EMA weights when ``train.ema`` is set); its metadata says
                       whether ``attrsr.models.load`` reads it (``zoo_loadable``) and, when a
                       method wrapped the network, what it holds instead (``architecture``)
    <name>.safetensors final weights of each extra network a method added (SR4IR: task.safetensors)
    metrics.jsonl, train.csv, val.csv   (+ tb/ when tensorboard is installed)
    .lock              while a training runs: its PID (the OS lock itself vanishes with the process)
"""

from __future__ import annotations

import dataclasses
import inspect
import random
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from attrsr.config import Config, dump_config
from attrsr.data.cache import DecodedImages, prepare_cache
from attrsr.data.datasets import SRDataset, open_dataset
from attrsr.data.patches import PatchDataset
from attrsr.data.samplers import PlanBatchSampler, SamplePlan, epoch_rng
from attrsr.engine import distributed
from attrsr.engine.checkpoint import export_safetensors, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from attrsr.fileio import FolderLock, check_output, write_bytes_atomic
from attrsr.engine.compose import build_methods
from attrsr.engine.hooks import MethodContext
from attrsr.engine.logs import RunLog
from attrsr.engine.networks import Network, networks_state, restore_networks
from attrsr.engine.optim import make_ema, make_optimizer, make_scheduler, pixel_loss
from attrsr.errors import AttrsrError

# Config sections that must match between a checkpoint and the resuming recipe: anything else
# (iterations, logging/checkpoint/validation cadence, workers, output paths) may change on resume.
_RESUME_FIXED = ("seed", "scale", "model", "optim", "schedule", "loss", "methods")
_RESUME_FIXED_DATA = ("train", "lr", "patch_size", "batch_size", "repeat", "flip", "rot90")


class NonFiniteLoss(AttrsrError):
    """The loss or gradient became NaN/inf; the run stopped before saving that step."""


class Trainer:
    """Model, data, optimiser and loop of one training run. See the module docstring."""

    def __init__(self, cfg: Config, *, out: str | Path | None = None, resume: bool = False, progress: bool = True) -> None:
        self.cfg = cfg
        self.out = Path(out) if out is not None else cfg.out_dir
        self.dist = distributed.setup()
        self.device = self.dist.device
        self.progress = progress and self.dist.is_main
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        # The run folder is locked before anything else, so that a second training on it fails at
        # once (not after its set-up, and not with the "already holds a run" advice to --resume).
        self.lock = self._lock_run_folder()
        try:
            self._prepare(resume)
        except BaseException:
            if self.lock is not None:  # a run that fails while starting leaves no folder behind
                if getattr(self, "log", None) is not None:
                    self.log.close()
                if self.lock.created_folder:  # config.yaml and the log (written before the methods'
                    shutil.rmtree(self.out, ignore_errors=True)  # setup) are this run's alone
                self.lock.release(remove_created=True)
            raise

    def _lock_run_folder(self) -> FolderLock | None:
        """Rank 0 checks the folder is writable and locks it; every rank learns the outcome, so all
        stop together with the same one line."""
        lock, failure = None, None
        if self.dist.is_main:
            try:
                check_output(self.out, "the run folder", "folder")
                lock = FolderLock.acquire(self.out, "the run folder")
            except AttrsrError as exc:
                failure = str(exc)
        failure = distributed.broadcast_object(self.dist, failure)
        if failure is not None:
            raise AttrsrError(failure)
        return lock

    def release(self) -> None:
        """Unlock the run folder (done by :meth:`fit` when it ends, by any path)."""
        if self.lock is not None:
            self.lock.release()

    def _prepare(self, resume: bool) -> None:
        cfg = self.cfg
        # --- everything that can fail on user input, before the run's files are written -------
        checkpoint = self._read_resume_checkpoint(resume)
        self.resumed_from: int | None = checkpoint["step"] if checkpoint is not None else None
        self.methods = build_methods(cfg.methods, cfg.seed)
        _seed_everything(cfg.seed)
        self.model = _build_model(cfg)
        self.train_data, self.skipped_images = _open_training_set(cfg)
        self.val_data = [open_dataset(d, cfg.scale) for d in cfg.val.data]
        self.images = self._decoded_images()
        self.train_set = PatchDataset(
            self.images, cfg.data.patch_size, flip=cfg.data.flip, rot90=cfg.data.rot90, source=cfg.data.train
        )
        if len(self.images) * cfg.data.repeat < cfg.data.batch_size:
            raise AttrsrError(
                f"{cfg.data.train}: {len(self.images)} image(s) × data.repeat={cfg.data.repeat} give fewer patches per "
                f"epoch than data.batch_size={cfg.data.batch_size}; raise data.repeat or lower the batch size"
            )
        self.sampler = PlanBatchSampler(cfg.data.batch_size, self.dist.rank, self.dist.world)
        self.loss_fn = pixel_loss(cfg.loss)

        # Per-rank global RNG streams from here on (model init above is identical on every rank).
        _seed_everything(cfg.seed + self.dist.rank)
        self.model.to(self.device)
        # --- from here on the run's files are written (rank 0): methods' setup may log already ---
        if self.dist.is_main:
            write_bytes_atomic(self.out / "config.yaml", dump_config(cfg).encode())
        self.log = RunLog(self.out, resume_step=checkpoint["step"] if checkpoint else None, enabled=self.dist.is_main)
        if self.skipped_images and self.dist.is_main and checkpoint is None:
            self._log_skipped()
        self.step = checkpoint["step"] if checkpoint else 0  # what ctx.step reads during setup
        self.networks: dict[str, Network] = {}  # extra trained networks (ctx.add_network)
        self._setting_up = True
        zoo_keys = set(self.model.state_dict())
        self.methods.setup(self._method_context())  # may wrap or replace self.model
        self._setting_up = False
        self._export_note = self.methods.export_note() if set(self.model.state_dict()) != zoo_keys else None
        self.model.to(self.device)
        self.optimizer = make_optimizer(cfg.optim, [p for p in self.model.parameters() if p.requires_grad])
        self.scheduler = make_scheduler(cfg.schedule, self.optimizer, cfg.optim.lr, cfg.train.iterations)
        self.ema = make_ema(self.model, cfg.train.ema) if cfg.train.ema is not None else None
        self.train_model: nn.Module = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.loader = torch.utils.data.DataLoader(
            self.train_set,
            batch_sampler=self.sampler,
            num_workers=cfg.data.num_workers,
            persistent_workers=cfg.data.num_workers > 0,
            pin_memory=self.device.type == "cuda",
            # Its own generator, so creating an iterator never draws from the global RNG.
            generator=torch.Generator().manual_seed(cfg.seed),
        )

        # Loop position. An epoch's plan is made when its first batch is needed.
        self.epoch = 0
        self.pos = 0  # batches of the current epoch already trained on
        self.plan: SamplePlan | None = None
        self.best: dict[str, Any] | None = None
        self.last_val: dict[str, Any] | None = None
        self.saved_step: int | None = None
        self.step_lr = cfg.optim.lr
        self._terms_checked = False
        if checkpoint is not None:
            self._restore(checkpoint)


    def _method_context(self) -> MethodContext:
        def set_model(model: nn.Module) -> None:
            if not self._setting_up:
                raise RuntimeError("a method may replace the model only in setup (the optimiser holds its parameters)")
            self.model = model

        def add_network(name: str, module: nn.Module, optimizer: torch.optim.Optimizer, scheduler=None) -> Callable[..., Any]:
            if not self._setting_up:
                raise RuntimeError("networks are added in setup (before the checkpoint is restored)")
            if name in self.networks or name in ("model", "best") or not name.isidentifier():
                raise ValueError(f"network {name!r} added twice, named like the SR model's files, or not an identifier")
            net = Network(module.to(self.device), optimizer, scheduler, wrapped=module)
            if self.dist.enabled and any(p.requires_grad for p in module.parameters()):
                ids = [self.device.index] if self.device.type == "cuda" else None
                net.wrapped = nn.parallel.DistributedDataParallel(module, device_ids=ids)
            self.networks[name] = net
            return net.forwarder()

        return MethodContext(
            cfg=self.cfg, device=self.device, dist=self.dist, out=self.out, images=self.images, train_set=self.train_set,
            _get_model=lambda: self.model, _set_model=set_model, _get_step=lambda: self.step, _log=lambda kind, row: self.log.write(kind, row),
            _batches=self.batches, _losses=self._losses, _add_network=add_network,
            _optimise=lambda batch: self._optimise(_to_device(batch, self.device)),
        )

    # ------------------------------------------------------------------------------------------
    # The loop

    def fit(self) -> dict[str, Any]:
        """Train to ``train.iterations``; returns a summary (steps, best and last validation).
        The run folder is unlocked when it returns or fails."""
        try:
            return self._fit()
        finally:
            self.release()

    def _fit(self) -> dict[str, Any]:
        from attrsr.progress import progress_bar

        cfg = self.cfg
        total = cfg.train.iterations
        bar = progress_bar(total=total, initial=self.step, unit="it", enabled=self.progress, dynamic_ncols=True, desc=cfg.name)
        meter = _Meter()
        batches: Iterator[dict] | None = None
        start = time.perf_counter()
        try:
            while self.step < total:
                if batches is None:
                    batches = self._epoch_batches()
                t0 = time.perf_counter()
                batch = next(batches)
                t1 = time.perf_counter()
                terms = self._train_step(batch)
                meter.add(terms, t1 - t0, time.perf_counter() - t1)
                self.step += 1
                self.pos += 1
                if self.pos == self._batches_per_epoch():
                    self.methods.on_epoch_end(self.epoch)
                    self.epoch, self.pos, self.plan, batches = self.epoch + 1, 0, None, None

                last = self.step == total
                if self.step % cfg.train.log_every == 0 or last:
                    # ``lr`` is the rate the logged step trained with (the scheduler already moved on);
                    # loss terms are averaged over all ranks, timings are rank 0's.
                    summary = distributed.mean_over_ranks(self.dist, meter.summary(), skip=("it_s", "data_wait"))
                    self.log.write("train", {"step": self.step, "epoch": self.epoch, "lr": self.step_lr, **summary})
                    bar.set_postfix(meter.postfix(self.last_val), refresh=False)
                    meter = _Meter()
                if (cfg.val.every and self.step % cfg.val.every == 0) or last:
                    self.validate()
                    bar.set_postfix(meter.postfix(self.last_val), refresh=False)
                if self.step % cfg.train.checkpoint_every == 0 or last:
                    self.save()
                bar.update(1)
        finally:
            bar.close()
            self.log.close()
        if self.dist.is_main:
            export_safetensors(self.export_state(), self.out / "model.safetensors", self._weights_metadata())
            for name, net in self.networks.items():  # the methods' extra networks (SR4IR's task network)
                meta = {"network": name, "class": type(net.module).__name__, "step": self.step, "recipe": self.cfg.name}
                export_safetensors(net.module.state_dict(), self.out / f"{name}.safetensors", meta)
        distributed.barrier(self.dist)
        return {"out": str(self.out), "step": self.step, "seconds": time.perf_counter() - start, "best": self.best, "val": self.last_val}

    def close(self) -> None:
        """Release what holds the process group or worker processes (the DDP wrapper and its
        reducer, persistent data-loader workers) so that the group can be torn down cleanly."""
        self.train_model = self.model
        self.loader = None
        for net in self.networks.values():  # methods call them through a forwarder, not the wrapper
            net.wrapped = net.module

    def _train_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        batch = _to_device(batch, self.device)
        batch = self.methods.augment(batch, self.step, self.dist.rank)
        self.step_lr = self.optimizer.param_groups[0]["lr"]
        frozen = self.methods.freezes_model(self.step + 1)
        terms = self._frozen_losses(batch) if frozen else self._optimise(batch)
        with warnings.catch_warnings():
            if frozen:  # the schedule keeps time while a method holds the network (no optimiser step yet)
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
            self.scheduler.step()
        # after_step first: weights a method restores (BSPA's frozen ones) must be what the EMA averages.
        self.methods.after_step(self.step + 1)
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return terms

    def _optimise(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """One optimiser step on an (augmented) batch: losses, backward, clipping, step. The loop's
        bookkeeping (schedule, after_step, EMA, counters) is the caller's."""
        if self.methods.needs_input_grad:
            batch["lr"].requires_grad_(True)
        loss, terms = self._losses(batch)
        if not self._terms_checked:  # once: each rank then holds its methods to the names it saw
            self.methods.check_terms_across_ranks(distributed.gather_objects(self.dist, sorted(terms)))
            self._terms_checked = True
        self._check_finite(loss, "loss", terms)

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        if self.cfg.optim.grad_clip is not None:
            norm = nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip)
        else:
            norm = nn.utils.get_total_norm([p.grad for p in params])
        self._check_finite(norm, "gradient norm", terms)
        self.optimizer.step()
        return {"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()}, "grad_norm": norm.detach()}

    def _frozen_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """A step at which a method holds the SR network fixed: the losses, for the log only."""
        with torch.no_grad():
            loss, terms = self._losses(batch)
        if not self._terms_checked:
            self.methods.check_terms_across_ranks(distributed.gather_objects(self.dist, sorted(terms)))
            self._terms_checked = True
        return {"loss": loss, **terms, "grad_norm": torch.zeros((), device=loss.device)}

    def _losses(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The forward pass and every loss term of one (augmented) batch: ``(total, terms)``."""
        sr = self.methods.forward(self.train_model, batch)
        terms = {"pixel": self.loss_fn(sr, batch["hr"], batch.get("loss_mask"))}
        terms.update(self.methods.extra_losses(batch, sr, self.model))
        return torch.stack([t.reshape(()) for t in terms.values()]).sum(), terms

    def _check_finite(self, value: torch.Tensor, what: str, terms: dict[str, torch.Tensor]) -> None:
        ok = torch.isfinite(value).all().to(torch.int32)
        if self.dist.enabled:  # every rank stops together, not only the one that saw it
            torch.distributed.all_reduce(ok, op=torch.distributed.ReduceOp.MIN)
        if ok.item():
            return
        parts = ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items())
        kept = (
            f"the last good checkpoint is {self.out / 'latest.pt'} (iteration {self.saved_step})"
            if self.saved_step is not None
            else "no checkpoint had been written yet"
        )
        raise NonFiniteLoss(
            f"{what} is not finite at iteration {self.step + 1} ({parts}); stopped without saving that step: "
            f"{kept}. Lower optim.lr or set optim.grad_clip, then run again (with --resume to continue)"
        )

    # ------------------------------------------------------------------------------------------
    # Data

    def _make_plan(self, epoch: int) -> SamplePlan:
        rng = epoch_rng(self.cfg.seed, epoch)
        plan = SamplePlan.shuffled(len(self.images), self.cfg.data.repeat, rng)
        plan = self.methods.plan_epoch(epoch, plan)
        if len(plan) < self.cfg.data.batch_size:
            raise AttrsrError(
                f"epoch {epoch} has {len(plan)} patches, fewer than data.batch_size={self.cfg.data.batch_size}; "
                "raise data.repeat or lower the batch size"
            )
        return plan

    def _batches_per_epoch(self) -> int:
        return self.sampler.batches_in(self.plan) if self.plan is not None else 0

    def _epoch_batches(self) -> Iterator[dict]:
        if self.plan is None:
            self.plan = self._make_plan(self.epoch)
        self.sampler.start(self.plan, self.pos)
        return iter(self.loader)

    def batches(self, plan: SamplePlan, batch_size: int | None = None) -> Iterator[dict[str, Any]]:
        """Batches of any plan through the training pipeline (crops, flips), on this device, in
        the main process and without method augmentation: for a method's own loops (BSPA's
        fine-tuning and scoring)."""
        from torch.utils.data import default_collate

        bs = batch_size or self.cfg.data.batch_size
        for lo in range(0, len(plan), bs):
            items = [self.train_set[plan.request(i)] for i in range(lo, min(lo + bs, len(plan)))]
            yield _to_device(default_collate(items), self.device)

    def _decoded_images(self) -> DecodedImages:
        # One process per node decodes; the others wait and open the same files.
        main_local = self.dist.local_rank == 0
        images = prepare_cache(self.train_data, self.cfg.data.cache_dir, progress=self.progress) if main_local else None
        distributed.barrier(self.dist)
        return images or prepare_cache(self.train_data, self.cfg.data.cache_dir, build=False)

    # ------------------------------------------------------------------------------------------
    # Validation, checkpoints, export

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated and exported: the EMA when enabled."""
        return self.ema.module if self.ema is not None else self.model

    def export_state(self) -> dict[str, torch.Tensor]:
        return self.eval_model.state_dict()

    def validate(self) -> dict[str, Any] | None:
        if self.dist.is_main and self.val_data:
            from attrsr.evaluation import evaluate

            results = evaluate(self.eval_model, self.val_data, self.cfg.scale, border=self.cfg.val.border, device=self.device, progress=False)
            for name, r in results.items():
                self.log.write("val", {"step": self.step, "dataset": name, "psnr_y": r["psnr_y"], "ssim_y": r["ssim_y"]})
            first = next(iter(results))
            self.last_val = {"step": self.step, "dataset": first, "psnr_y": results[first]["psnr_y"], "ssim_y": results[first]["ssim_y"]}
            if self.best is None or self.last_val["psnr_y"] > self.best["psnr_y"]:
                self.best = dict(self.last_val)
                export_safetensors(self.export_state(), self.out / "best.safetensors", self._weights_metadata())
        for row in self.methods.validate(self.eval_model, self.step):  # every rank computes, rank 0 logs
            self.log.write("val", {"step": self.step, **row})
        distributed.barrier(self.dist)
        return self.last_val

    def save(self) -> None:
        """Write ``latest.pt`` (rank 0; every rank contributes its RNG state)."""
        rngs = distributed.gather_objects(self.dist, rng_state())
        if self.dist.is_main:
            state = {
                "step": self.step,
                "epoch": self.epoch,
                "pos": self.pos,
                "plan": self.plan.state_dict() if self.plan is not None else None,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "rng": rngs,
                "methods": self.methods.state_dict(),
                "networks": networks_state(self.networks),
                "best": self.best,
                "last_val": self.last_val,
                "world": self.dist.world,
                "config": self.cfg.to_dict(),
            }
            save_checkpoint(state, self.out / "latest.pt")
        self.saved_step = self.step
        distributed.barrier(self.dist)

    def _log_skipped(self) -> None:
        names = self.skipped_images
        shown = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
        print(
            f"{self.cfg.data.train}: skipped {len(names)} image(s) smaller than the {self.cfg.data.patch_size}-pixel "
            f"LR patch at x{self.cfg.scale} ({shown}); training on {len(self.images)}",
            file=sys.stderr,
        )
        self.log.write("data", {"step": 0, "skipped_small": len(names), "skipped": names, "images": len(self.images)})

    def _weights_metadata(self) -> dict[str, Any]:
        m = self.cfg.model
        meta = {"model": m.name, "scale": self.cfg.scale, "config": m.args, "step": self.step, "recipe": self.cfg.name}
        # A method that wrapped the network (setup) exports the wrapper: say so, rather than leave a
        # file that attrsr.models.load would reject with a key mismatch.
        meta["zoo_loadable"] = self._export_note is None
        if self._export_note is not None:
            meta["architecture"] = self._export_note
        return meta

    def _read_resume_checkpoint(self, resume: bool) -> dict[str, Any] | None:
        latest = self.out / "latest.pt"
        if not resume:
            if latest.exists():
                raise AttrsrError(f"{self.out}: already holds a run (latest.pt); pass --resume to continue it, or choose another --out")
            return None
        state = load_checkpoint(latest)
        old, new = state["config"], self.cfg.to_dict()
        diffs = [k for k in _RESUME_FIXED if old.get(k) != new.get(k)]
        diffs += [f"data.{k}" for k in _RESUME_FIXED_DATA if old["data"].get(k) != new["data"].get(k)]
        if old["train"].get("ema") != new["train"].get("ema"):
            diffs.append("train.ema")
        if new["schedule"].get("name") == "cosine" and old["train"]["iterations"] != new["train"]["iterations"]:
            # The cosine curve is laid over train.iterations: a new length would bend the rest of it.
            diffs.append(f"train.iterations ({old['train']['iterations']}; the cosine schedule decays over it)")
        if diffs:
            raise AttrsrError(f"{latest}: the checkpoint was trained with a different {', '.join(diffs)}; resume with the same recipe")
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.methods.load_state_dict(state["methods"])
        restore_networks(self.networks, state.get("networks"), str(self.out / "latest.pt"))
        self.step, self.epoch, self.pos = state["step"], state["epoch"], state["pos"]
        self.plan = SamplePlan.from_state(state["plan"]) if state["plan"] is not None else None
        self.best, self.last_val = state["best"], state["last_val"]
        self.saved_step = self.step
        rngs = state["rng"]
        # Exact continuation needs each rank's own RNG stream; with another world size the data
        # stay exact (they come from the plan), only methods that use the global RNGs differ.
        set_rng_state(rngs[self.dist.rank] if len(rngs) == self.dist.world else rngs[0])


# ----------------------------------------------------------------------------------------------
# Helpers


class _Meter:
    """Averages of the loss terms and timings over one logging interval."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.n = 0
        self.t_data = 0.0
        self.t_step = 0.0

    def add(self, terms: dict[str, torch.Tensor], t_data: float, t_step: float) -> None:
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.n += 1
        self.t_data += t_data
        self.t_step += t_step

    def summary(self) -> dict[str, float]:
        n = max(self.n, 1)
        total = self.t_data + self.t_step
        return {
            **{k: v / n for k, v in self.sums.items()},
            "it_s": self.n / total if total else 0.0,
            "data_wait": self.t_data / total if total else 0.0,
        }

    def postfix(self, last_val: dict[str, Any] | None) -> dict[str, str]:
        out = {}
        if self.n:
            s = self.summary()
            out["loss"] = f"{s['loss']:.4f}"
            out["data"] = f"{100 * s['data_wait']:.0f}%"
        if last_val is not None:
            out["psnr"] = f"{last_val['psnr_y']:.2f}"
        return out


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Tensors of a batch (and of its ``aux`` dict) on ``device``."""
    out = {}
    for k, v in batch.items():
        if isinstance(v, dict):
            out[k] = _to_device(v, device)
        else:
            out[k] = v.to(device, non_blocking=True) if torch.is_tensor(v) else v
    return out


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _build_model(cfg: Config) -> nn.Module:
    from attrsr import models

    try:
        spec = models.spec(cfg.model.name)
    except AttrsrError as exc:
        raise AttrsrError(f"model.name: {exc}") from None
    try:
        if cfg.model.weights:
            model = models.load(spec.name, weights=cfg.model.weights, scale=cfg.scale, **cfg.model.args)
        else:
            model = models.create(spec.name, scale=cfg.scale, **cfg.model.args)
    except TypeError as exc:
        if "argument" not in str(exc):
            raise
        accepted = [p for p in inspect.signature(spec.build).parameters if p != "scale"]
        raise AttrsrError(
            f"model.args for {spec.name!r}: {exc}; accepted: {', '.join(accepted) or 'none'}"
        ) from None
    model.zoo_name = spec.name
    return model.train()


def _open_training_set(cfg: Config) -> tuple[SRDataset, list[str]]:
    """The training set less the images too small for a patch (returned by name, to be logged)."""
    ds = open_dataset(cfg.data.train, cfg.scale)
    missing_lr = [e.name for e in ds.entries if e.lr is None]
    if cfg.data.lr == "files" and missing_lr:
        raise AttrsrError(
            f"{cfg.data.train}: data.lr=files but {len(missing_lr)} image(s) have no LR file (e.g. {missing_lr[0]}); "
            "use data.lr=bicubic to make LR with MATLAB bicubic"
        )
    if cfg.data.lr == "bicubic" and len(missing_lr) < len(ds):
        entries = [dataclasses.replace(e, lr=None) for e in ds.entries]
        ds = SRDataset(ds.name, ds.scale, entries, "LR made with MATLAB bicubic")
    return ds.without_smaller_than(cfg.data.patch_size)


def train(
    cfg: Config,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    announce: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Build a :class:`Trainer` and run it to the end. ``announce`` (rank 0 only) is told where a
    resumed run continues: "resumed from step N of M".

    Under DDP the teardown order is fixed, on success and on error alike: the trainer releases
    what holds the process group (the DDP wrapper, data-loader workers), then all ranks meet at a
    barrier (success only), then the group is destroyed — so no communication thread is alive when
    the interpreter exits.
    """
    info = distributed.setup()
    trainer: Trainer | None = None
    completed = False
    try:
        trainer = Trainer(cfg, out=out, resume=resume, progress=progress)
        if announce is not None and info.is_main and trainer.resumed_from is not None:
            announce(f"resumed from step {trainer.resumed_from} of {cfg.train.iterations} ({trainer.out / 'latest.pt'})")
        summary = trainer.fit()
        completed = True
        return summary
    finally:
        if trainer is not None:
            trainer.release()
            trainer.close()
        trainer = None
        distributed.teardown(info, completed=completed)
