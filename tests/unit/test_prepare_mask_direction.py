"""Which end of a mask's axis is up, chosen from the tagged images (curate.prepare.
mask_direction): caped figures (wider at the feet) drawn upright, and feet (wider at the toes)
turned every way."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from curate.prepare.align import angle_error, mask_crop
from curate.prepare.mask_direction import calibrate_mask_direction
from curate.prepare.task import Settings, Task

W = H = 400


def _subject(path: Path, angle_deg: float, wide_end: str) -> tuple[Path, tuple]:
    """A 240 px long trapezoid turned by `angle_deg` (CCW), 120 px wide at its `wide_end`
    ('top' or 'bottom', in its own frame) and 40 px at the other; and two points on its axis,
    bottom then top."""
    a = math.radians(angle_deg)
    up, right = np.array([-math.sin(a), -math.cos(a)]), np.array([math.cos(a), -math.sin(a)])
    centre = np.array([W / 2, H / 2])
    ys, xs = np.mgrid[0:H, 0:W] + 0.5
    rel = np.stack([xs - centre[0], ys - centre[1]], axis=-1)
    along, across = rel @ up, rel @ right  # along: +120 at the top, -120 at the bottom
    t = (along + 120) / 240  # 0 at the bottom, 1 at the top
    half = np.where(wide_end == "top", 20 + 40 * t, 60 - 40 * t)
    inside = (np.abs(along) <= 120) & (np.abs(across) <= half)
    Image.fromarray((inside * 255).astype(np.uint8)).save(path)
    return path, (tuple(centre - 100 * up), tuple(centre + 100 * up))


def _tasks(tmp_path: Path, wide_end: str, spread: float) -> tuple[list[Task], list[float]]:
    rng = np.random.default_rng(0)
    tasks, truth = [], []
    for i in range(12):
        angle = float(rng.uniform(-spread, spread))
        mask, points = _subject(tmp_path / f"{wide_end}{i}.png", angle, wide_end)
        tasks.append(Task(f"{i:03d}", Path(), W, H, points, None, mask))
        truth.append(angle)
    return tasks, truth


def _flips(tasks: list[Task], truth: list[float], upright: bool) -> int:
    return sum(angle_error(mask_crop(np.asarray(Image.open(t.mask)), upright=upright).angle_deg,
                           angle) > 90 for t, angle in zip(tasks, truth, strict=True))


def test_figures_wider_at_the_feet_take_the_upright_rule(tmp_path: Path) -> None:
    tasks, truth = _tasks(tmp_path, "bottom", spread=30)
    assert _flips(tasks, truth, upright=False) == len(tasks)  # the shape rule turns them over
    s = calibrate_mask_direction(tasks, Settings())
    assert s.mask_upright and _flips(tasks, truth, upright=True) == 0
    assert not calibrate_mask_direction(tasks[:4], Settings()).mask_upright  # too few to judge


def test_feet_turned_every_way_keep_the_shape_rule(tmp_path: Path) -> None:
    tasks, truth = _tasks(tmp_path, "top", spread=170)
    assert _flips(tasks, truth, upright=False) == 0
    assert not calibrate_mask_direction(tasks, Settings()).mask_upright
