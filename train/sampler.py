"""The order in which training images are shown, as a pure function of (seed, position).

Image number n of the run (n counts every real image shown to the discriminator, across all
devices) is `perm(epoch)[n mod len]` with `epoch = n // len` and `perm(epoch)` a permutation
seeded by (seed, epoch). The global batch starting at position n is images n .. n+B-1; device r
in accumulation round k takes rows [k*b*W + r*b, k*b*W + (r+1)*b) of it (b: per-device batch,
W: devices). Two consequences:

- resuming needs only the position (= images seen), stored in every checkpoint: the loader is
  rebuilt to yield exactly what an uninterrupted run would have yielded;
- the global batch's content does not depend on how it is split over devices and rounds, so
  the same run on 1 or 8 GPUs sees the same images in the same steps.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from core.errors import ParamsError


class BatchPlanError(ParamsError, ValueError):
    """The global batch cannot be split over the devices as configured."""


@dataclass(frozen=True)
class BatchPlan:
    """How a global batch is split: `world` devices x `accum` rounds x `per_device` images."""

    global_batch: int
    per_device: int
    world: int
    rank: int

    def __post_init__(self) -> None:
        if self.per_device < 1 or self.world < 1 or not 0 <= self.rank < self.world:
            raise ValueError(f"bad batch plan {self}")
        if self.global_batch % (self.per_device * self.world):
            raise BatchPlanError(
                f"global batch {self.global_batch} is not a multiple of per-device batch "
                f"{self.per_device} x {self.world} device(s); choose train.batch_per_device so "
                f"that batch_per_device x devices divides train.batch (gradient accumulation "
                f"makes up the rest)")

    @classmethod
    def make(cls, global_batch: int, per_device: int | None, world: int, rank: int) -> BatchPlan:
        """Default per-device batch: the global batch shared evenly by the devices."""
        if per_device is None:
            if global_batch % world:
                raise BatchPlanError(f"global batch {global_batch} cannot be shared by {world} "
                                 f"devices; make train.batch a multiple of {world}")
            per_device = global_batch // world
        return cls(global_batch, per_device, world, rank)

    @property
    def accum(self) -> int:
        """Micro-batches per device per step (gradient accumulation rounds)."""
        return self.global_batch // (self.per_device * self.world)

    def rows(self, round_: int) -> slice:
        """This device's rows of the global batch in accumulation round `round_`."""
        start = round_ * self.per_device * self.world + self.rank * self.per_device
        return slice(start, start + self.per_device)


class PositionSampler(torch.utils.data.Sampler[list[int]]):
    """Endless batch sampler: this device's micro-batches from global position `start` on.

    Used as a DataLoader `batch_sampler`; every `plan.accum` yielded lists form one step.
    """

    def __init__(self, length: int, plan: BatchPlan, seed: int, start: int = 0) -> None:
        if length < 1:
            raise ValueError("cannot sample from an empty dataset")
        self.length = length
        self.plan = plan
        self.seed = seed
        self.start = start
        self._perms: dict[int, torch.Tensor] = {}

    def permutation(self, epoch: int) -> torch.Tensor:
        """The image order of `epoch` (cached for the current and next epoch only)."""
        perm = self._perms.get(epoch)
        if perm is None:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(self.length, generator=gen)
            self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
            self._perms[epoch] = perm
        return perm

    def index(self, position: int) -> int:
        """Dataset index of the image at global stream position `position`."""
        epoch, offset = divmod(position, self.length)
        return int(self.permutation(epoch)[offset])

    def __iter__(self) -> Iterator[list[int]]:
        position = self.start
        while True:
            for round_ in range(self.plan.accum):
                rows = self.plan.rows(round_)
                yield [self.index(position + i) for i in range(rows.start, rows.stop)]
            position += self.plan.global_batch
