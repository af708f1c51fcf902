"""`train fit`: the train stage of the pipeline, from a dataset zip to an exported generator.

Runs the same way with or without `torchrun`. Rank 0 writes everything under the output
folder (layout in `train fit --help`); other ranks only compute. The exit status tells the
caller what happened: 0 trained to the target (or already had), 128+N stopped by signal N after
writing a checkpoint (run the same command again to continue), 1 an error with a message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.models import require
from train.config import TrainConfig
from train.data import includes_mirrors, open_dataset
from train.dist import DistEnv, init_distributed, shutdown
from train.export import export_generator
from train.loop import RunPaths, Trainer, total_images
from train.report import memorisation_report
from train.signals import StopRequested
from train.visuals import (
    class_interpolation,
    grid_image,
    interpolation_frames,
    save_gif,
    save_image,
    seed_grid,
    steps_side_by_side,
    truncation_sweep,
    upscale,
)

Log = Callable[[str], None]


def final_outputs(trainer: Trainer, log: Log) -> dict[str, Any]:
    """Export, grids, truncation sweep, interpolation, memorisation report (rank 0)."""
    cfg, paths, G = trainer.cfg, trainer.paths, trainer.G_ema
    rep = cfg.report
    info = trainer.dataset.info
    export = export_generator(G, paths.export, {
        "model": cfg.model,
        "images_seen": trainer.progress.images,
        "kimg": trainer.progress.images / 1000,
        "config_hash": cfg.dynamics_hash(),
        "dataset": {"path": str(info.path), "sha256_of_index": info.hash, "images": info.size,
                    "native_resolution": info.resolution, "mirror": trainer.dataset.mirror,
                    "classes": trainer.classes},
        "lineage": lineage(trainer),
        "ada_p": trainer.ada.p,
    })
    log(f"exported EMA generator -> {export.parent}")
    cols, rows = rep.grid
    seeds = list(range(rep.grid_seed, rep.grid_seed + cols * rows))
    save_image(upscale(seed_grid(G, seeds, cols)), paths.samples / "final-grid.png")
    sweep = truncation_sweep(G, seeds[:rows], rep.truncation, rep.z_truncation)
    save_image(upscale(sweep), paths.samples / "truncation.png")
    if G.classes > 1:
        walk = class_interpolation(G, seeds[:rows], list(range(G.classes)),
                                   rep.interpolation_frames)
        save_image(upscale(grid_image(walk.flatten(0, 1), walk.shape[1])),
                   paths.samples / "class-interpolation.png")
        save_gif(steps_side_by_side(walk), paths.samples / "class-interpolation.gif")
    frames = interpolation_frames(G, rep.interpolation_seeds, rep.interpolation_frames)
    save_image(upscale(grid_image(frames, rep.interpolation_frames)),
               paths.samples / "interpolation.png")
    save_gif(frames, paths.samples / "interpolation.gif")
    stats = memorisation_report(G, trainer.dataset, rep, paths.report, title=str(paths.out),
                                lineage=lineage(trainer))
    log(f"memorisation: sample/real nearest-neighbour ratio {stats['nn_ratio']:.3f}, near "
        f"copies {100 * stats['near_copy_share']:.1f}%, diversity {stats['diversity_ratio']:.3f}"
        f" -> {paths.report / 'memorisation.html'}")
    for part in lineage(trainer)[:-1]:
        log(f"lineage: {part['from_kimg']:.1f}-{part['to_kimg']:.1f} kimg on {part['path']} "
            f"({part['images']} images, {part['dataset'][:12]})")
    summary: dict[str, Any] = {"kimg": trainer.progress.images / 1000,
                               "datasets_trained_on": len(lineage(trainer)),
                               "memorisation/nn_ratio": stats["nn_ratio"],
                               "memorisation/near_copy_share": stats["near_copy_share"],
                               "memorisation/diversity_ratio": stats["diversity_ratio"]}
    if cfg.metrics.fid:
        from train.fid import fid_kid_for_generator

        fid = fid_kid_for_generator(G, trainer.dataset, cfg.metrics, log)
        summary.update(fid)
    return summary


def lineage(trainer: Trainer) -> list[dict[str, Any]]:
    """Which dataset each kimg range trained on: earlier versions, then the current one."""
    info = trainer.dataset.info
    return [*trainer.lineage, {"dataset": info.hash, "path": str(info.path), "images": info.size,
                               "from_kimg": trainer.progress.data_from / 1000,
                               "to_kimg": trainer.progress.images / 1000}]


def run_fit(cfg: TrainConfig, data: Path, out: Path, log: Log, device: str | None = None,
            metrics: bool = True) -> int:
    """Train (or resume) and write the outputs; return the process exit status."""
    env: DistEnv = init_distributed(device)
    say: Log = log if env.is_main else (lambda _msg: None)
    trainer: Trainer | None = None
    try:
        if cfg.metrics.fid:  # fail now, not after hours of training
            from train.fid import MODEL_NAME

            require(MODEL_NAME)
        mirrored_already = cfg.mirror and includes_mirrors(data)
        dataset = open_dataset(data, cfg.resolution, cfg.mirror and not mirrored_already,
                               labels=cfg.conditional)
        notes = [f"training at {dataset.resolution} px" if dataset.factor > 1 else "",
                 f"{dataset.classes} classes" if dataset.classes else "",
                 "labels ignored (train.conditional: false)"
                 if dataset.info.labels is not None and not cfg.conditional else "",
                 "mirrored" if dataset.mirror else "",
                 "not mirrored again (its card says prepare added mirrors)"
                 if mirrored_already else ""]
        say(f"dataset {data}: {dataset.info.size} images at {dataset.info.resolution} px"
            + "".join(f", {n}" for n in notes if n))
        trainer = Trainer(cfg, dataset, RunPaths(Path(out)), env, say, metrics=metrics)
        started = time.perf_counter()
        trainer.fit(total_images(cfg.kimg))
        if env.is_main:
            summary = final_outputs(trainer, say)
            if trainer.metrics is not None:
                trainer.metrics.summary(summary)
                trainer.metrics.params({"lineage": lineage(trainer)})
            say(f"done in {time.perf_counter() - started:.0f} s: {out}")
        return 0
    except StopRequested as stop:
        say(f"{stop}: checkpoint written; run the same command again to continue")
        return stop.exit_code
    finally:
        if trainer is not None:
            trainer.close()
        shutdown(env)
