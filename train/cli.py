"""The `train` command line: parses options and calls train/stage.py, train/export.py,
train/visuals.py, train/queue.py and train/manage.py, nothing more. `train env` answers the
first question of anyone about to launch a multi-GPU run: what will torch see here?"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from core.cli import App
from core.console import console
from core.errors import ParamsError

app = App(
    help="Train GANs on the datasets `curate prepare` exports (data/datasets/NAME.zip).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

#: Variables torchrun sets for each worker; shown so a misconfigured launch is visible at once.
LAUNCH_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def environment_report() -> dict[str, object]:
    """Torch build, accelerators and distributed backends available in this process."""
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    return {
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda or "none (CPU build)",
        "cuda_available": cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if cuda else [],
        "cpu_threads": torch.get_num_threads(),
        "backends": [name for name, ok in (("nccl", dist.is_nccl_available()),
                                           ("gloo", dist.is_gloo_available()),
                                           ("mpi", dist.is_mpi_available())) if ok],
        "launcher": {k: os.environ[k] for k in LAUNCH_VARS if k in os.environ} or "none",
    }


@app.command("env")
def env() -> None:
    """Print the torch build, GPUs, distributed backends and torchrun variables of this machine."""
    table = Table(title="train: environment", show_header=False)
    for key, value in environment_report().items():
        shown = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        table.add_row(key, shown or "none")
    console.print(table)


FIT_HELP = """Train a GAN on a StyleGAN-format dataset zip, resuming where the last run stopped.

Settings come from the `train:` section of params.yaml (model and hyper-parameters, kimg, global
batch, checkpoints, ADA, EMA, report). On start, the newest checkpoint in OUT/checkpoints written
with the same training settings on the same dataset is loaded and training continues; raising `kimg`
trains further. SIGTERM or Ctrl-C writes a checkpoint and exits with status 128+signal: run the same
command again to continue.

Outputs under OUT (rank 0 writes, other ranks only compute):
checkpoints/ (training states, last K kept),
samples/ (reals.png, fakes-NNNNNNkimg.png grids, ada-preview.png, final-grid.png, truncation.png,
  interpolation.png and .gif),
report/memorisation.html (nearest training image per sample),
export/generator.pt + generator.json (EMA generator for `train sample`),
live/ (dvclive metrics for `dvc metrics show` and `dvc plots show`).

Multi-GPU: `torchrun --standalone --nproc-per-node 8 --no-python train fit --dist NAME`; multi-node:
add `--nnodes 2 --rdzv-backend c10d --rdzv-endpoint HOST:29500 --max-restarts 3`.
"""


DataOption = Annotated[Path | None, typer.Option(help="Dataset zip (StyleGAN format).")]
OutOption = Annotated[Path | None, typer.Option(help="Output folder of the run.")]
DistOption = Annotated[str | None, typer.Option(
    "--dist", help="Distribution name: --data data/datasets/NAME.zip --out models/NAME.")]
ParamsOption = Annotated[Path, typer.Option("--params", help="Path of params.yaml.")]


@app.command("fit", help=FIT_HELP)
def fit(
    data: DataOption = None,
    out: OutOption = None,
    dist: DistOption = None,
    params: ParamsOption = Path("params.yaml"),
    kimg: Annotated[float | None, typer.Option(help="Override train.kimg.")] = None,
    device: Annotated[str | None, typer.Option(
        help="cpu or cuda (default: cuda when available).")] = None,
    threads: Annotated[int | None, typer.Option(
        help="CPU threads per process (default: torch's; 1 on a busy shared machine).")] = None,
) -> None:
    from train.config import load_paths, load_train_config
    from train.stage import run_fit

    cfg = load_train_config(params)
    cfg = cfg if kimg is None else cfg.replace(kimg=kimg)
    paths = load_paths(params)
    if dist is not None:
        data = data or paths.data / "datasets" / f"{dist}.zip"
        out = out or Path("models") / dist
    if data is None or out is None:
        raise ParamsError("pass --data PATH and --out DIR, or --dist NAME")
    _check_device(device)
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, threads))
    from core.runlock import exclusive

    # One trainer per run folder; under torchrun only rank 0 takes the lock (the ranks of one
    # job share the folder by design, rank 0 alone writes it).
    first_rank = os.environ.get("RANK", "0") == "0"
    with exclusive(out.parent / ".locks", out) if first_rank else contextlib.nullcontext():
        code = run_fit(cfg, data, out, device=device,
                       log=lambda m: console.print(m, highlight=False, soft_wrap=True))
    raise typer.Exit(code)


def _check_device(device: str | None) -> None:
    if device not in (None, "cpu", "cuda"):
        raise ParamsError(f"--device {device!r}: expected cpu or cuda")


ModelOption = Annotated[Path, typer.Option(
    "--model", help="Export folder (OUT/export) or its generator.json.")]
SeedsOption = Annotated[str, typer.Option(help="Seeds: numbers and ranges, e.g. 0-15,42.")]


@app.command("sample")
def sample(
    model: ModelOption,
    out: Annotated[Path, typer.Option(help="PNG grid to write.")],
    seeds: SeedsOption = "0-15",
    psi: Annotated[float, typer.Option(help="Truncation in W (StyleGAN2): 1 = none.")] = 1.0,
    z_bound: Annotated[float, typer.Option(
        "--z-bound", help="Truncation in z (DCGAN, WGAN, BigGAN): resample |z| above it; "
                          "0 = none.")] = 0.0,
    classes: Annotated[str | None, typer.Option(
        "--class", help="Conditional models: class index for every image, or one per seed "
                        "(e.g. 0,0,1,1); default: row r in class r mod C.")] = None,
    cols: Annotated[int, typer.Option(help="Grid columns.")] = 8,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
) -> None:
    """Draw images from an exported generator, one per seed (same seed, same image)."""
    from train.export import load_generator
    from train.visuals import parse_seeds, save_image, seed_grid, upscale

    G, spec = load_generator(model, device)
    try:
        chosen = parse_seeds(seeds)
        wanted = None if classes is None else parse_seeds(classes)
        if wanted is not None and len(wanted) not in (1, len(chosen)):
            raise ValueError(f"--class gives {len(wanted)} classes for {len(chosen)} seeds: "
                             f"give one, or one per seed")
        if wanted is not None and not G.classes:
            raise ValueError(f"--class needs a class-conditional generator; this "
                             f"{spec['architecture']} has no classes")
        if psi != 1.0 and not G.supports_truncation:
            raise ValueError(f"--psi needs a generator with a mapping network; this one is "
                             f"{spec['architecture']}: use --z-bound")
        if z_bound < 0:
            raise ValueError("--z-bound must be >= 0 (0: no truncation)")
        grid = seed_grid(G, chosen, cols, psi, z_bound, wanted)
    except ValueError as exc:  # seeds, classes or truncation that do not fit this generator
        raise ParamsError(str(exc)) from exc
    save_image(upscale(grid), out)
    console.print(f"{len(chosen)} image(s) at {G.resolution} px -> {out}")


@app.command("interpolate")
def interpolate(
    model: ModelOption,
    out: Annotated[Path, typer.Option(help="PNG strip to write (one row per leg).")],
    seeds: SeedsOption = "0-3,0",
    frames: Annotated[int, typer.Option(help="Frames per leg between two seeds.")] = 12,
    gif: Annotated[Path | None, typer.Option(help="Also write an animated GIF.")] = None,
    classes: Annotated[str | None, typer.Option(
        "--classes", help="Class-wise interpolation (conditional models): z held still per "
                          "seed while the class moves through these classes, e.g. 0,1,2.")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
) -> None:
    """Walk through latent space between seeds (in W for StyleGAN2, spherically in Z else),
    or with --classes between classes at fixed z (one row per seed)."""
    from train.export import load_generator
    from train.visuals import (
        class_interpolation,
        grid_image,
        interpolation_frames,
        parse_seeds,
        save_gif,
        save_image,
        steps_side_by_side,
        upscale,
    )

    G, _spec = load_generator(model, device)
    try:
        chosen = parse_seeds(seeds)
        if classes is not None:
            walk = class_interpolation(G, chosen, parse_seeds(classes), frames)
            grid = grid_image(walk.flatten(0, 1), walk.shape[1])
            gif_frames = steps_side_by_side(walk)
        else:
            if len(chosen) < 2 or frames < 1:
                raise ValueError("interpolation needs at least two seeds and --frames >= 1")
            gif_frames = interpolation_frames(G, chosen, frames)
            grid = grid_image(gif_frames, frames)
    except ValueError as exc:
        raise ParamsError(str(exc)) from exc
    save_image(upscale(grid), out)
    if gif is not None:
        save_gif(gif_frames, gif)
    console.print(f"{gif_frames.shape[0]} frame(s) -> {out}{f' and {gif}' if gif else ''}")


@app.command("toy-data")
def toy_data(
    out: Annotated[Path, typer.Option(help="Zip to write.")],
    images: Annotated[int, typer.Option(help="How many images.")] = 512,
    resolution: Annotated[int, typer.Option(help="Side in pixels (power of two).")] = 32,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    classes: Annotated[int, typer.Option(
        help="Labelled classes (0: unlabelled); each class has its own shape and colours.")
    ] = 0,
) -> None:
    """Write a toy StyleGAN-format dataset (coloured blobs) to try `train fit` quickly."""
    from train.synthetic import CLASS_SHAPES, make_blob_dataset

    if classes < 0 or classes == 1 or classes > len(CLASS_SHAPES):
        raise ParamsError(f"--classes {classes}: expected 0 (unlabelled) or 2-{len(CLASS_SHAPES)}")
    make_blob_dataset(out, images, resolution, seed, classes)
    console.print(f"{images} image(s) at {resolution} px"
                  f"{f' in {classes} classes' if classes else ''} -> {out}")


@app.command("presets")
def presets(
    name: Annotated[str | None, typer.Argument(help="A preset: print every setting.")] = None,
) -> None:
    """List the training recipes (`train.preset`), or print one's resolved settings."""
    import dataclasses

    import yaml

    from train.config import train_config_from_mapping
    from train.presets import PRESETS

    if name is None:
        table = Table(title="train.preset", show_lines=True)
        for column in ("preset", "source", "what it sets"):
            table.add_column(column)
        for key, preset in PRESETS.items():
            table.add_row(key, preset.source, preset.changes)
        console.print(table)
        return
    cfg = train_config_from_mapping({"preset": name})
    typer.echo(yaml.safe_dump({"train": _plain(dataclasses.asdict(cfg))}, sort_keys=False))


def _plain(value: object) -> object:
    """Tuples as lists, so the YAML reads like params.yaml."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


queue_app = App(
    help="A persistent queue of training requests (a folder; share it between machines), run "
         "by `train manage`.", no_args_is_help=True)
app.add_typer(queue_app, name="queue")

QueueOption = Annotated[Path, typer.Option(
    "--queue", envvar="TRAIN_QUEUE", help="Queue folder (on a shared file system for several "
    "machines).")]
DEFAULT_QUEUE = Path("models/queue")


@queue_app.command("add")
def queue_add(
    data: DataOption = None,
    out: OutOption = None,
    dist: DistOption = None,
    params: ParamsOption = Path("params.yaml"),
    kimg: Annotated[float | None, typer.Option(help="Target kimg (train.kimg).")] = None,
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a setting, e.g. --set train.batch=64 (repeatable; the value is "
        "YAML).")] = None,
    name: Annotated[str | None, typer.Option(help="Label in `queue status`.")] = None,
    gpus: Annotated[int, typer.Option(
        help="GPUs for the run (torchrun when over 1 and that many are visible).")] = 1,
    device: Annotated[str | None, typer.Option(
        help="cpu or cuda (default: cuda when available).")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads per process.")] = None,
    queue: QueueOption = DEFAULT_QUEUE,
) -> None:
    """Queue a training request; its params are frozen and validated now. Prints its id."""
    from train.queue import Queue

    _check_device(device)
    request = Queue(queue).add(params=params, overrides=overrides or [], data=data, out=out,
                               dist=dist, name=name, kimg=kimg, gpus=gpus, device=device,
                               threads=threads)
    console.print(f"queued {request.id} {request.name}: {request.kimg:g} kimg into "
                  f"{request.out}; `train manage --queue {queue}` runs it")
    typer.echo(request.id)


@queue_app.command("status")
def queue_status(
    queue: QueueOption = DEFAULT_QUEUE,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON list on stdout.")] = False,
) -> None:
    """Each request's state, kimg done / target, restarts, manager host and last error."""
    import json

    from train.queue import Queue

    views = Queue(queue).views()
    if as_json:
        typer.echo(json.dumps([v.as_json() for v in views], indent=1))
        return
    colour = {"pending": "yellow", "running": "cyan", "done": "green", "failed": "red",
              "cancelled": "dim"}
    table = Table(title=f"training queue {queue}")
    for column in ("id", "name", "state", "kimg", "restarts", "manager", "last error"):
        table.add_column(column, overflow="fold")
    for view in views:
        rec = view.record
        table.add_row(view.request.id, view.request.name,
                      f"[{colour[view.state]}]{view.state}[/]",
                      f"{view.kimg_done:g} / {view.request.kimg:g}",
                      str(rec.restarts if rec else 0),
                      rec.host if rec and view.state == "running" else "",
                      (rec.last_error or "") if rec else "")
    Console().print(table if views else f"no requests in {queue}")


@queue_app.command("cancel")
def queue_cancel(
    request_id: Annotated[str, typer.Argument(help="Request id (or a unique prefix).")],
    queue: QueueOption = DEFAULT_QUEUE,
) -> None:
    """Cancel a request: its manager stops the job (a checkpoint is written); never run again."""
    from train.queue import Queue

    request, before = Queue(queue).cancel(request_id)
    console.print(f"cancelled {request.id} {request.name}"
                  + (": its manager stops the job at its next poll" if before == "running"
                     else ""))


@app.command("manage")
def manage(
    queue: QueueOption = DEFAULT_QUEUE,
    once: Annotated[bool, typer.Option("--once", help="Run one request, then exit.")] = False,
    until_empty: Annotated[bool, typer.Option(
        "--until-empty", help="Exit when no request is waiting (default: keep polling).")
    ] = False,
    max_restarts: Annotated[int, typer.Option(
        help="Give up after this many failures in a row without a new checkpoint.")] = 5,
    backoff_s: Annotated[float, typer.Option(
        help="Wait before a restart; doubled per failure in a row (max 10 min).")] = 10.0,
    stall_s: Annotated[float, typer.Option(
        help="Restart a job that printed nothing and wrote no checkpoint for this long.")
    ] = 1800.0,
    poll_s: Annotated[float, typer.Option(help="Watch and heartbeat interval.")] = 5.0,
    lease_s: Annotated[float, typer.Option(
        help="Another manager takes a request over when this one's heartbeat is older.")
    ] = 60.0,
) -> None:
    """Run queued training requests, restarting dead or stalled jobs from their checkpoints.

    One request at a time: start one manager per machine, or per GPU set
    (CUDA_VISIBLE_DEVICES=0,1 train manage). SIGTERM stops the job with a checkpoint and hands
    its request back to the queue.
    """
    from train.manage import Policy, Supervisor
    from train.queue import Queue

    policy = Policy(max_restarts=max_restarts, backoff_s=backoff_s, stall_s=stall_s,
                    poll_s=poll_s, lease_s=lease_s)
    problem = policy.problem()
    if problem:
        raise ParamsError(problem)
    supervisor = Supervisor(Queue(queue), policy,
                            log=lambda m: console.print(m, highlight=False, soft_wrap=True))
    raise typer.Exit(supervisor.run(once=once, until_empty=until_empty))


@app.callback()
def main() -> None:
    """GAN training stage of the pipeline."""


if __name__ == "__main__":  # `python -m train.cli` (e.g. under torchrun without --no-python)
    app()
