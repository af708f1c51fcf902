"""The helper commands the README lists, run as the installed entry points: `curate models
check`, `train env` and `train toy-data`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from core import models
from train.cli import LAUNCH_VARS
from train.data import inspect_zip

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


def _run(args: list[str], env: dict[str, str] | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess:
    exe = shutil.which(args[0], path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    assert exe, f"{args[0]} is not installed next to {sys.executable}"
    full_env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    full_env.update({"COLUMNS": "250", "NO_COLOR": "1", **(env or {})})
    return subprocess.run([exe, *args[1:]], env=full_env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _provisioned() -> Path:
    path = models.default_models_dir()
    bad = [s.name for s in models.check(path) if not s.ok]
    if bad:
        pytest.fail(f"models {bad} missing under {path}: run `make models` first")
    return path


def _state_of(output: str) -> dict[str, str]:
    """model name -> state, from the rows of the `offline models` table."""
    states = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if len(cells) >= 2 and cells[0] in {s.name for s in models.MODELS}:
            states[cells[0]] = cells[1]
    return states


def test_models_check_says_every_provisioned_model_is_ok() -> None:
    _provisioned()
    proc = _run(["curate", "models", "check"])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert _state_of(out) == {s.name: "ok" for s in models.MODELS}


def test_models_check_names_a_missing_and_a_modified_model_and_exits_1(tmp_path: Path) -> None:
    src = _provisioned()
    mobilenet, u2netp = (next(s for s in models.MODELS if s.name == n)
                         for n in ("mobilenet_v2", "u2netp"))
    for spec in models.MODELS:  # the others linked (no 300 MB copy), their sidecars copied
        if spec in (mobilenet, u2netp):
            continue
        target = tmp_path / spec.relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(src / spec.relpath)
        sidecar = Path(f"{src / spec.relpath}{models.SIDECAR_SUFFIX}")
        if sidecar.exists():
            shutil.copy2(sidecar, f"{target}{models.SIDECAR_SUFFIX}")
    modified = tmp_path / u2netp.relpath
    modified.parent.mkdir(parents=True, exist_ok=True)
    data = bytearray((src / u2netp.relpath).read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte changed, same size
    modified.write_bytes(bytes(data))
    proc = _run(["curate", "models", "check", "--dest", str(tmp_path)])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    states = _state_of(out)
    assert states["mobilenet_v2"] == "missing" and states["u2netp"] == "corrupt", out
    assert all(states[s.name] == "ok" for s in models.MODELS if s not in (mobilenet, u2netp))
    assert "curate models provision" in out


def _rows(output: str) -> dict[str, str]:
    return {c[0]: c[1] for c in ([x.strip() for x in line.strip("│ ").split("│")]
                                 for line in output.splitlines()) if len(c) == 2}


def test_train_env_shows_torch_backends_and_the_launcher_variables() -> None:
    import torch

    plain = _run(["train", "env"])
    assert _rows(plain.stdout + plain.stderr)["launcher"] == "none"
    proc = _run(["train", "env"], env={"RANK": "3", "WORLD_SIZE": "8", "MASTER_PORT": "29512"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    rows = _rows(out)
    assert rows["torch"] == torch.__version__
    assert rows["cuda_available"] == str(torch.cuda.is_available())
    assert "gloo" in rows["backends"].split(", ")
    launcher = rows["launcher"]
    assert all(f"'{k}': '{v}'" in launcher
               for k, v in (("RANK", "3"), ("WORLD_SIZE", "8"), ("MASTER_PORT", "29512")))


def test_train_toy_data_writes_a_valid_dataset_zip(tmp_path: Path) -> None:
    out = tmp_path / "toy.zip"
    proc = _run(["train", "toy-data", "--out", str(out), "--images", "12", "--resolution", "16"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    info = inspect_zip(out)  # the validation `train fit` runs
    assert (info.size, info.resolution, info.labels) == (12, 16, None)
    with zipfile.ZipFile(out) as zf:
        assert json.loads(zf.read("dataset.json"))["labels"] is None
    labelled = tmp_path / "labelled.zip"
    proc = _run(["train", "toy-data", "--out", str(labelled), "--images", "12",
                 "--resolution", "16", "--classes", "3"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    info = inspect_zip(labelled)
    assert info.classes() == 3 and sorted(info.labels.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    proc = _run(["train", "toy-data", "--out", str(tmp_path / "bad.zip"), "--classes", "1"])
    assert proc.returncode == 2 and not (tmp_path / "bad.zip").exists()
    assert "--classes 1" in proc.stdout + proc.stderr
