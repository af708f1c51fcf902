"""The prepare stage on a small store: export format, card, cache, incremental rerun."""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.config import PathsConfig
from core.manifest import write_table
from core.store import Store, content_id
from curate.config import Params
from curate.prepare.augment import AugmentConfig
from curate.prepare.config import PrepareConfig
from curate.stages.prepare import PrepareError, PrepareOptions, run_prepare

pytestmark = pytest.mark.integration


def _photo(seed: int, w: int = 160, h: int = 120) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _setup(tmp: Path, n: int) -> tuple[Params, PrepareOptions, pd.DataFrame]:
    params = Params(workers=1, paths=PathsConfig(store=tmp / "store", cache=tmp / "cache"),
                    # source: matte, but no image has a matte: the originals are used
                    prepare=PrepareConfig(resolution=64, augment=AugmentConfig(mirror=True),
                                          source="matte"))
    store = Store(params.paths.store)
    rows = []
    for k in range(n):
        data = _photo(k, 160 + 8 * k, 120)
        image_id = content_id(data)
        store.put(data, image_id, "png")
        rows.append({"image_id": image_id, "source": "folder", "source_uri": f"f/{k}.png",
                     "width": 160 + 8 * k, "height": 120, "store_path": store.relpath(image_id,
                                                                                      "png"),
                     "status": "ok" if k else "outlier", "reason": None if k else "blurry",
                     "distribution": "soles",
                     # the matte stage's subject selection: a part dropped (k=2), a cut (k=3),
                     # an edge trim too small to count (k=4)
                     "m_parts_dropped": float(k == 2), "m_subject_removed": 0.2 * (k == 3)
                     + 0.01 * (k == 4)})
    manifest = pd.DataFrame(rows)
    write_table(manifest, tmp / "split.parquet", sort_by=["image_id"])
    tags = pd.DataFrame({"image_id": [rows[1]["image_id"]], "kp_heel_x": [80.0],
                         "kp_heel_y": [100.0], "kp_toe_x": [80.0], "kp_toe_y": [20.0],
                         "bbox_x": [np.nan], "bbox_y": [np.nan], "bbox_w": [np.nan],
                         "bbox_h": [np.nan], "bbox_rotation": [np.nan]})
    write_table(tags, tmp / "merged.parquet", sort_by=["image_id"])
    options = PrepareOptions(split_manifest=tmp / "split.parquet", tags=tmp / "merged.parquet",
                             matte_dir=tmp / "matte", datasets_dir=tmp / "datasets",
                             out_dir=tmp / "prepare", workers=1)
    return params, options, manifest


def test_export_card_and_incremental_rerun(tmp_path: Path) -> None:
    params, options, manifest = _setup(tmp_path, 6)
    first = run_prepare(params, "soles", options)
    assert first.cached == 0
    zip_path = options.datasets_dir / "soles.zip"
    with zipfile.ZipFile(zip_path) as zf:
        names = sorted(zf.namelist())
        assert names[-1] == "dataset.json" and len(names) == 1 + 2 * 5  # outlier left out
        assert json.loads(zf.read("dataset.json")) == {"labels": None}
        assert Image.open(zf.open(names[0])).size == (64, 64)
    card = json.loads((options.datasets_dir / "soles.json").read_text())
    assert card["images"] == 10 and card["source_images"] == 5
    assert card["per_alignment_method"] == {"center": 4, "keypoints": 1}
    assert card["removed_upstream"] == {"blurry": 1}
    assert card["matte_clutter_removed"] == 2
    markdown = (options.datasets_dir / "soles.md").read_text()
    assert "2 of 5 source images had clutter removed" in markdown
    assert card["keypoint_angle_weights"] is None  # one image has keypoints: nothing to weigh
    assert "Keypoint angles as the annotators' points give them" in markdown
    grid = np.asarray(Image.open(options.datasets_dir / "soles_grid.png").convert("RGB"))
    assert grid.shape[0] > 128  # one row of tiles and the caption strip under it
    cleaned = {row.image_id for row in manifest.itertuples() if row.source_uri in
               ("f/2.png", "f/3.png")}
    tiles = sorted(manifest.image_id[manifest.status == "ok"])
    marked = [tuple(grid[2, 128 * k + 2]) == (255, 140, 0) for k in range(len(tiles))]
    assert marked == [i in cleaned for i in tiles]
    table = pd.read_parquet(options.out_dir / "soles" / "manifest.parquet")
    assert set(table["transform"]) == {"aligned", "mirror"}
    before = zip_path.read_bytes()

    again = run_prepare(params, "soles", options)
    assert again.cached == 5 and zip_path.read_bytes() == before  # same bytes from the cache

    params2, options2, _ = _setup(tmp_path, 7)  # one more image
    third = run_prepare(params2, "soles", options2)
    assert third.cached == 5
    assert len(zipfile.ZipFile(zip_path).namelist()) == 1 + 2 * 6


def test_changed_keypoints_or_mask_prepare_that_image_again(tmp_path: Path) -> None:
    """The cache is per image and per what its crop comes from: an annotator who moves a
    keypoint, or a matte made again, re-prepares that image (and only it)."""
    params, options, manifest = _setup(tmp_path, 4)
    run_prepare(params, "soles", options)
    zip_path = options.datasets_dir / "soles.zip"
    before = zip_path.read_bytes()
    tags = pd.read_parquet(options.tags)
    tags.loc[0, "kp_toe_x"] = 110.0  # the toe moved: the crop turns
    write_table(tags, options.tags, sort_by=["image_id"])
    moved = run_prepare(params, "soles", options)
    assert moved.cached == 2 and zip_path.read_bytes() != before

    mask = options.matte_dir / "masks" / "one.png"
    mask.parent.mkdir(parents=True)
    Image.fromarray(np.pad(np.full((40, 60), 255, np.uint8), ((40, 40), (50, 50)))).save(mask)
    with_mask = manifest.assign(mask_path=[None, None, "masks/one.png", None])  # k=2: live
    write_table(with_mask, options.split_manifest, sort_by=["image_id"])
    params = dataclasses.replace(params, prepare=dataclasses.replace(
        params.prepare, match_keypoint_framing=False))
    first = run_prepare(params, "soles", options)
    Image.fromarray(np.pad(np.full((60, 40), 255, np.uint8), ((30, 30), (60, 60)))).save(mask)
    again = run_prepare(params, "soles", options)  # the mask's file changed: made again
    assert again.cached == first.cached + first.computed - 1


def test_unknown_distribution_and_tiny_images_are_explained(tmp_path: Path) -> None:
    params, options, _ = _setup(tmp_path, 3)
    with pytest.raises(PrepareError, match="split.distributions"):
        run_prepare(params, "nope", options)
    big = dataclasses.replace(params, prepare=dataclasses.replace(params.prepare,
                                                                 resolution=512))
    with pytest.raises(PrepareError, match="upscale"):  # 120 px -> 512 needs 4x: not blurred
        run_prepare(big, "soles", options)
    table = pd.read_parquet(options.out_dir / "soles" / "manifest.parquet")
    assert "upscale" in set(table.reason.dropna())
