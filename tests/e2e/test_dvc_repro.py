"""The demo pipeline end to end: `dvc repro` in a temporary copy of the repository.

This is what `make demo` does, on a smaller demo (the generator scales every planted case with
``--n-base``), checked against the demo's ground truth.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
N_BASE = 40


def _project_files() -> list[str]:
    """Files a clean clone would have: tracked plus untracked-but-not-ignored."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout
    return [f for f in out.splitlines() if (REPO / f).is_file()]


def _run(cmd: list[str], cwd: Path) -> str:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    for rel in _project_files():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, root / rel)
    _run(["git", "init", "-q"], root)
    _run(["curate", "demo-data", "--out", "data/demo", "--n-base", str(N_BASE)], root)
    _run(["dvc", "repro"], root)
    return root


def test_ingest_matches_ground_truth(repo_copy: Path) -> None:
    truth = pd.read_parquet(repo_copy / "data/demo/ground_truth.parquet")
    manifest = pd.read_parquet(repo_copy / "data/ingest/manifest.parquet")
    rejects = pd.read_parquet(repo_copy / "data/ingest/rejects.parquet")

    stored = truth[truth.expected == "stored"]
    assert set(manifest.image_id) == set(stored.sha256)
    for sha, group in stored.groupby("sha256"):  # every copy of a file is one row with all URIs
        row = manifest.set_index("image_id").loc[sha]
        assert sorted(u.rsplit("raw/", 1)[1] for u in row.source_uris) == sorted(group.file)
    expected = truth[truth.expected == "rejected"].set_index("file").reason.to_dict()
    got = {u.split("raw/", 1)[1]: r for u, r in zip(rejects.source_uri, rejects.reason)}
    assert got == expected
    for row in manifest.itertuples():  # stored bytes are the original bytes, decodable
        path = repo_copy / "data/store" / row.store_path
        assert path.stat().st_size == row.bytes
        with Image.open(path) as im:
            assert im.format == row.format


def test_second_repro_changes_nothing(repo_copy: Path) -> None:
    lock = (repo_copy / "dvc.lock").read_bytes()
    out = _run(["dvc", "repro"], repo_copy)
    assert "didn't change" in out or "up to date" in out
    assert (repo_copy / "dvc.lock").read_bytes() == lock
    assert _run(["dvc", "status"], repo_copy).strip().endswith("up to date.")


def test_new_image_reruns_incrementally(repo_copy: Path) -> None:
    before = pd.read_parquet(repo_copy / "data/ingest/manifest.parquet")
    new = repo_copy / "data/demo/raw/photos/new-batch/added.png"
    new.parent.mkdir(parents=True)
    Image.new("RGB", (320, 240), (200, 120, 90)).save(new)
    out = _run(["dvc", "repro"], repo_copy)
    after = pd.read_parquet(repo_copy / "data/ingest/manifest.parquet")
    assert len(after) == len(before) + 1
    # Only the new file was read: every other input came from the per-image cache.
    match = re.search(r"ingest: ([\d,]+) inputs in .* ([\d,]+) from cache", out)
    assert match, out
    inputs, cached = (int(g.replace(",", "")) for g in match.groups())
    assert cached == inputs - 1
