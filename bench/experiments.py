"""What a queued DVC experiment costs with the store and caches shared or its own.

`dvc exp run --queue` runs an experiment in a temporary copy of the workspace
(`.dvc/tmp/exps/<tmp>/`). With `paths.experiments: shared` its stages link the store, the
per-image caches and the mattes to the workspace's; with `own` the copy rebuilds them from the
versioned raw inputs. On a small demo (a copy of this project in a temporary git repository,
`dvc repro` once), the same experiment (`-S train.kimg=...`) is queued once each way: its wall
time, and from its log each stage's per-image work and each training run's time. Training
reruns from scratch either way (checkpoints are not in DVC's cache), so it is reported apart.

    .venv/bin/python bench/experiments.py [--n-base 24]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # bench.publish, and bench/ must not shadow the packages
BIN = Path(sys.executable).parent


def _run(cmd: list[str], cwd: Path) -> str:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
               GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@example.com",
               GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@example.com")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


def make_project(root: Path, n_base: int, kimg: float) -> Path:
    """This project's files as a fresh clone has them, sized small, run once and committed."""
    files = _run(["git", "ls-files", "-co", "--exclude-standard"], REPO).splitlines()
    for rel in files:
        if (REPO / rel).is_file() and rel != "dvc.lock":
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, root / rel)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["demo"]["n_base"] = n_base
    params["matte"]["model"] = "u2netp"
    params["prepare"]["resolution"] = 128
    params["train"].update(kimg=kimg, resolution=32)
    params["split"].update(k=3, min_confidence=0.6)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], root)
    _run(["git", "add", "-A"], root)
    _run(["git", "commit", "-qm", "project"], root)
    return root


#: A stage's per-image map: "dedup: 58 inputs in 23.0 s (2.5/s), 0 from cache".
INPUTS = re.compile(r"^([a-z]+(?: [A-Za-z0-9_-]+)?): ([\d,]+) inputs in ([\d.]+) s .*?"
                    r"([\d,]+) from cache")
#: The end of a training run: "done in 58 s: models/soles".
TRAINED = re.compile(r"^done in ([\d.]+) s: (\S+)")


def read_log(text: str) -> dict:
    """What an experiment's log says it cost: each stage's per-image work (seconds, inputs,
    cache hits) and each training run's seconds."""
    maps = {m.group(1): {"s": float(m.group(3)), "inputs": int(m.group(2).replace(",", "")),
                         "cached": int(m.group(4).replace(",", ""))}
            for m in map(INPUTS.match, text.splitlines()) if m}
    trained = {m.group(2): float(m.group(1)) for m in map(TRAINED.match, text.splitlines()) if m}
    return {"per_image": maps, "train": trained}


def queue_and_time(root: Path, name: str, overrides: list[str]) -> dict:
    """Queue one experiment, run the queue, and read what it cost off its log."""
    _run(["dvc", "exp", "run", "--queue", "-n", name,
          *[a for o in overrides for a in ("-S", o)]], root)
    started = time.monotonic()
    _run(["dvc", "queue", "start"], root)
    while any(s in _run(["dvc", "queue", "status"], root) for s in ("Queued", "Running")):
        time.sleep(2)
    total = time.monotonic() - started
    status = _run(["dvc", "queue", "status"], root)
    costs = read_log(_run(["dvc", "queue", "logs", name], root))
    train = sum(costs["train"].values())
    return {"ok": any(name in line and "Success" in line for line in status.splitlines()),
            "total_s": round(total, 1), "train_s": round(train, 1),
            # curation stages, their processes' start-up and DVC's own work
            "rest_s": round(total - train, 1),
            "per_image_s": round(sum(m["s"] for m in costs["per_image"].values()), 1),
            **costs}


def _size_mb(*folders: Path) -> float:
    return round(sum(p.stat().st_size for f in folders if f.exists()
                     for p in f.rglob("*") if p.is_file()) / 1e6, 1)


def main() -> None:
    from bench.publish import provenance, publish

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-base", type=int, default=24)
    parser.add_argument("--kimg", type=float, default=0.05)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="experiments-") as tmp:
        root = make_project(Path(tmp) / "project", args.n_base, args.kimg)
        started = time.monotonic()
        _run(["dvc", "repro"], root)
        cold = time.monotonic() - started
        _run(["git", "add", "-A"], root)
        _run(["git", "commit", "-qm", "v1"], root)
        import pandas as pd

        images = len(pd.read_parquet(root / "data/ingest/manifest.parquet"))
        kimg = f"train.kimg={args.kimg * 2}"
        shared = queue_and_time(root, "shared", [kimg])
        own = queue_and_time(root, "own", [kimg, "paths.experiments=own"])
        state = _size_mb(root / "data/store", root / ".cache/curate", root / "data/matte/out")
    publish("experiments", {
        "n_base": args.n_base, "images": images, "cold_repro_s": round(cold, 1),
        "shared": shared, "own": own,
        "saved_s": round(own["rest_s"] - shared["rest_s"], 1),
        # What `own` writes again in every experiment's copy (and deletes with it).
        "per_image_state_mb": state,
        "provenance": provenance(),
    })


if __name__ == "__main__":
    main()
