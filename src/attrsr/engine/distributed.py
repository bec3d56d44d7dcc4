"""DDP set-up from torchrun's environment (gloo on CPU, NCCL on GPU), and rank helpers.

``torchrun --nproc_per_node N -m attrsr train CONFIG`` (or ``attrsr train CONFIG --nproc N``) starts
N processes with ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR`` set; multi-node runs use
torchrun's usual ``--nnodes/--node_rank/--rdzv_endpoint`` flags and need the output folder (for
checkpoints) on a file system every node sees. Rank 0 logs, validates and writes checkpoints; every
rank reads the checkpoint when resuming. A single process without those variables runs undistributed.
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import importlib
import os
from typing import Any

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str | None = None) -> DistInfo:
    """Join the process group when launched by torchrun; pick the device of this process.

    Pair every call that initialises the group with :func:`teardown` (``train`` does, on every path).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    dev = torch.device(f"cuda:{local}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        # Import before the group exists: ``torch.distributed.nn.functional`` (imported lazily by
        # DistributedDataParallel) binds ``group.WORLD`` as a default argument of ten functions at
        # import time. Imported after ``init_process_group`` it keeps the default group alive for
        # good, so ``destroy_process_group`` cannot join gloo's threads and they are still running
        # when the interpreter shuts down — the cause of the rare rank abort "terminate called
        # without an active exception" (issue 14; test_engine_ddp checks that no thread survives).
        importlib.import_module("torch.distributed.nn.functional")

        dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=30))
    return DistInfo(rank, world, local, dev)


def teardown(info: DistInfo, *, completed: bool = True) -> None:
    """Leave the process group so that no communication thread outlives it.

    ``completed``: every rank got here normally — wait for all of them first, so that no rank
    destroys its group while a peer still has a collective in flight. On an error path (a rank
    raised) there is no barrier: the peers may never reach it; closing the group makes their
    pending collectives fail instead of hang. Objects that hold the group (the DDP wrapper and its
    reducer) must be released before this call; the ``gc.collect`` frees what only cycles keep.
    """
    if not (info.enabled and dist.is_initialized()):
        return
    if completed:
        dist.barrier()
    gc.collect()
    dist.destroy_process_group()
    gc.collect()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def gather_objects(info: DistInfo, obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (a list of one when undistributed)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(info: DistInfo, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (used to share a failure so all ranks stop together)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_over_ranks(info: DistInfo, values: dict[str, float], skip: tuple[str, ...] = ()) -> dict[str, float]:
    """``values`` averaged over the ranks (keys in ``skip`` keep this rank's value); every rank
    must call it with the same keys."""
    if not info.enabled:
        return values
    keys = [k for k in values if k not in skip]
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=info.device)  # NCCL: on the GPU
    dist.all_reduce(t)
    return {**values, **{k: float(v) / info.world for k, v in zip(keys, t.tolist())}}
