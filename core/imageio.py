"""Safe image probing and decoding: the one place that turns bytes into pixels.

Every stage decodes through here so odd files behave the same everywhere:
EXIF orientation is applied, CMYK becomes RGB, palette and alpha images are
composited on the configured background, 16-bit images are scaled (not
wrapped) to 8 bits, animations yield their first frame, and images whose
header declares more pixels than allowed are refused before any decoding
(decompression bombs). Failures raise `ImageRejected` with a stable reason
code for the rejects table and a message meant for people.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# We enforce our own, configurable pixel limit with a clear message; Pillow's
# global limit would raise a warning or a bare DecompressionBombError instead.
Image.MAX_IMAGE_PIXELS = None

EXIF_ORIENTATION_TAG = 0x0112
DEFAULT_MAX_PIXELS = 100_000_000

#: Pillow format name -> file extension used in the store.
EXTENSIONS = {
    "JPEG": "jpg",
    "MPO": "jpg",
    "PNG": "png",
    "WEBP": "webp",
    "GIF": "gif",
    "BMP": "bmp",
    "TIFF": "tif",
}

_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"WEBP", 8, "WEBP"),
    (b"BM", 0, "BMP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
)


class ImageRejected(Exception):
    """An input that cannot become an image; `reason` is a stable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ImageInfo:
    """What ingest records about a decodable image (dimensions as displayed)."""

    format: str
    ext: str
    width: int
    height: int
    mode: str
    exif_orientation: int
    n_frames: int

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def sniff_format(data: bytes) -> str | None:
    """Format from magic bytes, whatever the file name or HTTP header claims."""
    for magic, offset, fmt in _MAGIC:
        if data[offset : offset + len(magic)] == magic:
            if fmt == "WEBP" and data[:4] != b"RIFF":
                continue
            return fmt
    return None


def _describe_non_image(data: bytes) -> str:
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return "an HTML page"
    if head.startswith((b"<?xml", b"<svg")):
        return "XML/SVG (vector images are not supported)"
    if head.startswith(b"%pdf"):
        return "a PDF document"
    if head.startswith(b"pk\x03\x04"):
        return "a zip archive"
    try:
        data[:512].decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return "unrecognised binary data"


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Open (header only) after checking magic bytes and the declared pixel count."""
    if not data:
        raise ImageRejected("empty_file", "the file is empty (0 bytes)")
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageRejected(
            "not_an_image", f"not an image: the content is {_describe_non_image(data)}"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageRejected("corrupt", f"{fmt} header cannot be read: {exc}") from exc
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageRejected("corrupt", f"{fmt} declares an empty size {width}x{height}")
    if width * height > max_pixels:
        raise ImageRejected(
            "too_many_pixels",
            f"{fmt} declares {width}x{height} = {width * height:,} pixels, above the limit "
            f"of {max_pixels:,} (possible decompression bomb; raise ingest.max_pixels "
            "if the image is genuine)",
        )
    return img


def _load_checked(img: Image.Image, reduce_jpeg: bool) -> None:
    """Decode the first frame fully so truncated or corrupt data is caught now."""
    if reduce_jpeg and img.format in ("JPEG", "MPO"):
        # DCT-domain downscaling still entropy-decodes every byte, so truncation
        # is detected at a fraction of the cost of a full decode.
        img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.load()
    except OSError as exc:
        reason = "truncated" if "truncated" in str(exc) else "corrupt"
        raise ImageRejected(reason, f"{img.format} data cannot be decoded: {exc}") from exc
    except (ValueError, SyntaxError, EOFError) as exc:
        raise ImageRejected("corrupt", f"{img.format} data cannot be decoded: {exc}") from exc


def probe(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Validate `data` as an image and describe it, decoding it once (cheaply for JPEG)."""
    img = _open(data, max_pixels)
    fmt = img.format or "UNKNOWN"
    if fmt not in EXTENSIONS:
        raise ImageRejected("unsupported_format", f"format {fmt} is not supported")
    mode = img.mode
    n_frames = int(getattr(img, "n_frames", 1))
    width, height = img.size  # before the load: a JPEG draft shrinks img.size
    # Decode before reading EXIF: PNG's getexif() loads the pixels itself, and an
    # error swallowed there would leave a corrupt image looking loaded.
    _load_checked(img, reduce_jpeg=True)
    try:
        orientation = int(img.getexif().get(EXIF_ORIENTATION_TAG, 1))
    except Exception:  # noqa: BLE001 - malformed EXIF must not reject an otherwise fine image
        orientation = 1
    if orientation not in range(1, 9):
        orientation = 1
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return ImageInfo(fmt, EXTENSIONS[fmt], width, height, mode, orientation, n_frames)


def _to_8bit(img: Image.Image) -> Image.Image:
    """Scale high-bit-depth single-channel images into 0..255 (no wrap-around)."""
    arr = np.asarray(img)
    if img.mode == "F":
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo or 1.0) * 255.0
    elif arr.max() > 255 or img.mode.startswith("I;16"):
        scaled = arr.astype(np.float64) / 257.0
    else:
        scaled = arr.astype(np.float64)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def normalize(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any decoded mode to RGB, compositing transparency on `background`."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        img = _to_8bit(img)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("LA", "PA", "La", "RGBa"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        base = Image.new("RGB", img.size, background)
        base.paste(img, mask=img.getchannel("A"))
        return base
    return img.convert("RGB") if img.mode != "RGB" else img


def decode(
    source: bytes | Path,
    *,
    background: tuple[int, int, int] = (255, 255, 255),
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int | None = None,
    gray: bool = False,
    upright: bool = True,
) -> Image.Image:
    """Decode to an upright RGB image (or 8-bit grayscale "L" with `gray=True`).

    `min_side` allows a reduced-scale JPEG decode: the result's shorter side is
    at least `min_side` (callers resize further), which is several times faster
    than a full decode for metrics that do not need full resolution. `gray`
    takes a JPEG's luma straight from the decoder (no chroma work, faster, and
    free of the rounding of a YCbCr -> RGB -> L round trip). `upright=False`
    skips the EXIF rotation, for callers that must downscale on the file's own
    pixel grid (where a JPEG's DCT blocks lie) and rotate after, with `orient`.
    """
    data = source.read_bytes() if isinstance(source, Path) else source
    img = _open(data, max_pixels)
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    if (min_side or gray) and img.format in ("JPEG", "MPO"):
        scale = max(1.0, min(img.size) / min_side) if min_side else 1.0
        img.draft("L" if gray else "RGB", (int(img.width / scale), int(img.height / scale)))
    _load_checked(img, reduce_jpeg=False)
    if upright:
        img = ImageOps.exif_transpose(img) or img
    if gray:  # L -> RGB -> L would be lossless (Pillow's luma weights sum to exactly 1)
        return img if img.mode == "L" else normalize(img, background).convert("L")
    return normalize(img, background)


#: EXIF orientation -> the transpose that makes the image upright (as ImageOps.exif_transpose).
_ORIENT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90,
}


def orient(img: Image.Image, orientation: int) -> Image.Image:
    """Apply an EXIF orientation (1-8, as `ImageInfo.exif_orientation`) to a decoded image."""
    method = _ORIENT.get(int(orientation))
    return img.transpose(method) if method is not None else img


def shrink(arr: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """`arr` area-averaged so its longer side is at most `max_side` (never enlarged);
    (array, factor), the factor mapping the result's coordinates back by division."""
    h, w = arr.shape[:2]
    factor = min(1.0, max_side / max(h, w))
    if factor < 1.0:
        arr = cv2.resize(arr, (max(1, round(w * factor)), max(1, round(h * factor))),
                         interpolation=cv2.INTER_AREA)
    return arr, factor
