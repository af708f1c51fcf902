"""The train stage end to end on CPU: a short run writes every output, a killed run resumes
bit for bit, SIGTERM leaves a loadable checkpoint, non-finite steps roll back.

Runs are tiny (16 px, 8-image batches, a few dozen steps) so the module takes seconds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from core.polling import until
from train.checkpoint import CheckpointManager, first_difference
from train.cli import app
from train.config import TrainConfig, train_config_from_mapping
from train.data import inspect_zip
from train.export import load_generator
from train.loop import Trainer
from train.stage import run_fit
from train.synthetic import make_blob_dataset, tiny_config

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # 2 threads on a busy 2-core machine are 100x slower, not 2x


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_blob_dataset(tmp_path_factory.mktemp("data") / "blobs.zip", 64, 16)


def _fit(cfg: TrainConfig, data: Path, out: Path, metrics: bool = False) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = run_fit(cfg, data, out, lines.append, device="cpu", metrics=metrics)
    return code, lines


def _checkpoint(out: Path, cfg: TrainConfig, data: Path, newest: bool = True) -> dict[str, Any]:
    mgr = CheckpointManager(out / "checkpoints", cfg.dynamics_hash(), inspect_zip(data).hash, 3)
    files = mgr.mine()
    assert files, f"no checkpoint in {out}"
    return mgr.load(files[-1 if newest else 0].path)


def test_dcgan_trains_and_writes_every_output(dataset: Path, tmp_path: Path) -> None:
    cfg = train_config_from_mapping(tiny_config("dcgan", dcgan={"real_label": [0.85, 0.95],
                                                                "label_flip": 0.05,
                                                                "fake_label": [0.0, 0.05]}))
    out = tmp_path / "run"
    code, lines = _fit(cfg, dataset, out, metrics=True)
    assert code == 0, lines
    first = _checkpoint(out, cfg, dataset, newest=False)
    last = _checkpoint(out, cfg, dataset)
    assert last["progress"]["images"] == 64 and last["progress"]["iteration"] == 8
    changed = [not torch.equal(first["G"][k], last["G"][k]) for k in last["G"]]
    assert any(changed), "generator weights did not move"
    assert all(torch.isfinite(v).all() for v in last["G"].values() if v.is_floating_point())
    for name in ("reals.png", "fakes-000000kimg.png", "final-grid.png", "interpolation.png",
                 "ada-preview.png"):
        with Image.open(out / "samples" / name) as img:
            assert min(img.size) >= 64, name
    with Image.open(out / "samples" / "interpolation.gif") as gif:
        assert gif.n_frames == 2 * 3 + 1
    with Image.open(out / "samples" / "truncation.png") as sweep:  # |z| bounds (no W)
        assert sweep.width > sweep.height
    report = json.loads((out / "report" / "memorisation.json").read_text())
    assert report["samples"] == 8 and 0 <= report["near_copy_share"] <= 1
    assert "nearest training image" in (out / "report" / "memorisation.html").read_text()
    metrics = json.loads((out / "live" / "metrics.json").read_text())
    assert metrics["kimg"] == pytest.approx(0.064) and "loss" in metrics
    assert (out / "live" / "plots" / "metrics" / "loss" / "D.tsv").exists()
    # The export serves `train sample` and `train interpolate`.
    runner = CliRunner()
    res = runner.invoke(app, ["sample", "--model", str(out / "export"), "--seeds", "0-5",
                              "--cols", "3", "--z-bound", "1.0", "--out", str(tmp_path / "s.png")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["sample", "--model", str(out / "export"), "--psi", "0.5",
                              "--out", str(tmp_path / "s.png")])
    assert res.exit_code == 2 and "--z-bound" in res.output
    res = runner.invoke(app, ["interpolate", "--model", str(out / "export"), "--seeds", "1,2",
                              "--frames", "4", "--out", str(tmp_path / "i.png"),
                              "--gif", str(tmp_path / "i.gif")])
    assert res.exit_code == 0, res.output
    with Image.open(tmp_path / "i.gif") as gif:
        assert gif.n_frames == 5
    # Rerunning a finished run trains nothing and rewrites the outputs.
    code, lines = _fit(cfg, dataset, out)
    assert code == 0 and any("nothing to train" in line for line in lines)


@pytest.mark.parametrize(("model", "ada"), [
    ("stylegan2", {"speed_kimg": 0.1}),            # ADA p moving, lazy R1, style mixing, noise
    ("wgan_gp", {"target": None, "p_init": 0.3}),  # n_critic, gradient penalty, fixed p
])
def test_resume_after_a_kill_is_bit_exact(model: str, ada: dict[str, Any], dataset: Path,
                                          tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = train_config_from_mapping(tiny_config(model, kimg=0.128, checkpoint_kimg=0.064,
                                                ada=ada))
    code, _ = _fit(cfg, dataset, tmp_path / "straight")
    assert code == 0
    straight = _checkpoint(tmp_path / "straight", cfg, dataset)

    save = Trainer.save_checkpoint

    def save_then_die(self: Trainer) -> Path | None:
        path = save(self)
        if self.progress.images >= 64:
            raise KeyboardInterrupt("killed right after the mid-run checkpoint")
        return path

    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        _fit(cfg, dataset, tmp_path / "split")
    monkeypatch.setattr(Trainer, "save_checkpoint", save)
    code, lines = _fit(cfg, dataset, tmp_path / "split")
    assert code == 0 and any("resumed from 0.1 kimg" in line for line in lines), lines
    resumed = _checkpoint(tmp_path / "split", cfg, dataset)
    assert resumed["images"] == straight["images"] == 128
    assert straight["ada"]["p"] > 0  # augmenting, and for StyleGAN2 the controller moved
    for key in ("G", "D", "G_ema", "opt_G", "opt_D", "ada", "objective", "lineage", "rng",
                "progress", "sampler"):
        assert first_difference(straight[key], resumed[key], key) is None
    a, _ = load_generator(tmp_path / "straight" / "export")
    b, _ = load_generator(tmp_path / "split" / "export")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(),
                                 strict=True):
        assert torch.equal(x, y), name


def test_other_settings_start_fresh_and_keep_old_checkpoints(dataset: Path,
                                                             tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = train_config_from_mapping(tiny_config("dcgan", kimg=0.032))
    assert _fit(cfg, dataset, out)[0] == 0
    before = set((out / "checkpoints").iterdir())
    other = cfg.replace(seed=7)
    code, lines = _fit(other, dataset, out)
    assert code == 0 and any("belong to other settings" in line for line in lines)
    assert before <= set((out / "checkpoints").iterdir())
    # Raising kimg is not another setting: it continues the first run.
    code, lines = _fit(cfg.replace(kimg=0.064), dataset, out)
    assert code == 0 and any("resumed from" in line for line in lines)


def test_non_finite_gradients_roll_back(dataset: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from train.losses import DCGANObjective

    cfg = train_config_from_mapping(tiny_config("dcgan", kimg=0.128, max_bad_steps=2))
    calls = {"n": 0}
    g_loss = DCGANObjective.g_loss

    def poisoned(self: DCGANObjective, step: Any) -> Any:
        calls["n"] += 1
        loss, stats = g_loss(self, step)
        if 6 <= calls["n"] < 8:  # two bad generator steps in a row, once
            loss = loss * float("nan")
        return loss, stats

    monkeypatch.setattr(DCGANObjective, "g_loss", poisoned)
    code, lines = _fit(cfg, dataset, tmp_path / "run")
    assert code == 0
    assert sum("step skipped" in line for line in lines) == 2
    assert any("rolled back to 0.0 kimg" in line for line in lines), lines
    state = _checkpoint(tmp_path / "run", cfg, dataset)
    assert state["progress"]["rollbacks"] == 1 and state["progress"]["images"] == 128
    assert all(torch.isfinite(v).all() for v in state["G"].values() if v.is_floating_point())


@pytest.mark.parametrize("how", ["SIGTERM to the process", "Ctrl-C to the process group"])
def test_signal_writes_a_loadable_checkpoint_and_exits_cleanly(how: str, dataset: Path,
                                                               tmp_path: Path) -> None:
    # One loader worker: Ctrl-C reaches it too, and it must keep serving until the checkpoint.
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"train": tiny_config(
        "dcgan", kimg=1000.0, checkpoint_kimg=1000.0, tick_kimg=0.016, loader_workers=1)}))
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([str(BIN / "train"), "fit", "--params", str(params), "--data",
                             str(dataset), "--out", str(out), "--threads", "1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    ticks = out / "live" / "plots" / "metrics" / "kimg.tsv"

    def training() -> bool:
        assert proc.poll() is None, proc.communicate()[0]
        return ticks.exists() and len(ticks.read_text().splitlines()) >= 3

    until(training, "two ticks of training", 120, interval=0.2)
    signum = signal.SIGTERM if how.startswith("SIGTERM") else signal.SIGINT
    if how.startswith("SIGTERM"):
        proc.send_signal(signum)
    else:
        os.killpg(proc.pid, signum)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, output
    assert "checkpoint written; run the same command again" in output
    assert "Traceback" not in output
    cfg = train_config_from_mapping(yaml.safe_load(params.read_text())["train"])
    state = _checkpoint(out, cfg, dataset)
    assert state["progress"]["images"] >= 32  # not the initial one: written on the signal
    code, lines = _fit(cfg.replace(kimg=state["images"] / 1000 + 0.016), dataset, out)
    assert code == 0 and any("resumed from" in line for line in lines)


def test_bf16_autocast_path_runs(dataset: Path, tmp_path: Path) -> None:
    """bf16 is the GPU default; on CPU it can be asked for, which exercises the same code."""
    cfg = train_config_from_mapping(tiny_config("stylegan2", kimg=0.016, precision="bf16",
                                                ada={"target": None, "p_init": 0.5}))
    code, lines = _fit(cfg, dataset, tmp_path / "run")
    assert code == 0 and any("bf16 autocast" in line for line in lines)
    state = _checkpoint(tmp_path / "run", cfg, dataset)
    assert all(v.dtype != torch.bfloat16 for v in state["G"].values())  # weights stay fp32
