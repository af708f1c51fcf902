"""Process-group set-up and the few collectives training needs.

One code path for every launch: with no launcher (`train fit ...`) this is a world of one and
every collective is a no-op; under `torchrun` (single node `--standalone --nproc-per-node N`,
or multi-node with `--rdzv-backend c10d --rdzv-endpoint HOST:PORT --nnodes M`) the variables
torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) start a process group: nccl
when each process has a GPU, gloo on CPU.

Gradients are summed with one all-reduce per optimiser step on a flattened copy (as
StyleGAN2-ADA does) instead of wrapping modules in DistributedDataParallel: a GAN step sends
gradients through a frozen network (G's loss through D), which DDP's parameter hooks handle
badly, and one explicit reduction also gives one place to test for non-finite values, the
same answer on every rank.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from core.errors import UserError


class LaunchError(UserError, RuntimeError):
    """The launch does not fit this machine (no GPU, more processes than GPUs)."""


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the run."""

    rank: int
    world: int
    local_rank: int
    device: torch.device
    backend: str | None  # None: no process group (world of one)

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes files and logs."""
        return self.rank == 0


def init_distributed(device: str | None = None, timeout_s: float = 1800.0) -> DistEnv:
    """Join the process group torchrun describes, or return a world of one without it.

    `device` forces "cpu" or "cuda"; by default a GPU is used when present (the one matching
    LOCAL_RANK under torchrun).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device is None else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise LaunchError("--device cuda was asked for but torch sees no GPU (see `train env`)")
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise LaunchError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} "
                               f"GPU(s) visible; launch at most that many processes per node")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world == 1:
        return DistEnv(0, 1, 0, dev, None)
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s),
                                **({"device_id": dev} if use_cuda else {}))
    return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, dev, backend)


def shutdown(env: DistEnv) -> None:
    """Leave the process group (a clean exit, so torchrun sees no error)."""
    if env.backend is not None and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum `tensor` over ranks in place (no-op in a world of one); returns it."""
    if env.world > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool, env: DistEnv) -> bool:
    """True on every rank when `flag` is true on at least one (e.g. a stop request)."""
    if env.world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_module(module: torch.nn.Module, env: DistEnv) -> None:
    """Copy rank 0's parameters and buffers to every rank (identical start, whatever seeds)."""
    if env.world == 1:
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src=0)


def sync_gradients(params: list[torch.nn.Parameter], env: DistEnv) -> bool:
    """Sum gradients over ranks in one all-reduce; return True when all are finite.

    Each rank scales its loss by (its rows / global batch) before backward, so the sum is the
    gradient of the global-batch mean. Parameters without a gradient are left out (every rank
    runs the same code, so every rank leaves out the same ones) and keep no gradient, so the
    optimiser treats them exactly as in a world of one. The finiteness answer is computed
    after the reduction, so all ranks agree.
    """
    with_grad = [p for p in params if p.grad is not None]
    if not with_grad:
        return True
    flat = torch.cat([p.grad.reshape(-1) for p in with_grad])  # type: ignore[union-attr]
    all_reduce_sum(flat, env)
    finite = bool(torch.isfinite(flat).all())
    if env.world > 1:
        offset = 0
        for p in with_grad:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p)
            offset += n
    return finite
