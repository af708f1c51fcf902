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
import yaml
from PIL import Image

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
N_BASE = 40


def _project_files() -> list[str]:
    """Files a clean clone would have: tracked plus untracked-but-not-ignored."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout
    # dvc.lock belongs to this checkout's own runs: the copy starts as a fresh clone would.
    return [f for f in out.splitlines() if (REPO / f).is_file() and f != "dvc.lock"]


def _run(cmd: list[str], cwd: Path) -> str:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(cmd, check=False, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def _fast_params(path: Path) -> None:
    """The same pipeline, sized for a test: the fast matte model, small datasets, a short run."""
    params = yaml.safe_load(path.read_text())
    params["demo"]["n_base"] = N_BASE  # the demo-data stage generates the raw inputs
    params["matte"]["model"] = "u2netp"
    params["prepare"]["resolution"] = 128
    params["train"].update(kimg=0.2, resolution=32)
    # ~40 demo photos leave about 5 tagged live images: let 3 neighbours vote, not 10.
    params["split"].update(k=3, min_confidence=0.6)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def _fresh_clone(root: Path) -> Path:
    """The project's files copied into `root` as a clean clone has them, with test params."""
    for rel in _project_files():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, root / rel)
    _run(["git", "init", "-q"], root)
    _fast_params(root / "params.yaml")
    return root


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = _fresh_clone(tmp_path_factory.mktemp("repo"))
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


def test_dedup_finds_the_planted_duplicates(repo_copy: Path) -> None:
    """Every planted near-duplicate and at least 90% of the reposts (the issue's goal per kind,
    with 2 of each kind here) end in their original's cluster; the original is kept for the
    copies that lost pixels, quality or framing; byte-identical copies are one row with all
    their URIs; no two distinct demo images are linked."""
    truth = pd.read_parquet(repo_copy / "data/demo/ground_truth.parquet")
    truth = truth[truth.expected == "stored"]
    out = pd.read_parquet(repo_copy / "data/dedup/manifest.parquet").set_index("image_id")
    sha = dict(zip(truth.file, truth.sha256))
    near = truth[truth.kind.isin(["near_duplicate", "repost"])]
    assert (truth.kind == "repost").sum() >= 16
    root = {s: s for s in out.index}
    for row in near.itertuples():
        root[row.sha256] = sha[row.duplicate_of]
    found = {}
    for row in near.itertuples():
        copy, original = out.loc[row.sha256], out.loc[sha[row.duplicate_of]]
        found[row.file] = (isinstance(copy.cluster_id, str)
                           and copy.cluster_id == original.cluster_id)
        if not found[row.file]:
            assert row.kind == "repost", row.file
            continue
        if row.subkind in ("resized", "cropped", "reencoded", "cropped_heavy", "screenshot"):
            kept = out.loc[original.cluster_id]
            assert root[kept.name] == kept.name, row.file  # an original, not another copy
            assert copy.status == "duplicate", row.file
        if copy.status == "duplicate" and copy.dup_kind == "verified":
            assert isinstance(copy["transform"], str), row.file  # .transform: a method
    reposts = near[near.kind == "repost"]
    assert sum(found[f] for f in reposts.file) >= 0.9 * len(reposts), found
    for row in truth[truth.kind == "exact_duplicate"].itertuples():
        uris = [u.rsplit("raw/", 1)[1] for u in out.loc[row.sha256, "source_uris"]]
        assert row.file in uris and row.duplicate_of in uris
    linked = out[out.cluster_id.notna()]
    assert all(root[i] == root[c] for i, c in zip(linked.index, linked.cluster_id))
    assert (out.status == "duplicate").sum() == sum(found.values())
    page = (repo_copy / "reports/duplicates.html").read_text()
    assert f"Clusters ({out.cluster_id.nunique()})" in page


def test_fast_decode_hashes_match_full_decode_on_the_demo(repo_copy: Path) -> None:
    """`dedup.fast_decode` hashes JPEGs from a half-scale decode; on at least 99% of the demo
    images that must be the hash of the full decode. This small demo has ~75 images, where one
    image is 1.3%: allow two (here a dark outlier and a captioned repost differ by 2 bits; the
    full demo, 587 images, agrees on all: bench/dedup_quality.py and the slow test in
    tests/integration/test_dedup_demo.py hold the 99% goal)."""
    from curate.dedup.hashing import HashSpec, hash_image

    manifest = pd.read_parquet(repo_copy / "data/ingest/manifest.parquet")
    store = repo_copy / "data/store"
    fast, full = HashSpec(fast_decode=True), HashSpec(fast_decode=False)
    same = [hash_image(store / r.store_path, r.width, r.height, fast, r.exif_orientation).value
            == hash_image(store / r.store_path, r.width, r.height, full, r.exif_orientation).value
            for r in manifest.itertuples()]
    differ = len(same) - sum(same)
    assert differ <= max(2, len(same) // 100), f"{differ} of {len(same)} hashes differ"


def test_datasets_hold_the_right_images(repo_copy: Path) -> None:
    """One StyleGAN zip per distribution; its images come from that distribution and are not
    planted duplicates or outliers (quality and dedup goals are >= 0.9, so allow a slip)."""
    import zipfile

    truth = pd.read_parquet(repo_copy / "data/demo/ground_truth.parquet")
    truth = truth[truth.expected == "stored"].drop_duplicates("sha256").set_index("sha256")
    for name in ("soles", "pov"):
        table = pd.read_parquet(repo_copy / f"data/prepare/{name}/manifest.parquet")
        live = table[table.status == "ok"]
        with zipfile.ZipFile(repo_copy / f"data/datasets/{name}.zip") as zf:
            pngs = [n for n in zf.namelist() if n.endswith(".png")]
        assert len(pngs) == len(live) >= 10
        parents = truth.loc[live[live.variant == 0].image_id]
        clean = parents.kind.isin(["base", "exact_duplicate", "bad"])
        assert clean.mean() >= 0.9, parents[~clean][["file", "kind", "subkind"]]
        assert (parents.category[clean] == name).mean() >= 0.9
        assert (repo_copy / f"data/datasets/{name}_grid.png").stat().st_size > 1000


def test_training_ran_and_exported(repo_copy: Path) -> None:
    for name in ("soles", "pov"):
        model = repo_copy / "models" / name
        assert (model / "export" / "generator.pt").exists()
        assert any((model / "checkpoints").iterdir())
        assert any(p.suffix == ".png" for p in (model / "samples").rglob("*"))


def test_dvc_metrics_and_plots_show_every_stages_figures(repo_copy: Path) -> None:
    """`dvc metrics show` and `dvc plots show`, as a user runs them after `dvc repro`, read the
    figures each stage wrote, and the figures agree with the stages' own tables."""
    import json

    metrics = json.loads(_run(["dvc", "metrics", "show", "--json"], repo_copy))[""]["data"]
    shown = {path: entry["data"] for path, entry in metrics.items()}
    for stage in ("ingest", "dedup", "quality", "matte", "split"):
        assert shown[f"data/{stage}/summary.json"]["stage"] == stage
    manifest = pd.read_parquet(repo_copy / "data/ingest/manifest.parquet")
    rejects = pd.read_parquet(repo_copy / "data/ingest/rejects.parquet")
    ingest = shown["data/ingest/summary.json"]["counts"]
    assert (ingest["stored"], ingest["rejected"]) == (len(manifest), len(rejects))
    dedup = pd.read_parquet(repo_copy / "data/dedup/manifest.parquet")
    assert shown["data/dedup/summary.json"]["counts"]["duplicate"] == int(
        (dedup.status == "duplicate").sum())
    assert shown["data/split/report.json"]["distributions"]
    for name in ("soles", "pov"):
        assert shown[f"data/prepare/{name}/summary.json"]["counts"]["exported"] > 0
        assert shown[f"models/{name}/live/metrics.json"]["step"] >= 0

    plots = json.loads(_run(["dvc", "plots", "show", "--json"], repo_copy))["data"]
    for name in ("soles", "pov"):
        curves = [k for k in plots if k.startswith(f"models/{name}/live/plots/metrics/")]
        assert curves, sorted(plots)
        for key in curves:
            values = plots[key][0]["content"]["data"]["values"]
            assert values and all("step" in v for v in values), key


@pytest.mark.slow
def test_the_pipeline_on_a_dask_cluster_gives_the_same_outputs(
        repo_copy: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """`compute.engine: dask` (a LocalCluster per stage): the same `dvc repro` on the same
    demo gives the same manifests and the same dataset bytes as the local pool.

    One column is equal only to float precision: the composites' embedding outlier score
    (`m_matte_outlier`, ~1e-5 relative). Its MobileNetV2 vectors are computed in Dask workers
    that just ran the subject model's features at another input size, and in fresh pool
    processes locally; every flag, mask and dataset byte is the same."""
    root = _fresh_clone(tmp_path_factory.mktemp("dask-repo"))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["compute"]["engine"] = "dask"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["dvc", "repro"], root)
    close = ["m_matte_outlier"]
    for stage in ("ingest", "dedup", "quality", "matte", "split"):
        rel = f"data/{stage}/manifest.parquet"
        ours, local = pd.read_parquet(root / rel), pd.read_parquet(repo_copy / rel)
        pd.testing.assert_frame_equal(ours.drop(columns=close, errors="ignore"),
                                      local.drop(columns=close, errors="ignore"), obj=rel)
        for column in close:
            if column in local:
                pd.testing.assert_series_equal(ours[column], local[column], rtol=1e-4,
                                               obj=f"{rel} {column}")
    for name in ("soles", "pov"):
        rel = f"data/datasets/{name}.zip"
        assert (root / rel).read_bytes() == (repo_copy / rel).read_bytes(), rel


def test_new_image_reruns_incrementally(repo_copy: Path, tmp_path: Path) -> None:
    """A new source folder (the demo's own raw folder is the demo-data stage's output, which
    DVC would put back): added to params, `curate pipeline`, `dvc repro`. In a copy of the
    project, so the other tests see the pipeline as `dvc repro` left it, in any order. The
    ingest cache knows a file by its absolute path: the copy's first ingest reads them all."""
    repo_copy = Path(shutil.copytree(repo_copy, tmp_path / "project", symlinks=True))
    _run(["curate", "ingest", "--params", "params.yaml", "--out", "data/ingest"], repo_copy)
    before = pd.read_parquet(repo_copy / "data/ingest/manifest.parquet")
    new = repo_copy / "new-batch/added.png"
    new.parent.mkdir(parents=True)
    Image.new("RGB", (320, 240), (200, 120, 90)).save(new)
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    params["ingest"]["sources"].append({"kind": "folder", "path": "new-batch"})
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["curate", "pipeline"], repo_copy)
    out = _run(["dvc", "repro", "ingest"], repo_copy)  # later stages: tested above
    after = pd.read_parquet(repo_copy / "data/ingest/manifest.parquet")
    assert len(after) == len(before) + 1
    # Only the new file was read: every other input came from the per-image cache.
    match = re.search(r"ingest: ([\d,]+) inputs in .* ([\d,]+) from cache", out)
    assert match, out
    inputs, cached = (int(g.replace(",", "")) for g in match.groups())
    assert cached == inputs - 1
