"""Matte building blocks without a neural model: mask statistics, compositing, keying, GrabCut."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curate.matte.backends import BACKENDS, backend_class, make_backend
from curate.matte.config import MatteConfig
from curate.matte.stats import mask_stats
from curate.matte.worker import composite


def studio_shot(seed: int = 0, size: tuple[int, int] = (300, 400)) -> tuple[np.ndarray, np.ndarray]:
    """A warm ellipse on a slightly mottled light-grey backdrop, and its true mask."""
    rng = np.random.default_rng(seed)
    h, w = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[:] = (225, 228, 222)
    img += (y / h * 12)[..., None]  # a gentle vertical gradient (studio sweep)
    img += rng.normal(0, 1.5, img.shape)
    inside = ((x - w * 0.5) / (w * 0.18)) ** 2 + ((y - h * 0.5) / (h * 0.35)) ** 2 < 1
    img[inside] = (190, 120, 95)
    img[inside] += rng.normal(0, 6, (int(inside.sum()), 3))
    return np.clip(img, 0, 255).astype(np.uint8), inside


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_mask_stats_of_a_clean_hard_mask() -> None:
    rgb, truth = studio_shot()
    stats = mask_stats(rgb, truth.astype(np.uint8) * 255)
    assert stats["fg_fraction"] == pytest.approx(truth.mean(), abs=0.01)
    assert stats["boundary_sharpness"] == pytest.approx(1.0)
    assert stats["separation"] > 0.9


def test_mask_stats_see_soft_and_wrong_masks() -> None:
    rgb, truth = studio_shot()
    soft = np.full(truth.shape, 100, np.uint8)  # the matte hesitates everywhere
    soft[truth] = 150
    assert mask_stats(rgb, soft)["boundary_sharpness"] < 0.2
    # a mask that cuts through the backdrop only: both sides have the same colours
    wrong = np.zeros(truth.shape, np.uint8)
    wrong[:40, :] = 255
    assert mask_stats(rgb, wrong)["separation"] < 0.3
    empty = mask_stats(rgb, np.zeros(truth.shape, np.uint8))
    assert empty["fg_fraction"] == 0.0 and np.isnan(empty["separation"])
    assert np.isnan(empty["boundary_sharpness"])


def test_composite_blends_on_background() -> None:
    rgb = np.full((2, 3, 3), 100, np.uint8)
    mask = np.array([[0, 128, 255], [255, 0, 64]], np.uint8)
    out = composite(rgb, mask, (255, 255, 255))
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 2].tolist() == [100, 100, 100]
    assert out[0, 1, 0] == round(100 * 128 / 255 + 255 * (1 - 128 / 255))


def test_backend_factory_and_settings() -> None:
    assert set(BACKENDS) == {"rembg", "border_key", "grabcut"}
    cfg = MatteConfig(method="border_key")
    assert backend_class(cfg).settings(cfg)["tolerance"] == cfg.border_key.tolerance
    rembg_cfg = MatteConfig(model="u2netp")
    assert backend_class(rembg_cfg).settings(rembg_cfg)["model"] == "u2netp"
    with pytest.raises(ValueError, match="known: rembg"):
        backend_class(dataclasses.replace(cfg, method="magic"))


@pytest.mark.parametrize("method", ["border_key", "grabcut"])
def test_model_free_backends_cut_out_a_studio_shot(method: str, tmp_path: Path) -> None:
    rgb, truth = studio_shot()
    backend = make_backend(MatteConfig(method=method), tmp_path)  # no model needed
    mask = backend.mask(Image.fromarray(rgb))
    assert mask.shape == truth.shape and mask.dtype == np.uint8
    assert iou(mask > 127, truth) > 0.95
    again = backend.mask(Image.fromarray(rgb))
    np.testing.assert_array_equal(mask, again)  # deterministic (seeded k-means / GrabCut)


def test_border_key_finds_nothing_on_a_blank_image(tmp_path: Path) -> None:
    blank = np.full((120, 160, 3), 230, np.uint8)
    mask = make_backend(MatteConfig(method="border_key"), tmp_path).mask(Image.fromarray(blank))
    assert mask.max() == 0


def test_poor_separation_flags_a_matte_whose_sides_share_their_colours() -> None:
    """mask_stats -> the matte checks at params.yaml's default thresholds, as the matte stage
    judges: a mask around the subject passes, one that cuts the backdrop in two is flagged."""
    import pandas as pd

    from curate.matte.config import MatteChecks
    from curate.quality.checks import evaluate_all, reasons_per_row

    rgb, truth = studio_shot()
    wrong = np.zeros(truth.shape, np.uint8)
    wrong[:, :60] = 255  # a strip of backdrop only
    frame = pd.DataFrame([mask_stats(rgb, truth.astype(np.uint8) * 255), mask_stats(rgb, wrong)],
                         index=["subject", "backdrop"])
    results = evaluate_all(frame, MatteChecks(), sources=("matte",))
    reasons = reasons_per_row(results, frame.index)
    assert reasons["subject"] == []
    assert "poor_separation" in reasons["backdrop"]
