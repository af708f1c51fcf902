"""Project files: templates, `curate init`, params edits that keep comments, and the no-tags
first run's messages."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from core.config import ConfigError
from curate.config import load_params
from curate.project.edit import name_proposals, set_key, use_categories
from curate.project.init import InitError, InitOptions, init_project
from curate.project.render import DEMO, render_params, render_pipeline, unwatched, unwatched_warning
from curate.stages.prepare import why_empty
from curate.stages.tags import TagsError, run_import
from train.config import load_train_config

REPO = Path(__file__).resolve().parents[2]


def test_repo_params_and_pipeline_are_the_demo_rendering() -> None:
    """One source for both files: edit the templates (curate/project/templates), not these."""
    assert (REPO / "params.yaml").read_text() == render_params(DEMO)
    assert (REPO / "dvc.yaml").read_text() == render_pipeline(load_params(REPO / "params.yaml"),
                                                              REPO)


def test_the_demo_pipeline_makes_and_versions_its_own_raw_inputs() -> None:
    """The demo's raw files are a cached stage output, so a queued experiment's copy of the
    workspace, a clone after `dvc pull` and `dvc checkout` of a tag all get them."""
    params = load_params(REPO / "params.yaml")
    assert params.demo is not None and params.demo.n_base == 420
    assert params.paths.experiments == "shared"
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    demo = stages["demo-data"]
    assert demo["cmd"] == ("curate demo-data --out data/demo --n-base ${demo.n_base} "
                           "--seed ${demo.seed}")
    assert demo["params"] == ["demo"] and demo["outs"] == ["data/demo"]  # cached: versioned
    assert "data/demo/raw" in stages["ingest"]["deps"]  # inside the demo's output: one DAG
    assert "data/demo/labelstudio_export.json" in stages["tags"]["deps"]
    assert {"data/store": {"persist": True, "cache": False}} in stages["ingest"]["outs"]


def test_a_users_project_has_no_demo_stage_and_an_outside_store_is_no_output(
        tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    project = _init(tmp_path, tmp_path / "photos")
    params = load_params(project / "params.yaml")
    assert params.demo is None and params.paths.experiments == "shared"
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    assert "demo-data" not in stages
    assert {"data/store": {"persist": True, "cache": False}} in stages["ingest"]["outs"]
    set_key(project / "params.yaml", "paths.store", str(tmp_path / "shared-store"))
    stages = yaml.safe_load(render_pipeline(load_params(project / "params.yaml"), project)
                            )["stages"]
    # DVC refuses outputs outside the project: the manifest pins the store's content instead.
    assert not any("store" in str(o) for o in stages["ingest"]["outs"])


def test_init_dvc_adds_the_sources_it_can_version_and_says_how_for_the_others(
        tmp_path: Path) -> None:
    project = tmp_path / "proj"
    for folder in (project / "photos", project / "data" / "raw", tmp_path / "elsewhere"):
        folder.mkdir(parents=True)
    said: list[str] = []
    init_project(InitOptions(sources=(project / "photos", project / "data" / "raw",
                                      tmp_path / "elsewhere"), project=project, dvc_add=True),
                 run=lambda cmd, cwd: said.append(" ".join(map(str, cmd))), say=said.append)
    assert any(line.endswith("-m dvc add -q photos") for line in said)
    assert not any("dvc add -q data" in line for line in said)
    assert any("under data/" in line and "move it out" in line for line in said)
    assert any("dvc import-url" in line and "elsewhere" in line for line in said)


def test_demo_and_experiments_settings_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("demo: {n_base: 0}\n")
    with pytest.raises(ConfigError, match="demo.n_base"):
        load_params(path)
    path.write_text("paths: {experiments: mine}\n")
    with pytest.raises(ConfigError, match="paths.experiments.*'shared', 'own'"):
        load_params(path)


def _init(tmp_path: Path, *sources: Path, **options) -> Path:
    project = tmp_path / "proj"
    said: list[str] = []
    init_project(InitOptions(sources=sources, project=project, **options),
                 run=lambda cmd, cwd: said.append(" ".join(map(str, cmd))), say=said.append)
    return project


def test_init_writes_a_valid_project_for_the_sources(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "urls.csv").write_text("url\nhttp://example.com/a.jpg\n")
    project = _init(tmp_path, tmp_path / "photos", tmp_path / "urls.csv", resolution=256)
    params = load_params(project / "params.yaml")
    assert [(s.kind, s.path) for s in params.ingest.sources] == [
        ("folder", (tmp_path / "photos").resolve()), ("urls", (tmp_path / "urls.csv").resolve())]
    assert params.tags.snapshot is None and params.tags.categories == ()
    assert [(d.name, d.catch_all) for d in params.split.distributions] == [("all", True)]
    assert params.prepare.resolution == 256 and params.prepare.keypoints.names == ()
    pipeline = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    assert pipeline["ingest"]["deps"][:2] == [(tmp_path / "photos").resolve().as_posix(),
                                              (tmp_path / "urls.csv").resolve().as_posix()]
    assert pipeline["tags"]["deps"] == ["data/ingest/manifest.parquet"]  # no snapshot, no code
    assert unwatched("ingest", [s.path for s in params.ingest.sources], project) == []
    stale = unwatched_warning("ingest", [tmp_path / "added-later"], project)
    assert stale and "added-later" in stale and "curate pipeline" in stale
    assert (project / "tags" / "README.md").exists() and (project / ".gitignore").exists()


def test_init_refuses_what_would_not_work(tmp_path: Path) -> None:
    with pytest.raises(InitError, match="does not exist"):
        _init(tmp_path, tmp_path / "nowhere")
    (tmp_path / "notes.doc").write_text("x")
    with pytest.raises(InitError, match="not a folder, an archive"):
        _init(tmp_path, tmp_path / "notes.doc")
    (tmp_path / "photos").mkdir()
    with pytest.raises(InitError, match="expected two"):
        _init(tmp_path, tmp_path / "photos", keypoints=("heel",))
    project = _init(tmp_path, tmp_path / "photos")
    before = (project / "params.yaml").read_text()
    with pytest.raises(InitError, match="--force"):
        _init(tmp_path, tmp_path / "photos", resolution=128)
    assert (project / "params.yaml").read_text() == before
    _init(tmp_path, tmp_path / "photos", resolution=128, force=True)
    assert load_params(project / "params.yaml").prepare.resolution == 128


def test_full_training_values_are_the_real_run_ones(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    quick = load_train_config(_init(tmp_path, tmp_path / "photos") / "params.yaml")
    full = load_train_config(_init(tmp_path, tmp_path / "photos", train="full", force=True)
                       / "params.yaml")
    assert quick.resolution == 32 and quick.kimg < 10
    assert full.resolution is None and full.kimg >= 1000 and full.stylegan2.z_dim == 512


def test_naming_proposals_edits_params_and_keeps_comments(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    project = _init(tmp_path, tmp_path / "photos", categories=("soles", "pov"))
    path = project / "params.yaml"
    done = name_proposals(path, {"cluster_0": "soles"})
    assert done == ["added distribution soles", "cluster_0 -> soles"]
    params = load_params(path)
    assert [(d.name, d.categories, d.proposals) for d in params.split.distributions] == [
        ("all", (), ()), ("soles", ("soles",), ("cluster_0",))]
    text = path.read_text()
    assert "# decompression-bomb guard" in text and "snapshot: null" in text
    assert "num_real: null" in text  # nulls stay written as null
    done = name_proposals(path, {"cluster_1": "pov", "cluster_0": "feet"})
    params = load_params(path)
    assert [(d.name, d.proposals) for d in params.split.distributions] == [
        ("soles", ()), ("pov", ("cluster_1",)), ("feet", ("cluster_0",))]
    assert any("removed all" in line for line in done)  # nothing left for it to catch
    with pytest.raises(ConfigError, match="does not exist"):
        name_proposals(path, {"cluster_7": "x"})
    assert load_params(path).split.distributions == params.split.distributions  # untouched


def test_using_a_pull_gives_tag_categories_their_distributions(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    project = _init(tmp_path, tmp_path / "photos", categories=("soles", "pov"))
    path = project / "params.yaml"
    set_key(path, "tags.snapshot", "tags/export.json")
    done = use_categories(path, ["pov", "soles"])
    params = load_params(path)
    assert params.tags.snapshot == Path("tags/export.json")
    assert [(d.name, d.categories, d.catch_all) for d in params.split.distributions] == [
        ("pov", ("pov",), False), ("soles", ("soles",), False)]
    assert done[-1].startswith("removed all")
    assert use_categories(path, ["pov"]) == []  # already there: nothing to do


def test_no_snapshot_writes_empty_tag_tables(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    params = load_params(_init(tmp_path, tmp_path / "photos") / "params.yaml")
    result = run_import(params, None, tmp_path / "tags")
    merged = pd.read_parquet(result.outputs["merged"])
    assert "verdict" in merged.columns and sum(result.summary.counts.values()) == 0
    assert len(merged) == 0 and {"image_id", "category", "reject"} <= set(merged.columns)


def test_missing_snapshot_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    path = _init(tmp_path, tmp_path / "photos") / "params.yaml"
    set_key(path, "tags.snapshot", str(tmp_path / "gone.json"))
    with pytest.raises(TagsError, match="tags.snapshot points at a missing file .*curate tags "
                                        "pull.*tags.snapshot: null"):
        run_import(load_params(path), None, tmp_path / "tags")


def test_empty_distribution_explains_the_proposals() -> None:
    manifest = pd.DataFrame({"status": ["ok"] * 5 + ["outlier"],
                             "distribution": [None] * 6,
                             "proposal": ["cluster_0"] * 3 + ["cluster_1"] * 2 + [None]})
    message = why_empty("soles", manifest, Path("data/split/manifest.parquet"))
    assert message.startswith("no distribution has images yet: the split proposed cluster_0 "
                              "(3) and cluster_1 (2); name them (`curate split --name "
                              "cluster_0=soles`")
    manifest["distribution"] = ["pov"] * 5 + [None]
    assert "the split gave: pov (5)" in why_empty("soles", manifest, Path("m.parquet"))
