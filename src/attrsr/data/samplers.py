"""Which patches a training epoch draws, in which order, and which process gets which.

An epoch is a :class:`SamplePlan`: N requests (image index, crop seed, optional fixed LR position),
built deterministically from ``(seed, epoch)`` and then handed to the methods' ``plan_epoch`` hooks
(reweighting, BSPA's class-balanced sub-images, …). Because every patch's randomness (crop position,
flips, rotation) comes from its own seed and not from a worker's RNG stream:

* the data do not depend on ``num_workers`` or on which worker served which patch;
* resuming needs only the plan and the batch position — no replay of the loader;
* a global batch is the same whether one process or N DDP processes draw it: each rank takes its
  contiguous slice (:class:`PlanBatchSampler`), which is why this replaces ``DistributedSampler``
  (that one shards single samples round-robin, so rank r's batch is not a slice of a global batch).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch

from attrsr.errors import AttrsrError


class PatchRequest(NamedTuple):
    """One training patch: image index, seed of its random crop/flips, fixed LR top-left or -1."""

    image: int
    seed: int
    top: int = -1
    left: int = -1


@dataclasses.dataclass
class SamplePlan:
    """The patches of one epoch, in order. All fields are (N,) int64 arrays.

    ``top``/``left`` are LR pixel coordinates of a fixed crop (e.g. BSPA's sub-images); ``-1`` means a
    random crop drawn from ``seed``.
    """

    image: np.ndarray
    seed: np.ndarray
    top: np.ndarray
    left: np.ndarray

    def __post_init__(self) -> None:
        self.image, self.seed, self.top, self.left = (np.asarray(a, dtype=np.int64) for a in (self.image, self.seed, self.top, self.left))
        n = len(self.image)
        if any(len(a) != n for a in (self.seed, self.top, self.left)):
            raise ValueError("SamplePlan fields must have the same length")

    def __len__(self) -> int:
        return len(self.image)

    @classmethod
    def shuffled(cls, n_images: int, repeat: int, rng: np.random.Generator) -> "SamplePlan":
        """Every image ``repeat`` times in random order, each with a random crop (EDSR's epoch)."""
        image = rng.permutation(np.repeat(np.arange(n_images), repeat))
        return cls.random_crops(image, rng)

    @classmethod
    def random_crops(cls, image: np.ndarray, rng: np.random.Generator) -> "SamplePlan":
        """Random crops of the given image sequence (fresh seeds)."""
        n = len(image)
        return cls(image, rng.integers(0, 2**62, size=n), np.full(n, -1), np.full(n, -1))

    def request(self, i: int) -> PatchRequest:
        return PatchRequest(int(self.image[i]), int(self.seed[i]), int(self.top[i]), int(self.left[i]))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(getattr(self, k).copy()) for k in ("image", "seed", "top", "left")}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> "SamplePlan":
        return cls(*(state[k].numpy() for k in ("image", "seed", "top", "left")))


def epoch_rng(seed: int, epoch: int, stream: int = 0) -> np.random.Generator:
    """The generator of epoch ``epoch``'s plan (``stream`` separates users, e.g. each method)."""
    return np.random.default_rng([seed, epoch, stream])


class PlanBatchSampler:
    """Batches of :class:`PatchRequest` for one process, from the current plan and batch position.

    Global batch ``b`` is ``plan[b*B : (b+1)*B]``; rank ``r`` of ``world`` takes its ``B/world``
    contiguous requests. An incomplete last global batch is dropped. Used as a DataLoader
    ``batch_sampler``; it runs in the main process, so :meth:`start` may change the plan between
    epochs even with persistent workers.
    """

    def __init__(self, batch_size: int, rank: int = 0, world: int = 1) -> None:
        if batch_size % world:
            raise AttrsrError(f"data.batch_size {batch_size} is not divisible by the {world} processes; choose a multiple")
        self.batch_size = batch_size
        self.rank = rank
        self.world = world
        self.plan: SamplePlan | None = None
        self.first = 0

    def start(self, plan: SamplePlan, first_batch: int = 0) -> None:
        self.plan = plan
        self.first = first_batch

    def batches_in(self, plan: SamplePlan) -> int:
        return len(plan) // self.batch_size

    def __len__(self) -> int:
        return 0 if self.plan is None else self.batches_in(self.plan) - self.first

    def __iter__(self) -> Iterator[list[PatchRequest]]:
        assert self.plan is not None, "call start(plan) first"
        local = self.batch_size // self.world
        for b in range(self.first, self.batches_in(self.plan)):
            lo = b * self.batch_size + self.rank * local
            yield [self.plan.request(i) for i in range(lo, lo + local)]
