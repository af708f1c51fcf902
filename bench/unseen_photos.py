"""Repost ground truth on real photographs the demo and its tuning never used.

The photos are the ones scikit-image and scikit-learn ship inside their packages (nothing is
downloaded): colour photos (astronaut, coffee, rocket, a stereo pair of a motorcycle, China,
a flower, Hubble's deep field, a retina, a tissue stain, Chelsea the cat) and grayscale ones
(camera man, moon, coins, clock, text, page), plus textures (brick, grass, gravel). Large
ones are cut into non-overlapping halves, which makes the hardest negatives there are: two
"photos" of one subject, one scene or one texture that share no pixel.

The two views of the stereo pair are one scene (a near-duplicate for a GAN set, reported as
kind ``second_view``). Every original gets one copy of each easy kind (resized, re-encoded,
cropped 1-5%, brighter, darker) and one of each hard kind, made by the demo's own edit code
(`curate.demo.reposts`) with its own seed. The folder is written once per seed and reused.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from curate.demo.reposts import REPOST_KINDS, make_repost

EASY_KINDS = ("resized", "reencoded", "cropped", "brighter", "darker")
VERSION = 2


def _rgb(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = (np.clip(img, 0, 1) * 255).astype(np.uint8) if img.max() <= 1 else img.astype(
            np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3])


def _halves(img: np.ndarray) -> list[np.ndarray]:
    """The left and right halves of a wide image, top and bottom of a tall one."""
    h, w = img.shape[:2]
    if w >= h:
        return [img[:, : w // 2], img[:, w // 2 :]]
    return [img[: h // 2], img[h // 2 :]]


def originals() -> dict[str, np.ndarray]:
    """name -> RGB array of every original photo (halves named name_0, name_1)."""
    import skimage.data as sk
    from sklearn.datasets import load_sample_image

    whole: dict[str, Callable[[], np.ndarray]] = {
        "astronaut": sk.astronaut, "coffee": sk.coffee, "rocket": sk.rocket,
        "chelsea": sk.chelsea, "immunohistochemistry": sk.immunohistochemistry,
        "camera": sk.camera, "moon": sk.moon, "coins": sk.coins, "clock": sk.clock,
        "text": sk.text, "page": sk.page,
        "motorcycle_left": lambda: sk.stereo_motorcycle()[0],
        "motorcycle_right": lambda: sk.stereo_motorcycle()[1],
        "china": lambda: load_sample_image("china.jpg"),
        "flower": lambda: load_sample_image("flower.jpg"),
    }
    halved: dict[str, Callable[[], np.ndarray]] = {
        "hubble": sk.hubble_deep_field, "retina": sk.retina, "brick": sk.brick,
        "grass": sk.grass, "gravel": sk.gravel,
    }
    out = {name: _rgb(fn()) for name, fn in whole.items()}
    for name, fn in halved.items():
        for k, half in enumerate(_halves(_rgb(fn()))):
            out[f"{name}_{k}"] = np.ascontiguousarray(half)
    return out


def easy_copy(rgb: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """(pixels, JPEG quality) of an easy near-duplicate, as the demo makes them."""
    h, w = rgb.shape[:2]
    if kind == "resized":
        f = rng.uniform(0.5, 0.8)
        return np.asarray(Image.fromarray(rgb).resize((round(w * f), round(h * f)),
                                                      Image.Resampling.LANCZOS)), 90
    if kind == "reencoded":
        return rgb, int(rng.integers(30, 46))
    if kind == "cropped":
        cx, cy = rng.uniform(0.01, 0.05, 2)
        left, top = int(w * cx * rng.uniform()), int(h * cy * rng.uniform())
        return rgb[top : top + h - int(h * cy), left : left + w - int(w * cx)], 90
    factor = 1.1 if kind == "brighter" else 0.9
    return np.clip(rgb.astype(np.float32) * factor + 0.5, 0, 255).astype(np.uint8), 90


def _jpeg(rgb: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def build(out_dir: Path, seed: int = 1) -> dict[str, dict[str, str | None]]:
    """Write the set to out_dir/raw (once per seed); return file -> {"parent", "kind"}."""
    truth_path = out_dir / "truth.json"
    if truth_path.exists():
        saved = json.loads(truth_path.read_text())
        if saved.get("version") == VERSION and saved.get("seed") == seed:
            return saved["files"]
    raw = out_dir / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, str | None]] = {}
    for n, (name, rgb) in enumerate(sorted(originals().items())):
        original = f"{name}.png"
        Image.fromarray(rgb).save(raw / original)
        files[original] = {"parent": None, "kind": "original"}
        rng = np.random.default_rng([seed, n])
        for kind in EASY_KINDS:
            copy, quality = easy_copy(rgb, kind, rng)
            (raw / f"{name}__{kind}.jpg").write_bytes(_jpeg(copy, quality))
            files[f"{name}__{kind}.jpg"] = {"parent": original, "kind": kind}
        for kind in REPOST_KINDS:
            edited = make_repost(rgb, kind, rng)
            (raw / f"{name}__{kind}.jpg").write_bytes(
                _jpeg(edited.rgb, int(rng.integers(70, 93))))
            files[f"{name}__{kind}.jpg"] = {"parent": original, "kind": kind,
                                           "edits": "+".join(edited.steps)}
    # The stereo pair: one scene at one instant from two viewpoints a few centimetres apart.
    # For a GAN set that is a near-duplicate (the model would see the scene twice), so the
    # truth links it and the bench reports it as its own kind, outside the repost goals.
    files["motorcycle_right.png"] = {"parent": "motorcycle_left.png", "kind": "second_view"}
    truth_path.write_text(json.dumps({"version": VERSION, "seed": seed, "files": files},
                                     indent=1) + "\n")
    return files
