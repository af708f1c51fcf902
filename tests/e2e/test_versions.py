"""The data's versions under DVC, as the README's "Versions" section tells a user to use them,
on the smallest demo, in a temporary git repository made of this project's files:

- `dvc exp run --queue` + `dvc queue start` succeeds, and with `paths.experiments: shared` the
  experiment's copy reuses the workspace's store and per-image caches (nothing is re-matted)
  and leaves the workspace as it was;
- `dvc push` to a local folder remote, then a fresh `git clone` + `dvc pull` has the same
  dataset zips and model exports;
- `git checkout <tag> && dvc checkout` brings an earlier dataset version back;
- `curate gc` frees the crops of the earlier prepare settings and the experiment's ingest
  records, and the pipeline is still complete after it.

Slow (a cold `dvc repro`, an experiment and a re-prepare: about 8 minutes on 2 busy cores).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
N_BASE = 24  # the smallest demo that still gives both distributions a dataset
DATASETS = ("soles", "pov")


def _run(cmd: list[str], cwd: Path, timeout: float = 900) -> str:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def _project_files() -> list[str]:
    """Files a clean clone has: tracked plus untracked-but-not-ignored, no dvc.lock."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout
    return [f for f in out.splitlines() if (REPO / f).is_file() and f != "dvc.lock"]


def _set(path: Path, **dotted: object) -> None:
    params = yaml.safe_load(path.read_text())
    for key, value in dotted.items():
        *parents, last = key.split("__")
        node = params
        for name in parents:
            node = node[name]
        node[last] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def _outputs(root: Path) -> dict[str, bytes]:
    """The versioned products: dataset zips and model exports."""
    files = [root / f"data/datasets/{d}.zip" for d in DATASETS]
    files += sorted(p for d in DATASETS for p in (root / f"models/{d}/export").iterdir())
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in files}


def _commit(root: Path, message: str, tag: str | None = None) -> None:
    _run(["git", "add", "-A"], root)
    _run(["git", "commit", "-q", "-m", message], root)
    if tag:
        _run(["git", "tag", tag], root)


@pytest.fixture(scope="module")
def v1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo pipeline run once, committed and tagged v1, with a local folder remote."""
    root = tmp_path_factory.mktemp("versions") / "project"
    for rel in _project_files():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, root / rel)
    _set(root / "params.yaml", demo__n_base=N_BASE, matte__model="u2netp",
         prepare__resolution=128, train__kimg=0.05, train__resolution=32, split__k=3,
         split__min_confidence=0.6)
    _run(["git", "init", "-q"], root)
    _run(["dvc", "remote", "add", "-d", "shared", str(root.parent / "remote")], root)
    _commit(root, "project")
    _run(["dvc", "repro"], root)
    _commit(root, "v1: the demo datasets", tag="v1")
    return root


def _wait_for_queue(root: Path, timeout_s: float = 1500) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = _run(["dvc", "queue", "status"], root)
        if not any(s in status for s in ("Queued", "Running")):
            return status
        time.sleep(5)
    _run(["dvc", "queue", "kill", "--force", "--all"], root)
    pytest.fail(f"the queued experiment did not finish in {timeout_s} s:\n{status}")


def test_a_queued_experiment_runs_on_the_workspaces_caches(v1: Path) -> None:
    lock = (v1 / "dvc.lock").read_bytes()
    _run(["dvc", "exp", "run", "--queue", "-S", "train.kimg=0.1", "-n", "longer"], v1)
    _run(["dvc", "queue", "start"], v1)
    status = _wait_for_queue(v1)
    log = _run(["dvc", "queue", "logs", "longer"], v1)
    assert "Success" in status, f"{status}\n{log}"
    assert "Stage 'demo-data' didn't change" in log  # the raw inputs came from DVC's cache
    assert "experiment: using the workspace's" in log
    assert "matte: 0 matted, 0 re-measured" in log  # every matte from the shared cache
    shown = json.loads(_run(["dvc", "exp", "show", "--json"], v1))
    experiments = [e for rev in shown for e in (rev.get("experiments") or [])]
    assert any(e.get("name") == "longer" for e in experiments), shown
    # Its curation outputs are the workspace's, hash for hash; only training differs.
    (ref,) = [r for r in _run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"],
                              v1).split() if r.endswith("/longer")]
    theirs = yaml.safe_load(_run(["git", "show", f"{ref}:dvc.lock"], v1))["stages"]
    ours = yaml.safe_load(lock)["stages"]
    curation = sorted(s for s in ours if not s.startswith("train"))
    assert {s: theirs[s]["outs"] for s in curation} == {s: ours[s]["outs"] for s in curation}
    assert theirs["train@0"]["params"] != ours["train@0"]["params"]
    # The workspace is as it was: same lock, nothing for DVC to redo, no copy left behind.
    assert (v1 / "dvc.lock").read_bytes() == lock
    assert "up to date" in _run(["dvc", "status"], v1)
    assert not list((v1 / ".dvc/tmp/exps").glob("tmp*"))


def test_push_then_a_fresh_clone_pulls_the_same_datasets_and_models(v1: Path) -> None:
    _run(["dvc", "push"], v1)
    clone = v1.parent / "clone"
    _run(["git", "clone", "-q", str(v1), str(clone)], v1.parent)
    _run(["dvc", "pull"], clone)
    assert _outputs(clone) == _outputs(v1)
    assert (clone / "data/demo/raw").is_dir()  # the raw inputs are versioned too
    assert not (clone / "data/store").exists()  # per-image state: rebuilt, never pulled


@pytest.fixture(scope="module")
def v2(v1: Path) -> tuple[Path, dict[str, bytes]]:
    """A second dataset version (prepare at 64 px), committed and tagged v2; v1's outputs."""
    before = _outputs(v1)
    _set(v1 / "params.yaml", prepare__resolution=64)
    _run(["dvc", "repro", "prepare"], v1)
    _commit(v1, "v2: 64 px datasets", tag="v2")
    return v1, before


def test_checkout_of_a_tag_brings_its_datasets_back(v2: tuple[Path, dict[str, bytes]]) -> None:
    root, v1_outputs = v2
    v2_outputs = _outputs(root)
    zips = [f"data/datasets/{d}.zip" for d in DATASETS]
    assert all(v2_outputs[z] != v1_outputs[z] for z in zips)
    _run(["git", "checkout", "-q", "v1"], root)
    _run(["dvc", "checkout"], root)
    assert _outputs(root) == v1_outputs
    _run(["git", "checkout", "-q", "v2"], root)
    _run(["dvc", "checkout"], root)
    assert _outputs(root) == v2_outputs


def test_gc_frees_earlier_settings_and_keeps_what_the_pipeline_uses(
        v2: tuple[Path, dict[str, bytes]]) -> None:
    root, _ = v2
    prepared = root / ".cache/curate/prepare"
    folders = sorted(p.name for p in prepared.iterdir())
    cards = {json.loads((root / f"data/datasets/{d}.json").read_text())["settings_hash"]
             for d in DATASETS}
    assert set(folders) > cards  # v1's crops are still there
    dry = _run(["curate", "gc", "--dry-run"], root)
    assert "would free" in dry and "prepare: crops of earlier settings" in dry
    assert "ingest records of files gone" in dry  # the experiment's copy's file records
    assert sorted(p.name for p in prepared.iterdir()) == folders
    out = _run(["curate", "gc"], root)
    assert "freed" in out
    assert {p.name for p in prepared.iterdir()} == cards
    assert "nothing deleted" in _run(["curate", "gc", "--dry-run"], root)
    # What the current datasets use is intact: re-preparing is all cache hits, same bytes.
    zips = {d: (root / f"data/datasets/{d}.zip").read_bytes() for d in DATASETS}
    out = _run(["dvc", "repro", "--force", "--single-item", "prepare"], root)
    assert out.count("from cache") >= len(DATASETS) and " 0 from cache" not in out
    assert {d: (root / f"data/datasets/{d}.zip").read_bytes() for d in DATASETS} == zips
