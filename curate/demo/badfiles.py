"""Encoders for the demo's planted odd files: the inputs real scrapes are full of.

Two groups. *Rejected* kinds cannot become images (empty, truncated, random bytes, a text page
saved as .png, a decompression bomb): ingest must reject each with a reason and go on.
*Accepted* kinds are valid but awkward (CMYK JPEG, 16-bit PNG, palette PNG with transparency,
EXIF-rotated JPEG, animated GIF): decoding must normalise them, never wrap or mis-rotate them.
"""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
from PIL import Image

#: subkind -> (file name under raw/bad/, reason ingest must give, or None when it is accepted)
REJECTED = {
    "zero_byte": ("empty.jpg", "empty_file"),
    "truncated_jpeg": ("half_downloaded.jpg", "truncated"),
    "random_bytes": ("random_bytes.jpg", "not_an_image"),
    "text": ("error_page.png", "not_an_image"),
    "decompression_bomb": ("huge_declared_size.png", "too_many_pixels"),
}
ACCEPTED = {
    "cmyk": "print_scan_cmyk.jpg",
    "png16": "sixteen_bit.png",
    "palette_alpha": "palette_transparent.png",
    "exif_rotated": "phone_exif_rotated.jpg",
    "animated_gif": "animated.gif",
}


def jpeg_bytes(rgb: np.ndarray, quality: int = 92, **save_args: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality, **save_args)
    return buf.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(
        ">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def decompression_bomb(side: int = 100_000) -> bytes:
    """A tiny PNG whose header declares ``side`` x ``side`` pixels (10 gigapixels by default).

    Built by hand so generating it never allocates the pixels; a decoder that trusts the header
    and allocates would need 30 GB. The single IDAT holds a few zero rows only.
    """
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + 3 * side) * 4, 9)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", rows)
            + _png_chunk(b"IEND", b""))


def rejected_file(subkind: str, rgb: np.ndarray, rng: np.random.Generator) -> bytes:
    """Bytes for one rejected kind; ``rgb`` is a foot photo used where real content helps."""
    if subkind == "zero_byte":
        return b""
    if subkind == "truncated_jpeg":
        full = jpeg_bytes(rgb)
        return full[: int(len(full) * 0.6)]
    if subkind == "random_bytes":
        return rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    if subkind == "text":
        return (b"<!DOCTYPE html><html><head><title>403 Forbidden</title></head>"
                b"<body><h1>Hotlinking not allowed</h1></body></html>\n")
    if subkind == "decompression_bomb":
        return decompression_bomb()
    raise ValueError(f"unknown rejected kind {subkind!r}")


def png_bytes(image: Image.Image, **save_args: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG", **save_args)
    return buf.getvalue()


def accepted_file(subkind: str, rgb: np.ndarray, mask: np.ndarray) -> bytes:
    """Bytes for one accepted-but-awkward kind; decoding must give back (about) ``rgb``.

    For ``exif_rotated`` the stored pixels are turned 90 degrees and EXIF orientation 6 says how
    to turn them back, exactly what phone cameras write; for ``palette_alpha`` the background is
    transparent, so the decoded image shows the subject on the configured background colour.
    """
    if subkind == "cmyk":
        buf = io.BytesIO()
        Image.fromarray(rgb).convert("CMYK").save(buf, "JPEG", quality=92)
        return buf.getvalue()
    if subkind == "png16":
        deep = rgb.astype(np.uint16) * 257  # full 16-bit range: 255 -> 65535
        ok, enc = cv2.imencode(".png", cv2.cvtColor(deep, cv2.COLOR_RGB2BGR))
        assert ok
        return enc.tobytes()
    if subkind == "palette_alpha":
        rgba = np.dstack([rgb, np.where(mask > 127, 255, 0).astype(np.uint8)])
        pal = Image.fromarray(rgba, "RGBA").quantize(255, method=Image.Quantize.FASTOCTREE)
        return png_bytes(pal)
    if subkind == "exif_rotated":
        stored = Image.fromarray(rgb).transpose(Image.Transpose.ROTATE_90)
        exif = Image.Exif()
        exif[0x0112] = 6  # "rotate 90 CW to display", undoing the ROTATE_90 (CCW) above
        buf = io.BytesIO()
        stored.save(buf, "JPEG", quality=92, exif=exif.tobytes())
        return buf.getvalue()
    if subkind == "animated_gif":
        first = Image.fromarray(rgb)
        frames = [first] + [first.rotate(a, fillcolor=(255, 255, 255)) for a in (4, 8)]
        buf = io.BytesIO()
        frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=120, loop=0)
        return buf.getvalue()
    raise ValueError(f"unknown accepted kind {subkind!r}")
