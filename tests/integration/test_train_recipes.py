"""Training recipes on CPU: every preset trains at tiny size, class labels reach the models
(a conditional generator draws the class it is asked for, judged by a classifier trained on
the toy data), each recipe's tricks do what they say (weight clipping with RMSProp, label
ranges and inversion, path length regularisation), mirroring is applied once, and a dataset
that grew continues its run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from core.config import ConfigError
from train.checkpoint import CheckpointManager
from train.cli import app
from train.config import TrainConfig, train_config_from_mapping
from train.data import DatasetError, inspect_zip
from train.export import load_generator
from train.losses import DCGANObjective, StepInputs
from train.presets import PRESETS
from train.rng import BatchRandom
from train.stage import run_fit
from train.synthetic import (
    label_accuracy,
    make_blob_dataset,
    tiny_config,
    tiny_preset,
    toy_classifier,
)

pytestmark = pytest.mark.integration
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_blob_dataset(tmp_path_factory.mktemp("toy") / "blobs.zip", 64, 32)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_blob_dataset(tmp_path_factory.mktemp("labelled") / "classes.zip", 64, 32,
                             classes=2)


def _fit(cfg: TrainConfig, data: Path, out: Path) -> tuple[int, list[str]]:
    lines: list[str] = []
    return run_fit(cfg, data, out, lines.append, device="cpu", metrics=False), lines


def _newest(out: Path, cfg: TrainConfig, data: Path) -> dict[str, Any]:
    mgr = CheckpointManager(out / "checkpoints", cfg.dynamics_hash(), inspect_zip(data).hash, 3)
    return mgr.load(mgr.mine()[-1].path)


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_trains_on_cpu(name: str, toy: Path, labelled: Path,
                                    tmp_path: Path) -> None:
    cfg = train_config_from_mapping(tiny_preset(name))
    code, lines = _fit(cfg, labelled if cfg.conditional else toy, tmp_path / name)
    assert code == 0, lines
    samples = tmp_path / name / "samples"
    for picture in ("final-grid.png", "truncation.png", "interpolation.gif"):
        assert (samples / picture).exists(), picture
    assert (samples / "class-interpolation.gif").exists() == cfg.conditional
    G, spec = load_generator(tmp_path / name / "export")
    assert spec["architecture"] == PRESETS[name].settings["model"].replace("wgan_gp", "dcgan")
    assert G.classes == (2 if cfg.conditional else 0)


def test_a_preset_sets_defaults_and_explicit_keys_win() -> None:
    cfg = train_config_from_mapping({"preset": "superheroes", "kimg": 10,
                                     "stylegan2": {"r1_gamma": 2.0}})
    assert (cfg.kimg, cfg.batch, cfg.resolution) == (10, 64, 512)
    assert cfg.stylegan2.r1_gamma == 2.0 and cfg.stylegan2.mbstd_group == 8
    assert cfg.ema.half_life_kimg == 20.0 and cfg.ada.target == 0.6
    clip = train_config_from_mapping({"preset": "wgan_clip"})
    assert (clip.wgan_gp.optimizer, clip.wgan_gp.clip, clip.wgan_gp.lr,
            clip.wgan_gp.n_critic, clip.wgan_gp.gp_lambda) == ("rmsprop", 0.01, 5e-5, 5, 0.0)
    with pytest.raises(ConfigError, match="unknown preset 'stylegan3'.*superheroes"):
        train_config_from_mapping({"preset": "stylegan3"})
    runner = CliRunner()
    listed = runner.invoke(app, ["presets"])
    assert listed.exit_code == 0 and all(name in listed.output for name in PRESETS)
    shown = runner.invoke(app, ["presets", "dcgan_simpsons"])
    assert shown.exit_code == 0 and "inverted_labels: true" in shown.output
    assert "real_label:\n    - 0.7\n    - 1.2" in shown.output


def test_a_conditional_generator_draws_the_class_it_is_asked_for(tmp_path: Path) -> None:
    data = make_blob_dataset(tmp_path / "classes.zip", 512, 16, classes=2)
    cfg = train_config_from_mapping(tiny_config(
        "dcgan", conditional=True, kimg=6, batch=16, mirror=False, tick_kimg=1,
        checkpoint_kimg=6, dcgan={"channels": 16}, ada={"enabled": False}))
    code, lines = _fit(cfg, data, tmp_path / "run")
    assert code == 0 and any("2 classes" in line for line in lines), lines
    G, _ = load_generator(tmp_path / "run" / "export")
    assert label_accuracy(G, toy_classifier(16, 2)) >= 0.9
    # Class-wise interpolation from the command line: z still, the class moving.
    res = CliRunner().invoke(app, ["interpolate", "--model", str(tmp_path / "run" / "export"),
                                   "--seeds", "0-2", "--classes", "0,1", "--frames", "4",
                                   "--out", str(tmp_path / "walk.png"),
                                   "--gif", str(tmp_path / "walk.gif")])
    assert res.exit_code == 0 and "5 frame(s)" in res.output, res.output
    res = CliRunner().invoke(app, ["sample", "--model", str(tmp_path / "run" / "export"),
                                   "--seeds", "0-3", "--class", "1", "--z-bound", "1.5",
                                   "--out", str(tmp_path / "ones.png")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["sample", "--model", str(tmp_path / "run" / "export"),
                                   "--class", "7", "--out", str(tmp_path / "bad.png")])
    assert res.exit_code == 2 and "class 7 does not exist" in res.output


def test_a_labelled_run_refuses_an_unlabelled_zip(toy: Path, tmp_path: Path) -> None:
    cfg = train_config_from_mapping(tiny_config("dcgan", conditional=True))
    with pytest.raises(DatasetError, match="no class labels.*--combined"):
        _fit(cfg, toy, tmp_path / "run")


def test_weight_clipping_with_rmsprop_keeps_the_critic_clipped(toy: Path,
                                                               tmp_path: Path) -> None:
    cfg = train_config_from_mapping(tiny_preset("wgan_clip", kimg=0.064))
    assert _fit(cfg, toy, tmp_path / "run")[0] == 0
    state = _newest(tmp_path / "run", cfg, toy)
    critic = [v for k, v in state["D"].items() if v.is_floating_point()]
    assert max(float(v.abs().max()) for v in critic) <= 0.01 + 1e-9
    assert any(float(v.abs().max()) == pytest.approx(0.01) for v in critic)  # clipping bites
    slots = next(iter(state["opt_D"]["state"].values()))
    assert "square_avg" in slots and "exp_avg" not in slots  # RMSProp, not Adam


def test_dcgan_targets_follow_the_ranges_flips_and_inversion() -> None:
    cfg = train_config_from_mapping({"preset": "dcgan_simpsons"}).dcgan
    batch = 20000

    def targets(objective: DCGANObjective) -> tuple[torch.Tensor, torch.Tensor]:
        rand = BatchRandom(torch.Generator().manual_seed(0), batch, slice(0, batch), CPU)
        return objective._targets(StepInputs(None, None, rand, None, None))  # type: ignore[arg-type]

    plain_real, plain_fake = targets(DCGANObjective(dataclasses.replace(cfg,
                                                                        inverted_labels=False)))
    flipped = plain_real <= 0.3
    assert flipped.float().mean() == pytest.approx(0.05, abs=0.01)
    real = plain_real[~flipped]
    assert real.min() >= 0.7 and real.max() <= 1.2 and real.max() > 1.15
    assert plain_fake[~flipped].max() <= 0.3
    inv_real, inv_fake = targets(DCGANObjective(cfg))
    assert torch.equal(inv_real, 1 - plain_real) and torch.equal(inv_fake, 1 - plain_fake)


def test_path_length_regularisation_runs_lazily_and_resumes(toy: Path, tmp_path: Path) -> None:
    cfg = train_config_from_mapping(tiny_config("stylegan2", kimg=0.128))
    code, lines = _fit(cfg, toy, tmp_path / "run")
    assert code == 0 and any(" PL " in line for line in lines), lines
    state = _newest(tmp_path / "run", cfg, toy)
    assert float(state["objective"]["pl_mean"]) > 0  # moved off 0 by the running mean
    lr = state["opt_G"]["param_groups"][0]["lr"]
    assert lr == pytest.approx(cfg.stylegan2.lr * 2 / 3)  # Adam adjusted for lazy PL (every 2)


def test_mirroring_is_applied_once(toy: Path, tmp_path: Path) -> None:
    data = tmp_path / "mirrored.zip"
    data.write_bytes(toy.read_bytes())
    data.with_suffix(".json").write_text(json.dumps({"augmentation": {"mirror": True}}))
    cfg = train_config_from_mapping(tiny_config("dcgan", kimg=0.032, mirror=True))
    code, lines = _fit(cfg, data, tmp_path / "run")
    assert code == 0 and any("not mirrored again" in line for line in lines), lines
    spec = json.loads((tmp_path / "run" / "export" / "generator.json").read_text())
    assert spec["dataset"]["mirror"] is False
    report = json.loads((tmp_path / "run" / "report" / "memorisation.json").read_text())
    assert 0 <= report["nearest_is_mirror_share"] <= 1


def test_a_grown_dataset_continues_its_run_and_records_the_lineage(tmp_path: Path) -> None:
    data = make_blob_dataset(tmp_path / "set.zip", 64, 16)
    first = inspect_zip(data).hash
    cfg = train_config_from_mapping(tiny_config("dcgan", kimg=0.064))
    assert _fit(cfg, data, tmp_path / "run")[0] == 0
    make_blob_dataset(data, 66, 16)  # the same 64 images and 2 new ones
    code, lines = _fit(cfg.replace(kimg=0.128), data, tmp_path / "run")
    assert code == 0
    assert any("dataset changed (64 -> 66 images): continuing from 0.1 kimg" in line
               for line in lines), lines
    state = _newest(tmp_path / "run", cfg, data)
    assert state["progress"]["images"] == 128 and state["progress"]["data_from"] == 64
    lineage = json.loads((tmp_path / "run" / "export" / "generator.json").read_text())["lineage"]
    assert [(part["dataset"], part["from_kimg"], part["to_kimg"]) for part in lineage] == [
        (first, 0.0, 0.064), (inspect_zip(data).hash, 0.064, 0.128)]
    assert "Trained on" in (tmp_path / "run" / "report" / "memorisation.html").read_text()
    # `fresh` starts over on the next version.
    make_blob_dataset(data, 68, 16)
    code, lines = _fit(cfg.replace(kimg=0.128, on_new_data="fresh"), data, tmp_path / "run")
    assert code == 0 and any("starting fresh" in line for line in lines), lines
    assert not any("continuing" in line for line in lines)
    # ... from image 0 on the new version alone: its lineage is that version only
    lineage = json.loads((tmp_path / "run" / "export" / "generator.json").read_text())["lineage"]
    assert [(part["dataset"], part["from_kimg"], part["to_kimg"]) for part in lineage] == [
        (inspect_zip(data).hash, 0.0, 0.128)]
    fresh_cfg = cfg.replace(kimg=0.128, on_new_data="fresh")
    mgr = CheckpointManager(tmp_path / "run" / "checkpoints", fresh_cfg.dynamics_hash(),
                            inspect_zip(data).hash, 3)
    assert [c.images for c in mgr.mine()] == [64, 96, 128]  # its own, from 0 (the last 3)


def test_keep_checkpoints_prunes_all_but_the_newest(toy: Path, tmp_path: Path) -> None:
    cfg = train_config_from_mapping(tiny_config("dcgan", kimg=0.096, checkpoint_kimg=0.016,
                                                keep_checkpoints=2))
    code, lines = _fit(cfg, toy, tmp_path / "run")
    assert code == 0, lines
    files = sorted((tmp_path / "run" / "checkpoints").glob("*.pt"))
    mgr = CheckpointManager(tmp_path / "run" / "checkpoints", cfg.dynamics_hash(),
                            inspect_zip(toy).hash, cfg.keep_checkpoints)
    assert [c.images for c in mgr.mine()] == [80, 96]  # 6 written, the last 2 kept
    assert files == [c.path for c in mgr.mine()]  # nothing else left behind (no temp files)
    assert mgr.load(files[-1])["progress"]["images"] == 96
