"""The demo generator: deterministic, atomic, and its ground truth agrees with its pixels."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from curate.demo.generate import generate_demo, mask_name

N_BASE = 16


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo"
    generate_demo(out, seed=3, n_base=N_BASE, workers=2)
    return out


def test_same_seed_same_bytes_whatever_the_worker_count(demo: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate_demo(again, seed=3, n_base=N_BASE, workers=1)
    assert _digest(again) == _digest(demo)


def test_rerun_is_a_no_op_and_foreign_folders_are_left_alone(demo: Path, tmp_path: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in demo.rglob("*")}
    summary = generate_demo(demo, seed=3, n_base=N_BASE)
    assert summary.reused and {p: p.stat().st_mtime_ns for p in demo.rglob("*")} == before
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "precious.jpg").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="not made by"):
        generate_demo(foreign, seed=3, n_base=N_BASE)
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_ground_truth_hashes_and_sizes_match_the_files(demo: Path) -> None:
    truth = pd.read_parquet(demo / "ground_truth.parquet")
    assert set(truth.kind) == {"base", "exact_duplicate", "near_duplicate", "repost", "outlier",
                               "bad"}
    plain = truth[(truth.expected == "stored") & ~truth.file.str.contains("!")]
    for row in plain.itertuples():
        data = (demo / "raw" / row.file).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row.sha256
        if row.subkind not in ("exif_rotated",):
            with Image.open(demo / "raw" / row.file) as im:
                assert im.size == (row.width, row.height), row.file
    exact = truth[truth.kind == "exact_duplicate"]
    parents = truth.set_index("file").loc[exact.duplicate_of]
    assert list(parents.sha256) == list(exact.sha256)


def test_boxes_and_keypoints_agree_with_the_masks(demo: Path) -> None:
    truth = pd.read_parquet(demo / "ground_truth.parquet")
    soles = truth[(truth.kind == "base") & (truth.category == "soles")]
    assert len(soles) >= 3
    for row in soles.itertuples():
        mask = np.asarray(Image.open(demo / "truth" / "masks" / mask_name(row.file))) > 127
        ys, xs = np.nonzero(mask)
        assert abs(xs.min() - row.bbox_x) <= 2 and abs(ys.min() - row.bbox_y) <= 2
        assert abs(xs.max() + 1 - (row.bbox_x + row.bbox_w)) <= 2
        assert abs(ys.max() + 1 - (row.bbox_y + row.bbox_h)) <= 2
        for x, y in ((row.heel_x, row.heel_y), (row.toe_x, row.toe_y)):
            assert row.bbox_x <= x <= row.bbox_x + row.bbox_w
            assert row.bbox_y <= y <= row.bbox_y + row.bbox_h
        d = np.array([row.toe_x - row.heel_x, row.toe_y - row.heel_y])
        assert np.degrees(np.arctan2(-d[0], -d[1])) == pytest.approx(row.rotation_deg, abs=1e-6)


def test_label_studio_export_has_the_real_shape(demo: Path) -> None:
    export = json.loads((demo / "labelstudio_export.json").read_text())
    truth = pd.read_parquet(demo / "ground_truth.parquet")
    tagged = truth.dropna(subset=["ls_task_id"])
    assert {t["id"] for t in export} == set(tagged.ls_task_id.astype(int))
    by_task = {int(r.ls_task_id): r for r in tagged.itertuples()}
    for task in export:
        row = by_task[task["id"]]
        assert task["data"]["image_id"] == row.sha256
        for ann in task["annotations"]:
            expected = {"completed_by", "was_cancelled", "result", "created_at", "updated_at"}
            assert expected <= set(ann)
            for region in ann["result"]:
                assert (region["original_width"], region["original_height"]) == (row.width,
                                                                                   row.height)
                if region["type"] == "rectanglelabels":
                    v = region["value"]
                    assert 0 <= v["x"] <= 100 and 0 < v["width"] <= 100
                    # percent -> pixels lands within a few pixels of the true box
                    assert abs(v["x"] / 100 * row.width - row.bbox_x) < 0.05 * max(row.width,
                                                                                 row.height)


def test_reposts_cover_every_kind_with_geometry_that_follows_the_edit(demo: Path) -> None:
    """Every repost kind is planted in the batches that collect reposts; its box stays in the
    image, and a mirrored copy's keypoints are the parent's reflected."""
    from curate.demo.reposts import REPOST_KINDS

    truth = pd.read_parquet(demo / "ground_truth.parquet")
    reposts = truth[truth.kind == "repost"]
    assert set(reposts.subkind) == set(REPOST_KINDS)
    assert reposts.file.str.match(r"photos/(reposts|forum-scrape)/").all()
    assert (reposts[reposts.subkind == "combo"].edits.str.count(r"\+") == 1).all()
    parents = truth.set_index("file").loc[reposts.duplicate_of]
    for row, parent in zip(reposts.itertuples(), parents.itertuples()):
        assert 0 <= row.bbox_x and row.bbox_x + row.bbox_w <= row.width + 1e-6, row.file
        assert 0 <= row.bbox_y and row.bbox_y + row.bbox_h <= row.height + 1e-6, row.file
        if row.edits == "mirror":
            assert row.heel_x == pytest.approx(parent.width - parent.heel_x)
            assert row.heel_y == pytest.approx(parent.heel_y)
            assert row.rotation_deg == pytest.approx(-parent.rotation_deg, abs=1e-6)
