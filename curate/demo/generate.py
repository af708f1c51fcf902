"""The embedded demo dataset: a raw, messy collection of foot photos with complete ground truth.

``dvc repro`` runs out of the box on it and the tests and benchmarks measure against its truth.
It plays a real collection: two sub-distributions (``soles`` on studio backgrounds, ``pov`` seen
from above with a leg and floor clutter) in JPEG, PNG and WebP of many sizes, plus what real
collections are full of: exact duplicates, near-duplicates (resized, re-encoded, cropped,
brighter, darker), hard reposts in the ``reposts`` and ``forum-scrape`` batches (mirrored,
rotated, cropped by 10-25%, captioned, letterboxed, inside an app screenshot, colour-graded,
and two of these at once: `curate.demo.reposts`), outliers (blurry, dark, over-exposed, tiny,
extreme aspect, grayscale, noisy, off-subject photos from scikit-image's bundled samples), bad
files, zip and tar archives with hostile members, a URL list, and a Label Studio export snapshot
covering about 30% of the images.

Two options make other collections with the same kinds of ground truth. ``variant="shifted"``
(`curate demo-data --variant shifted`) is the out-of-sample check of methods tuned on the
default: other backdrops and floors, harder lighting, smaller and foreshortened feet, a lower
JPEG quality mix, other near-duplicate edits (watermark, small rotation, colour shift) and other
outlier kinds (motion blur, underexposed, hazy, sepia, blocky JPEG, thumbnail, other off-subject
photos). ``subject="figures"`` draws the second subject, cartoon superhero figures
(`curate.demo.figures`): categories ``full``/``upper``, keypoints eye_left/eye_right (in the
truth's ``eye_left_x``... columns where the feet have ``heel_x``...), outliers realistic,
non_human and not_separated. The default (feet, default variant) is byte-identical to before.

Everything is a pure function of ``seed`` (each image has its own generator seeded by its index,
so the worker count does not change a byte) and the folder appears atomically: it is built
under a temporary name and renamed, so a killed run leaves nothing half-made, and a rerun with
the same settings returns at once.

Layout of ``out_dir``::

    raw/photos/<batch>/<name>.{jpg,png,webp}   base images, duplicates and outliers, mixed
    raw/archives/extra.zip, extra.tar.gz       more photos plus unsafe members
    raw/bad/                                   odd and broken files
    urls.csv                                   column ``path``, relative to raw/ (serve raw/)
    ground_truth.parquet, ground_truth.csv     one row per file or archive member
    labelstudio_export.json                    Label Studio JSON export
    truth/masks/<file with / as __>.png        foreground masks of the base images
    summary.json, VERSION
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile
import tempfile
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from core.atomic import TEMP_MARKER
from core.parallel import make_executor, stream_map
from core.store import Store, content_id
from curate.demo import badfiles, figures, labelstudio
from curate.demo.reposts import REPOST_KINDS, Edited, make_repost, map_points, put_text
from curate.demo.shapes import CATEGORIES, render_foot, sample_size

GENERATOR_VERSION = 3
NEAR_KINDS = ("resized", "reencoded", "cropped", "brighter", "darker")
OUTLIER_KINDS = ("blurry", "dark", "overexposed", "tiny", "extreme_aspect", "grayscale", "noise",
                 "off_subject")
VARIANTS = ("default", "shifted")
SUBJECTS = ("feet", "figures")
#: The shifted variant's own near-duplicate edits and outlier kinds (none shared with the
#: default's, except re-encoding at a different quality and resizing).
NEAR_KINDS_SHIFTED = ("watermark", "small_rotation", "colour_shift", "resized", "reencoded")
OUTLIER_KINDS_SHIFTED = ("motion_blur", "underexposed", "hazy", "sepia", "blocky", "thumbnail",
                         "off_subject")
OFF_SUBJECT_SHIFTED = ("motorcycle", "china", "flower", "logo", "cat")
OFF_SUBJECT_SAMPLES = ("astronaut", "coffee", "chelsea", "hubble_deep_field",
                       "immunohistochemistry", "rocket", "retina", "colorwheel")
BATCHES = (("2024-03-studio", "DSC"), ("forum-scrape", "scrape"), ("phone-uploads", "IMG"),
           ("reposts", "repost"))
EXT = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}
TRUTH_COLUMNS = ("file", "sha256", "kind", "subkind", "duplicate_of", "category", "rotation_deg",
                 "width", "height", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "heel_x", "heel_y",
                 "toe_x", "toe_y", "expected", "reason", "in_urls", "ls_task_id", "edits")
#: Where reposts are planted: the batches that would collect them.
REPOST_BATCHES = (("reposts", "repost"), ("forum-scrape", "scrape"))


@dataclass(frozen=True)
class Job:
    """One image to render: where it goes and what it is."""

    file: str  # relative to raw/ ("archives/extra.zip!name" for archive members)
    kind: str  # base | outlier | bad
    subkind: str
    index: int  # seeds this image's own random generator
    category: str | None
    fmt: str = "jpg"
    quality: int = 92


@dataclass(frozen=True)
class Flavour:
    """Which collection: the subject drawn and the variant of the generator."""

    subject: str = "feet"
    variant: str = "default"

    def __post_init__(self) -> None:
        if self.subject not in SUBJECTS:
            raise ValueError(f"subject must be one of {SUBJECTS}, got {self.subject!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")

    @property
    def shifted(self) -> bool:
        return self.variant == "shifted"

    @property
    def categories(self) -> tuple[str, ...]:
        return figures.CATEGORIES if self.subject == "figures" else CATEGORIES

    @property
    def keypoints(self) -> tuple[str, str]:
        return figures.KEYPOINTS if self.subject == "figures" else ("heel", "toe")

    @property
    def near_kinds(self) -> tuple[str, ...]:
        return NEAR_KINDS_SHIFTED if self.shifted else NEAR_KINDS

    @property
    def outlier_kinds(self) -> tuple[str, ...]:
        if self.subject == "figures":
            return figures.OUTLIER_KINDS
        return OUTLIER_KINDS_SHIFTED if self.shifted else OUTLIER_KINDS


DEFAULT = Flavour()


@dataclass
class Rendered:
    """A finished file: bytes plus its ground-truth row (and mask, for base images)."""

    file: str
    data: bytes
    truth: dict
    mask_png: bytes | None = None


@dataclass(frozen=True)
class DemoSummary:
    """What was generated (``counts`` by kind) and where."""

    out_dir: Path
    files: int
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    reused: bool = False

    def __str__(self) -> str:
        what = ", ".join(f"{n} {k}" for k, n in sorted(self.counts.items()))
        how = "already present, unchanged" if self.reused else f"generated in {self.seconds:.1f} s"
        return f"demo data in {self.out_dir}: {self.files} files ({what}); {how}"


# ------------------------------------------------------------------------------ encoding

def encode(rgb: np.ndarray, fmt: str, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    args = {"quality": quality} if fmt in ("jpg", "webp") else {"compress_level": 6}
    Image.fromarray(rgb).save(buf, EXT[fmt], **args)
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _truth(job: Job, rgb_shape: tuple[int, ...], render=None, **extra) -> dict:
    """A ground-truth row; geometry comes from the render (None for off-subject images)."""
    row = {c: None for c in TRUTH_COLUMNS}
    row.update(file=job.file, kind=job.kind, subkind=job.subkind, category=job.category,
               height=int(rgb_shape[0]), width=int(rgb_shape[1]), expected="stored",
               in_urls=False)
    if render is not None:
        x, y, w, h = render.bbox
        row.update(rotation_deg=render.rotation_deg, bbox_x=x, bbox_y=y, bbox_w=w, bbox_h=h,
                   heel_x=render.heel[0], heel_y=render.heel[1], toe_x=render.toe[0],
                   toe_y=render.toe[1])
    row.update(extra)
    return row


# ------------------------------------------------------------------------------ rendering

def _sample_photo(name: str) -> np.ndarray:
    import skimage.data

    if name == "motorcycle":
        return skimage.data.stereo_motorcycle()[0]
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")
    img = getattr(skimage.data, name)()
    if img.shape[-1] == 4:  # logo: transparency onto white
        a = img[..., 3:].astype(np.float32) / 255
        img = (img[..., :3] * a + 255 * (1 - a)).astype(np.uint8)
    return img


def _off_subject(rng: np.random.Generator, n: int, samples: tuple[str, ...] = OFF_SUBJECT_SAMPLES
                 ) -> np.ndarray:
    """A crop of one of scikit-image's bundled photos (never downloaded), resized and flipped."""
    img = _sample_photo(samples[n % len(samples)])
    img = np.ascontiguousarray(img[..., :3])
    h, w = img.shape[:2]
    ch, cw = int(h * rng.uniform(0.7, 1.0)), int(w * rng.uniform(0.7, 1.0))
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    img = img[y0:y0 + ch, x0:x0 + cw]
    if rng.random() < 0.5:
        img = img[:, ::-1]
    scale = rng.uniform(1.0, 1.6)
    return cv2.resize(np.ascontiguousarray(img), (int(cw * scale), int(ch * scale)),
                      interpolation=cv2.INTER_CUBIC)


def _outlier_size(rng: np.random.Generator, subkind: str) -> tuple[int, int]:
    if subkind == "thumbnail":
        return int(rng.integers(140, 240)), int(rng.integers(140, 240))
    if subkind == "tiny":
        return int(rng.integers(64, 128)), int(rng.integers(64, 128))
    if subkind == "extreme_aspect":
        long, short = int(rng.integers(1400, 1800)), int(rng.integers(260, 340))
        return (long, short) if rng.random() < 0.5 else (short, long)
    return sample_size(rng)


def _spoil(rgb: np.ndarray, subkind: str, rng: np.random.Generator) -> np.ndarray:
    """Turn a good photo into the planted outlier ``subkind`` (geometry unchanged)."""
    img = rgb.astype(np.float32)
    if subkind == "blurry":
        img = cv2.GaussianBlur(img, (0, 0), max(img.shape[:2]) * rng.uniform(0.008, 0.014))
    elif subkind == "dark":
        img = img * rng.uniform(0.08, 0.16)
    elif subkind == "overexposed":
        img = img * rng.uniform(1.8, 2.4) + 70
    elif subkind == "grayscale":
        img = np.repeat(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[..., None], 3, 2).astype(np.float32)
    elif subkind == "noise":
        img = img + rng.normal(0, rng.uniform(45, 65), img.shape)
    elif subkind == "motion_blur":  # camera shake: a line kernel at a random angle
        n = max(5, int(max(img.shape[:2]) * rng.uniform(0.02, 0.035)))
        kernel = np.zeros((n, n), np.float32)
        kernel[n // 2] = 1.0 / n
        rot = cv2.getRotationMatrix2D((n / 2 - 0.5, n / 2 - 0.5), float(rng.uniform(0, 180)), 1)
        kernel = cv2.warpAffine(kernel, rot, (n, n))
        img = cv2.filter2D(img, -1, kernel / max(kernel.sum(), 1e-6))
    elif subkind == "underexposed":  # a dim, crushed exposure rather than a plain dark one
        img = 255.0 * (img / 255.0) ** rng.uniform(1.4, 1.8) * rng.uniform(0.12, 0.2)
    elif subkind == "hazy":  # fog or a dirty lens: contrast washed towards light grey
        k = rng.uniform(0.12, 0.2)
        img = img * k + (1 - k) * rng.uniform(180, 225)
    elif subkind == "sepia":  # an old-photo filter: one hue, graded by luma
        luma = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)[..., None] / 255.0
        img = 255.0 * luma * np.array([1.0, 0.82, 0.58], np.float32) * rng.uniform(0.95, 1.1)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _figure_size(rng: np.random.Generator) -> tuple[int, int]:
    """Drawn art: 400-1100 px, portrait more often than landscape."""
    w = int(rng.integers(400, 901))
    return w, int(w * rng.uniform(0.9, 1.5))


def _render_figures_job(job: Job, rng: np.random.Generator):
    """(pixels, render or None) of one figures-subject job."""
    w, h = _figure_size(rng)
    if job.subkind == "non_human":
        return figures.render_non_human(rng, w, h), None
    if job.subkind == "realistic" and job.index % 2 == 0:  # a photo of a person
        return _off_subject(rng, job.index, ("astronaut",)), None
    style = {"realistic": "realistic", "not_separated": "merged"}.get(job.subkind, "cartoon")
    fig = figures.render_figure(rng, job.category, w, h, style)
    return fig.image, fig


def render_job(job: Job, seed: int, flavour: Flavour = DEFAULT) -> Rendered:
    """Render one planned image (runs in a worker process)."""
    rng = np.random.default_rng([seed, 1, job.index])
    if flavour.subject == "figures" and job.kind != "bad":
        rgb, fig = _render_figures_job(job, rng)
        mask = (cv2.imencode(".png", fig.mask)[1].tobytes()
                if job.kind == "base" and fig is not None else None)
        return Rendered(job.file, encode(rgb, job.fmt, job.quality), _truth(job, rgb.shape, fig),
                        mask)
    if job.subkind == "off_subject":
        rgb = _off_subject(rng, job.index,
                           OFF_SUBJECT_SHIFTED if flavour.shifted else OFF_SUBJECT_SAMPLES)
        return Rendered(job.file, encode(rgb, job.fmt, job.quality), _truth(job, rgb.shape))
    if job.kind == "outlier":
        w, h = _outlier_size(rng, job.subkind)
    else:
        w, h = sample_size(rng)
    if flavour.subject == "figures":  # bad files of the figures subject
        foot = figures.render_figure(rng, job.category, min(w, 900), min(h, 1100))
    elif flavour.shifted:
        foot = render_foot(rng, job.category, w, h, shifted=True)
    else:
        foot = render_foot(rng, job.category, w, h)
    rgb = foot.image
    if job.kind == "outlier":
        rgb = _spoil(rgb, job.subkind, rng)
        if job.subkind == "blocky":  # heavy JPEG blocking, then stored at the usual quality
            rgb = decode(encode(rgb, "jpg", int(rng.integers(3, 7))))
    if job.kind == "bad":
        data = badfiles.accepted_file(job.subkind, rgb, foot.mask)
        return Rendered(job.file, data, _truth(job, rgb.shape, foot))
    mask = cv2.imencode(".png", foot.mask)[1].tobytes() if job.kind == "base" else None
    return Rendered(job.file, encode(rgb, job.fmt, job.quality), _truth(job, rgb.shape, foot),
                    mask)


def _render_worker(args: tuple[Job, int, Flavour]) -> Rendered:
    return render_job(*args)


# ------------------------------------------------------------------------------ planning

@dataclass
class Plan:
    """Which files exist, decided up front from the seed alone."""

    renders: list[Job]
    near: list[tuple[str, str, str]]  # (new file, parent file, subkind)
    exact: list[tuple[str, str]]  # (new file, parent file)
    reposts: list[tuple[str, str, str]]  # (new file, parent file, subkind)
    zip_members: list[str]
    tar_members: list[str]


def _namer(rng: np.random.Generator, total: int):
    numbers = iter(rng.permutation(np.arange(1000, 1000 + 4 * total)))

    def name(ext: str) -> str:
        folder, prefix = BATCHES[int(rng.integers(0, len(BATCHES)))]
        return f"photos/{folder}/{prefix}_{int(next(numbers)):05d}.{ext}"

    return name


def plan_demo(seed: int, n_base: int, flavour: Flavour = DEFAULT) -> Plan:
    """Decide every file of the demo; counts scale with ``n_base``."""
    rng = np.random.default_rng([seed, 0])
    cats = flavour.categories
    n_zip, n_tar = max(3, n_base // 20), max(2, n_base // 40)
    n_outlier_each = max(1, n_base // 60) if flavour.subject == "feet" else max(2, n_base // 25)
    name = _namer(rng, n_base * 2 + 50)
    renders: list[Job] = []
    zip_members: list[str] = []
    tar_members: list[str] = []
    for i in range(n_base):
        category = cats[0] if rng.random() < 0.55 else cats[1]
        roll = rng.random()
        fmt = "jpg" if roll < 0.75 else ("webp" if roll < 0.9 else "png")
        quality = int(rng.integers(82, 97))
        if flavour.shifted:  # a lower and wider JPEG quality mix (phone apps, re-saves)
            quality = int(rng.integers(55, 86))
        if i < n_zip + n_tar:  # the first few go into the archives, as JPEGs
            in_zip = i < n_zip
            file = (f"archives/extra.zip!{i:03d}.jpg" if in_zip
                    else f"archives/extra.tar.gz!batch/{i:03d}.jpg")
            (zip_members if in_zip else tar_members).append(file)
            fmt = "jpg"
        else:
            file = name(fmt)
        renders.append(Job(file, "base", "", i, category, fmt, quality))
    index = n_base
    for subkind in flavour.outlier_kinds:
        for _ in range(n_outlier_each):
            category = (None if subkind in ("off_subject", "non_human")
                        else cats[int(rng.integers(0, 2))])
            renders.append(Job(name("jpg"), "outlier", subkind, index, category, "jpg", 90))
            index += 1
    for subkind, file in badfiles.ACCEPTED.items():
        ext = file.rsplit(".", 1)[1]
        renders.append(Job(f"bad/{file}", "bad", subkind, index, cats[index % 2], ext))
        index += 1
    photos = [j.file for j in renders if j.kind == "base" and j.file.startswith("photos/")]
    parents = rng.choice(photos, size=min(len(photos), max(5, n_base // 10) + max(3, n_base // 30)),
                         replace=False)
    n_near = max(5, n_base // 10)
    kinds = flavour.near_kinds
    near = [(name("jpg"), str(p), kinds[k % len(kinds)])
            for k, p in enumerate(parents[:n_near])]
    exact = [(name(str(p).rsplit(".", 1)[1]), str(p)) for p in parents[n_near:]]
    used = {str(p) for p in parents}
    return Plan(renders, near, exact, _plan_reposts(seed, n_base, sorted(photos), used),
                zip_members, tar_members)


def _plan_reposts(seed: int, n_base: int, photos: list[str], used: set[str]
                  ) -> list[tuple[str, str, str]]:
    """max(2, n_base // 50) reposts of each kind in the repost batches, of parents that have
    no other copy while there are enough of those (a small demo reuses some).

    Drawn from their own generator and numbered after every other photo, so adding them left
    the rest of the demo byte-identical."""
    rng = np.random.default_rng([seed, 6])
    n = max(2, n_base // 50) * len(REPOST_KINDS)
    free = [p for p in photos if p not in used]
    parents = list(rng.choice(free, size=min(len(free), n), replace=False)) if free else []
    if len(parents) < n:
        parents += list(rng.choice(photos, size=n - len(parents), replace=True))
    first = 1000 + 4 * (n_base * 2 + 50)
    out = []
    for k, parent in enumerate(parents):
        folder, prefix = REPOST_BATCHES[int(rng.integers(0, len(REPOST_BATCHES)))]
        out.append((f"photos/{folder}/{prefix}_{first + k:05d}.jpg", str(parent),
                    REPOST_KINDS[k % len(REPOST_KINDS)]))
    return out


# ------------------------------------------------------------------------------ derived files

def near_duplicate(parent: Rendered, file: str, subkind: str, rng: np.random.Generator
                   ) -> Rendered:
    """A near-duplicate of ``parent``; its geometry truth follows the transform."""
    if subkind in ("watermark", "small_rotation", "colour_shift"):
        return _edited_copy(parent, file, "near_duplicate", subkind,
                            _shifted_edit(decode(parent.data), subkind, rng), 88)
    rgb = decode(parent.data)
    h, w = rgb.shape[:2]
    sx = sy = 1.0
    dx = dy = 0.0
    quality = 90
    if subkind == "resized":
        f = rng.uniform(0.5, 0.8)
        nw, nh = max(1, round(w * f)), max(1, round(h * f))
        rgb = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
        sx, sy = nw / w, nh / h
    elif subkind == "reencoded":
        quality = int(rng.integers(30, 46))
    elif subkind == "cropped":
        cut_x, cut_y = rng.uniform(0.01, 0.05, 2)
        left, top = int(w * cut_x * rng.uniform(0, 1)), int(h * cut_y * rng.uniform(0, 1))
        right, bottom = w - int(w * cut_x) + left, h - int(h * cut_y) + top
        rgb = rgb[top:bottom, left:right]
        dx, dy = -left, -top
    else:
        factor = 1.1 if subkind == "brighter" else 0.9
        rgb = np.clip(rgb.astype(np.float32) * factor + 0.5, 0, 255).astype(np.uint8)
    row = dict(parent.truth, file=file, kind="near_duplicate", subkind=subkind,
               duplicate_of=parent.file, height=rgb.shape[0], width=rgb.shape[1])
    for key in ("bbox_x", "heel_x", "toe_x"):
        row[key] = row[key] * sx + dx
    for key in ("bbox_y", "heel_y", "toe_y"):
        row[key] = row[key] * sy + dy
    row["bbox_w"], row["bbox_h"] = row["bbox_w"] * sx, row["bbox_h"] * sy
    if subkind == "cropped":  # the crop may cut the box: clip it to the image
        x0, y0 = max(0.0, row["bbox_x"]), max(0.0, row["bbox_y"])
        x1 = min(float(rgb.shape[1]), row["bbox_x"] + row["bbox_w"])
        y1 = min(float(rgb.shape[0]), row["bbox_y"] + row["bbox_h"])
        row.update(bbox_x=x0, bbox_y=y0, bbox_w=x1 - x0, bbox_h=y1 - y0)
    return Rendered(file, encode(rgb, "jpg", quality), row)


def _shifted_edit(rgb: np.ndarray, subkind: str, rng: np.random.Generator) -> Edited:
    """The shifted variant's near-duplicate edits: a watermark, a 1-3 degree rotation zoomed to
    fill the frame, or a hue and saturation shift."""
    h, w = rgb.shape[:2]
    eye = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    if subkind == "watermark":
        out = rgb.copy()
        layer = out.copy()
        bw, bh = int(w * rng.uniform(0.35, 0.6)), int(h * rng.uniform(0.06, 0.1))
        x0 = int(rng.uniform(0.02, 0.98) * (w - bw))
        y0 = int(rng.uniform(0.02, 0.98) * (h - bh))
        put_text(layer, "(c) " + ("STUDIO", "FOOTPICS", "MYPAGE")[int(rng.integers(3))],
                 (x0, y0, bw, bh), (255, 255, 255), (0, 0, 0))
        a = rng.uniform(0.35, 0.6)
        out = np.clip(out * (1 - a) + layer * a + 0.5, 0, 255).astype(np.uint8)
        return Edited(out, eye, ("watermark",))
    if subkind == "small_rotation":
        import math

        angle = float(rng.uniform(1, 3) * rng.choice([-1, 1]))
        r = math.radians(abs(angle))
        scale = math.cos(r) + max(w / h, h / w) * math.sin(r)
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
        return Edited(cv2.warpAffine(rgb, m, (w, h), flags=cv2.INTER_LINEAR), m,
                      ("small_rotation",))
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(6, 12) * rng.choice([-1, 1])) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.7, 1.3), 0, 255)
    out = cv2.cvtColor(np.clip(hsv + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB)
    return Edited(out, eye, ("colour_shift",))


def repost(parent: Rendered, file: str, subkind: str, rng: np.random.Generator) -> Rendered:
    """A hard repost of ``parent`` (`curate.demo.reposts`); box and keypoints mapped with it."""
    edited = make_repost(decode(parent.data), subkind, rng)
    return _edited_copy(parent, file, "repost", subkind, edited, int(rng.integers(70, 93)))


def _edited_copy(parent: Rendered, file: str, kind: str, subkind: str, edited: Edited,
                 quality: int) -> Rendered:
    """A copy of ``parent`` after an affine edit; box and keypoints mapped with it."""
    h, w = edited.rgb.shape[:2]
    row = dict(parent.truth, file=file, kind=kind, subkind=subkind,
               duplicate_of=parent.file, height=h, width=w, edits="+".join(edited.steps))
    if row["bbox_x"] is not None:
        x, y, bw, bh = row["bbox_x"], row["bbox_y"], row["bbox_w"], row["bbox_h"]
        corners = map_points(edited.matrix, [(x, y), (x + bw, y), (x, y + bh), (x + bw, y + bh)])
        x0, y0 = np.clip(corners.min(axis=0), 0, (w, h))
        x1, y1 = np.clip(corners.max(axis=0), 0, (w, h))
        (hx, hy), (tx, ty) = map_points(edited.matrix, [(row["heel_x"], row["heel_y"]),
                                                        (row["toe_x"], row["toe_y"])])
        if row["category"] in figures.CATEGORIES and np.linalg.det(edited.matrix[:, :2]) < 0:
            (hx, hy), (tx, ty) = (tx, ty), (hx, hy)  # mirrored: the image-left eye is the other
        row.update(bbox_x=float(x0), bbox_y=float(y0), bbox_w=float(x1 - x0),
                   bbox_h=float(y1 - y0), heel_x=float(hx), heel_y=float(hy), toe_x=float(tx),
                   toe_y=float(ty),
                   rotation_deg=_rotation(row, hx, hy, tx, ty))
    return Rendered(file, encode(edited.rgb, "jpg", quality), row)


def _rotation(row: dict, hx: float, hy: float, tx: float, ty: float) -> float:
    """Rotation truth from the mapped keypoints: heel->toe is the foot's up axis, and a
    figure's up axis is eye_left->eye_right turned 90 degrees."""
    if row["category"] in figures.CATEGORIES:
        return float(np.degrees(np.arctan2(-(ty - hy), tx - hx)))
    return float(np.degrees(np.arctan2(-(tx - hx), -(ty - hy))))


def _rejected_files(sample: Rendered, seed: int) -> list[Rendered]:
    rng = np.random.default_rng([seed, 3])
    rgb = decode(sample.data)
    out = []
    for subkind, (file, reason) in badfiles.REJECTED.items():
        row = {c: None for c in TRUTH_COLUMNS}
        row.update(file=f"bad/{file}", kind="bad", subkind=subkind, expected="rejected",
                   reason=reason, in_urls=False)
        out.append(Rendered(row["file"], badfiles.rejected_file(subkind, rgb, rng), row))
    return out


def _unsafe_member_truth(file: str, subkind: str) -> Rendered:
    row = {c: None for c in TRUTH_COLUMNS}
    row.update(file=file, kind="bad", subkind=subkind, expected="rejected",
               reason="unsafe_member", in_urls=False)
    return Rendered(file, b"", row)


def _zip(members: list[Rendered], escape: bytes) -> tuple[bytes, list[Rendered]]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for m in members:
            zf.writestr(zipfile.ZipInfo(m.file.split("!", 1)[1], (2024, 5, 1, 12, 0, 0)), m.data)
        zf.writestr(zipfile.ZipInfo("../escape.jpg", (2024, 5, 1, 12, 0, 0)), escape)
    return buf.getvalue(), [_unsafe_member_truth("archives/extra.zip!../escape.jpg", "zip_slip")]


def _tar_gz(members: list[Rendered], absolute: bytes) -> tuple[bytes, list[Rendered]]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:

        def add(name: str, data: bytes, kind: bytes = tarfile.REGTYPE, target: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.type, info.linkname = (
                len(data), 1714564800, 0o644, kind, target)
            tf.addfile(info, io.BytesIO(data) if data else None)

        for m in members:
            add(m.file.split("!", 1)[1], m.data)
        add("/tmp/absolute.jpg", absolute)
        add("batch/link.jpg", b"", tarfile.SYMTYPE, "/etc/passwd")
    packed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=packed, mtime=0) as gz:
        gz.write(raw.getvalue())
    unsafe = [_unsafe_member_truth("archives/extra.tar.gz!/tmp/absolute.jpg", "absolute_path"),
              _unsafe_member_truth("archives/extra.tar.gz!batch/link.jpg", "symlink")]
    return packed.getvalue(), unsafe


# ------------------------------------------------------------------------------ assembly

def _tag_tasks(rows: list[dict], seed: int, keypoints: tuple[str, str] = ("heel", "toe")
               ) -> tuple[list[labelstudio.TaskTruth], dict[str, int]]:
    """Pick ~30% of the stored foot photos for the Label Studio snapshot."""
    rng = np.random.default_rng([seed, 5])
    candidates = [r for r in rows if r["expected"] == "stored" and r["category"]
                  and r["bbox_x"] is not None  # a figures-subject photo has no geometry
                  and r["kind"] in ("base", "outlier") and "!" not in r["file"]]
    chosen = [r for r in candidates
              if rng.random() < (0.3 if r["kind"] == "base" else 0.5)]
    tasks, ids = [], {}
    store = Store(Path("data/store"))
    for task_id, r in enumerate(chosen, start=1):
        ext = r["file"].rsplit(".", 1)[1]
        url = f"/data/local-files/?d=data/store/{store.relpath(r['sha256'], ext)}"
        tasks.append(labelstudio.TaskTruth(
            task_id, r["sha256"], url, r["width"], r["height"], r["category"],
            (r["bbox_x"], r["bbox_y"], r["bbox_w"], r["bbox_h"]), (r["heel_x"], r["heel_y"]),
            (r["toe_x"], r["toe_y"]), should_reject=r["subkind"] in ("blurry", "dark"),
            keypoint_names=keypoints))
        ids[r["file"]] = task_id
    return tasks, ids


def mask_name(file: str) -> str:
    """File name under truth/masks/ of the ground-truth mask of raw file ``file``."""
    return file.replace("/", "__").replace("!", "__") + ".png"


def truth_columns(flavour: Flavour = DEFAULT) -> list[str]:
    """The ground truth's columns; the figures subject names its keypoints eye_left/eye_right
    where the feet have heel/toe."""
    names = dict(zip(("heel", "toe"), flavour.keypoints))
    return [f"{names[c.split('_')[0]]}_{c.split('_')[1]}" if c.split("_")[0] in names else c
            for c in TRUTH_COLUMNS]


def _write_tree(root: Path, files: list[Rendered], masks: dict[str, bytes], rows: list[dict],
                export: list[dict], urls: list[str], flavour: Flavour = DEFAULT) -> None:
    for f in files:
        path = root / "raw" / f.file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f.data)
    (root / "truth" / "masks").mkdir(parents=True)
    for file, png in masks.items():
        (root / "truth" / "masks" / mask_name(file)).write_bytes(png)
    truth = pd.DataFrame(rows, columns=list(TRUTH_COLUMNS)).sort_values("file", ignore_index=True)
    truth.columns = truth_columns(flavour)
    truth["ls_task_id"] = truth["ls_task_id"].astype("Int64")
    truth.to_parquet(root / "ground_truth.parquet", index=False)
    truth.to_csv(root / "ground_truth.csv", index=False)
    (root / "labelstudio_export.json").write_text(json.dumps(export, indent=1) + "\n")
    pd.DataFrame({"path": urls}).to_csv(root / "urls.csv", index=False)


def _build(root: Path, seed: int, n_base: int, workers: int, flavour: Flavour = DEFAULT
           ) -> Counter:
    plan = plan_demo(seed, n_base, flavour)
    done: dict[str, Rendered] = {}
    with make_executor(workers) as pool:
        for job, result, error in stream_map(pool, _render_worker,
                                             ((j, seed, flavour) for j in plan.renders)):
            if error is not None:
                raise RuntimeError(f"rendering {job[0].file} failed: {error}") from error
            done[result.file] = result
    done = dict(sorted(done.items()))  # completion order varies with the worker count
    rng = np.random.default_rng([seed, 2])
    for file, parent, subkind in plan.near:
        done[file] = near_duplicate(done[parent], file, subkind, rng)
    for file, parent in plan.exact:
        p = done[parent]
        done[file] = Rendered(file, p.data, dict(p.truth, file=file, kind="exact_duplicate",
                                                  subkind="copy", duplicate_of=parent))
    for file, parent, subkind in plan.reposts:
        done[file] = repost(done[parent], file, subkind,
                            np.random.default_rng([seed, 7, int(file[-9:-4])]))
    samples = sorted(done.values(), key=lambda r: r.file)
    for r in _rejected_files(next(r for r in samples if r.truth["kind"] == "base"), seed):
        done[r.file] = r
    for r in done.values():
        if r.truth["expected"] == "stored":
            r.truth["sha256"] = content_id(r.data)
    zip_data, zip_bad = _zip([done[m] for m in plan.zip_members], done[plan.exact[0][1]].data)
    tar_data, tar_bad = _tar_gz([done[m] for m in plan.tar_members], done[plan.near[0][0]].data)
    files = [r for r in done.values() if "!" not in r.file]
    files += [Rendered("archives/extra.zip", zip_data, {}),
              Rendered("archives/extra.tar.gz", tar_data, {})]
    rows = sorted([r.truth for r in done.values()] + [r.truth for r in zip_bad + tar_bad],
                  key=lambda row: row["file"])
    url_rng = np.random.default_rng([seed, 4])
    photos = sorted(r["file"] for r in rows if r["file"].startswith("photos/"))
    urls = sorted(str(p) for p in url_rng.choice(photos, size=len(photos) // 4, replace=False))
    urls += ["bad/" + badfiles.REJECTED["truncated_jpeg"][0], "bad/" + badfiles.ACCEPTED["cmyk"]]
    for r in rows:
        r["in_urls"] = r["file"] in urls
    tasks, task_ids = _tag_tasks(rows, seed, flavour.keypoints)
    for r in rows:
        r["ls_task_id"] = task_ids.get(r["file"])
    export, _ = labelstudio.build_export(tasks, flavour.categories, seed)
    masks = {r.file: r.mask_png for r in done.values() if r.mask_png is not None}
    _write_tree(root, files, masks, rows, export, urls, flavour)
    return Counter(r["kind"] for r in rows)


def _version_text(seed: int, n_base: int, flavour: Flavour = DEFAULT) -> str:
    fields: dict[str, object] = {"generator": GENERATOR_VERSION, "seed": seed, "n_base": n_base}
    if flavour != DEFAULT:  # the default's marker is unchanged, so its folders stay reusable
        fields.update(subject=flavour.subject, variant=flavour.variant)
    return json.dumps(fields) + "\n"


def generate_demo(out_dir: Path, seed: int = 0, n_base: int = 420, workers: int = 2,
                  subject: str = "feet", variant: str = "default") -> DemoSummary:
    """Write the demo dataset to ``out_dir`` (atomically); reuse it when already complete.
    ``subject`` (feet | figures) and ``variant`` (default | shifted): see the module docstring."""
    out_dir = Path(out_dir)
    flavour = Flavour(subject, variant)
    version = _version_text(seed, n_base, flavour)
    marker = out_dir / "VERSION"
    if marker.exists() and marker.read_text() == version:
        saved = json.loads((out_dir / "summary.json").read_text())
        return DemoSummary(out_dir, saved["files"], saved["counts"], reused=True)
    if out_dir.exists() and not marker.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and was not made by `curate demo-data`; "
                              "choose another --out or remove it")
    started = time.perf_counter()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}{TEMP_MARKER}"))
    try:
        counts = _build(tmp, seed, n_base, workers, flavour)
        files = sum(1 for p in (tmp / "raw").rglob("*") if p.is_file())
        (tmp / "summary.json").write_text(json.dumps({"files": files, "counts": dict(sorted(
            counts.items()))}, indent=1) + "\n")
        marker_tmp = tmp / "VERSION"
        marker_tmp.write_text(version)  # last: a folder with VERSION is complete
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return DemoSummary(out_dir, files, dict(sorted(counts.items())),
                       time.perf_counter() - started)
