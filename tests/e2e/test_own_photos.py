"""A user's first run on their own untagged photos, as the README's "Using your own images"
tells it: `curate init` -> `dvc repro` gives a dataset and a model with no tags at all; then a
handful of images tagged in a real Label Studio server, `curate tags pull --use`, and the next
`dvc repro` builds one dataset per tagged category.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from label_studio_sdk import LabelStudio

from curate.demo.generate import generate_demo
from curate.project.edit import set_key
from curate.tags.localserver import LocalServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

BIN = Path(sys.executable).parent
TAGGED_PER_CATEGORY = 6


def _run(cmd: list[str], cwd: Path, **env: str) -> str:
    environ = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", **env)
    proc = subprocess.run(cmd, cwd=cwd, env=environ, capture_output=True, text=True,
                          timeout=900, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """A folder of untagged photos (the demo generator's raw files, bad ones included, no
    Label Studio export), a project made by `curate init`, and its first `dvc repro`."""
    root = tmp_path_factory.mktemp("own")
    generate_demo(root / "gen", seed=5, n_base=24, workers=2)
    shutil.copytree(root / "gen" / "raw", root / "my photos")
    truth = pd.read_parquet(root / "gen" / "ground_truth.parquet")
    project = root / "project"
    out = _run(["curate", "init", "--source", str(root / "my photos"), "--dir", str(project),
                "--categories", "soles,pov", "--resolution", "128", "--git", "--no-dvc-add"],
               root)
    assert "next steps" in out and "dvc repro" in out
    # The same journey, sized for a test: the fast matte model and a very short training run.
    set_key(project / "params.yaml", "matte.model", "u2netp")
    set_key(project / "params.yaml", "train.kimg", 0.2)
    _run(["dvc", "repro"], project)
    return project, truth


def test_first_repro_without_tags_gives_a_dataset_a_model_and_proposals(first_run) -> None:
    project, _ = first_run
    with zipfile.ZipFile(project / "data/datasets/all.zip") as zf:
        assert sum(n.endswith(".png") for n in zf.namelist()) >= 10
        assert json.loads(zf.read("dataset.json"))["labels"] is None
    assert (project / "models/all/export/generator.pt").exists()
    report = json.loads((project / "data/split/report.json").read_text())
    assert report["tagged"] == 0 and set(report["proposals"]) == {"cluster_0", "cluster_1"}
    assert report["sources"] == {"catch_all": sum(report["proposals"].values())}
    page = (project / "reports/split.html").read_text()
    assert 'data-name="cluster_0"' in page and "curate split --name" in page
    assert pd.read_parquet(project / "data/tags/merged.parquet").empty


def test_tagging_a_handful_in_label_studio_builds_the_named_distributions(first_run) -> None:
    project, truth = first_run
    category = truth.dropna(subset=["sha256"]).drop_duplicates("sha256").set_index(
        "sha256").category
    with LocalServer(project.parent / "ls-data", project) as server:
        env = {"LABEL_STUDIO_URL": server.url, "LABEL_STUDIO_API_KEY": server.admin.token}
        _run(["curate", "tags", "push", "--manifest", "data/split/manifest.parquet"], project,
             **env)
        ls = LabelStudio(base_url=server.url, api_key=server.admin.token)
        (proj,) = [p for p in ls.projects.list() if p.title == "gan-curate"]
        done = {"soles": 0, "pov": 0}
        for task in ls.tasks.list(project=proj.id, page_size=1000):
            label = category.get(task.data["image_id"])
            if label in done and done[label] < TAGGED_PER_CATEGORY:
                ls.annotations.create(id=task.id, lead_time=3.0, result=[{
                    "from_name": "category", "to_name": "image", "type": "choices",
                    "value": {"choices": [label]}}])
                done[label] += 1
        assert done == {"soles": TAGGED_PER_CATEGORY, "pov": TAGGED_PER_CATEGORY}
        out = _run(["curate", "tags", "pull", "--use"], project, **env)
    assert "added distribution pov" in out and "removed all (catch_all)" in out
    assert "tags/export.json" in (project / "dvc.yaml").read_text()  # now a DVC dependency
    _run(["dvc", "repro"], project)

    split = pd.read_parquet(project / "data/split/manifest.parquet")
    live = split[split.status == "ok"]
    assert (live.dist_source == "tag").sum() == 2 * TAGGED_PER_CATEGORY
    propagated = live[live.dist_source == "propagated"]
    assert len(propagated) >= 5
    assert (propagated.distribution.to_numpy()
            == category.loc[propagated.image_id].to_numpy()).mean() >= 0.8
    for name in ("soles", "pov"):
        assert (project / f"data/datasets/{name}.zip").stat().st_size > 0
        assert (project / f"models/{name}/export/generator.pt").exists()
    assert "up to date" in _run(["dvc", "status"], project)
