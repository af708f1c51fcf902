"""u2net, the default matte model, as `curate matte` runs it with 2 worker processes: each
worker loads one ONNX session and keeps it for every image it mattes (a session costs seconds
and 176 MB), and the masks find the subject (or are flagged)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from core import models
from core.manifest import read_table
from curate.demo.shapes import render_foot

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

#: Loaded by every interpreter the run starts (the command, the forkserver and, through it,
#: each worker): logs "<pid> <model file>" for each ONNX Runtime session made.
SESSION_LOGGER = """
import os
import onnxruntime

_init = onnxruntime.InferenceSession.__init__


def _logged_init(self, path_or_bytes, *args, **kwargs):
    with open(os.environ["ONNX_SESSION_LOG"], "a") as fh:
        fh.write(f"{os.getpid()} {os.path.basename(str(path_or_bytes))}\\n")
    _init(self, path_or_bytes, *args, **kwargs)


onnxruntime.InferenceSession.__init__ = _logged_init
"""


def test_two_workers_load_one_u2net_session_each_and_find_the_feet(tmp_path: Path) -> None:
    models_dir = models.default_models_dir()
    if not models.check(models_dir, [s for s in models.MODELS if s.name == "u2net"])[0].ok:
        pytest.fail(f"u2net.onnx missing under {models_dir}: run `make models` first")
    raw = tmp_path / "raw"
    raw.mkdir()
    truth = {}
    for k in range(8):
        foot = render_foot(np.random.default_rng(70 + k), ("soles", "pov")[k % 2], 300, 360)
        buffer = io.BytesIO()
        Image.fromarray(foot.image).save(buffer, "JPEG", quality=92)
        (raw / f"foot{k}.jpg").write_bytes(buffer.getvalue())
        truth[f"foot{k}.jpg"] = foot.mask > 127
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({
        "workers": 2,
        "paths": {"store": str(tmp_path / "store"), "cache": str(tmp_path / "cache"),
                  "reports": str(tmp_path / "reports"), "models": str(models_dir)},
        "ingest": {"sources": [{"kind": "folder", "path": str(raw)}]},
        "matte": {"subject": {"enabled": False}},  # the backend's own masks
    }))
    assert "model" not in yaml.safe_load(params.read_text())["matte"]  # u2net by default
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SESSION_LOGGER)
    log = tmp_path / "sessions.log"
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=os.pathsep.join([str(site), str(REPO)]), ONNX_SESSION_LOG=str(log))
    for cmd in (["curate", "ingest", "--params", str(params), "--out", str(tmp_path / "ingest")],
                ["curate", "matte", "--params", str(params), "--manifest",
                 str(tmp_path / "ingest/manifest.parquet"), "--out", str(tmp_path / "matte")]):
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=900, stdin=subprocess.DEVNULL, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    sessions = Counter(tuple(line.split()) for line in log.read_text().splitlines())
    u2net = {pid: n for (pid, model), n in sessions.items() if model == "u2net.onnx"}
    assert len(u2net) == 2 and set(u2net.values()) == {1}, sessions  # 2 workers, 1 each
    assert not any(model == "u2netp.onnx" for _, model in sessions)

    # Clutter next to the foot is subject selection's to cut (off here); a mask that misses
    # the foot must be flagged by the matte checks.
    out = read_table(tmp_path / "matte/manifest.parquet")
    assert len(out) == 8 and out["mask_path"].notna().all()
    ious = []
    for row in out.itertuples():
        mask = np.asarray(Image.open(tmp_path / "matte" / row.mask_path)) > 127
        want = truth[Path(row.source_uri).name]
        ious.append((mask & want).sum() / (mask | want).sum())
        covered = (mask & want).sum() / want.sum()
        assert covered >= 0.9 or row.status == "outlier", (row.source_uri, covered)
    assert np.median(ious) > 0.95, ious
