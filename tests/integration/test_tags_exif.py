"""Tag geometry is in pixels of the EXIF-upright image, from the export to the dataset: a photo
stored sideways with an EXIF orientation tag, annotated in percent of the upright image the
annotator's browser shows, gets pixel keypoints in the upright frame, and prepare puts the
marked points on their keypoint targets."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.config import PathsConfig
from core.manifest import read_table, write_table
from curate.config import Params
from curate.ingest.config import IngestConfig, SourceConfig
from curate.prepare.config import PrepareConfig
from curate.stages.ingest import IngestOptions, run_ingest
from curate.stages.prepare import PrepareOptions, run_prepare
from curate.stages.tags import run_import

pytestmark = pytest.mark.integration

UPRIGHT = (200, 300)  # width, height as displayed
HEEL, TOE = (60, 240), (140, 60)  # marker centres in upright pixels
EXIF_ORIENTATION = 0x0112


def _sideways_jpeg(path: Path) -> None:
    """A grey photo with a red disc at HEEL and a blue one at TOE (upright frame), stored
    rotated a quarter turn with orientation 6, as phone cameras write portrait shots."""
    yy, xx = np.mgrid[0:UPRIGHT[1], 0:UPRIGHT[0]]
    upright = np.full((UPRIGHT[1], UPRIGHT[0], 3), 128, np.uint8)
    for (cx, cy), colour in ((HEEL, (230, 20, 20)), (TOE, (20, 20, 230))):
        upright[(xx - cx) ** 2 + (yy - cy) ** 2 <= 12 ** 2] = colour
    # orientation 6: the viewer turns the stored pixels 90 degrees clockwise to show them
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(upright, k=1)))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    stored.save(path, quality=95, exif=exif)


def _export(image_id: str) -> list[dict]:
    def region(name: str, kind: str, value: dict) -> dict:
        return {"id": name, "from_name": name if kind != "keypointlabels" else "keypoints",
                "to_name": "image", "type": kind, "value": value,
                "original_width": UPRIGHT[0], "original_height": UPRIGHT[1],
                "image_rotation": 0}

    def point(label: str, xy: tuple[int, int]) -> dict:
        return region(label, "keypointlabels", {
            "x": 100 * xy[0] / UPRIGHT[0], "y": 100 * xy[1] / UPRIGHT[1], "width": 0.8,
            "keypointlabels": [label]})

    result = [region("category", "choices", {"choices": ["soles"]}),
              point("heel", HEEL), point("toe", TOE)]
    stamp = "2026-10-01T10:00:00Z"
    return [{"id": 1, "data": {"image": "/data/x.jpg", "image_id": image_id},
             "annotations": [{"id": 1, "completed_by": 1, "result": result,
                              "was_cancelled": False, "created_at": stamp,
                              "updated_at": stamp, "lead_time": 2.0}]}]


def _centroid(rgb: np.ndarray, channel: int) -> tuple[float, float]:
    others = [c for c in range(3) if c != channel]
    hit = (rgb[..., channel] > 150) & (rgb[..., others[0]] < 90) & (rgb[..., others[1]] < 90)
    ys, xs = np.nonzero(hit)
    assert len(xs) > 5, "marker not found in the dataset image"
    return float(xs.mean()) + 0.5, float(ys.mean()) + 0.5


def test_keypoints_tagged_on_an_exif_rotated_photo_land_on_their_targets(tmp_path: Path
                                                                          ) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    _sideways_jpeg(raw / "portrait.jpg")
    params = Params(workers=1, paths=PathsConfig(store=tmp_path / "store",
                                                 cache=tmp_path / "cache"),
                    ingest=IngestConfig(sources=(SourceConfig("folder", raw),)),
                    prepare=PrepareConfig(resolution=64, source="original"))
    run_ingest(params, IngestOptions(out_dir=tmp_path / "ingest"))
    manifest = read_table(tmp_path / "ingest/manifest.parquet")
    (row,) = manifest.itertuples()
    assert (row.width, row.height, row.exif_orientation) == (*UPRIGHT, 6)

    export = tmp_path / "export.json"
    export.write_text(json.dumps(_export(row.image_id)))
    run_import(params, export, tmp_path / "tags", tmp_path / "ingest/manifest.parquet")
    merged = read_table(tmp_path / "tags/merged.parquet").set_index("image_id")
    tagged = merged.loc[row.image_id]
    assert (tagged.kp_heel_x, tagged.kp_heel_y) == pytest.approx(HEEL)
    assert (tagged.kp_toe_x, tagged.kp_toe_y) == pytest.approx(TOE)
    assert not len(tagged.problems)  # the annotation's size is the stored image's upright size

    write_table(manifest.assign(distribution="soles"), tmp_path / "split.parquet",
                sort_by=["image_id"])
    run_prepare(params, "soles", PrepareOptions(
        split_manifest=tmp_path / "split.parquet", tags=tmp_path / "tags/merged.parquet",
        matte_dir=tmp_path / "matte", datasets_dir=tmp_path / "datasets",
        out_dir=tmp_path / "prepare", workers=1))
    card = json.loads((tmp_path / "datasets/soles.json").read_text())
    assert card["per_alignment_method"] == {"keypoints": 1}
    with zipfile.ZipFile(tmp_path / "datasets/soles.zip") as zf:
        (member,) = [n for n in zf.namelist() if n.endswith(".png")]
        rgb = np.asarray(Image.open(io.BytesIO(zf.read(member))).convert("RGB"))
    targets = params.prepare.keypoints.targets
    for channel, target in ((0, targets[0]), (2, targets[1])):  # red heel, blue toe
        x, y = _centroid(rgb, channel)
        assert (x, y) == pytest.approx((target[0] * 64, target[1] * 64), abs=1.5)
