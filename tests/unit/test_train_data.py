"""The train stage's dataset reader and sampler: valid zips read right, malformed ones are
rejected before training with a message naming the problem, and the image order is a pure
function of (seed, position) whatever the device split."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from train.data import DatasetError, inspect_zip, open_dataset, to_float, to_uint8
from train.sampler import BatchPlan, PositionSampler
from train.synthetic import blob_images, write_dataset_zip


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.fixture
def good_zip(tmp_path: Path) -> Path:
    return write_dataset_zip(tmp_path / "good.zip", blob_images(10, 16, seed=1),
                             labels=list(range(10)))


def test_reads_stylegan_zip(good_zip: Path) -> None:
    ds = open_dataset(good_zip)
    assert len(ds) == 10 and ds.resolution == 16 and ds.info.stored
    assert ds.info.names[0] == "00000/img00000000.png"
    assert ds.info.labels is not None and ds.info.labels.tolist() == list(range(10))
    img = ds[3]
    assert img.dtype == torch.uint8 and img.shape == (3, 16, 16)
    expected = blob_images(10, 16, seed=1)[3]
    assert np.array_equal(img.permute(1, 2, 0).numpy(), expected)
    assert torch.equal(to_uint8(to_float(img)), img)


def test_downsampling_and_mirror(good_zip: Path) -> None:
    ds = open_dataset(good_zip, resolution=8, mirror=True)
    assert len(ds) == 20 and ds[0].shape == (3, 8, 8)
    assert torch.equal(ds[10], ds[0].flip(-1))
    with pytest.raises(DatasetError, match="only downsampling"):
        open_dataset(good_zip, resolution=32)


def test_hash_follows_content(tmp_path: Path, good_zip: Path) -> None:
    again = write_dataset_zip(tmp_path / "again.zip", blob_images(10, 16, seed=1),
                              labels=list(range(10)))
    other = write_dataset_zip(tmp_path / "other.zip", blob_images(10, 16, seed=2),
                              labels=list(range(10)))
    assert inspect_zip(good_zip).hash == inspect_zip(again).hash != inspect_zip(other).hash


def test_null_labels_and_missing_json(tmp_path: Path) -> None:
    img = _png(blob_images(1, 8)[0])
    assert inspect_zip(_zip(tmp_path / "a.zip", {
        "00000/img00000000.png": img, "dataset.json": b'{"labels": null}'})).labels is None
    assert inspect_zip(_zip(tmp_path / "b.zip", {"00000/img00000000.png": img})).labels is None


def _malformed(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    img8, img16 = _png(blob_images(1, 8)[0]), _png(blob_images(1, 16)[0])
    rect = _png(np.zeros((8, 16, 3), np.uint8))
    odd = _png(np.zeros((12, 12, 3), np.uint8))
    jpeg = io.BytesIO()
    Image.fromarray(blob_images(1, 8)[0]).save(jpeg, format="JPEG")
    ok = {"00000/img00000000.png": img8}
    (tmp_path / "text.zip").write_bytes(b"PK but not really a zip")
    cases = {
        "not a zip": (tmp_path / "text.zip", "not a zip archive"),
        "missing": (tmp_path / "nope.zip", "not found"),
        "empty": (_zip(tmp_path / "empty.zip", {"dataset.json": b'{"labels": null}'}),
                  "no images"),
        "jpeg": (_zip(tmp_path / "jpeg.zip", {**ok, "00000/img00000001.jpg": jpeg.getvalue()}),
                 "not PNG"),
        "fake png": (_zip(tmp_path / "fake.zip", {**ok, "00000/img00000001.png": b"hello"}),
                     "is not a PNG file"),
        "mixed sizes": (_zip(tmp_path / "mixed.zip", {**ok, "00000/img00000001.png": img16}),
                        "images differ in size"),
        "not square": (_zip(tmp_path / "rect.zip", {"00000/img00000000.png": rect}),
                       "square with a power-of-two side"),
        "not power of two": (_zip(tmp_path / "odd.zip", {"00000/img00000000.png": odd}),
                             "power-of-two"),
        "bad json": (_zip(tmp_path / "json.zip", {**ok, "dataset.json": b"{labels"}),
                     "not valid JSON"),
        "json not object": (_zip(tmp_path / "arr.zip", {**ok, "dataset.json": b"[1, 2]"}),
                            "'labels' key"),
        "label for missing file": (_zip(tmp_path / "ghost.zip", {**ok, "dataset.json": json.dumps(
            {"labels": [["00000/img00000000.png", 0], ["00000/img00000009.png", 1]]}).encode()}),
            "not in the zip"),
        "unlabelled image": (_zip(tmp_path / "unlab.zip", {
            **ok, "00000/img00000001.png": img8,
            "dataset.json": json.dumps({"labels": [["00000/img00000000.png", 0]]}).encode()}),
            "have no label"),
        "unsafe path": (_zip(tmp_path / "unsafe.zip", {**ok, "../evil.png": img8}),
                        "unsafe path"),
    }
    return cases


def test_malformed_zips_are_rejected_clearly(tmp_path: Path) -> None:
    for case, (path, message) in _malformed(tmp_path).items():
        with pytest.raises(DatasetError, match=message) as info:
            open_dataset(path)
        assert str(path) in str(info.value), case


def test_damaged_pixels_name_the_member(tmp_path: Path) -> None:
    data = bytearray(_png(blob_images(1, 16)[0]))
    data[40:60] = b"\x00" * 20  # header intact, compressed pixels broken
    ds = open_dataset(_zip(tmp_path / "broken.zip", {"00000/img00000000.png": bytes(data)}))
    with pytest.raises(DatasetError, match="00000/img00000000.png cannot be decoded"):
        ds[0]


def test_sampler_resumes_and_ignores_the_device_split() -> None:
    n, batch = 13, 8
    whole = PositionSampler(n, BatchPlan.make(batch, None, 1, 0), seed=5)
    it = iter(whole)
    stream = [i for _ in range(6) for i in next(it)]
    assert sorted(stream[:n]) == list(range(n))  # each epoch is a permutation
    # Resuming at image 16 yields exactly the rest of the stream.
    later = iter(PositionSampler(n, BatchPlan.make(batch, None, 1, 0), seed=5, start=16))
    assert [i for _ in range(4) for i in next(later)] == stream[16:48]
    # 2 devices x 2 rounds x 2 images: the same global batches, rows interleaved by rank.
    parts = []
    for rank in range(2):
        it = iter(PositionSampler(n, BatchPlan(batch, 2, 2, rank), seed=5))
        parts.append([next(it) for _ in range(4)])  # two steps of two rounds
    for step in range(2):
        rebuilt = []
        for round_ in range(2):
            for rank in range(2):
                rebuilt += parts[rank][step * 2 + round_]
        assert rebuilt == stream[step * batch:(step + 1) * batch]


def test_batch_plan_errors() -> None:
    with pytest.raises(ValueError, match="not a multiple"):
        BatchPlan.make(10, 4, 1, 0)
    with pytest.raises(ValueError, match="multiple of 3"):
        BatchPlan.make(8, None, 3, 0)
    assert BatchPlan.make(32, 4, 2, 1).accum == 4
