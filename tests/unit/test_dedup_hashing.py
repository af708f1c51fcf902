"""Perceptual hashes: imagehash's algorithm, stable under fast decoding, robust to edits."""

from __future__ import annotations

import io
from functools import partial
from pathlib import Path

import imagehash
import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageEnhance

from core.imagemap import map_items
from curate.dedup.hashing import (
    HashSpec,
    _dct_matrix,
    canonical_factor,
    canonical_image,
    dhash_bits,
    hash_image,
    hash_one,
    pack_bits,
    phash_bits,
    to_hex,
)

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "retina",
          "hubble_deep_field", "camera", "brick", "grass")


def photo(name: str) -> Image.Image:
    arr = getattr(skimage.data, name)()
    return Image.fromarray(arr[..., :3] if arr.ndim == 3 else arr).convert("RGB")


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def distance(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def test_float_phash_and_dhash_give_imagehash_bits_and_hex() -> None:
    for name in PHOTOS:
        gray = photo(name).convert("L")
        small = gray.resize((32, 32), Image.Resampling.LANCZOS)  # imagehash's own first step
        assert pack_bits(phash_bits(small)) == int(str(imagehash.phash(small)), 16)
        assert to_hex(pack_bits(phash_bits(small)), 64) == str(imagehash.phash(small))
        tiny = gray.resize((9, 8), Image.Resampling.LANCZOS)
        assert to_hex(pack_bits(dhash_bits(tiny)), 64) == str(imagehash.dhash(tiny))
        # From full size, only the rounding imagehash does in between can flip a bit.
        assert distance(pack_bits(phash_bits(gray)), int(str(imagehash.phash(gray)), 16)) <= 2


def test_matrix_dct_is_scipys_dct() -> None:
    import scipy.fftpack

    x = np.random.default_rng(0).uniform(0, 255, (32, 32))
    m = _dct_matrix(32)
    np.testing.assert_allclose(m @ x @ m.T,
                               scipy.fftpack.dct(scipy.fftpack.dct(x, axis=0), axis=1),
                               rtol=1e-9, atol=1e-6)


def test_canonical_factor_keeps_the_shorter_side_at_32_or_more() -> None:
    assert canonical_factor(1500, 1000) == 4
    assert canonical_factor(100, 1000) == 2
    assert canonical_factor(40, 40) == 1
    assert canonical_factor(127, 900) == 2 and canonical_factor(128, 900) == 4


def test_fast_decode_gives_the_full_decode_hash(tmp_path: Path) -> None:
    """The promise `fast_decode` rests on, on JPEGs of many sizes and qualities."""
    fast, full = HashSpec(fast_decode=True), HashSpec(fast_decode=False)
    cases = 0
    same = 0
    rng = np.random.default_rng(0)
    for k, name in enumerate(PHOTOS):
        img = photo(name)
        for size in (260, 700, 1100):
            w = size
            h = int(size * rng.uniform(0.6, 1.4))
            path = tmp_path / f"{name}-{size}.jpg"
            path.write_bytes(jpeg(img.resize((w, h), Image.Resampling.BICUBIC), 70 + 3 * k))
            cases += 1
            same += hash_image(path, w, h, fast).value == hash_image(path, w, h, full).value
    assert same / cases >= 0.99, f"{cases - same} of {cases} hashes differ"


def test_near_duplicates_stay_close_and_different_photos_far() -> None:
    spec = HashSpec()
    hashes = {}
    for name in PHOTOS:
        img = photo(name)
        w, h = img.size
        variants = {
            "original": img,
            "resized": img.resize((w * 6 // 10, h * 6 // 10), Image.Resampling.LANCZOS),
            # 1% off each side: phash shifts with the frame (5% crops of real photos can
            # move 10+ bits; the embedding link catches those, see the stage tests).
            "cropped": img.crop((w // 100, h // 100, w - w // 100, h - h // 100)),
            "brighter": ImageEnhance.Brightness(img).enhance(1.1),
        }
        for kind, v in variants.items():
            data = jpeg(v, 35 if kind == "original" else 90)
            hashes[name, kind] = hash_image(data, v.width, v.height, spec).value
        for kind in ("resized", "cropped", "brighter"):
            assert distance(hashes[name, "original"], hashes[name, kind]) <= 6, (name, kind)
    originals = [hashes[n, "original"] for n in PHOTOS]
    for a in range(len(originals)):
        for b in range(a + 1, len(originals)):
            assert distance(originals[a], originals[b]) > 12, (PHOTOS[a], PHOTOS[b])


@pytest.mark.parametrize("method,bits", [("phash", 64), ("dhash", 64), ("whash", 64),
                                         ("colorhash", 42)])
def test_every_method_hashes_to_its_bit_count(method: str, bits: int) -> None:
    spec = HashSpec(method, 3 if method == "colorhash" else 8)
    img = photo("coffee")
    result = hash_image(jpeg(img), img.width, img.height, spec)
    assert spec.bits == bits == result.bits
    assert 0 <= result.value < 2**bits and len(result.hex) == -(-bits // 4)


def test_blank_images_are_recognised_and_sharpness_ranks_blur() -> None:
    spec = HashSpec()
    white = Image.new("RGB", (300, 200), (255, 255, 255))
    assert hash_image(jpeg(white), 300, 200, spec).blank
    img = photo("astronaut")
    crisp = hash_image(jpeg(img, 95), img.width, img.height, spec)
    soft = hash_image(jpeg(img.resize((128, 128)).resize(img.size), 95), img.width, img.height,
                      spec)
    assert not crisp.blank and crisp.sharpness > 1.5 * soft.sharpness


def test_hash_task_reports_bad_files_and_goes_on(tmp_path: Path, images) -> None:
    good = images.write(tmp_path / "good.jpg", images.jpeg(200, 150))
    bad = images.write(tmp_path / "bad.jpg", images.truncated_jpeg())
    missing = tmp_path / "missing.jpg"
    items = [("g", str(good), 200, 150, 1), ("b", str(bad), 96, 64, 1),
             ("m", str(missing), 10, 10, 1)]
    out = map_items(partial(hash_one, spec=HashSpec()), items, workers=1, batch=3)
    by_id = {o.item[0]: o for o in out}
    assert by_id["g"].ok and set(by_id["g"].value) == {"h", "s", "c", "b"}
    assert by_id["b"].failure.reason == "truncated"
    assert by_id["m"].failure.reason == "unreadable"


def test_exif_rotated_jpeg_hashes_like_its_upright_pixels(tmp_path: Path) -> None:
    """Odd sides + EXIF rotation: boxes must sit on the file's pixel grid, then rotate."""
    upright = photo("chelsea").resize((1151, 551), Image.Resampling.BICUBIC)
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a phone writes, 551 x 1151
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    rotated = tmp_path / "rotated.jpg"
    stored.save(rotated, quality=92, exif=exif)
    plain = tmp_path / "plain.jpg"
    upright.save(plain, quality=92)
    fast = hash_image(rotated, 1151, 551, HashSpec(fast_decode=True), orientation=6)
    full = hash_image(rotated, 1151, 551, HashSpec(fast_decode=False), orientation=6)
    assert fast.value == full.value
    canon = [np.asarray(canonical_image(rotated, 1151, 551, HashSpec(fast_decode=f),
                                        orientation=6)) for f in (True, False)]
    assert canon[0].shape == (138, 288)
    assert np.abs(canon[0] - canon[1]).mean() < 0.3  # boxes laid after rotating: ~1.5
    assert distance(fast.value, hash_image(plain, 1151, 551, HashSpec()).value) <= 2
