"""Subject selection on a matte (curate/matte/subject.py) on drawn scenes with known truth.

Scenes: a skin-coloured, textured 'subject' (an ellipse with a leg to the border) and clutter
(flat coloured rectangles), some touching the subject. The 'matte' given to the cleaner keeps
the clutter, or misses the subject, the way U^2-Net does on the demo's POV photos.
"""

from __future__ import annotations

import numpy as np
import pytest

from curate.matte import subject
from curate.matte.subject import Hints, SubjectModel


def _scene(seed: int, h: int = 240, w: int = 320) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rgb, subject mask, clutter mask) of one drawn scene."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), rng.uniform(90, 140, 3), np.float32)
    img += rng.normal(0, 6, (h, w, 1))
    clutter = np.zeros((h, w), np.uint8)
    for _ in range(2):
        x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
        cw, ch = int(rng.integers(60, 110)), int(rng.integers(50, 90))
        cv2.rectangle(clutter, (x0, y0), (x0 + cw, y0 + ch), 1, -1)
        img[y0:y0 + ch, x0:x0 + cw] = rng.uniform(20, 240, 3)
    body = np.zeros((h, w), np.uint8)
    cx, cy = int(rng.integers(w // 3, 2 * w // 3)), int(rng.integers(h // 3, h // 2))
    cv2.ellipse(body, (cx, cy), (28, 50), float(rng.uniform(-20, 20)), 0, 360, 1, -1)
    cv2.rectangle(body, (cx - 18, cy), (cx + 18, h), 1, -1)  # the leg, to the border
    skin = np.asarray((205, 150, 120), np.float32) * rng.uniform(0.8, 1.1)
    texture = rng.normal(0, 10, (h, w, 1))
    img[body > 0] = (skin + texture)[body > 0]
    clutter[body > 0] = 0
    return np.clip(img, 0, 255).astype(np.uint8), body > 0, clutter > 0


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


@pytest.fixture(scope="module")
def net():
    from core import models

    path = models.default_models_dir()
    if not models.check(path, [s for s in models.MODELS if s.name == "mobilenet_v2"])[0].ok:
        pytest.fail(f"mobilenet_v2 weights missing under {path}: run `make models` first")
    return subject.load_network(path, 1)


@pytest.fixture(scope="module")
def model(net) -> SubjectModel:
    """Learned from 20 scenes whose 'mattes' keep the clutter in one scene of five and miss
    the subject in one of ten: noisy labels, as U^2-Net's are on the demo."""
    sample = []
    for seed in range(20):
        rgb, body, clutter = _scene(seed)
        alpha = ((body | clutter if seed % 5 == 0 else clutter if seed % 10 == 1 else body)
                 * 255).astype(np.uint8)
        sample.append(subject.TrainingImage.of(net, rgb, alpha, 160))
    learned = subject.self_train(sample, rounds=3)
    assert learned is not None
    return learned


def test_model_learns_the_recurring_subject_not_the_clutter(net, model: SubjectModel) -> None:
    rgb, body, clutter = _scene(100)  # a scene it did not learn from
    prob = subject.upsample(model.probability(subject.feature_grid(net, rgb)), body.shape)
    assert prob[body].mean() > 0.7
    assert prob[clutter].mean() < 0.3


@pytest.mark.parametrize("seed", [101, 102, 103])
def test_clean_cuts_attached_clutter_and_recovers_a_missed_subject(net, model: SubjectModel,
                                                                  seed: int) -> None:
    rgb, body, clutter = _scene(seed)
    prob = model.probability(subject.feature_grid(net, rgb))
    kept_clutter = subject.clean(rgb, ((body | clutter) * 255).astype(np.uint8), prob, Hints(),
                                 400)
    assert _iou(kept_clutter.alpha >= 128, body) > 0.9
    assert kept_clutter.record["removed"] > 0.1
    missed = subject.clean(rgb, (clutter * 255).astype(np.uint8), prob, Hints(), 400)
    assert _iou(missed.alpha >= 128, body) > 0.8
    assert missed.record["added"] > 0.5


def test_a_clean_matte_is_kept_as_it_is(net, model: SubjectModel) -> None:
    rgb, body, _ = _scene(104)
    alpha = (body * 255).astype(np.uint8)
    result = subject.clean(rgb, alpha, model.probability(subject.feature_grid(net, rgb)),
                           Hints(), 400)
    assert np.array_equal(result.alpha, alpha)
    assert result.record == {"chosen_by": "whole", "parts_dropped": 0, "cut": False,
                             "removed": 0.0, "added": 0.0}


def test_without_a_model_parts_are_chosen_by_hints_else_largest_central() -> None:
    h, w = 200, 300
    rgb = np.full((h, w, 3), 120, np.uint8)
    alpha = np.zeros((h, w), np.uint8)
    alpha[80:140, 120:200] = 255  # large, central
    alpha[10:40, 10:40] = 255  # small, in a corner
    central = subject.clean(rgb, alpha, None, Hints(), 400)
    assert (central.alpha[80:140, 120:200] == 255).all() and central.alpha[10:40, 10:40].max() == 0
    assert central.record["chosen_by"] == "largest" and central.record["parts_dropped"] == 1
    hinted = subject.clean(rgb, alpha, None, Hints(points=((25.0, 25.0),)), 400)
    assert (hinted.alpha[10:40, 10:40] == 255).all() and hinted.alpha[80:140, 120:200].max() == 0
    assert hinted.record["chosen_by"] == "hints"
    boxed = subject.clean(rgb, alpha, None, Hints(box=(5.0, 5.0, 40.0, 40.0)), 400)
    assert boxed.alpha[10:40, 10:40].min() == 255


def test_model_round_trips_and_fit_refuses_one_class() -> None:
    rng = np.random.default_rng(0)
    feats = [rng.normal(size=(subject.GRID ** 2, subject.DIM)).astype(np.float32)]
    labels = [np.zeros((subject.GRID, subject.GRID), np.float32)]
    assert subject.fit(feats, labels) is None
    labels[0][: subject.GRID // 2] = 1.0
    fitted = subject.fit(feats, labels)
    assert fitted is not None
    again = SubjectModel.from_json(fitted.to_json())
    assert again.digest() == fitted.digest()
    assert np.allclose(again.probability(feats[0]), fitted.probability(feats[0]))


def test_features_do_not_depend_on_what_the_worker_imported_before() -> None:
    """Importing rembg (pymatting's numba OpenMP layer) resets OpenMP's thread count, and
    features computed with another count differ: a matte worker that had run U^2-Net gave
    other masks than a fresh one, so a killed matte run, rerun, changed some mattes. Run in a
    fresh interpreter, where the import really happens."""
    script = """
import sys, numpy as np
from core import models
from curate.matte import subject
rng = np.random.default_rng(0)
rgb = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
path = models.default_models_dir()
before = subject.TrainingImage.features(subject.load_network(path, 1), rgb)
import rembg  # noqa: F401  (pymatting sets OpenMP's thread count to the core count)
after = subject.TrainingImage.features(subject.load_network(path, 1), rgb)
sys.exit(0 if np.array_equal(before, after) else 3)
"""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:] or "features changed after importing rembg"


def test_learning_features_are_the_same_whether_the_raw_mask_was_kept_or_made(tmp_path) -> None:
    """Learning made the raw mask (importing rembg, which resets the thread count) after it
    had set up the feature network, so the first sample image of each fresh worker got
    features computed with another thread count than a rerun, which finds the raw masks kept
    from the killed run: the subject model, and some masks, differed after a kill."""
    script = f"""
import sys, numpy as np
from pathlib import Path
from PIL import Image
from core import models
from curate.matte import subject
from curate.matte.config import MatteConfig
from curate.matte.worker import MatteTask, training_image
tmp = Path({str(tmp_path)!r})
rgb = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
Image.fromarray(rgb).save(tmp / "photo.png")
path = models.default_models_dir()
task = MatteTask("a" * 64, tmp / "photo.png", tmp / "out.png", tmp / "mask.png",
                 MatteConfig(model="u2netp", threads_per_worker=1), path, (255, 255, 255),
                 10**8, 64, raw_out=tmp / "raw.png")
made = training_image(task).feats  # U^2-Net runs (rembg imported) in this call
assert (tmp / "raw.png").exists()
kept = training_image(task).feats  # the raw mask is read back: what a rerun does
alone = subject.TrainingImage.features(subject.load_network(path, 1), rgb)
sys.exit(0 if np.array_equal(made, kept) and np.array_equal(made, alone) else 3)
"""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:] or "learning's features changed"
