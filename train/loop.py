"""The training loop: phases, accumulation, EMA, ADA, cadence, checkpoints, stop and rollback.

One iteration = `n_critic` discriminator steps (each on a fresh global batch, each followed
every `reg_interval` steps by a lazy R1 step) and one generator step (followed every
`g_reg_interval` iterations by a lazy path length step). Every step is computed
in `accum` micro-batches per device; the per-sample random numbers of a step are replayed for
each micro-batch (see train/rng.py), gradients are summed over devices in one all-reduce, and
only then does the optimiser step. So the same config trains the same model on 1 CPU, 1 GPU
with accumulation or 8 GPUs (up to float summation order and batch-norm statistics, which are
per micro-batch in the DCGAN models).

Resuming: everything the loop keeps between iterations is in `state_dict()`. A step whose
gradients are not finite is skipped (all ranks agree: the check follows the all-reduce);
after `max_bad_steps` such iterations in a row the run goes back to its last checkpoint with
a fresh random stream (replaying the same numbers would diverge again), at most
`max_rollbacks` times.

A changed dataset (`train.on_new_data: continue`, the default): when no checkpoint belongs to
this dataset but one with the same settings belongs to an earlier version of it, the run
continues from that one (networks, optimisers, EMA, ADA, counters) on the new data with a
fresh sampler (its epoch order starts over at the position where the new data arrived), and
records the switch in its lineage: which dataset each kimg range trained on.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.atomic import sweep_temp_files
from core.errors import UserError
from train.augment import ADAController, Augmenter, preview_grid
from train.checkpoint import CheckpointManager
from train.config import TrainConfig
from train.data import ZipImageDataset, to_float, to_uint8
from train.dist import (
    DistEnv,
    LaunchError,
    all_reduce_sum,
    any_rank,
    broadcast_module,
    sync_gradients,
)
from train.ema import ema_beta, update_ema
from train.live import Metrics
from train.losses import Reals, StepInputs, make_objective
from train.models import build_models
from train.models.base import one_hot
from train.rng import BatchRandom, capture_rng, make_generator, restore_rng
from train.sampler import BatchPlan, PositionSampler
from train.signals import StopFlag, StopRequested
from train.visuals import grid_image, save_image, seed_grid, upscale

Log = Callable[[str], None]


class TrainingDiverged(UserError, RuntimeError):
    """Non-finite gradients persisted through every allowed rollback."""


@dataclass
class Progress:
    """Counters that locate the run; all of them go into checkpoints."""

    images: int = 0        # real images shown to D (the sampler position, kimg * 1000)
    iteration: int = 0     # generator steps
    d_steps: int = 0       # discriminator steps (lazy R1 cadence)
    tick: int = 0          # metric ticks logged (the dvclive step)
    rollbacks: int = 0
    data_from: int = 0     # images seen when the current dataset arrived (its sampler origin)


@dataclass(frozen=True)
class RunPaths:
    """Where a run writes (rank 0 only); see `train fit --help` for the layout."""

    out: Path

    @property
    def checkpoints(self) -> Path:
        return self.out / "checkpoints"

    @property
    def samples(self) -> Path:
        return self.out / "samples"

    @property
    def live(self) -> Path:
        return self.out / "live"

    @property
    def export(self) -> Path:
        return self.out / "export"

    @property
    def report(self) -> Path:
        return self.out / "report"


#: What a tick line shows, in order: (metric, label, format).
_SHOWN = (("perf/img_per_s", "img/s", ".1f"), ("perf/s_per_kimg", "s/kimg", ".1f"),
          ("loss/G", "G", ".3f"), ("loss/D", "D", ".3f"), ("loss/R1", "R1", ".3g"),
          ("loss/GP", "GP", ".3g"), ("loss/PL", "PL", ".3g"), ("D/real", "D(x)", ".3f"),
          ("D/fake", "D(G(z))", ".3f"),
          ("ada/p", "p", ".3f"), ("ada/rt", "rt", ".2f"))


def _loader_worker_init(_worker_id: int) -> None:
    """Loader workers ignore SIGINT: Ctrl-C reaches the whole process group, and the main
    process must finish its step and write a checkpoint with its workers still serving it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def crossed(before: int, after: int, every_kimg: float) -> bool:
    """True when a multiple of `every_kimg` thousand images lies in (before, after]."""
    every = max(1, round(every_kimg * 1000))
    return after // every > before // every


class Trainer:
    """One training run of `cfg` on `dataset`, writing to `paths` (rank 0)."""

    def __init__(self, cfg: TrainConfig, dataset: ZipImageDataset, paths: RunPaths,
                 env: DistEnv, log: Log, metrics: bool = True) -> None:
        self.cfg, self.dataset, self.paths, self.env, self.log = cfg, dataset, paths, env, log
        self.device = env.device
        self.resolution = dataset.resolution
        self.plan = BatchPlan.make(cfg.batch, cfg.batch_per_device, env.world, env.rank)
        self.bf16 = cfg.precision == "bf16" or (cfg.precision == "auto"
                                                 and self.device.type == "cuda")
        torch.manual_seed(cfg.seed)  # weight initialisation: identical on every rank
        # Python's and NumPy's global generators are saved in checkpoints too: seeded, a resumed
        # run's checkpoints are byte-identical to an uninterrupted run's.
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        self.classes = dataset.classes
        self.G, self.D = (m.to(self.device)
                          for m in build_models(cfg, self.resolution, self.classes))
        self.class_cdf = (torch.tensor(np.cumsum(dataset.class_frequencies()),
                                       dtype=torch.float32, device=self.device)
                          if self.classes else None)
        broadcast_module(self.G, env)
        broadcast_module(self.D, env)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.objective = make_objective(cfg, self.resolution)
        self.opt_G, self.opt_D = self.objective.optimizers(self.G, self.D)
        self.augmenter = Augmenter(cfg.ada.ops) if cfg.ada.enabled else None
        self.ada = ADAController(cfg.ada)
        if self.augmenter is not None:
            self.augmenter.p = self.ada.p
        self.ada_acc = torch.zeros(2, dtype=torch.float64, device=self.device)  # sign sum, n
        self.gen = make_generator(cfg.seed, self.device)
        self.progress = Progress()
        self.lineage: list[dict[str, Any]] = []  # earlier datasets: hash, path, kimg range
        self.bad_steps = 0
        self.checkpoints = CheckpointManager(paths.checkpoints, cfg.dynamics_hash(),
                                             dataset.info.hash, cfg.keep_checkpoints)
        self.metrics_enabled = metrics and env.is_main
        self.metrics: Metrics | None = None
        self._loader: Any = None
        self._stats: dict[str, torch.Tensor] = {}
        self._tick_clock = (time.perf_counter(), 0, 0.0)  # (time, images, maintenance s)
        self._maintenance = 0.0

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly; collective (ADA counters are reduced)."""
        ada_acc = all_reduce_sum(self.ada_acc.clone(), self.env)
        return {
            "progress": dataclasses.asdict(self.progress),
            "G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
            "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(),
            "ada": {**self.ada.state_dict(), "acc": ada_acc.cpu()},
            "objective": self.objective.state_dict(),
            "lineage": self.lineage,
            "rng": capture_rng(self.gen),
            "sampler": {"position": self.progress.images, "seed": self.cfg.seed,
                        "length": len(self.dataset)},
            "world": self.env.world,
            "config": dataclasses.asdict(self.cfg),
            "dataset": {"path": str(self.dataset.info.path), "size": self.dataset.info.size},
            "scaler": None,  # bf16 needs no loss scaling (fp32's exponent range); fp16 unused
        }

    def load_state_dict(self, state: dict[str, Any], new_data: bool = False) -> None:
        """Continue from `state`; with `new_data` it was written on an earlier version of the
        dataset, whose sampler position no longer applies (see the module doc)."""
        self.progress = Progress(**state["progress"])
        self.lineage = list(state["lineage"])
        self.objective.load_state_dict(state["objective"])
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.ada.load_state_dict(state["ada"])
        if self.augmenter is not None:
            self.augmenter.p = self.ada.p
        acc = state["ada"]["acc"].to(self.device, torch.float64)
        self.ada_acc = acc if self.env.is_main else torch.zeros_like(acc)
        restore_rng(state["rng"], self.gen)
        if new_data:
            self.lineage.append({"dataset": state["dataset_hash"],
                                 "path": state["dataset"]["path"],
                                 "images": state["dataset"]["size"],
                                 "from_kimg": self.progress.data_from / 1000,
                                 "to_kimg": self.progress.images / 1000})
            self.progress.data_from = self.progress.images
        elif state["sampler"]["length"] != len(self.dataset):
            raise RuntimeError("checkpoint sampler length differs from the dataset's")

    def save_checkpoint(self) -> Path | None:
        """Collective: every rank calls it; rank 0 writes."""
        started = time.perf_counter()
        state = self.state_dict()
        path = None
        if self.env.is_main:
            path = self.checkpoints.save(state, self.progress.images)
            self.log(f"checkpoint {path.name} ({self.progress.images / 1000:.1f} kimg)")
        self._maintenance += time.perf_counter() - started
        return path

    def resume(self) -> bool:
        """Load the newest checkpoint of this config and dataset, if any; True if loaded."""
        if self.env.is_main:  # what a killed run's unfinished writes left (checkpoints: below)
            for folder in (self.paths.samples, self.paths.export, self.paths.report):
                sweep_temp_files(folder)
        state = self.checkpoints.load_latest(self.device, warn=self.log,
                                             sweep=self.env.is_main)
        if self.env.world > 1:  # every rank must resume from the same place
            _same_on_every_rank(float(state["images"]) if state else -1.0, self.env)
        new_data = False
        if state is None and self.cfg.on_new_data == "continue":
            state = self.checkpoints.load_latest_other_data(self.device, warn=self.log)
            new_data = state is not None
        if self.env.world > 1:  # every rank must take the same decision (it reads the disk)
            _same_on_every_rank(float(new_data), self.env)
        if state is None:
            others = self.checkpoints.foreign()
            if others and self.env.is_main:
                what = ("other settings" if self.cfg.on_new_data == "continue"
                        else "other settings or another dataset")
                self.log(f"{len(others)} checkpoint(s) in {self.paths.checkpoints} belong to "
                         f"{what}; starting fresh (they are kept)")
            return False
        self.load_state_dict(state, new_data)
        if new_data:
            self.log(f"the dataset changed ({state['dataset']['size']} -> "
                     f"{self.dataset.info.size} images): continuing from "
                     f"{self.progress.images / 1000:.1f} kimg of the earlier version "
                     f"(train.on_new_data: continue; `fresh` starts over)")
        else:
            self.log(f"resumed from {self.progress.images / 1000:.1f} kimg (iteration "
                     f"{self.progress.iteration}, ADA p {self.ada.p:.3f})")
        return True

    # ------------------------------------------------------------------ data

    def start_loader(self) -> None:
        """(Re)start the loader at the current position (resume, rollback)."""
        sampler = PositionSampler(len(self.dataset), self.plan, self.cfg.seed,
                                  start=self.progress.images - self.progress.data_from)
        workers = self.cfg.loader_workers
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=sampler, num_workers=workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if workers else None, persistent_workers=False,
            # its worker seed from its own generator, not torch's global one (exact resume)
            generator=torch.Generator().manual_seed(self.cfg.seed + self.progress.images),
            worker_init_fn=_loader_worker_init)
        self._loader = iter(loader)

    def _next_reals(self) -> list[Reals]:
        """This device's micro-batches of the next global batch: images as float [-1, 1] and
        their one-hot classes (None when unconditional)."""
        out: list[Reals] = []
        for _ in range(self.plan.accum):
            batch = next(self._loader)
            if self.classes:
                images, labels = batch
                out.append((to_float(images.to(self.device, non_blocking=True)),
                            one_hot(labels, self.classes).to(self.device)))
            else:
                out.append((to_float(batch.to(self.device, non_blocking=True)), None))
        return out

    # ------------------------------------------------------------------ steps

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                              enabled=self.bf16)

    def _accumulate(self, stats: dict[str, torch.Tensor], n: int) -> None:
        for name, value in stats.items():
            if name == "ada/sign":
                self.ada_acc += torch.stack([value.double() * n,
                                             torch.tensor(float(n), dtype=torch.float64,
                                                          device=value.device)])
                continue
            pair = torch.stack([value.detach().float() * n,
                                torch.tensor(float(n), device=value.device)])
            self._stats[name] = self._stats[name] + pair if name in self._stats else pair

    def _phase(self, kind: str, reals: list[Reals] | None) -> bool:
        """One optimiser step of G ("G"), D ("D") or their lazy regularisers ("Greg",
        "Dreg")."""
        train_g = kind in ("G", "Greg")
        module, other = (self.G, self.D) if train_g else (self.D, self.G)
        opt = self.opt_G if train_g else self.opt_D
        module.requires_grad_(True)
        other.requires_grad_(False)
        opt.zero_grad(set_to_none=True)
        start = self.gen.get_state()
        batch = self.plan.global_batch
        for round_ in range(self.plan.accum):
            self.gen.set_state(start)  # same numbers for the same rows, whatever the split
            rand = BatchRandom(self.gen, batch, self.plan.rows(round_), self.device)
            step = StepInputs(self.G, self.D, rand, self.augmenter, self._autocast,
                              self.class_cdf)
            if kind == "G":
                loss, stats = self.objective.g_loss(step)
            elif kind == "Greg":
                loss, stats = self.objective.g_reg(step)
            elif kind == "D":
                loss, stats = self.objective.d_loss(step, reals[round_])  # type: ignore[index]
            else:
                loss, stats = self.objective.d_reg(step, reals[round_])  # type: ignore[index]
            (loss * (rand.n / batch)).backward()
            self._accumulate(stats, rand.n)
        finite = sync_gradients(list(module.parameters()), self.env)
        if finite:
            opt.step()
            if not train_g:
                self.objective.after_d_step(self.D)
        module.requires_grad_(False)
        return finite

    def iteration(self) -> bool:
        """One generator step and its discriminator steps; False if any was non-finite."""
        ok = True
        images_before = self.progress.images
        for _ in range(self.objective.n_critic):
            reals = self._next_reals()
            ok &= self._phase("D", reals)
            self.progress.d_steps += 1
            interval = self.objective.reg_interval
            if interval and self.progress.d_steps % interval == 0:
                ok &= self._phase("Dreg", reals)
            self.progress.images += self.plan.global_batch
        ok &= self._phase("G", None)
        self.G.update_statistics(lambda t: all_reduce_sum(t, self.env))
        g_interval = self.objective.g_reg_interval
        if g_interval and (self.progress.iteration + 1) % g_interval == 0:
            ok &= self._phase("Greg", None)
            self.objective.after_g_reg(lambda t: all_reduce_sum(t, self.env))
        beta = ema_beta(self.cfg.ema, self.progress.images - images_before, self.progress.images)
        update_ema(self.G_ema, self.G, beta)
        self.progress.iteration += 1
        if self.augmenter is not None and self.progress.iteration % self.cfg.ada.interval == 0:
            self._adjust_ada()
        return ok

    def _adjust_ada(self) -> None:
        acc = all_reduce_sum(self.ada_acc.clone(), self.env)
        self.ada_acc.zero_()
        if acc[1] > 0 and self.augmenter is not None:
            self.augmenter.p = self.ada.update(float(acc[0] / acc[1]), int(acc[1]))

    def _rollback(self) -> None:
        """Return to the last checkpoint with a fresh random stream (see module doc)."""
        rollbacks = self.progress.rollbacks + 1
        if rollbacks > self.cfg.max_rollbacks:
            raise TrainingDiverged(
                f"non-finite gradients for {self.cfg.max_bad_steps} iterations in a row, "
                f"{self.cfg.max_rollbacks} rollback(s) already spent; lower the learning rate "
                f"or the R1/GP weight in params.yaml, or raise train.max_rollbacks")
        failed_at = self.progress.images
        state = self.checkpoints.load_latest(self.device, warn=self.log, sweep=False)
        if state is None:
            raise TrainingDiverged("non-finite gradients and no checkpoint to roll back to")
        self.load_state_dict(state)
        self.progress.rollbacks = rollbacks
        self.gen.manual_seed(self.cfg.seed + 1_000_003 * rollbacks)
        self.bad_steps = 0
        self._stats.clear()
        self.start_loader()
        self.log(f"non-finite gradients for {self.cfg.max_bad_steps} iterations at "
                 f"{failed_at / 1000:.1f} kimg: rolled back to {self.progress.images / 1000:.1f}"
                 f" kimg with a new random stream (rollback {rollbacks} of "
                 f"{self.cfg.max_rollbacks})")

    # ------------------------------------------------------------------ outputs

    def _tick(self) -> None:
        """Reduce and log this tick's statistics (console + dvclive)."""
        names = sorted(self._stats)
        values: dict[str, float] = {}
        if names:
            packed = all_reduce_sum(torch.stack([self._stats[n] for n in names]), self.env)
            values = {n: float(s / c) for n, (s, c) in zip(names, packed.tolist(), strict=True)}
        self._stats.clear()
        now = time.perf_counter()
        t0, images0, maint0 = self._tick_clock
        seconds = max(now - t0 - (self._maintenance - maint0), 1e-9)
        images = self.progress.images - images0
        self._tick_clock = (now, self.progress.images, self._maintenance)
        kimg = self.progress.images / 1000
        values.update({"kimg": kimg, "ada/p": self.ada.p,
                       "perf/img_per_s": images / seconds,
                       "perf/s_per_kimg": seconds / max(images / 1000, 1e-9)})
        if self.ada.rt is not None:
            values["ada/rt"] = self.ada.rt
        shown = "  ".join(f"{label} {values[key]:{fmt}}" for key, label, fmt in _SHOWN
                          if key in values)
        self.log(f"tick {self.progress.tick:<4d} kimg {kimg:<8.2f} {shown}")
        if self.metrics is not None:
            self.metrics.log(values, self.progress.tick)
        self.progress.tick += 1

    def snapshot(self, reals: torch.Tensor | None = None) -> None:
        """Fixed-seed sample grid (and ADA preview) at the current kimg; rank 0 only."""
        if not self.env.is_main:
            return
        started = time.perf_counter()
        cols, rows = self.cfg.report.grid
        seeds = range(self.cfg.report.grid_seed, self.cfg.report.grid_seed + cols * rows)
        grid = seed_grid(self.G_ema, seeds, cols)
        name = f"fakes-{self.progress.images // 1000:06d}kimg.png"
        save_image(upscale(grid), self.paths.samples / name)
        if self.augmenter is not None:
            sample = reals if reals is not None else self._preview_reals()
            p_now = self.ada.p
            rows_now = preview_grid(sample, self.augmenter, p_now, repeats=2)
            rows_max = preview_grid(sample, self.augmenter, self.cfg.ada.p_max, repeats=2)
            preview = torch.cat([rows_now, rows_max[sample.shape[0]:]])
            save_image(upscale(grid_image(to_uint8(preview).cpu(), sample.shape[0])),
                       self.paths.samples / "ada-preview.png")
        self._maintenance += time.perf_counter() - started

    def _preview_reals(self, n: int = 8) -> torch.Tensor:
        step = max(1, len(self.dataset) // n)
        idx = [i * step % len(self.dataset) for i in range(n)]
        return to_float(torch.stack([self.dataset.pixels(i) for i in idx]).to(self.device))

    def write_reals_grid(self) -> None:
        if not self.env.is_main:
            return
        cols, rows = self.cfg.report.grid
        n = min(cols * rows, len(self.dataset))
        step = max(1, len(self.dataset) // n)
        images = torch.stack([self.dataset.pixels(i * step % len(self.dataset)) for i in range(n)])
        save_image(upscale(grid_image(images, cols)), self.paths.samples / "reals.png")

    # ------------------------------------------------------------------ the loop

    def fit(self, total_images: int) -> None:
        """Train until `total_images` real images have been shown; raise StopRequested after
        writing a checkpoint when SIGTERM/SIGINT arrives."""
        resumed = self.resume()
        if self.metrics_enabled:
            self.metrics = Metrics(self.paths.live, True,
                                   self.progress.tick if resumed else None)
        if not resumed:
            self.write_reals_grid()
            self.snapshot()
            self.save_checkpoint()  # a rollback target and an early loadable state
        if self.progress.images >= total_images:
            self.log(f"already trained {self.progress.images / 1000:.1f} kimg "
                     f"(target {total_images / 1000:.1f}); nothing to train")
            return
        self.start_loader()
        stop = StopFlag().install()
        self.log(f"training {self.cfg.model} at {self.resolution} px on {self.env.world} "
                 f"{self.device.type} process(es): global batch {self.plan.global_batch} = "
                 f"{self.env.world} x {self.plan.per_device} x {self.plan.accum} accumulation, "
                 f"{'bf16 autocast' if self.bf16 else 'fp32'}, "
                 f"{self.progress.images / 1000:.1f} -> {total_images / 1000:.1f} kimg")
        self._tick_clock = (time.perf_counter(), self.progress.images, self._maintenance)
        last_saved = self.progress.images
        try:
            while self.progress.images < total_images:
                before = self.progress.images
                ok = self.iteration()
                self.bad_steps = 0 if ok else self.bad_steps + 1
                if not ok:
                    self.log(f"non-finite gradients at {self.progress.images / 1000:.2f} kimg: "
                             f"step skipped ({self.bad_steps}/{self.cfg.max_bad_steps})")
                if self.bad_steps >= self.cfg.max_bad_steps:
                    self._rollback()
                    last_saved = self.progress.images
                    continue
                now = self.progress.images
                if crossed(before, now, self.cfg.tick_kimg):
                    self._tick()
                if crossed(before, now, self.cfg.sample_kimg):
                    self.snapshot()
                if crossed(before, now, self.cfg.checkpoint_kimg):
                    self.save_checkpoint()
                    last_saved = now
                if any_rank(stop.requested, self.env):
                    if last_saved != now:
                        self.save_checkpoint()
                    raise StopRequested(stop.signum or 15)
            if self._stats:
                self._tick()
            if last_saved != self.progress.images:
                self.save_checkpoint()
            self.snapshot()
        finally:
            stop.uninstall()
            self._loader = None

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None


def _same_on_every_rank(value: float, env: DistEnv) -> None:
    """Raise LaunchError unless every rank holds the same `value` (what it read from disk)."""
    tensor = torch.tensor([value], device=env.device)
    lo, hi = tensor.clone(), tensor.clone()
    torch.distributed.all_reduce(lo, op=torch.distributed.ReduceOp.MIN)
    torch.distributed.all_reduce(hi, op=torch.distributed.ReduceOp.MAX)
    if lo.item() != hi.item():
        raise LaunchError("ranks see different checkpoints: the output folder must be on "
                          "storage that every node reads (a shared file system)")


def total_images(kimg: float) -> int:
    return math.ceil(kimg * 1000)
