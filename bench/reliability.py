"""Kill every stage at seeded moments, run it again, and compare its outputs byte for byte.

The promise under test: a stage killed at any moment (SIGKILL: no cleanup runs) and then run
again produces exactly the outputs of a run that was never interrupted. For each stage of
dvc.yaml, in order, on a small demo: the workspace before the stage is saved, the stage runs
once uninterrupted (the reference), then for each kill point a copy of the saved workspace
runs the stage, is killed after a seeded share of the reference's duration, and runs it again
to the end. Every file of the stage's outputs and metrics (as dvc.yaml lists them) must equal
the reference's.

    .venv/bin/python bench/reliability.py [--kills 5] [--n-base 24]

prints one JSON line and writes bench/results/reliability.json; `tests/integration/
test_kill_every_stage.py` (slow) runs the same with fewer kill points.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BIN = Path(sys.executable).parent
#: Stages in pipeline order; foreach stages run for this distribution.
STAGES = ("ingest", "dedup", "tags", "quality", "matte", "split", "prepare", "train")
DIST = "soles"
#: Outputs compared by something other than bytes: dvclive's metrics hold wall-clock timings
#: (img/s, s/kimg), which no two runs share.
TIMINGS = ("/live/",)
#: Per-run state that is not an output but must travel with a workspace copy.
STATE = ("data", "reports", "models", ".cache", "params.yaml", "dvc.yaml")


@dataclass
class StageResult:
    stage: str
    reference_s: float
    kills: int = 0
    finished_before_kill: int = 0
    identical: bool = True
    differing: list[str] = field(default_factory=list)


def _env() -> dict[str, str]:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    env.setdefault("CURATE_MODELS_DIR", str(REPO / "models" / "pretrained"))
    return env


def stage_spec(pipeline: dict, stage: str) -> tuple[str, list[str]]:
    """The stage's command and output paths (outs and metrics), foreach resolved for DIST."""
    spec = pipeline["stages"][stage]
    spec = spec.get("do", spec)

    def resolve(text: str) -> str:
        return text.replace("${item.name}", DIST)

    outs = []
    for key in ("outs", "metrics"):
        for entry in spec.get(key, []) or []:
            outs.append(resolve(next(iter(entry)) if isinstance(entry, dict) else entry))
    return resolve(" ".join(spec["cmd"].split())), outs


def _run(cmd: str, cwd: Path) -> None:
    proc = subprocess.run(cmd, shell=True, cwd=cwd, env=_env(), capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed in {cwd}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def _killed_run(cmd: str, cwd: Path, after_s: float) -> bool:
    """Run `cmd`, SIGKILL its whole process group after `after_s`; False if it ended first."""
    proc = subprocess.Popen(cmd, shell=True, cwd=cwd, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        proc.wait(timeout=after_s)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def fingerprint(root: Path, outs: list[str]) -> dict[str, str]:
    """sha256 of every file under the stage's outputs (paths relative to root)."""
    digests = {}
    for out in outs:
        path = root / out
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            rel = f.relative_to(root).as_posix()
            if not any(t in f"/{rel}" for t in TIMINGS):
                digests[rel] = hashlib.sha256(f.read_bytes()).hexdigest()
    return digests


def copy_workspace(src: Path, dst: Path) -> None:
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for name in STATE:
        if (src / name).is_dir():
            shutil.copytree(src / name, dst / name, symlinks=True)
        elif (src / name).exists():
            shutil.copy2(src / name, dst / name)


def make_workspace(root: Path, n_base: int) -> Path:
    """A project with the repository's params and pipeline, sized small, and its demo data."""
    work = root / "work"
    work.mkdir(parents=True)
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy2(REPO / name, work / name)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["matte"]["model"] = "u2netp"
    params["prepare"]["resolution"] = 64
    params["train"].update(kimg=0.1, resolution=32, checkpoint_kimg=0.05, sample_kimg=0.05)
    params["split"].update(k=3, min_confidence=0.6)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(f"curate demo-data --out data/demo --n-base {n_base}", work)
    return work


def kill_every_stage(root: Path, kills: int, n_base: int, seed: int = 0,
                     stages: tuple[str, ...] = STAGES,
                     log: Callable[[str], None] = print) -> list[StageResult]:
    work = make_workspace(root, n_base)
    pipeline = yaml.safe_load((work / "dvc.yaml").read_text())
    rng = np.random.default_rng(seed)
    results = []
    for stage in stages:
        cmd, outs = stage_spec(pipeline, stage)
        before = root / f"before-{stage}"
        copy_workspace(work, before)
        started = time.monotonic()
        _run(cmd, work)
        reference_s = time.monotonic() - started
        reference = fingerprint(work, outs)
        result = StageResult(stage, round(reference_s, 2))
        trial = root / "trial"
        while result.kills < kills:
            share = float(rng.uniform(0.15, 0.95))
            copy_workspace(before, trial)
            if not _killed_run(cmd, trial, share * reference_s):
                result.finished_before_kill += 1
                continue
            result.kills += 1
            _run(cmd, trial)
            got = fingerprint(trial, outs)
            differing = sorted(k for k in set(got) | set(reference)
                               if got.get(k) != reference.get(k))
            if differing:
                result.identical = False
                result.differing = sorted(set(result.differing) | set(differing))
        verdict = "identical" if result.identical else "DIFFER: " + ", ".join(result.differing)
        log(f"{stage}: {result.kills} kills at seeded moments of a {reference_s:.1f} s run, "
            f"outputs {verdict}")
        results.append(result)
    return results


def main() -> None:
    import tempfile

    from bench.harness import Bench

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--n-base", type=int, default=24)
    args = parser.parse_args()
    bench = Bench("reliability")
    from bench.faults import FAULTS, run_against_faults
    from bench.hostile import ingest_corpus
    from bench.localserver import serving

    log = bench.log
    bench.record("in-process: bench.hostile.ingest_corpus, bench.faults.run_against_faults, "
                 "bench.reliability.kill_every_stage (dvc.yaml's stage commands, killed)")
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        corpus = ingest_corpus(Path(tmp) / "hostile", log=log)
        with serving() as server:
            faults = run_against_faults(server, Path(tmp) / "faults")
        results = kill_every_stage(Path(tmp) / "kills", args.kills, args.n_base, log=log)
    bench.publish({
        # inputs, archives and params of kinds bench/hostile.py lists, plus the fault server's
        "hostile_kinds": corpus.kinds + len(FAULTS),
        "crashes": len(corpus.crashes),
        "unaccounted_inputs": len(corpus.unaccounted),
        "unexpected_outcomes": {k: list(v) for k, v in corpus.wrong.items()},
        "kill_points": {r.stage: r.kills for r in results},
        "rerun_identical": all(r.identical for r in results),
        "differing": {r.stage: r.differing for r in results if r.differing},
        "reference_s": {r.stage: r.reference_s for r in results},
        "fault_server": {"urls": len(faults.expected), "faults": faults.faults,
                         "recoverable_fetched": round(len(faults.stored & set(
                             faults.recoverable)) / len(faults.recoverable), 4),
                         "unaccounted": len(faults.unaccounted),
                         "seconds": round(faults.seconds, 1)},
        "n_base": args.n_base,
    })


if __name__ == "__main__":
    main()
