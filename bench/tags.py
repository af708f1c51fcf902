"""Benchmark the tags stage on a real local Label Studio server, floors measured in the same run.

Run from the repository root with the project's virtualenv:

    .venv/bin/python bench/tags.py [--tasks 5000] [--annotations 50000] [--repeat 3] [--quick]

It prints one JSON line on stdout (everything else goes to stderr) and writes the same object,
indented, to `bench/results/tags.json` (`--quick`: 300 tasks, 2,000 annotations, one round, to
bench/results/tmp/).

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
  merge).

Ours and the peer run in alternating turns (bench/harness.py), ``--repeat`` rounds, push and
pull with a fresh project per turn; each time is the median of its turns. Every comparison
gives ``speedup_peer_time_over_ours`` (peer time / ours: higher is better, < 1 means ours is
slower) and ``time_ours_over_peer`` (its inverse: lower is better): push and pull do more
than the bare SDK call, so they take longer than it. The
server starts from the pre-migrated template (`curate.tags.localserver`); its venv and template
are built on first use (a few minutes, once). Work files go to `.cache/bench/tags/` and are
removed at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
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

from bench.harness import Bench, Comparison, median
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


def timed(fn: Callable[[], Any]) -> dict[str, float]:
    """Wall seconds of ``fn()`` and its CPU seconds in this process (a turn for the harness).

    CPU time is the figure that holds on a shared, loaded machine (wall time there includes
    waiting for a core); for push and pull it is the client's own work, the server's excluded.
    """
    start, start_cpu = time.perf_counter(), time.process_time()
    with redirect_stdout(sys.stderr):
        fn()
    return {"seconds": time.perf_counter() - start, "cpu_s": time.process_time() - start_cpu}


def ratios(comparison: Comparison, peer: str) -> dict[str, Any]:
    """Peer time / ours (higher is better) and its inverse, ours / peer (lower is better)."""
    speedup = comparison.speedup(peer, "ours")["median"]
    return {"speedup_peer_time_over_ours": speedup,
            "time_ours_over_peer": round(median(comparison.ratios("ours", peer)), 3),
            "comparison": comparison.to_dict(ours="ours")}


def cpu(comparison: Comparison, side: str) -> float:
    return median((e["cpu_s"] for e in comparison.extras(side)), 3)


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


def bench_push(bench: Bench, server: LocalServer, work: Path,
               tasks: list[labelstudio.TaskTruth], repeat: int) -> dict[str, Any]:
    ls = LabelStudio(base_url=server.url, api_key=server.admin.token, timeout=600)
    xml = labelconfig.generate(params(work, "bench").tags)
    payload = [{"data": {"image": t.image_url, "image_id": t.image_id}} for t in tasks]
    turn = iter(range(10**6))

    def ours() -> dict[str, float]:
        title = f"bench push {next(turn)}"
        push = partial(run_push, params(work, title), PushOptions(out_dir=work / "out" / title))
        first = timed(push)
        return {**first, "repush_s": timed(push)["seconds"]}

    def peer() -> dict[str, float]:
        pid = ls.projects.create(title=f"bench push peer {next(turn)}", label_config=xml).id
        return timed(partial(ls.projects.import_tasks, id=pid, request=payload))

    bench.record("in-process: curate.stages.tags.run_push(params, PushOptions(out_dir)) "
                 "against the local Label Studio; peer: LabelStudio.projects.import_tasks")
    comparison = bench.compare({"ours": ours, "sdk_import": peer}, repeat)
    ours_s = median(comparison.seconds("ours"), 3)
    return {"tasks": len(tasks), "ours_s": ours_s, "ours_cpu_s": cpu(comparison, "ours"),
            "tasks_per_s": round(len(tasks) / ours_s, 1),
            "peer_sdk_import_s": median(comparison.seconds("sdk_import"), 3),
            "repush_noop_s": median((e["repush_s"] for e in comparison.extras("ours")), 3),
            **ratios(comparison, "sdk_import")}


def _download_size(ls: LabelStudio, project_id: int, sizes: list[int]) -> None:
    """The peer pull: the bare SDK export download, its size kept for the report."""
    chunks = ls.projects.exports.download_sync(project_id, export_type="JSON",
                                               download_all_tasks=True)
    sizes.append(sum(map(len, chunks)))


def bench_pull(bench: Bench, server: LocalServer, work: Path,
               tasks: list[labelstudio.TaskTruth], repeat: int) -> dict[str, Any]:
    ls = LabelStudio(base_url=server.url, api_key=server.admin.token, timeout=600)
    xml = labelconfig.generate(params(work, "bench").tags)
    export, _ = labelstudio.build_export(tasks, CATEGORIES, seed=1)
    n_annotations = sum(len(t["annotations"]) for t in export)
    title = "bench pull"
    pid = ls.projects.create(title=title, label_config=xml).id
    bench.log(f"importing {len(export)} tasks with {n_annotations} annotations (setup)")
    ls.projects.import_tasks(id=pid, request=import_payload(export))
    sizes: list[int] = []
    bench.record("in-process: curate.stages.tags.run_pull(params, out_dir); peer: "
                 "LabelStudio.projects.exports.download_sync(JSON, all tasks)")
    comparison = bench.compare({
        "ours": lambda: timed(lambda: run_pull(params(work, title), out_dir=work / "out" / title)),
        "sdk_export": lambda: timed(partial(_download_size, ls, pid, sizes)),
    }, repeat)
    return {"tasks": len(export), "annotations": n_annotations,
            "export_mb": round(sizes[-1] / 1e6, 1),
            "ours_s": median(comparison.seconds("ours"), 3), "ours_cpu_s": cpu(comparison, "ours"),
            "peer_export_download_s": median(comparison.seconds("sdk_export"), 3),
            **ratios(comparison, "sdk_export")}


def bench_normalise(bench: Bench, work: Path, n_annotations: int, repeat: int) -> dict[str, Any]:
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

    def converter() -> dict[str, float]:
        out = work / "out" / "converter"
        shutil.rmtree(out, ignore_errors=True)
        conv = Converter(config=xml, project_dir=str(work), download_resources=False)
        return timed(partial(conv.convert_to_csv, str(path), str(out), is_dir=False, sep=","))

    bench.record("in-process: curate.stages.tags.run_import(params, export, out_dir); peer: "
                 "label_studio_sdk.converter.Converter.convert_to_csv")
    comparison = bench.compare({
        "ours": lambda: timed(lambda: run_import(p, path, work / "out" / "normalise")),
        "sdk_converter": converter}, repeat)
    ours_s = median(comparison.seconds("ours"), 3)
    return {"tasks": n_tasks, "annotations": count, "file_mb": round(path.stat().st_size / 1e6, 1),
            "ours_s": ours_s, "ours_cpu_s": cpu(comparison, "ours"),
            "annotations_per_s": round(count / ours_s),
            "goal_s": GOAL_NORMALISE_S, "meets_goal": ours_s < GOAL_NORMALISE_S,
            "peer_converter_csv_s": median(comparison.seconds("sdk_converter"), 3),
            "peer_converter_csv_cpu_s": cpu(comparison, "sdk_converter"),
            "cpu_speedup_peer_over_ours": round(cpu(comparison, "sdk_converter")
                                                / cpu(comparison, "ours"), 2),
            **ratios(comparison, "sdk_converter")}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--annotations", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true",
                        help="300 tasks, 2,000 annotations, one round (a smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.annotations, args.repeat = 300, 2000, 1
    bench = Bench("tags", packages=("label-studio-sdk",))
    console.quiet = True  # the stage's tables would drown the log; timings include no printing
    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "data/store").mkdir(parents=True)
    try:
        tasks = synthetic_tasks(args.tasks)
        manifest_for(tasks, WORK / "manifest.parquet")
        start = time.perf_counter()
        with LocalServer(WORK / "ls-data", WORK) as server:
            started = round(time.perf_counter() - start, 2)
            bench.log(f"server up in {started} s at {server.url}")
            os.environ["LABEL_STUDIO_URL"] = server.url  # what the stage reads
            os.environ["LABEL_STUDIO_API_KEY"] = server.admin.token
            push = bench_push(bench, server, WORK, tasks, args.repeat)
            pull = bench_pull(bench, server, WORK, tasks, args.repeat)
        normalise = bench_normalise(bench, WORK, args.annotations, args.repeat)
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    bench.peers["label-studio (server)"] = {"label-studio": LS_REQUIREMENT.split("==")[-1]}
    result = {
        "label_studio": LS_REQUIREMENT,
        "repeat": args.repeat,
        "server_start_s": started,
        "push": push,
        "pull": pull,
        "normalise": normalise,
    }
    bench.publish(result, quick=args.quick)
    return result


if __name__ == "__main__":
    main()
