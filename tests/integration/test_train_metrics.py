"""FID/KID as a pipeline run computes them (`train.metrics.fid: true`, the provisioned
Inception weights), with N reported, and the run's live/ folder read by `dvc metrics show`
and `dvc plots show` themselves."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.models import ModelMissingError, require
from train.config import train_config_from_mapping
from train.stage import run_fit
from train.synthetic import make_blob_dataset, tiny_config

# about 2.7 minutes on a loaded 2-core machine (Inception on the CPU): slow
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _dvc(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    dvc = Path(sys.executable).parent / "dvc"
    return subprocess.run([str(dvc), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False, env={**os.environ, "DVC_NO_ANALYTICS": "1"})


def test_fid_kid_with_n_in_the_log_metrics_json_and_dvc_metrics_show(tmp_path: Path) -> None:
    try:
        require("inception_fid")
    except ModelMissingError:
        pytest.fail("Inception weights not provisioned: run `make models`")
    repo = tmp_path / "repo"
    repo.mkdir()
    assert _dvc(["init", "--no-scm", "-q"], repo).returncode == 0
    data = make_blob_dataset(repo / "toy.zip", 48, 16)
    cfg = train_config_from_mapping(tiny_config(
        "dcgan", kimg=0.032, metrics={"fid": True, "num_gen": 40, "kid_subset": 20}))
    lines: list[str] = []
    out = repo / "models" / "toy"
    assert run_fit(cfg, data, out, lines.append, device="cpu", metrics=True) == 0, lines
    fid_lines = [line for line in lines if line.startswith("FID ")]
    assert len(fid_lines) == 1 and "(N gen 40, N real 48)" in fid_lines[0], lines
    metrics = json.loads((out / "live" / "metrics.json").read_text())
    assert metrics["fid_n_gen"] == 40 and metrics["fid_n_real"] == 48
    assert math.isfinite(metrics["fid"]) and metrics["fid"] > 0
    assert math.isfinite(metrics["kid"]) and metrics["kid_std"] >= 0
    assert f"FID {metrics['fid']:.2f} " in fid_lines[0]
    shown = _dvc(["metrics", "show", "--json", "models/toy/live/metrics.json"], repo)
    assert shown.returncode == 0, shown.stderr
    assert f"{metrics['fid']}"[:6] in shown.stdout and "fid_n_gen" in shown.stdout
    plots = _dvc(["plots", "show", "--json", "models/toy/live/plots/metrics"], repo)
    assert plots.returncode == 0, plots.stderr
    series = sorted((out / "live" / "plots" / "metrics").rglob("*.tsv"))
    assert series  # the per-tick losses
    for tsv in series:
        assert tsv.relative_to(repo).as_posix() in plots.stdout, tsv
