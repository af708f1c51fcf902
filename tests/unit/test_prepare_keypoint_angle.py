"""Keypoint angles weighed against the mask's axis (curate.prepare.keypoint_angle), on
synthetic subjects whose true angle is known: elongated masks, two keypoints clicked with
noise, a third of the images tagged by two annotators."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curate.prepare.align import angle_error, keypoint_crop
from curate.prepare.keypoint_angle import AGREE_DEG, calibrate_keypoint_angle, refined_angle
from curate.prepare.task import Settings, Task

W, H = 400, 600
CLICK = 0.004 * max(W, H)  # a click's error per coordinate, pixels
EYES = ((0.45, 0.2), (0.55, 0.2))  # two points across the subject, near its top


def _frame(angle_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre, up and right unit vectors (image coordinates, y down) of a subject turned
    counter-clockwise on screen by `angle_deg`."""
    a = math.radians(angle_deg)
    return (np.array([W / 2, H / 2]), np.array([-math.sin(a), -math.cos(a)]),
            np.array([math.cos(a), -math.sin(a)]))


def _mask(path: Path, angle_deg: float) -> Path:
    """An ellipse 400 px long and 80 px wide along the subject's up axis."""
    centre, up, right = _frame(angle_deg)
    ys, xs = np.mgrid[0:H, 0:W] + 0.5
    rel = np.stack([xs - centre[0], ys - centre[1]], axis=-1)
    inside = (rel @ up / 200) ** 2 + (rel @ right / 40) ** 2 <= 1
    Image.fromarray((inside * 255).astype(np.uint8)).save(path)
    return path


def _tasks(tmp_path: Path, points: str, n: int = 24, mask_offset: float = 0.0,
           repeats: bool = True) -> tuple[list[Task], list[float]]:
    """n subjects at random angles; `points` 'eyes' (20 px apart, across the top) or 'axis'
    (360 px apart, bottom to top, as heel and toe)."""
    rng = np.random.default_rng(0)
    tasks, truth = [], []
    for i in range(n):
        angle = float(rng.uniform(-40, 40))
        centre, up, right = _frame(angle)
        if points == "eyes":
            true = np.array([centre + 150 * up - 10 * right, centre + 150 * up + 10 * right])
        else:
            true = np.array([centre - 180 * up, centre + 180 * up])
        clicks = [true + rng.normal(0, CLICK, true.shape)
                  for _ in range(2 if repeats and i % 3 == 0 else 1)]
        merged = np.mean(clicks, axis=0)
        spread = (float(np.sqrt(np.var(np.stack(clicks), axis=0, ddof=1).mean()))
                  if len(clicks) > 1 else None)
        mask = _mask(tmp_path / f"m{i}.png", angle + mask_offset)
        tasks.append(Task(f"{i:03d}", Path(), W, H, tuple(map(tuple, merged)), None, mask,
                          keypoint_annotators=len(clicks), keypoint_spread=spread))
        truth.append(angle)
    return tasks, truth


def _errors(tasks: list[Task], truth: list[float], s: Settings) -> tuple[np.ndarray, np.ndarray]:
    raw, refined = [], []
    for task, angle in zip(tasks, truth, strict=True):
        crop = keypoint_crop(np.array(task.keypoints), np.array(s.keypoint_targets))
        raw.append(angle_error(crop.angle_deg, angle))
        refined.append(angle_error(refined_angle(task, s, crop.angle_deg), angle))
    return np.array(raw), np.array(refined)


def test_close_keypoints_lean_on_the_mask(tmp_path: Path) -> None:
    tasks, truth = _tasks(tmp_path, "eyes")
    s = calibrate_keypoint_angle(tasks, Settings(keypoint_targets=EYES))
    assert s.keypoint_angle is not None
    assert abs(s.keypoint_angle.offset_deg) < 2.0
    assert 0.5 < math.sqrt(s.keypoint_angle.click) / 0.004 < 2.0  # measured from the repeats
    raw, refined = _errors(tasks, truth, s)
    assert np.median(raw) > 3.0  # 20 px apart: the clicks tilt the crop by degrees
    assert np.median(refined) < np.median(raw) / 3 and refined.max() < raw.max() / 3


def test_distant_keypoints_are_not_made_worse_and_an_offset_is_learned(tmp_path: Path) -> None:
    tasks, truth = _tasks(tmp_path, "axis", mask_offset=20.0)  # the mask's axis turned by 20
    s = calibrate_keypoint_angle(tasks, Settings())
    assert s.keypoint_angle is not None and abs(s.keypoint_angle.offset_deg - 20.0) < 1.0
    raw, refined = _errors(tasks, truth, s)
    assert np.median(raw) < 1.0  # 360 px apart: the clicks barely turn the line
    assert np.median(refined) <= np.median(raw) + 0.2


def test_without_repeated_tags_or_with_a_disagreeing_mask_the_keypoints_stand(
        tmp_path: Path) -> None:
    tasks, truth = _tasks(tmp_path, "eyes", repeats=False)
    s = calibrate_keypoint_angle(tasks, Settings(keypoint_targets=EYES))
    assert s.keypoint_angle is None  # nobody measured the click error
    raw, refined = _errors(tasks, truth, s)
    assert np.array_equal(raw, refined)

    tasks, truth = _tasks(tmp_path, "eyes")
    s = calibrate_keypoint_angle(tasks, Settings(keypoint_targets=EYES))
    wrong = Task("x", Path(), W, H, tasks[0].keypoints, None,
                 _mask(tmp_path / "wrong.png", truth[0] + AGREE_DEG + 15),
                 keypoint_annotators=1)
    crop = keypoint_crop(np.array(wrong.keypoints), np.array(EYES))
    assert refined_angle(wrong, s, crop.angle_deg) == crop.angle_deg


@pytest.mark.parametrize("angle", [-35.0, 0.0, 50.0])
def test_a_refined_angle_keeps_the_points_midpoint_on_the_targets_midpoint(angle: float) -> None:
    points, targets = np.array([[180.0, 150.0], [220.0, 160.0]]), np.array(EYES)
    crop = keypoint_crop(points, targets, angle)
    assert crop.angle_deg == pytest.approx(angle)
    m = crop.matrix(512)
    mid = m[:, :2] @ points.mean(axis=0) + m[:, 2]
    assert np.allclose(mid / 512, targets.mean(axis=0))
    plain = keypoint_crop(points, targets)  # without an angle: both points on their targets
    m = plain.matrix(512)
    assert np.allclose((points @ m[:, :2].T + m[:, 2]) / 512, targets)
