"""Unit tests for core.imageio: probing, safe decoding, rejects and mode normalisation."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFile

from core import imageio
from core.imageio import ImageRejected, decode, probe, sniff_format

BACKGROUND = (10, 200, 30)


def rejected(data: bytes, **kwargs) -> ImageRejected:
    """The ImageRejected both probe and decode raise for `data` (they must agree)."""
    with pytest.raises(ImageRejected) as probed:
        probe(data, **kwargs)
    with pytest.raises(ImageRejected) as decoded:
        decode(data, **kwargs)
    assert probed.value.reason == decoded.value.reason
    return probed.value


def assert_readable(exc: ImageRejected) -> None:
    """A message for people: one line of words, not a repr or a traceback."""
    assert exc.message == str(exc)
    assert len(exc.message) > 15 and "\n" not in exc.message
    assert "Traceback" not in exc.message and not exc.message.startswith(("<", "("))


# ------------------------------------------------------------------ good files


@pytest.mark.parametrize(
    ("maker", "fmt", "ext"),
    [("jpeg", "JPEG", "jpg"), ("png", "PNG", "png"), ("webp", "WEBP", "webp")],
)
def test_probe_and_decode_good_image(images, maker, fmt, ext):
    data = getattr(images, maker)(80, 40, seed=1)
    info = probe(data)
    assert (info.format, info.ext, info.width, info.height) == (fmt, ext, 80, 40)
    assert (info.mode, info.exif_orientation, info.n_frames) == ("RGB", 1, 1)
    assert info.to_dict()["width"] == 80
    img = decode(data)
    assert img.mode == "RGB" and img.size == (80, 40)
    expected = images.noise(80, 40, seed=1).astype(int)
    tolerance = 0 if fmt == "PNG" else 20  # lossy codecs
    assert np.abs(np.asarray(img).astype(int) - expected).mean() <= tolerance


def test_decode_reads_a_path(images, tmp_path):
    path = images.write(tmp_path / "a.png", images.png(30, 20, seed=2))
    assert np.array_equal(np.asarray(decode(path)), images.noise(30, 20, seed=2))


def test_decode_min_side_uses_reduced_jpeg_decode(images):
    data = images.jpeg(512, 256, seed=3)
    full = decode(data)
    small = decode(data, min_side=64)
    assert full.size == (512, 256)
    assert min(small.size) >= 64 and small.size[0] < 512  # DCT-scaled, not full size


def test_sniff_format_ignores_names_and_claims(images):
    assert sniff_format(images.jpeg()) == "JPEG"
    assert sniff_format(images.png()) == "PNG"
    assert sniff_format(images.webp()) == "WEBP"
    assert sniff_format(b"RIFF\x00\x00\x00\x00WAVEfmt ") is None  # RIFF but not WebP
    assert sniff_format(b"<html>") is None


# ------------------------------------------------------------------- bad files


def test_zero_byte_file_is_empty_file():
    exc = rejected(b"")
    assert exc.reason == "empty_file"
    assert_readable(exc)


def test_random_bytes_named_jpg_is_not_an_image(images, tmp_path):
    path = images.write(tmp_path / "photo.jpg", images.random_bytes(4096, seed=5))
    with pytest.raises(ImageRejected) as exc:
        decode(path)  # the .jpg name changes nothing
    assert exc.value.reason == "not_an_image"
    assert "binary" in exc.value.message
    assert_readable(exc.value)


@pytest.mark.parametrize(
    ("content", "described"),
    [
        (b"just some notes\nsecond line\n", "text"),
        (b"<!DOCTYPE html><html><body>404</body></html>", "HTML"),
        (b'<?xml version="1.0"?><svg></svg>', "SVG"),
        (b"%PDF-1.7\n", "PDF"),
    ],
)
def test_non_image_content_is_described(content, described):
    exc = rejected(content)
    assert exc.reason == "not_an_image"
    assert described in exc.message
    assert_readable(exc)


def test_truncated_jpeg_is_truncated(images):
    exc = rejected(images.truncated_jpeg(seed=6))
    assert exc.reason == "truncated"
    assert "JPEG" in exc.message and "truncated" in exc.message
    assert_readable(exc)


def test_truncated_png_is_truncated(images):
    data = images.png(96, 64, seed=7)
    assert rejected(data[: len(data) // 2]).reason == "truncated"


def test_corrupt_pixel_data_is_corrupt(images):
    # Regression: probe() used to read EXIF first; PNG's getexif() loads the pixels,
    # its error was swallowed and the corrupt image then looked loaded.
    exc = rejected(images.corrupt_png(seed=8))
    assert exc.reason == "corrupt"
    assert exc.message.startswith("PNG data cannot be decoded")
    assert_readable(exc)


def test_corrupt_header_after_valid_magic_is_corrupt(images):
    data = images.png()[:8] + b"this is no chunk structure" * 4
    exc = rejected(data)
    assert exc.reason == "corrupt" and "header" in exc.message


def test_decompression_bomb_is_refused_without_allocating(images, monkeypatch):
    data = images.bomb_png(100_000, 100_000)
    assert len(data) < 100
    loads = []  # Pillow allocates the pixel buffer in load(): it must never be called
    real_load = ImageFile.ImageFile.load

    def spy_load(self):
        loads.append(self.size)
        if self.size[0] * self.size[1] > 10**8:
            raise AssertionError(f"about to allocate {self.size} pixels")  # not a reject
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy_load)
    exc = rejected(data)
    assert exc.reason == "too_many_pixels"
    assert "100000x100000" in exc.message and "max_pixels" in exc.message
    assert_readable(exc)
    assert loads == []  # refused from the header alone
    probe(images.png(8, 8))
    assert loads and set(loads) == {(8, 8)}  # the spy does see a real decode


def test_pixel_limit_is_configurable(images):
    data = images.png(40, 30)
    assert rejected(data, max_pixels=40 * 30 - 1).reason == "too_many_pixels"
    assert probe(data, max_pixels=40 * 30).width == 40


# --------------------------------------------------- accepted, then normalised


def test_cmyk_jpeg_becomes_rgb(images):
    data = images.encode(Image.new("CMYK", (20, 10), (0, 255, 255, 0)), "JPEG", quality=95)
    assert probe(data).mode == "CMYK"
    img = decode(data)
    assert img.mode == "RGB"
    r, g, b = img.getpixel((10, 5))
    assert r > 240 and g < 15 and b < 15  # pure red, not inverted channels


def test_16bit_png_is_scaled_not_wrapped(images):
    values = np.array([[0, 256, 32768, 65280, 65535]], np.uint16)
    data = images.encode(Image.fromarray(values), "PNG")
    info = probe(data)
    assert info.mode.startswith("I;16")
    out = np.asarray(decode(data))[0, :, 0]
    # wrapping (v & 255) would give 0, 0, 0, 0, 255; clipping 0, 255, 255, 255, 255
    assert out.tolist() == [0, 1, 128, 254, 255]
    assert np.array_equal(np.asarray(decode(data))[..., 0], np.asarray(decode(data))[..., 2])


def test_palette_transparency_is_composited_on_background(images):
    img = Image.new("P", (4, 4), 0)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.putpixel((1, 1), 1)
    data = images.encode(img, "PNG", transparency=0)  # index 0 (red) is transparent
    assert probe(data).mode == "P"
    out = decode(data, background=BACKGROUND)
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == BACKGROUND  # not the red hidden behind transparency
    assert out.getpixel((1, 1)) == (0, 0, 255)


def test_rgba_is_composited_on_background(images):
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    img.putpixel((1, 1), (0, 0, 255, 255))
    img.putpixel((2, 2), (0, 0, 255, 128))
    data = images.encode(img, "PNG")
    assert probe(data).mode == "RGBA"
    out = decode(data, background=BACKGROUND)
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == BACKGROUND
    assert out.getpixel((1, 1)) == (0, 0, 255)
    half = out.getpixel((2, 2))  # about halfway between background and blue
    assert all(abs(c - e) <= 2 for c, e in zip(half, (5, 100, 142), strict=True))
    assert decode(data).getpixel((0, 0)) == (255, 255, 255)  # default background


def test_grey_with_alpha_is_composited_on_background(images):
    img = Image.new("LA", (3, 3), (200, 0))
    img.putpixel((1, 1), (50, 255))
    out = decode(images.encode(img, "PNG"), background=BACKGROUND)
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == BACKGROUND and out.getpixel((1, 1)) == (50, 50, 50)


def test_exif_orientation_6_reports_and_decodes_displayed_image(images):
    raw = np.zeros((40, 80, 3), np.uint8)  # stored 80 wide x 40 high
    raw[:, :40] = (255, 0, 0)
    raw[:, 40:] = (0, 0, 255)
    exif = Image.Exif()
    exif[imageio.EXIF_ORIENTATION_TAG] = 6  # display rotated 90 degrees clockwise
    data = images.encode(Image.fromarray(raw), "JPEG", quality=95, exif=exif.tobytes())
    info = probe(data)
    assert info.exif_orientation == 6
    assert (info.width, info.height) == (40, 80)
    out = decode(data)
    assert out.size == (40, 80)
    expected = np.rot90(raw, k=-1).astype(int)  # clockwise: the red left half is on top
    assert np.abs(np.asarray(out).astype(int) - expected).mean() < 8  # JPEG edge ringing
    assert out.getpixel((20, 10))[0] > 240 and out.getpixel((20, 70))[2] > 240


def test_exif_orientation_in_png(images):
    exif = Image.Exif()
    exif[imageio.EXIF_ORIENTATION_TAG] = 8  # 90 degrees counter-clockwise
    data = images.encode(Image.fromarray(images.noise(30, 20, seed=4)), "PNG", exif=exif.tobytes())
    info = probe(data)
    assert (info.exif_orientation, info.width, info.height) == (8, 20, 30)
    assert np.array_equal(np.asarray(decode(data)), np.rot90(images.noise(30, 20, seed=4)))


def test_out_of_range_orientation_is_ignored(images):
    exif = Image.Exif()
    exif[imageio.EXIF_ORIENTATION_TAG] = 42
    data = images.encode(Image.fromarray(images.noise(30, 20)), "JPEG", exif=exif.tobytes())
    info = probe(data)
    assert (info.exif_orientation, info.width, info.height) == (1, 30, 20)


def test_animated_gif_reports_frames_and_decodes_the_first(images):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (10, 8), c) for c in colours]
    data = images.encode(
        frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0
    )
    info = probe(data)
    assert (info.format, info.ext, info.n_frames) == ("GIF", "gif", 3)
    out = decode(data)
    assert out.mode == "RGB" and out.size == (10, 8)
    assert out.getpixel((5, 5)) == (255, 0, 0)


def test_rejected_is_an_exception_with_a_reason():
    exc = ImageRejected("corrupt", "PNG data cannot be decoded: broken stream")
    assert isinstance(exc, Exception)
    assert (exc.reason, str(exc)) == ("corrupt", "PNG data cannot be decoded: broken stream")

