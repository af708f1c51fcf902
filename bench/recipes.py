"""The training recipes on CPU: every preset at tiny size, the conditional toy, managed restarts.

Run from the repository root with the project's virtualenv:

    .venv/bin/python bench/recipes.py

It prints one JSON line on stdout (progress goes to stderr) and writes the same object,
indented, to `bench/results/recipes.json`:

* `presets`: each `train.preset` shrunk by `train.synthetic.tiny_preset` (its losses,
  optimisers, label tricks and schedules kept; networks, resolution 32 px, batch 8 and length
  64 images made tiny) trained by `train fit`'s entry point on a toy dataset (labelled with 2
  classes for the conditional `biggan`): `smoke_ok` (exit 0, an export and the end-of-run
  pictures written) and `s` (wall seconds, one thread). These show that each recipe runs,
  not how well it trains at full size: that needs the source's data and GPUs.
* `conditional_label_accuracy`: a class-conditional DCGAN (16 px, 6 kimg, batch 16) on a
  2-class toy set (`train toy-data --classes 2`: each class its own shape and hue band);
  the share of 200 samples, classes alternating, that a small CNN trained on other toy
  images (seed 1; its own held-out accuracy is recorded) puts in the requested class. Goal
  >= 0.9. The same settings as the test that checks it.
* `manager_restarts_bit_exact`: a `train manage` subprocess runs a queued DCGAN request
  (16 px, 2.048 kimg, checkpoints every 0.256 kimg); its `train fit` job is killed with
  SIGKILL after 0.512 and 1.024 kimg; the request must end `done` with 2 restarts, and its
  final checkpoint's networks, optimisers, ADA, RNG and counters must equal those of an
  uninterrupted `train fit` of the same request.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch
import yaml

from bench.harness import Bench
from bench.harness import log as harness_log
from core.polling import until
from train.checkpoint import first_difference, newest_images
from train.config import train_config_from_mapping
from train.export import load_generator
from train.presets import PRESETS
from train.queue import Queue
from train.stage import run_fit
from train.synthetic import (
    label_accuracy,
    make_blob_dataset,
    tiny_config,
    tiny_preset,
    toy_classifier,
)

CONDITIONAL = {"conditional": True, "kimg": 6, "batch": 16, "mirror": False, "tick_kimg": 1,
               "checkpoint_kimg": 6, "dcgan": {"channels": 16}, "ada": {"enabled": False}}
MANAGED = {"kimg": 2.048, "checkpoint_kimg": 0.256, "tick_kimg": 0.064}
KILL_AFTER_KIMG = (0.512, 1.024)


def log(message: str) -> None:
    harness_log("recipes", message)


def quiet(_message: str) -> None:
    """`train fit`'s log lines, not shown (the bench prints its own)."""


def presets(work: Path) -> dict[str, Any]:
    toy = make_blob_dataset(work / "toy.zip", 64, 32)
    labelled = make_blob_dataset(work / "labelled.zip", 64, 32, classes=2)
    out: dict[str, Any] = {}
    for name in PRESETS:
        cfg = train_config_from_mapping(tiny_preset(name))
        run = work / f"preset-{name}"
        started = time.perf_counter()
        code = run_fit(cfg, labelled if cfg.conditional else toy, run, quiet, device="cpu",
                       metrics=False)
        seconds = time.perf_counter() - started
        pictures = all((run / "samples" / f).exists()
                       for f in ("final-grid.png", "truncation.png", "interpolation.gif"))
        ok = code == 0 and (run / "export" / "generator.json").exists() and pictures
        out[name] = {"smoke_ok": ok, "s": round(seconds, 2), "model": cfg.model,
                     "conditional": cfg.conditional}
        log(f"{name}: {'ok' if ok else 'FAILED'} in {seconds:.1f} s")
    return out


def conditional(work: Path) -> dict[str, Any]:
    data = make_blob_dataset(work / "classes.zip", 512, 16, classes=2)
    cfg = train_config_from_mapping(tiny_config("dcgan", **CONDITIONAL))
    started = time.perf_counter()
    code = run_fit(cfg, data, work / "conditional", quiet, device="cpu", metrics=False)
    seconds = time.perf_counter() - started
    G, _ = load_generator(work / "conditional" / "export")
    accuracy = label_accuracy(G, toy_classifier(16, 2))
    log(f"conditional DCGAN: exit {code}, label accuracy {accuracy:.3f} ({seconds:.0f} s)")
    return {"accuracy": accuracy, "train_s": round(seconds, 1), "exit": code,
            "settings": {"model": "dcgan", **CONDITIONAL, "resolution": 16, "images": 512,
                         "samples_judged": 200}}


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def _final(out: Path) -> dict[str, Any]:
    newest = max((out / "checkpoints").glob("state-*.pt"))
    return torch.load(newest, weights_only=True)


def managed(work: Path) -> dict[str, Any]:
    data = make_blob_dataset(work / "managed.zip", 64, 16)
    params = work / "params.yaml"
    params.write_text(yaml.safe_dump({"train": tiny_config("dcgan", **MANAGED)}))
    cli = [sys.executable, "-m", "train.cli"]
    started = time.perf_counter()
    subprocess.run([*cli, "fit", "--data", str(data), "--out", str(work / "straight"),
                    "--params", str(params), "--device", "cpu", "--threads", "1"],
                   env=_env(), cwd=ROOT, check=True, capture_output=True)
    straight_s = time.perf_counter() - started
    queue_dir = work / "queue"
    added = subprocess.run([*cli, "queue", "add", "--queue", str(queue_dir), "--params",
                            str(params), "--data", str(data), "--out", str(work / "managed"),
                            "--device", "cpu", "--threads", "1"], env=_env(), cwd=ROOT,
                           check=True, capture_output=True, text=True)
    queue = Queue(queue_dir)
    request = queue.get(added.stdout.strip().splitlines()[-1])
    started = time.perf_counter()
    with open(work / "manager.log", "ab") as manager_log:
        manager = subprocess.Popen([*cli, "manage", "--queue", str(queue_dir), "--until-empty",
                                    "--poll-s", "0.2", "--backoff-s", "0.1"], env=_env(),
                                   cwd=ROOT, stdout=manager_log, stderr=subprocess.STDOUT)
        killed: int | None = None
        for kimg in KILL_AFTER_KIMG:
            pid = until(lambda gone=killed: (r := queue.current(request.id)) is not None
                         and r.job_pid not in (None, gone) and r.job_pid, "a running job", 600)
            until(lambda k=kimg: (newest_images(Path(request.out) / "checkpoints",
                                                 request.config_hash) or 0) >= k * 1000,
                   f"{kimg} kimg", 600)
            time.sleep(0.4)
            os.kill(pid, signal.SIGKILL)
            killed = pid
            log(f"manager: killed its job (pid {pid}) after {kimg} kimg")
        manager.wait(timeout=900)
    managed_s = time.perf_counter() - started
    row = next(v.as_json() for v in queue.views() if v.as_json()["id"] == request.id)
    a, b = _final(work / "straight"), _final(work / "managed")
    keys = ("G", "D", "G_ema", "opt_G", "opt_D", "ada", "objective", "rng", "progress",
            "sampler")
    exact = all(first_difference(a[k], b[k]) is None for k in keys)
    log(f"manager: {row['state']}, {row['restarts']} restarts, bit-exact {exact}")
    return {"bit_exact": exact and row["state"] == "done" and row["restarts"] == 2,
            "state": row["state"], "restarts": row["restarts"],
            "uninterrupted_s": round(straight_s, 1),
            "managed_with_two_kills_s": round(managed_s, 1),
            "settings": {"model": "dcgan", **MANAGED, "resolution": 16,
                         "kill_after_kimg": list(KILL_AFTER_KIMG)}}


def main() -> None:
    bench = Bench("recipes", packages=("torch",))
    bench.record("in-process: train.stage.run_fit per preset (tiny), a conditional DCGAN; "
                 "`train manage` in a subprocess for the managed restarts")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-recipes-") as tmp:
        work = Path(tmp)
        smoke = presets(work)
        cond = conditional(work)
        manager = managed(work)
    bench.publish({
        "presets": smoke,
        "conditional_label_accuracy": cond["accuracy"],
        "conditional": cond,
        "manager_restarts_bit_exact": manager["bit_exact"],
        "manager": manager,
        "notes": "CPU smoke sizes (see the module docstring); one torch thread; no GPU was "
                 "lent, so the GPU figures (s/kimg at 256/512 px vs NVlabs) are not here.",
    })


if __name__ == "__main__":
    main()
