"""Subject selection on a matte: keep the subject, cut the clutter.

A salient-object model (U^2-Net) keeps every salient thing: a rug, a box or a toy beside the
subject, sometimes instead of it. What it cannot know, the collection does: every image shows
the same kind of subject. So the subject's look is learned from the collection itself and
applied to each image's matte.

- **Features.** MobileNetV2 (the offline ImageNet weights the embeddings use) on the image
  squashed to `FEATURE_SIDE`², two blocks (stride 8 and 16) stacked on the stride-8 grid:
  `GRID`² cells of `DIM` values that describe texture and parts, not only colour.
- **Subject model** (`fit`). A linear discriminant between the features under the mattes'
  foreground and those outside, over a sample of the collection. The mattes are noisy labels
  (clutter kept, subject missed), but the subject is under the foreground in most images while
  a given kind of clutter is not, so the discriminant points at the subject. `self_train`
  refits it on its own cleaned mattes (each round cleans the sample with the previous model).
- **Cleaning** (`clean`). The model's subject probability and the matte together seed OpenCV
  GrabCut (sure subject where both agree, sure background where the model sees none but near
  the subject inside the matte, where its coarse grid blurs toes and edges), which
  cuts a box touching the subject along its colour edge and recovers a subject the matte
  missed. Its connected parts are then chosen, by the strongest signal available: annotator
  keypoints or box, else the subject probability, else the largest part nearest the centre.
  Where the cut keeps a pixel the matte had, the matte's own soft alpha is kept (its edges are
  finer than a cut at working size); recovered regions take the cut's edge.

Everything here is deterministic (OpenCV's RNG is seeded before each GrabCut).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from core.imageio import shrink

FEATURE_SIDE = 320
GRID = FEATURE_SIDE // 8
#: MobileNetV2 `features` blocks whose outputs are stacked: 32 channels at stride 8 and 96 at
#: stride 16 (upsampled): fine enough to follow a toe, deep enough to tell skin from a rug.
FEATURE_BLOCKS = (6, 13)
DIM = 32 + 96
_MEAN = np.asarray((0.485, 0.456, 0.406), np.float32)
_STD = np.asarray((0.229, 0.224, 0.225), np.float32)
#: Probabilities that seed the cut: above SURE the model is sure of the subject, below
#: UNLIKELY sure of the background; LIKELY is the decision boundary.
SURE, LIKELY, UNLIKELY = 0.8, 0.5, 0.1
#: A part smaller than this share of the image is a speck, neither kept nor counted as dropped.
MIN_PART = 0.002
#: A part is kept beside the best one when it holds at least this share of the best one's
#: subject mass and is mostly subject (two feet, a foot split by a strap).
SECOND_PART = 0.25
#: The model's grid cannot place the subject's edge finer than about this many cells: within
#: this distance of confident subject a low probability is the grid's blur (toes, a leg at the
#: frame's edge), not background, so it only seeds "probable background" for the colour cut.
NEAR_CELLS = 1.5


def load_network(models_dir: Path, threads: int, device: str = "cpu") -> Any:
    """MobileNetV2's feature blocks from the provisioned weights on `device`, once per
    process."""
    from core import models
    from curate import embeddings

    weights = models.require("mobilenet_v2", models_dir)
    return embeddings.load_model("mobilenet_v2", str(weights), threads, device)


def feature_grid(net: Any, rgb: np.ndarray) -> np.ndarray:
    """(GRID*GRID, DIM) float32 features of `rgb` (HxWx3 uint8), row-major over the grid."""
    import torch

    x = cv2.resize(rgb, (FEATURE_SIDE, FEATURE_SIDE), interpolation=cv2.INTER_AREA)
    x = (x.astype(np.float32) / 255.0 - _MEAN) / _STD
    device = next(net.parameters()).device
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].to(device)
    taken = []
    with torch.inference_mode():
        for index, block in enumerate(net):
            t = block(t)
            if index in FEATURE_BLOCKS:
                taken.append(t)
            if index == FEATURE_BLOCKS[-1]:
                break
        fine = taken[0]
        coarse = torch.nn.functional.interpolate(taken[1], size=fine.shape[2:], mode="bilinear",
                                                 align_corners=False)
        grid = torch.cat([fine, coarse], dim=1)[0]
    return grid.reshape(DIM, -1).T.cpu().numpy().astype(np.float32)


# ------------------------------------------------------------------------------ the model


@dataclass(frozen=True)
class SubjectModel:
    """Linear discriminant: subject log-odds of a feature vector f is f @ w + b."""

    w: np.ndarray
    b: float

    def probability(self, feats: np.ndarray) -> np.ndarray:
        """Subject probability per grid cell, (GRID, GRID) float32."""
        logit = np.clip(feats.astype(np.float64) @ self.w + self.b, -30, 30)
        return (1.0 / (1.0 + np.exp(-logit))).reshape(GRID, GRID).astype(np.float32)

    def to_json(self) -> dict[str, Any]:
        return {"w": [float(v) for v in self.w], "b": float(self.b)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SubjectModel:
        return cls(np.asarray(data["w"], np.float64), float(data["b"]))

    def digest(self) -> str:
        """Short content hash: the cleaning cache is keyed by it."""
        text = json.dumps(self.to_json(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def fit(feats: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> SubjectModel | None:
    """Fisher's linear discriminant of subject (label weight) vs background (1 - label).

    `labels` are soft (0..1 per grid cell). The shared covariance is shrunk towards its mean
    variance (1e-3) so that a small sample cannot make it singular. None when either class is
    (almost) empty: nothing to discriminate.
    """
    s_fg, s_bg = np.zeros(DIM), np.zeros(DIM)
    n_fg = n_bg = 0.0
    scatter = np.zeros((DIM, DIM))
    for f, y in zip(feats, labels, strict=True):
        f64 = f.astype(np.float64)
        y = y.reshape(-1).astype(np.float64)
        n_fg += y.sum()
        n_bg += (1.0 - y).sum()
        s_fg += f64.T @ y
        s_bg += f64.T @ (1.0 - y)
        scatter += f64.T @ f64
    if n_fg < 1.0 or n_bg < 1.0:
        return None
    m_fg, m_bg = s_fg / n_fg, s_bg / n_bg
    within = (scatter - n_fg * np.outer(m_fg, m_fg) - n_bg * np.outer(m_bg, m_bg)) / (n_fg + n_bg)
    within += 1e-3 * np.trace(within) / DIM * np.eye(DIM)
    w = np.linalg.solve(within, m_fg - m_bg)
    b = -float(w @ (m_fg + m_bg)) / 2.0 + float(np.log(n_fg / n_bg))
    return SubjectModel(w, b)


@dataclass(frozen=True)
class TrainingImage:
    """What self-training needs of one sample image (all small)."""

    feats: np.ndarray  # (GRID*GRID, DIM) float16
    rgb: np.ndarray  # image at `work_side`, uint8
    alpha: np.ndarray  # the matte at the same size, uint8

    @classmethod
    def of(cls, net: Any, rgb: np.ndarray, alpha: np.ndarray, side: int) -> TrainingImage:
        """A full-size image and its matte, reduced to a longer side of `side`."""
        small, small_alpha, _ = work_pair(rgb, alpha, side)
        return cls(cls.features(net, rgb), small, small_alpha)

    @staticmethod
    def features(net: Any, rgb: np.ndarray) -> np.ndarray:
        """The feature grid as kept (float16): cleaning uses the same rounding, so a sample
        image's mask is the same whether its features come from learning or are recomputed."""
        return feature_grid(net, rgb).astype(np.float16)


def grid_label(mask: np.ndarray) -> np.ndarray:
    """A mask (bool or uint8 0..255) as soft labels on the feature grid."""
    m = mask.astype(np.float32)
    if mask.dtype != bool:
        m /= 255.0
    return cv2.resize(m, (GRID, GRID), interpolation=cv2.INTER_AREA)


def self_train(sample: Sequence[TrainingImage], rounds: int) -> SubjectModel | None:
    """Fit on the mattes, then `rounds - 1` times on the sample cleaned by the last model."""
    labels = [grid_label(s.alpha) for s in sample]
    feats = [s.feats for s in sample]
    model = None
    for round_ in range(rounds):
        model = fit(feats, labels)
        if model is None or round_ == rounds - 1:
            break
        labels = [grid_label(select(s.rgb, s.alpha, upsample(model.probability(s.feats),
                                                              s.alpha.shape)).mask)
                  for s in sample]
    return model


def upsample(prob: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A grid of probabilities at an image's (h, w), bilinear."""
    return cv2.resize(prob, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


# ---------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class Hints:
    """Annotator geometry in the working image's pixels: points on the subject, its box."""

    points: tuple[tuple[float, float], ...] = ()
    box: tuple[float, float, float, float] | None = None  # x, y, w, h

    def scaled(self, factor: float) -> Hints:
        box = None if self.box is None else tuple(v * factor for v in self.box)
        return Hints(tuple((x * factor, y * factor) for x, y in self.points),
                     box)  # type: ignore[arg-type]

    def __bool__(self) -> bool:
        return bool(self.points) or self.box is not None


@dataclass
class Selection:
    """The subject's mask at working size and how it was chosen."""

    mask: np.ndarray  # bool
    chosen_by: str  # hints | model | largest | whole
    parts_dropped: int = 0
    cut: bool = False  # GrabCut ran (the matte's parts were not simply kept or dropped)
    notes: list[str] = field(default_factory=list)


def _parts(fg: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """(count incl. background, labels, areas) of the 8-connected parts of `fg`."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg.astype(np.uint8), connectivity=8)
    return n, labels, stats[:, cv2.CC_STAT_AREA]


def _hinted(labels: np.ndarray, n: int, hints: Hints) -> set[int]:
    """Parts under an annotator keypoint or holding most of the annotator's box."""
    h, w = labels.shape
    found = set()
    for x, y in hints.points:
        xi, yi = round(x), round(y)
        if 0 <= xi < w and 0 <= yi < h and labels[yi, xi] > 0:
            found.add(int(labels[yi, xi]))
    if hints.box is not None and not found:
        x, y, bw, bh = hints.box
        x0, y0 = max(0, int(x)), max(0, int(y))
        x1, y1 = min(w, int(np.ceil(x + bw))), min(h, int(np.ceil(y + bh)))
        if x1 > x0 and y1 > y0:
            counts = np.bincount(labels[y0:y1, x0:x1].ravel(), minlength=n)
            counts[0] = 0
            if counts.any():
                found.add(int(np.argmax(counts)))
    return found


def _largest_central(labels: np.ndarray, n: int, areas: np.ndarray) -> int:
    """The part with the largest area discounted by its centroid's distance from the centre."""
    h, w = labels.shape
    ys, xs = np.mgrid[0:h, 0:w]
    best, best_score = 1, -1.0
    for i in range(1, n):
        sel = labels == i
        cy, cx = ys[sel].mean() / h - 0.5, xs[sel].mean() / w - 0.5
        score = areas[i] * (1.0 - np.hypot(cx, cy) / np.hypot(0.5, 0.5))
        if score > best_score:
            best, best_score = i, score
    return best


def _choose(fg: np.ndarray, prob: np.ndarray | None, hints: Hints) -> Selection:
    """Keep the subject's parts of `fg` (bool): by hints, else model, else largest central."""
    n, labels, areas = _parts(fg)
    big = [i for i in range(1, n) if areas[i] >= MIN_PART * fg.size]
    if len(big) <= 1:
        keep = big or list(range(1, n))
        return Selection(np.isin(labels, keep), "whole")
    hinted = _hinted(labels, n, hints) if hints else set()
    if hinted:
        keep, by = sorted(hinted), "hints"
    elif prob is not None:
        mass = np.bincount(labels.ravel(), weights=prob.ravel(), minlength=n)
        mean = mass / np.maximum(areas, 1)
        top = max(big, key=lambda i: mass[i])
        keep = [i for i in big if i == top or (mass[i] >= SECOND_PART * mass[top]
                                               and mean[i] >= LIKELY)]
        by = "model"
    else:
        keep, by = [_largest_central(labels, n, areas)], "largest"
    dropped = sum(1 for i in big if i not in keep)
    return Selection(np.isin(labels, keep), by, parts_dropped=dropped)


def _needs_cut(fg: np.ndarray, prob: np.ndarray) -> bool:
    """Whether the matte and the model disagree enough for a cut to matter.

    The model sees subject outside the matte (a missed subject), or a kept region is mostly
    not subject (clutter attached to it). Measured on the opened masks, so a fringe of one
    grid cell along the matte's edge (the model is coarse) never counts.
    """
    k = max(3, (min(fg.shape) // 25) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    missed = cv2.morphologyEx(((prob >= LIKELY) & ~fg).astype(np.uint8), cv2.MORPH_OPEN, kernel)
    far = fg & (prob < UNLIKELY) & ~_near_subject(prob)
    clutter = cv2.morphologyEx(far.astype(np.uint8), cv2.MORPH_OPEN, kernel)
    return bool(missed.mean() > 0.005 or clutter.sum() > 0.05 * max(1, fg.sum()))


def _near_subject(prob: np.ndarray) -> np.ndarray:
    """Pixels within NEAR_CELLS grid cells of where the model is sure of the subject."""
    r = max(1, round(NEAR_CELLS * max(prob.shape) / GRID))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate((prob >= LIKELY).astype(np.uint8), disc) > 0


def _grabcut(rgb: np.ndarray, fg: np.ndarray, prob: np.ndarray, hints: Hints) -> np.ndarray:
    """GrabCut seeded by the model and the matte together; bool mask."""
    labels = np.full(fg.shape, cv2.GC_PR_BGD, np.uint8)
    labels[(prob >= LIKELY) | (fg & (prob >= 2 * UNLIKELY))] = cv2.GC_PR_FGD
    labels[(prob >= SURE) & fg] = cv2.GC_FGD
    # Sure background where the model sees none, except in the matte next to the subject
    # (see NEAR_CELLS); left free, GrabCut may keep an attached box whole.
    labels[(prob < UNLIKELY) & ~(fg & _near_subject(prob))] = cv2.GC_BGD
    r = max(1, round(0.01 * max(fg.shape)))
    for x, y in hints.points:
        cv2.circle(labels, (round(x), round(y)), r, cv2.GC_FGD, -1)
    have = np.bincount(labels.ravel(), minlength=4)
    if have[cv2.GC_FGD] + have[cv2.GC_PR_FGD] == 0 or have[cv2.GC_BGD] + have[cv2.GC_PR_BGD] == 0:
        return fg
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    cv2.grabCut(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), labels, None, bgd, fgd, 3,
                cv2.GC_INIT_WITH_MASK)
    return np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD))


def select(rgb: np.ndarray, alpha: np.ndarray, prob: np.ndarray | None,
           hints: Hints = Hints()) -> Selection:
    """The subject's mask at the size of `rgb` (uint8), `alpha` (uint8) and `prob` (float)."""
    fg = alpha >= 128
    if prob is not None and _needs_cut(fg, prob):
        selection = _choose(_grabcut(rgb, fg, prob, hints), prob, hints)
        selection.cut = True
        selection.parts_dropped = max(selection.parts_dropped, _dropped_parts(fg, selection.mask))
        return selection
    if not fg.any():
        return Selection(fg, "whole")
    return _choose(fg, prob, hints)


def _dropped_parts(fg: np.ndarray, kept: np.ndarray) -> int:
    """Parts of the matte (above the speck size) that the selection no longer touches."""
    n, labels, areas = _parts(fg)
    touched = set(np.unique(labels[kept & fg]).tolist())
    return sum(1 for i in range(1, n) if areas[i] >= MIN_PART * fg.size and i not in touched)


# ------------------------------------------------------------------------------ cleaning


@dataclass(frozen=True)
class CleanResult:
    alpha: np.ndarray  # uint8, full size
    record: dict[str, Any]  # what was done: chosen_by, parts_dropped, removed, added, cut


#: A matte counts as cleaned (report, dataset card) when selection dropped a part or cut away
#: at least this share of its foreground; smaller trims are edge tidying, not clutter.
CLEANED_SHARE = 0.05


def was_cleaned(parts_dropped: Any, removed: Any) -> Any:
    """Whether subject selection removed clutter; scalars or pandas Series (elementwise)."""
    return (parts_dropped > 0) | (removed >= CLEANED_SHARE)


def _full_size(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A working-size bool mask at full size (h, w)."""
    up = cv2.resize(mask.astype(np.uint8) * 255, (shape[1], shape[0]),
                    interpolation=cv2.INTER_LINEAR)
    return up >= 128


def work_pair(rgb: np.ndarray, alpha: np.ndarray, side: int
              ) -> tuple[np.ndarray, np.ndarray, float]:
    """(image, matte, factor): both reduced to a longer side of at most `side`."""
    small, factor = shrink(rgb, side)
    small_alpha = cv2.resize(alpha, (small.shape[1], small.shape[0]),
                             interpolation=cv2.INTER_AREA)
    return small, small_alpha, factor


def clean(rgb: np.ndarray, alpha: np.ndarray, prob: np.ndarray | None, hints: Hints,
          work_side: int) -> CleanResult:
    """The cleaned alpha of a full-size image and its matte, and a record of the change.

    `prob` is the model's grid (None without a model: parts are then chosen by hints or
    position only), `hints` are in full-size pixels.
    """
    small, small_alpha, factor = work_pair(rgb, alpha, work_side)
    small_prob = None if prob is None else upsample(prob, small.shape)
    sel = select(small, small_alpha, small_prob, hints.scaled(factor))
    small_fg = small_alpha >= 128
    h, w = alpha.shape
    # Where the selection kept the matte, keep the matte's own soft alpha, in a band of a few
    # pixels around the kept region so that its fine edge is not clipped by the working size.
    kept = _full_size(sel.mask & small_fg, (h, w))
    band = max(3, round(2 / max(factor, 1e-6)) * 2 + 1)
    near = cv2.dilate(kept.astype(np.uint8), np.ones((band, band), np.uint8)) > 0
    out = np.where(near, alpha, 0).astype(np.uint8)
    # Where the cut recovered subject the matte had missed, take the cut's edge; only solid
    # regions the model is sure of, never a fringe along the matte's edge (a shadow).
    if small_prob is not None and sel.cut:
        k = max(3, (min(small_fg.shape) // 30) | 1)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        extra = (sel.mask & ~small_fg & (small_prob >= LIKELY)).astype(np.uint8)
        extra = cv2.dilate(cv2.morphologyEx(extra, cv2.MORPH_OPEN, kernel), np.ones((3, 3)))
        soft = cv2.resize((extra.astype(bool) & sel.mask).astype(np.uint8) * 255, (w, h),
                          interpolation=cv2.INTER_LINEAR)
        out = np.where(alpha < 128, np.maximum(out, soft), out).astype(np.uint8)
    raw_fg = alpha >= 128
    new_fg = out >= 128
    raw_area = max(1, int(raw_fg.sum()))
    record = {"chosen_by": sel.chosen_by, "parts_dropped": int(sel.parts_dropped),
              "cut": sel.cut,
              "removed": round(float((raw_fg & ~new_fg).sum()) / raw_area, 5),
              "added": round(float((new_fg & ~raw_fg).sum()) / max(1, int(new_fg.sum())), 5)}
    return CleanResult(out, record)
