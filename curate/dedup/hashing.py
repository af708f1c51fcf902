"""Perceptual hashes of images, computed in worker processes.

The hash of an image is imagehash's algorithm (phash by default; dhash, whash and colorhash
selectable) applied to its *canonical* grayscale image: the full-resolution luma, box-averaged
by F = 4 (less for images under 128 px). Why this detour instead of `imagehash.phash(img)`:

* It lets a JPEG be decoded at half scale in the DCT domain (`fast_decode`), about half
  the work of a full decode, while producing the same hash. A box average by 4 of the full
  decode and a box average by 2 of the half-scale decode are nearly the same image; handing
  each a different-resolution image to resample directly (what imagehash would do) flips a
  few bits on about one image in ten. The test suite checks on the demo data that the fast
  path gives the hash of a full decode for at least 99% of the images.
* phash and dhash run on float pixels (same steps as imagehash: Lanczos resize, DCT or
  neighbour difference, compare) instead of rounding the small resized image to 8 bits: that
  rounding alone makes the bits near the median flip between two decodes of the same photo.
  On 8-bit input they give exactly imagehash's bits (tested), and the hex form is
  imagehash's, so hashes can be compared with other tools.

whash and colorhash call imagehash itself on the canonical image (8-bit gray, or RGB for
colorhash). The worker also measures a contrast-normalised sharpness on the half-scale gray
image, which the keep-best policy uses to prefer the crisper of two same-size copies, and
finds the content box there (`curate.dedup.borders`), which the repost search embeds.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from core.imageio import decode, orient
from core.parallel import one_thread_per_worker
from curate.dedup.borders import FULL, Box, content_box

#: The canonical image is the full image box-averaged by this factor (or less, see below).
CANON_FACTOR = 4
#: ... but never below this shorter side (phash resamples to 32 x 32).
CANON_MIN_SIDE = 32
#: JPEG DCT-domain reduction used by `fast_decode` (the box average does the rest).
FAST_DCT_FACTOR = 2
#: Bump when the hash, sharpness, contrast or content box computation changes its output.
HASH_VERSION = 9
#: Below this standard deviation (gray levels) of its gray image an image is "blank":
#: its hash bits come from rounding noise, so it is only compared by exact pixels.
BLANK_STD = 1.0


@dataclass(frozen=True)
class HashSpec:
    """Which hash to compute and how to decode for it."""

    method: str = "phash"
    hash_size: int = 8
    fast_decode: bool = True
    background: tuple[int, int, int] = (255, 255, 255)

    @property
    def bits(self) -> int:
        return 14 * self.hash_size if self.method == "colorhash" else self.hash_size**2

    def cache_params(self) -> dict[str, object]:
        return {"method": self.method, "hash_size": self.hash_size,
                "fast_decode": self.fast_decode, "background": list(self.background)}


@dataclass(frozen=True)
class HashResult:
    """A hash as an integer (imagehash bit order: first bit is the most significant)."""

    value: int
    bits: int
    sharpness: float
    contrast: float  # standard deviation of the half-scale gray image, in gray levels
    content: Box = FULL  # the photo inside added bars, captions or app chrome (borders.py)

    @property
    def blank(self) -> bool:
        return self.contrast < BLANK_STD

    @property
    def hex(self) -> str:
        return to_hex(self.value, self.bits)


def to_hex(value: int, bits: int) -> str:
    """imagehash's string form of a hash (`str(ImageHash)`)."""
    return f"{value:0{math.ceil(bits / 4)}x}"


def from_hex(text: str) -> int:
    return int(text, 16)


def pack_bits(bits: np.ndarray) -> int:
    """Boolean array -> int, first element most significant (as imagehash's hex)."""
    value = 0
    for bit in np.asarray(bits, dtype=bool).ravel():
        value = (value << 1) | int(bit)
    return value


# --------------------------------------------------------------------------- canonical image


def canonical_factor(width: int, height: int) -> int:
    """Box factor F of the canonical image: 4, or less so its shorter side stays >= 32."""
    factor = CANON_FACTOR
    while factor > 1 and min(width, height) // factor < CANON_MIN_SIDE:
        factor //= 2
    return factor


def canonical_image(source: Path | bytes, width: int, height: int, spec: HashSpec,
                    *, orientation: int = 1, color: bool = False, detail: bool = False
                    ) -> Image.Image | tuple[Image.Image, Image.Image]:
    """The canonical image: full-resolution pixels box-averaged by `canonical_factor`.

    Gray ("F", float32) by default, RGB (8-bit) with `color`. `width`/`height` are the
    image's displayed size and `orientation` its EXIF orientation (the manifest's columns).
    With `fast_decode` a JPEG is decoded at reduced scale and only the rest of the reduction
    is done by box averaging; the DCT scaling leaves at least a factor 2 to the box average,
    which is what makes the two paths agree. Boxes are laid on the file's own pixel grid,
    where the JPEG's DCT blocks lie, and the result is rotated upright afterwards: boxing an
    already-rotated image would shift them by a pixel whenever a side is not a multiple of
    the factor. With `detail`, also returns the 8-bit gray image at half scale (what
    sharpness is measured on: fine enough to see blur of a few pixels, which the canonical
    image averages away).
    """
    factor = canonical_factor(width, height)
    dct = max(1, min(FAST_DCT_FACTOR, factor // 2)) if spec.fast_decode else 1
    # Floor, not ceil: asking for even one pixel more than 1/dct makes Pillow's draft fall back
    # to a full-size decode.
    min_side = min(width, height) // dct if dct > 1 else None
    kwargs = {"background": spec.background, "gray": not color, "upright": False}
    img = decode(source, min_side=min_side, **kwargs)  # type: ignore[arg-type]
    done = max(1, round(max(width, height) / max(img.size)))
    if factor % done:  # the decoder reduced more than asked for (never expected): redo fully
        img = decode(source, **kwargs)  # type: ignore[arg-type]
        done = 1
    if color:
        return orient(img.reduce(factor // done) if factor > done else img, orientation)
    work = img.convert("F")  # float from here on: 8-bit rounding would flip hash bits
    canonical = orient(work.reduce(factor // done) if factor > done else work, orientation)
    if not detail:
        return canonical
    half = min(2, factor)
    return canonical, orient(img.reduce(half // done) if half > done else img, orientation)


# --------------------------------------------------------------------------- hash functions


def _lanczos(img: Image.Image, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(img.resize(size, Image.Resampling.LANCZOS), dtype=np.float64)


@functools.lru_cache(maxsize=4)
def _dct_matrix(n: int) -> np.ndarray:
    """Unnormalised DCT-II as a matrix: scipy.fftpack.dct(x) == _dct_matrix(len(x)) @ x.

    A 32-point DCT is a tiny matrix product; computing it here spares every worker process
    the import of scipy (a third of its start-up time).
    """
    k = np.arange(n)[:, None]
    return 2.0 * np.cos(np.pi * k * (2 * np.arange(n)[None, :] + 1) / (2 * n))


def phash_bits(img: Image.Image, hash_size: int = 8, highfreq_factor: int = 4) -> np.ndarray:
    """imagehash.phash's steps on an "F" (or "L") image, without rounding to 8 bits."""
    side = hash_size * highfreq_factor
    pixels = _lanczos(img, (side, side))
    m = _dct_matrix(side)
    dct = m @ pixels @ m.T  # 2-D DCT-II: along axis 0, then axis 1, as imagehash does
    low = dct[:hash_size, :hash_size]
    return low > np.median(low)


def dhash_bits(img: Image.Image, hash_size: int = 8) -> np.ndarray:
    """imagehash.dhash's steps on an "F" (or "L") image, without rounding to 8 bits."""
    pixels = _lanczos(img, (hash_size + 1, hash_size))
    return pixels[:, 1:] > pixels[:, :-1]


def _to_l(img: Image.Image) -> Image.Image:
    arr = np.clip(np.rint(np.asarray(img, dtype=np.float32)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "L")


def hash_bits(img: Image.Image, method: str, hash_size: int) -> np.ndarray:
    """Hash bits of a canonical image (gray "F" for all methods but colorhash: RGB)."""
    import imagehash

    if method == "phash":
        return phash_bits(img, hash_size)
    if method == "dhash":
        return dhash_bits(img, hash_size)
    if method == "whash":
        return imagehash.whash(_to_l(img), hash_size).hash
    if method == "colorhash":
        return imagehash.colorhash(img, binbits=hash_size).hash
    raise ValueError(f"unknown hash method {method!r}")


def sharpness(img: Image.Image) -> float:
    """Laplacian spread over intensity spread (8-bit gray image; brightness-invariant)."""
    return detail_stats(img)[0]


def detail_stats(img: Image.Image) -> tuple[float, float]:
    """(sharpness, contrast) of an 8-bit gray image; contrast = intensity std in gray levels."""
    import cv2

    arr = np.asarray(img if img.mode == "L" else img.convert("L"))
    if min(arr.shape) < 3:
        return 0.0, float(arr.std()) if arr.size else 0.0
    lap = cv2.Laplacian(arr, cv2.CV_16S, ksize=1)  # exact for 8-bit input, and fastest
    contrast = float(cv2.meanStdDev(arr)[1][0, 0])
    return float(cv2.meanStdDev(lap)[1][0, 0] / (contrast + 1.0)), contrast


def hash_image(source: Path | bytes, width: int, height: int, spec: HashSpec,
               orientation: int = 1) -> HashResult:
    """Hash and sharpness of one image (raises ImageRejected when it cannot be decoded).

    `width`, `height` (displayed) and `orientation` (EXIF) are the manifest's columns.
    """
    gray, detail = canonical_image(source, width, height, spec, orientation=orientation,
                                   detail=True)
    if spec.method == "colorhash":
        bits = hash_bits(canonical_image(source, width, height, spec, orientation=orientation,
                                         color=True), spec.method, spec.hash_size)
    else:
        bits = hash_bits(gray, spec.method, spec.hash_size)
    sharp, contrast = detail_stats(detail)
    return HashResult(pack_bits(bits), spec.bits, sharp, contrast,
                      content_box(np.asarray(detail)))


# --------------------------------------------------------------------------- worker task

#: One image to hash: id, path, width, height (displayed) and EXIF orientation.
HashItem = tuple[str, str, int, int, int]


def hash_one(item: HashItem, spec: HashSpec) -> dict[str, object]:
    """The cached record of one image: hash (hex), sharpness, contrast and content box.

    Raises `ImageRejected` or `OSError` for an image that cannot be read (`core.imagemap`
    turns them into the image's failure)."""
    one_thread_per_worker()
    _, path, width, height, orientation = item
    result = hash_image(Path(path), width, height, spec, orientation)
    return {"h": result.hex, "s": round(result.sharpness, 6), "c": round(result.contrast, 4),
            "b": list(result.content)}
