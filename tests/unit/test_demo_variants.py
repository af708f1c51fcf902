"""The demo's out-of-sample variant and its second subject (figures): deterministic, their ground
truth consistent with their pixels, and the default demo unchanged."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from curate.demo import figures
from curate.demo.generate import (
    NEAR_KINDS_SHIFTED,
    OUTLIER_KINDS_SHIFTED,
    Flavour,
    Job,
    generate_demo,
    plan_demo,
    render_job,
)
from curate.demo.shapes import render_foot
from curate.prepare.align import angle_error, keypoint_crop, rotation_of

#: sha256 of six small pov renders (seeds 0-5, 240x200) as the generator drew them before the
#: variant existed (cable clutter included): the default demo must stay byte-identical.
DEFAULT_POV_DIGEST = "abcdd48c02c3edbf8b6990bfc94bbb2a3da7624e804796eb7b7f872277d815a9"
EYE_TARGETS = ((0.4, 0.3), (0.6, 0.3))  # FIGURES' prepare.keypoints.targets


def test_default_renders_are_unchanged() -> None:
    h = hashlib.sha256()
    for seed in range(6):
        h.update(render_foot(np.random.default_rng(seed), "pov", 240, 200).image.tobytes())
    assert h.hexdigest() == DEFAULT_POV_DIGEST


@pytest.mark.parametrize("category", ["soles", "pov"])
def test_shifted_feet_differ_and_keep_exact_rotation(category: str) -> None:
    for seed in range(4):
        plain = render_foot(np.random.default_rng(seed), category, 260, 220)
        shifted = render_foot(np.random.default_rng(seed), category, 260, 220, shifted=True)
        again = render_foot(np.random.default_rng(seed), category, 260, 220, shifted=True)
        assert np.array_equal(shifted.image, again.image)
        assert not np.array_equal(plain.image, shifted.image)
        # foreshortening keeps the heel->toe direction: the rotation truth stays exact
        assert angle_error(rotation_of(np.array([shifted.heel, shifted.toe])),
                           shifted.rotation_deg) < 1e-6
        # smaller subjects: the foot's box covers less of the frame than the default's range
        x, y, w, h = shifted.bbox
        assert 0 <= x and 0 <= y and x + w <= 260 and y + h <= 220


def test_shifted_plan_uses_its_own_edits_and_outliers() -> None:
    plan = plan_demo(1, 60, Flavour("feet", "shifted"))
    assert {k for _, _, k in plan.near} == set(NEAR_KINDS_SHIFTED)
    assert {j.subkind for j in plan.renders if j.kind == "outlier"} == set(OUTLIER_KINDS_SHIFTED)
    assert all(55 <= j.quality <= 85 for j in plan.renders if j.kind == "base")
    assert plan_demo(0, 60) == plan_demo(0, 60, Flavour())


@pytest.mark.parametrize("category", figures.CATEGORIES)
def test_figure_eyes_give_the_true_rotation(category: str) -> None:
    for seed in range(5):
        fig = figures.render_figure(np.random.default_rng(seed), category, 300, 380)
        crop = keypoint_crop(np.array([fig.heel, fig.toe]),
                             np.array(EYE_TARGETS))
        assert angle_error(crop.angle_deg, fig.rotation_deg) < 1e-6
        assert fig.mask.max() == 255 and fig.category == category
        for x, y in (fig.heel, fig.toe):  # the eyes are on the figure, inside its box
            bx, by, bw, bh = fig.bbox
            assert bx <= x <= bx + bw and by <= y <= by + bh
            assert fig.mask[int(y), int(x)] > 0
        again = figures.render_figure(np.random.default_rng(seed), category, 300, 380)
        assert np.array_equal(fig.image, again.image)


def test_figure_outliers_render() -> None:
    for kind in figures.OUTLIER_KINDS:
        job = Job(f"photos/x/{kind}.jpg", "outlier", kind, 3, "full", "jpg", 90)
        out = render_job(job, 0, Flavour("figures"))
        assert out.data[:2] == b"\xff\xd8" and out.truth["subkind"] == kind


@pytest.fixture(scope="module")
def figures_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("figures") / "demo"
    generate_demo(out, seed=2, n_base=12, workers=2, subject="figures")
    return out


def test_figures_demo_truth(figures_demo: Path) -> None:
    truth = pd.read_parquet(figures_demo / "ground_truth.parquet")
    assert {"eye_left_x", "eye_right_y"} <= set(truth.columns) and "heel_x" not in truth
    assert set(truth[truth.kind == "base"].category) <= set(figures.CATEGORIES)
    assert set(truth[truth.kind == "outlier"].subkind) == set(figures.OUTLIER_KINDS)
    # every copy's eyes follow its edit: mirrored copies keep eye_left on the image left
    copies = truth[truth.kind.isin(["near_duplicate", "repost"]) & truth.eye_left_x.notna()]
    for r in copies.itertuples():
        d = np.array([r.eye_right_x - r.eye_left_x, r.eye_right_y - r.eye_left_y])
        # (a resize by unequal x and y factors keeps the parent's rotation: within 0.05 deg)
        assert angle_error(np.degrees(np.arctan2(-d[1], d[0])), r.rotation_deg) < 0.05
    export = json.loads((figures_demo / "labelstudio_export.json").read_text())
    labels = {v for t in export for a in t["annotations"] for r in a["result"]
              if r["type"] == "keypointlabels" for v in r["value"]["keypointlabels"]}
    assert labels == set(figures.KEYPOINTS)
    version = json.loads((figures_demo / "VERSION").read_text())
    assert version["subject"] == "figures" and version["variant"] == "default"
