"""Benchmark the tags stage on a real local Label Studio server, floors measured in the same run.

Run from the repository root with the project's virtualenv:

    .venv/bin/python bench/tags.py [--tasks 5000] [--annotations 50000] [--repeat 3]

It prints one JSON line on stdout (everything else goes to stderr) and writes the same object,
indented, to `bench/results/tags.json`.

What is measured, and why
-------------------------
* **push** (`run_push`, in this process): a fresh project, the local-files storage, listing the
  project's tasks (none yet), selection, and the task import in batches of
  ``tags.push.batch_size``, for ``--tasks`` images of a synthetic manifest. The peer (the floor
  any push pays) is one bare SDK ``projects.import_tasks`` call with the same tasks into another
  fresh project. ``repush_noop_s`` is a second push of the same images: it lists every task and
  imports nothing (the idempotence check's cost).
* **pull** (`run_pull`): the full JSON export of ``--tasks`` tasks carrying demo-shaped
  annotations (imported once with the tasks, as annotators' submissions look: two annotators,
  skips, corrections, rejects), then normalise, merge, agreement, and the atomic writes of the
  snapshot and three tables. The peer is the bare SDK export download of the same project
  (``exports.download_sync``): the floor any pull pays.
* **normalise** (`run_import`, no server): an export file with at least ``--annotations``
  annotations (demo shape, ~5 results each) read, parsed, normalised to pixels, merged and
  written. Goal: under 10 s. The peer is label-studio-sdk's own converter flattening the same
  file to CSV (``Converter.convert_to_csv``, one row per annotation, no pixel conversion, no
  merge), so ``speedup_vs_peer`` > 1 means we do more work in less time.

Each time is the median of ``--repeat`` runs (push and pull use a fresh project per run). The
server starts from the pre-migrated template (`curate.tags.localserver`); its venv and template
are built on first use (a few minutes, once). Work files go to `.cache/bench/tags/` and are
removed at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import redirect_stdout
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
from label_studio_sdk import LabelStudio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.publish import publish
from core.config import from_mapping
from core.console import console
from core.manifest import write_table
from curate.config import Params
from curate.demo import labelstudio
from curate.demo.shapes import CATEGORIES
from curate.stages.tags import PushOptions, run_import, run_pull, run_push
from curate.tags import labelconfig
from curate.tags.localserver import LS_REQUIREMENT, LocalServer

WORK = ROOT / ".cache" / "bench" / "tags"
GOAL_NORMALISE_S = 10.0


def log(msg: str) -> None:
    print(f"[bench tags] {msg}", file=sys.stderr, flush=True)


def timed(fn: Callable[[], Any], cpu: list[float] | None = None) -> float:
    """Wall seconds of ``fn()``; its CPU seconds in this process go to ``cpu`` when given.

    CPU time is the figure that holds on a shared, loaded machine (wall time there includes
    waiting for a core); for push and pull it is the client's own work, the server's excluded.
    """
    start, start_cpu = time.perf_counter(), time.process_time()
    with redirect_stdout(sys.stderr):
        fn()
    if cpu is not None:
        cpu.append(time.process_time() - start_cpu)
    return time.perf_counter() - start


def median(xs: list[float]) -> float:
    return round(statistics.median(xs), 3)


def synthetic_tasks(n: int, seed: int = 0) -> list[labelstudio.TaskTruth]:
    """Demo-shaped task truths for ids 1..n (sizes, boxes and points drawn at random)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    tasks = []
    for i in range(1, n + 1):
        w, h = int(rng.integers(400, 2000)), int(rng.integers(400, 2000))
        x, y = float(rng.uniform(0, w / 3)), float(rng.uniform(0, h / 3))
        bw, bh = float(rng.uniform(w / 4, w / 2)), float(rng.uniform(h / 4, h / 2))
        image_id = hashlib.sha256(f"bench-{i}".encode()).hexdigest()
        tasks.append(labelstudio.TaskTruth(
            i, image_id, f"/data/local-files/?d=data/store/{image_id[:2]}/{image_id[2:4]}/"
            f"{image_id}.jpg", w, h, CATEGORIES[i % 2], (x, y, bw, bh),
            (x + bw / 2, y + bh * 0.9), (x + bw / 2, y + bh * 0.1),
            should_reject=bool(rng.random() < 0.05)))
    return tasks


def manifest_for(tasks: list[labelstudio.TaskTruth], path: Path) -> None:
    df = pd.DataFrame({
        "image_id": [t.image_id for t in tasks],
        "store_path": [f"{t.image_id[:2]}/{t.image_id[2:4]}/{t.image_id}.jpg" for t in tasks],
        "width": [t.width for t in tasks], "height": [t.height for t in tasks],
        "status": "ok", "reason": None})
    write_table(df, path, sort_by=["image_id"])


def params(work: Path, title: str, snapshot: Path | None = None) -> Params:
    snapshot = snapshot or work / "out" / title / "export.json"
    return from_mapping(Params, {
        "paths": {"store": str(work / "data/store"), "cache": str(work / "cache")},
        "tags": {"project": {"title": title}, "images": {"document_root": str(work)},
                 "push": {"manifest": str(work / "manifest.parquet")},
                 "export": str(snapshot), "snapshot": str(snapshot)},
    }, "")


def import_payload(export: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tasks with their annotations as Label Studio's import API takes them."""
    keep = ("result", "completed_by", "was_cancelled", "created_at", "updated_at", "lead_time")
    return [{"data": t["data"], "annotations": [{k: a[k] for k in keep}
                                                for a in t["annotations"]]} for t in export]


def bench_push(server: LocalServer, work: Path, tasks: list[labelstudio.TaskTruth],
               repeat: int) -> dict[str, Any]:
    ls = LabelStudio(base_url=server.url, api_key=server.admin.token, timeout=600)
    xml = labelconfig.generate(params(work, "bench").tags)
    payload = [{"data": {"image": t.image_url, "image_id": t.image_id}} for t in tasks]
    ours, again, peer, cpu = [], [], [], []
    for r in range(repeat):
        title = f"bench push {r}"
        push = partial(run_push, params(work, title), PushOptions(out_dir=work / "out" / title))
        ours.append(timed(push, cpu))
        again.append(timed(push))
        pid = ls.projects.create(title=f"bench push peer {r}", label_config=xml).id
        peer.append(timed(partial(ls.projects.import_tasks, id=pid, request=payload)))
        log(f"push run {r}: ours {ours[-1]:.2f} s, re-push {again[-1]:.2f} s, "
            f"peer {peer[-1]:.2f} s")
    return {"tasks": len(tasks), "ours_s": median(ours), "ours_cpu_s": median(cpu),
            "tasks_per_s": round(len(tasks) / median(ours), 1),
            "peer_sdk_import_s": median(peer),
            "ours_over_peer": round(median(ours) / median(peer), 2),
            "repush_noop_s": median(again)}


def _download_size(ls: LabelStudio, project_id: int, sizes: list[int]) -> None:
    """The peer pull: the bare SDK export download, its size kept for the report."""
    chunks = ls.projects.exports.download_sync(project_id, export_type="JSON",
                                               download_all_tasks=True)
    sizes.append(sum(map(len, chunks)))


def bench_pull(server: LocalServer, work: Path, tasks: list[labelstudio.TaskTruth],
               repeat: int) -> dict[str, Any]:
    ls = LabelStudio(base_url=server.url, api_key=server.admin.token, timeout=600)
    xml = labelconfig.generate(params(work, "bench").tags)
    export, _ = labelstudio.build_export(tasks, CATEGORIES, seed=1)
    n_annotations = sum(len(t["annotations"]) for t in export)
    title = "bench pull"
    pid = ls.projects.create(title=title, label_config=xml).id
    log(f"importing {len(export)} tasks with {n_annotations} annotations (setup)")
    ls.projects.import_tasks(id=pid, request=import_payload(export))
    ours, peer, cpu = [], [], []
    size, size_box = 0, []
    for r in range(repeat):
        ours.append(timed(lambda: run_pull(params(work, title), out_dir=work / "out" / title),
                          cpu))
        peer.append(timed(partial(_download_size, ls, pid, size_box)))
        size = size_box[-1]
        log(f"pull run {r}: ours {ours[-1]:.2f} s, peer {peer[-1]:.2f} s")
    return {"tasks": len(export), "annotations": n_annotations, "export_mb": round(size / 1e6, 1),
            "ours_s": median(ours), "ours_cpu_s": median(cpu),
            "peer_export_download_s": median(peer),
            "ours_over_peer": round(median(ours) / median(peer), 2)}


def bench_normalise(work: Path, n_annotations: int, repeat: int) -> dict[str, Any]:
    from label_studio_sdk.converter import Converter

    n_tasks = int(n_annotations / 1.3) + 1
    export: list[dict[str, Any]] = []
    while sum(len(t["annotations"]) for t in export) < n_annotations:
        export, _ = labelstudio.build_export(synthetic_tasks(n_tasks, seed=2), CATEGORIES, seed=2)
        n_tasks = int(n_tasks * 1.05) + 1
    count = sum(len(t["annotations"]) for t in export)
    n_tasks = len(export)
    path = work / "export_50k.json"
    path.write_text(json.dumps(export))
    del export
    p = params(work, "bench normalise", snapshot=path)
    xml = labelconfig.generate(p.tags)
    ours, peer, cpu, peer_cpu = [], [], [], []
    for r in range(repeat):
        ours.append(timed(lambda: run_import(p, path, work / "out" / "normalise"), cpu))
        out = work / "out" / "converter"
        shutil.rmtree(out, ignore_errors=True)
        conv = Converter(config=xml, project_dir=str(work), download_resources=False)
        peer.append(timed(partial(conv.convert_to_csv, str(path), str(out), is_dir=False,
                                  sep=","), peer_cpu))
        log(f"normalise run {r}: ours {ours[-1]:.2f} s ({cpu[-1]:.2f} s CPU), converter "
            f"{peer[-1]:.2f} s ({peer_cpu[-1]:.2f} s CPU)")
    return {"tasks": n_tasks, "annotations": count, "file_mb": round(path.stat().st_size / 1e6, 1),
            "ours_s": median(ours), "ours_cpu_s": median(cpu),
            "annotations_per_s": round(count / median(ours)),
            "goal_s": GOAL_NORMALISE_S, "meets_goal": median(ours) < GOAL_NORMALISE_S,
            "peer_converter_csv_s": median(peer), "peer_converter_csv_cpu_s": median(peer_cpu),
            "speedup_vs_peer": round(median(peer) / median(ours), 2),
            "cpu_speedup_vs_peer": round(median(peer_cpu) / median(cpu), 2)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--annotations", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    console.quiet = True  # the stage's tables would drown the log; timings include no printing
    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "data/store").mkdir(parents=True)
    try:
        tasks = synthetic_tasks(args.tasks)
        manifest_for(tasks, WORK / "manifest.parquet")
        start = time.perf_counter()
        with LocalServer(WORK / "ls-data", WORK) as server:
            started = round(time.perf_counter() - start, 2)
            log(f"server up in {started} s at {server.url}")
            os.environ["LABEL_STUDIO_URL"] = server.url  # what the stage reads
            os.environ["LABEL_STUDIO_API_KEY"] = server.admin.token
            push = bench_push(server, WORK, tasks, args.repeat)
            pull = bench_pull(server, WORK, tasks, args.repeat)
        normalise = bench_normalise(WORK, args.annotations, args.repeat)
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    result = {
        "bench": "tags",
        "label_studio": LS_REQUIREMENT,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "repeat": args.repeat,
        "server_start_s": started,
        "push": push,
        "pull": pull,
        "normalise": normalise,
    }
    publish("tags", result)
    return result


if __name__ == "__main__":
    main()
