"""A 100-megapixel photo (under the pixel guard) goes through every stage without any stage
taking gigabytes: stages decode at their working size where they can (reduced JPEG decode),
and the matte works at `matte.max_side`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
SIDE = 10_000  # 100 megapixels
#: What the huge photo may add to a stage's peak memory: decoding it whole costs 400 MB alone
#: (Pillow keeps RGB in 4 bytes a pixel), working at the matte's 4096 px side about 270 MB.
EXTRA_LIMIT_MB = 350


def _huge_photo(path: Path) -> None:
    small = np.random.default_rng(5).integers(0, 256, (40, 40, 3), np.uint8)
    Image.fromarray(small).resize((SIDE, SIDE), Image.Resampling.BICUBIC).save(path, quality=85)


def _peak_mb(cmd: str, cwd: Path) -> float:
    """Run `cmd` (one process: workers 1) and return its peak resident memory in MB."""
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", "sh", "-c", cmd], cwd=cwd,
                          capture_output=True, text=True, check=False,
                          env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
                               "CURATE_MODELS_DIR": str(REPO / "models" / "pretrained"),
                               "HOME": str(cwd)})
    assert proc.returncode == 0, f"{cmd}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return int(proc.stderr.strip().splitlines()[-1]) / 1024


def _run_pipeline(tmp_path: Path, images, name: str, with_huge: bool) -> tuple[Path, dict]:
    """The pipeline on six small photos (and the huge one); each stage's peak memory."""
    photos = tmp_path / f"{name}-photos"
    photos.mkdir()
    if with_huge:
        _huge_photo(photos / "huge.jpg")
    for i in range(6):
        images.write(photos / f"small{i}.jpg", images.jpeg(640, 480, seed=i))
    project = tmp_path / name
    subprocess.run([sys.executable, "-m", "curate.cli", "init", "--source", str(photos),
                    "--dir", str(project), "--resolution", "256", "--no-git", "--no-dvc-add"],
                   check=True, capture_output=True)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["workers"] = 1  # the stage's work runs in the measured process
    params["matte"]["model"] = "u2netp"
    for check in params["quality"]["checks"]:  # this test is about memory, not about outliers
        params["quality"]["checks"][check] = {"mode": "disabled", "value": 0}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    pipeline = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    peaks = {}
    for stage in ("ingest", "dedup", "tags", "quality", "matte", "split", "prepare"):
        spec = pipeline[stage].get("do", pipeline[stage])
        cmd = " ".join(spec["cmd"].split()).replace("${item.name}", "all")
        peaks[stage] = _peak_mb(cmd, project)
    return project, peaks


def test_a_100_megapixel_photo_through_every_stage(tmp_path: Path, images) -> None:
    """A stage that decoded the huge photo whole would exceed the margin."""
    _, small = _run_pipeline(tmp_path, images, "small", with_huge=False)
    project, huge = _run_pipeline(tmp_path, images, "huge", with_huge=True)
    extra = {stage: round(huge[stage] - small[stage]) for stage in huge}
    print("peak MB", huge, "extra MB for the huge photo", extra)
    assert max(extra.values()) < EXTRA_LIMIT_MB, extra
    ingested = pd.read_parquet(project / "data/ingest/manifest.parquet")
    huge_id = ingested.loc[ingested.width == SIDE, "image_id"].item()
    prepared = pd.read_parquet(project / "data/prepare/all/manifest.parquet")
    assert (prepared.loc[prepared.image_id == huge_id, "status"] == "ok").all()
    assert huge_id in set(prepared.image_id)
