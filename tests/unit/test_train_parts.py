"""Pieces of the train stage that need no training run: config, networks, ADA, random
streams, EMA, export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.config import ConfigError
from train.augment import ADAController, Augmenter, preview_grid
from train.config import ADAConfig, EMAConfig, load_train_config, train_config_from_mapping
from train.ema import ema_beta
from train.export import ExportError, export_generator, load_generator
from train.models import build_models
from train.models.stylegan2 import minibatch_stddev
from train.rng import BatchRandom
from train.synthetic import tiny_config
from train.visuals import parse_seeds

REPO = Path(__file__).resolve().parents[2]
ALL_OPS = ["xflip", "rotate90", "translate", "scale", "rotate", "color", "cutout"]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # 2 threads on a busy 2-core machine are 100x slower, not 2x


def test_params_yaml_train_section_loads() -> None:
    cfg = load_train_config(REPO / "params.yaml")
    assert cfg.model in ("dcgan", "wgan_gp", "stylegan2")


def test_config_errors_name_key_and_allowed_values() -> None:
    with pytest.raises(ConfigError, match=r"train\.model: got 'gan', expected one of"):
        train_config_from_mapping({"model": "gan"})
    with pytest.raises(ConfigError, match=r"train\.ada\.ops\[0\]: got 'flip'"):
        train_config_from_mapping({"ada": {"ops": ["flip"]}})
    with pytest.raises(ConfigError, match=r"train\.dcgan: unknown key 'lr'"):
        train_config_from_mapping({"dcgan": {"lr": 1}})
    with pytest.raises(ConfigError, match="power of two"):
        train_config_from_mapping({"resolution": 48})
    with pytest.raises(ConfigError, match="kernel_size: got 3"):
        train_config_from_mapping({"dcgan": {"kernel_size": 3}})


def test_wgan_gp_defaults_follow_the_paper() -> None:
    w = train_config_from_mapping({"model": "wgan_gp"}).wgan_gp
    assert (w.lr, tuple(w.betas), w.gp_lambda, w.n_critic, w.clip) == (1e-4, (0.0, 0.9), 10.0,
                                                                       5, None)


def test_dynamics_hash_ignores_run_length_and_cadence() -> None:
    base = train_config_from_mapping(tiny_config("dcgan"))
    longer = base.replace(kimg=100.0, checkpoint_kimg=7.0, keep_checkpoints=9,
                          batch_per_device=4, loader_workers=3)
    assert base.dynamics_hash() == longer.dynamics_hash()
    assert base.dynamics_hash() != base.replace(batch=16).dynamics_hash()
    assert base.dynamics_hash() != base.replace(seed=1).dynamics_hash()


@pytest.mark.parametrize("model", ["dcgan", "wgan_gp", "stylegan2"])
@pytest.mark.parametrize("resolution", [8, 32])
def test_networks_shapes(model: str, resolution: int) -> None:
    cfg = train_config_from_mapping(tiny_config(model, dcgan={"kernel_size": 5}))
    G, D = build_models(cfg, resolution)
    z = torch.randn(4, G.z_dim)
    x = G(z)
    assert x.shape == (4, 3, resolution, resolution) and D(x).shape == (4,)
    has_bn = any(isinstance(m, torch.nn.BatchNorm2d) for m in D.modules())
    assert has_bn == (model == "dcgan" and resolution > 8)  # WGAN-GP critic: no batch norm


@pytest.mark.parametrize("resolution", [256, 512])
def test_stylegan2_builds_at_full_resolution(resolution: int) -> None:
    cfg = train_config_from_mapping({"model": "stylegan2", "stylegan2": {
        "channel_base": 512, "channel_max": 8, "z_dim": 16, "w_dim": 16, "mapping_layers": 2}})
    G, D = build_models(cfg, resolution)
    with torch.no_grad():
        x = G(torch.randn(2, 16))
        assert x.shape == (2, 3, resolution, resolution) and D(x).shape == (2,)
    assert G.num_ws == 2 * (resolution.bit_length() - 1) - 2


def test_truncation_zero_gives_the_mean_image() -> None:
    cfg = train_config_from_mapping(tiny_config("stylegan2"))
    G, _ = build_models(cfg, 16)
    G.eval()
    with torch.no_grad():
        a, b = G(torch.randn(2, G.z_dim), psi=0.0)
    assert torch.allclose(a, b, atol=1e-6)


def test_batch_random_rows_do_not_depend_on_the_split() -> None:
    full = BatchRandom(torch.Generator().manual_seed(3), 8, slice(0, 8), torch.device("cpu"))
    whole = full.randn(5)
    for rows in (slice(0, 4), slice(4, 8), slice(2, 3)):
        part = BatchRandom(torch.Generator().manual_seed(3), 8, rows, torch.device("cpu"))
        assert torch.equal(part.randn(5), whole[rows])


def test_minibatch_stddev_groups_are_consecutive() -> None:
    x = torch.randn(8, 3, 4, 4)
    whole = minibatch_stddev(x, 2)
    halves = torch.cat([minibatch_stddev(x[:4], 2), minibatch_stddev(x[4:], 2)])
    assert torch.allclose(whole, halves)


def _rand(n: int = 16, seed: int = 0) -> BatchRandom:
    return BatchRandom(torch.Generator().manual_seed(seed), n, slice(0, n), torch.device("cpu"))


def test_augment_identity_at_zero_and_differentiable() -> None:
    aug = Augmenter(ALL_OPS)
    x = torch.rand(16, 3, 16, 16) * 2 - 1
    aug.p = 0.0
    assert torch.equal(aug(x, _rand()), x)
    aug.p = 1.0
    x.requires_grad_(True)
    y = aug(x, _rand())
    assert y.shape == x.shape and not torch.allclose(y, x)
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # Flip alone at p=1 flips about half of the images, exactly.
    flip = Augmenter(["xflip"])
    flip.p = 1.0
    out = flip(x.detach(), _rand(seed=4))
    flipped = [bool(torch.allclose(o, i.flip(-1), atol=1e-5))
               for o, i in zip(out, x.detach(), strict=True)]
    same = [bool(torch.allclose(o, i, atol=1e-5)) for o, i in zip(out, x.detach(), strict=True)]
    assert all(f or s for f, s in zip(flipped, same, strict=True)) and 0 < sum(flipped) < 16


def test_preview_does_not_touch_training_randomness() -> None:
    aug = Augmenter(ALL_OPS)
    state = torch.get_rng_state()
    grid = preview_grid(torch.zeros(4, 3, 8, 8), aug, 0.8, repeats=2)
    assert grid.shape == (12, 3, 8, 8) and aug.p == 0.0
    assert torch.equal(state, torch.get_rng_state())


def test_ada_controller_moves_toward_target_and_clamps() -> None:
    ada = ADAController(ADAConfig(target=0.6, p_max=0.5, speed_kimg=1.0))
    assert ada.p == 0.0
    assert ada.update(0.1, 100) == 0.0            # below target at 0: clamped at 0
    ps = [ada.update(0.9, 100) for _ in range(8)]  # overfitting: p rises 0.1 per 100 images
    assert ps[:5] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5]) and max(ps) == 0.5  # p_max
    assert ada.update(0.3, 200) == pytest.approx(0.3)  # below target: falls
    assert ada.update(0.6, 200) == pytest.approx(0.3)  # on target: stays
    fixed = ADAController(ADAConfig(target=None, p_init=0.25))
    assert fixed.update(1.0, 10_000) == 0.25
    restored = ADAController(ADAConfig())
    restored.load_state_dict(ada.state_dict())
    assert restored.p == ada.p


def test_ema_half_life_in_images() -> None:
    cfg = EMAConfig(half_life_kimg=1.0, rampup=None)
    assert ema_beta(cfg, 1000, 10**6) == pytest.approx(0.5)
    assert ema_beta(cfg, 500, 10**6) ** 2 == pytest.approx(0.5)
    ramp = EMAConfig(half_life_kimg=10.0, rampup=0.05)
    assert ema_beta(ramp, 100, 2000) == pytest.approx(0.5)  # half-life capped at 100 images


def test_export_roundtrip_and_tamper_check(tmp_path: Path) -> None:
    cfg = train_config_from_mapping(tiny_config("stylegan2"))
    G, _ = build_models(cfg, 16)
    G.eval()
    spec = export_generator(G, tmp_path / "export", {"model": "stylegan2"})
    G2, meta = load_generator(spec.parent)
    z = torch.randn(3, G.z_dim)
    with torch.no_grad():
        assert torch.equal(G(z), G2(z))
    assert meta["architecture"] == "stylegan2" and meta["resolution"] == 16
    (tmp_path / "export" / "generator.pt").write_bytes(b"garbage")
    with pytest.raises(ExportError, match="sha256"):
        load_generator(spec)
    with pytest.raises(ExportError, match="not found"):
        load_generator(tmp_path / "nothing")


def test_parse_seeds() -> None:
    assert parse_seeds("0-3,7, 10-11") == [0, 1, 2, 3, 7, 10, 11]
    with pytest.raises(ValueError, match="bad seed list"):
        parse_seeds("a-b")
