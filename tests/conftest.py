"""Shared test helpers: deterministic synthetic images and broken files.

Everything is generated here with numpy and Pillow from a seed; nothing is
downloaded. Tests get the helpers through the `images` fixture (a namespace of
plain functions), so the same makers serve unit and integration tests.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image


def noise(width: int = 64, height: int = 48, seed: int = 0, channels: int = 3) -> np.ndarray:
    """Smooth-ish random RGB pixels (compress well enough, differ per seed)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(1, height // 8), max(1, width // 8), channels), np.uint8)
    img = Image.fromarray(small.squeeze()).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(img)


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def jpeg(width: int = 64, height: int = 48, seed: int = 0, **kwargs) -> bytes:
    return encode(Image.fromarray(noise(width, height, seed)), "JPEG", quality=90, **kwargs)


def png(width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    return encode(Image.fromarray(noise(width, height, seed)), "PNG")


def webp(width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    return encode(Image.fromarray(noise(width, height, seed)), "WEBP", quality=90)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A ~70-byte PNG whose IHDR declares `width` x `height` RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + _png_chunk(b"IEND", b"")
    )


def truncated_jpeg(seed: int = 0) -> bytes:
    data = jpeg(96, 64, seed)
    return data[: len(data) // 2]


def corrupt_png(seed: int = 0) -> bytes:
    """A PNG with an intact header whose compressed pixel data is zeroed out."""
    data = bytearray(png(96, 64, seed))
    start = data.index(b"IDAT") + 4 + 20  # well inside the IDAT payload
    data[start : start + 200] = bytes(200)
    return bytes(data)


def random_bytes(n: int = 2048, seed: int = 0) -> bytes:
    data = np.random.default_rng(seed).integers(0, 256, n, np.uint8).tobytes()
    return b"\x00" + data[1:]  # never starts with an image magic by chance


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def damaged_zip(path: Path, members: dict[str, bytes], damaged: str,
                method: int = zipfile.ZIP_DEFLATED) -> Path:
    """A zip of `members` whose member `damaged` has its compressed bytes overwritten.

    Depending on `method` reading it raises a CRC mismatch (stored), zlib.error (deflate),
    OSError (bzip2) or LZMAError: the errors a real corrupt download produces.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with zipfile.ZipFile(path) as zf:
        offset = zf.getinfo(damaged).header_offset
    raw = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", raw[offset + 26:offset + 30])
    start = offset + 30 + name_len + extra_len + 4  # a few bytes into the member's data
    raw[start:start + 64] = bytes((b * 37 + 11) % 256 for b in range(64))
    path.write_bytes(bytes(raw))
    return path


IMAGES = SimpleNamespace(
    noise=noise, encode=encode, jpeg=jpeg, png=png, webp=webp, bomb_png=bomb_png,
    truncated_jpeg=truncated_jpeg, corrupt_png=corrupt_png, random_bytes=random_bytes,
    write=write, damaged_zip=damaged_zip,
)


@pytest.fixture
def images() -> SimpleNamespace:
    """Makers of synthetic image bytes and broken files (see module docstring)."""
    return IMAGES


# ------------------------------------------------------------------ reports in a real browser

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def browser_missing(reason: str) -> None:
    """Skip a browser test where Chromium is missing, but fail it under CI (`CI` set, as
    .ci/run and every CI service set it): CI must not go green by skipping the reports."""
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{reason} (CI is set: browser tests must run in CI)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def open_report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[Path], object]]:
    """A function opening an HTML report from file:// in Debian's headless Chromium (driven by
    Playwright, one fresh profile per module); each page collects its console messages and
    page errors (`page.messages`, `page.problems()`), dialogs (`page.dialogs`, dismissed), and
    `page.images_loaded(selector)`."""
    chromium = _chromium()
    if chromium is None:
        browser_missing("Debian's chromium is not installed and could not be installed by "
                        "`make browser` (apt-get install chromium); the report tests need it")
    try:
        from playwright import sync_api
    except ImportError:
        browser_missing("playwright is not installed (pip install -e '.[test]')")
    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh --user-data-dir
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900})

        def open_page(path: Path) -> object:
            pg = context.new_page()
            pg.messages, pg.dialogs = [], []
            pg.on("console", lambda m: pg.messages.append((m.type, m.text)))
            pg.on("pageerror", lambda e: pg.messages.append(("pageerror", str(e))))
            pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
            # console errors, warnings and uncaught exceptions so far
            pg.problems = lambda: [m for m in pg.messages
                                   if m[0] in ("error", "pageerror", "warning")]
            # (decoded images, all images) matching a selector: equal when none is broken
            pg.images_loaded = lambda sel="img": pg.evaluate(
                "(sel) => { const all = Array.from(document.querySelectorAll(sel));"
                " return [all.filter(i => i.complete && i.naturalWidth > 0).length,"
                " all.length]; }", sel)
            pg.goto(Path(path).resolve().as_uri())
            pg.wait_for_load_state("load")
            return pg

        try:
            yield open_page
        finally:
            context.close()


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port on 127.0.0.1 bound by the test but not listening: connecting to it is refused for
    the whole test (a port found free and released again could be taken meanwhile)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]
