"""Reader for StyleGAN-format dataset zips (what `curate prepare` exports).

The format is the one NVIDIA's `dataset_tool.py` writes and StyleGAN2-ADA reads: a zip with one
PNG per image, named `00000/img00000000.png` (folders of 1000), usually stored uncompressed,
plus `dataset.json` holding `{"labels": null}` or `{"labels": [["00000/img00000000.png", 3],
...]}`. Images are square, all the same power-of-two size.

Why validate up front: a training run is hours on expensive machines, and a malformed dataset
found mid-run (a bad size in image 40 000, labels for files that do not exist) wastes them.
`open_dataset` checks the whole archive before training starts, reading only the zip's central
directory, `dataset.json` and the 33-byte PNG header of each image (not the pixels), and
raises `DatasetError` with a sentence that names the problem and the member.

The dataset hash (`DatasetInfo.hash`) is computed from the central directory (names, sizes and
CRC-32 of every member), so it identifies the content in milliseconds without reading the
pixels; checkpoints carry it and a resume onto a different dataset is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image

from core.datasetzip import DatasetError, png_header
from core.imageio import ImageRejected, decode

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")

__all__ = ["DatasetError", "DatasetInfo", "ZipImageDataset", "inspect_zip", "open_dataset",
           "to_float", "to_uint8"]


@dataclass(frozen=True)
class DatasetInfo:
    """What validation learnt about a dataset zip."""

    path: Path
    names: tuple[str, ...]             # image members, sorted (the index order)
    resolution: int                    # native side length in pixels
    labels: np.ndarray | None          # one row per image, or None (unconditional)
    hash: str                          # sha256 of the central directory (see module doc)
    stored: bool                       # True when every image is stored uncompressed

    @property
    def size(self) -> int:
        return len(self.names)

    def classes(self) -> int:
        """Number of classes of integer labels (0 when unlabelled); raises DatasetError for
        labels a class-conditional model cannot use (vectors, negative numbers)."""
        if self.labels is None:
            return 0
        if self.labels.ndim != 1 or self.labels.dtype.kind not in "iu":
            raise DatasetError(f"{self.path}: its labels are vectors ({self.labels.dtype}, "
                               f"shape {self.labels.shape}); class-conditional training needs "
                               f"one class index per image")
        if self.labels.min() < 0:
            raise DatasetError(f"{self.path}: a class label is negative ({self.labels.min()})")
        return int(self.labels.max()) + 1


def _safe_member(name: str) -> bool:
    path = PurePosixPath(name)
    return not path.is_absolute() and ".." not in path.parts and "\\" not in name


def _parse_labels(raw: bytes, names: tuple[str, ...], path: Path) -> np.ndarray | None:
    """Labels from dataset.json, one row per image in `names` order (None: unconditional)."""
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: dataset.json is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or "labels" not in meta:
        raise DatasetError(f"{path}: dataset.json must be an object with a 'labels' key "
                           f"(null or a list of [file, label] pairs)")
    labels = meta["labels"]
    if labels is None:
        return None
    if not isinstance(labels, list):
        raise DatasetError(f"{path}: dataset.json 'labels' must be null or a list, "
                           f"got {type(labels).__name__}")
    by_name: dict[str, Any] = {}
    for i, entry in enumerate(labels):
        if (not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[0], str)):
            raise DatasetError(f"{path}: dataset.json labels[{i}] is {entry!r}, expected "
                               f"[\"00000/img00000000.png\", label]")
        by_name[entry[0]] = entry[1]
    known = set(names)
    strangers = [n for n in by_name if n not in known]
    if strangers:
        raise DatasetError(f"{path}: dataset.json labels {len(strangers)} file(s) not in the "
                           f"zip, e.g. {strangers[0]!r}")
    unlabelled = [n for n in names if n not in by_name]
    if unlabelled:
        raise DatasetError(f"{path}: {len(unlabelled)} image(s) have no label in dataset.json, "
                           f"e.g. {unlabelled[0]!r}; label every image or set labels to null")
    try:
        array = np.array([by_name[n] for n in names])
    except ValueError as exc:
        raise DatasetError(f"{path}: labels in dataset.json have mixed shapes ({exc})") from None
    if array.dtype.kind not in "iuf" or array.ndim not in (1, 2):
        raise DatasetError(f"{path}: labels must be integers (classes) or lists of numbers, "
                           f"got {array.dtype} with shape {array.shape}")
    return array.astype(np.int64 if array.ndim == 1 and array.dtype.kind in "iu" else np.float32)


def inspect_zip(path: Path) -> DatasetInfo:
    """Validate a StyleGAN-format zip and describe it; raise DatasetError when malformed."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: dataset not found; build it with `curate prepare --dist "
                           f"NAME` (or pass --data to an existing StyleGAN-format zip)")
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise DatasetError(f"{path}: not a zip archive (is it truncated? re-export it)") from None
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        unsafe = [i.filename for i in infos if not _safe_member(i.filename)]
        if unsafe:
            raise DatasetError(f"{path}: member {unsafe[0]!r} has an unsafe path")
        images = sorted((i for i in infos if i.filename.lower().endswith(_IMAGE_SUFFIXES)),
                        key=lambda i: i.filename)
        if not images:
            raise DatasetError(f"{path}: the zip holds no images (expected PNGs named like "
                               f"00000/img00000000.png)")
        not_png = [i.filename for i in images if not i.filename.lower().endswith(".png")]
        if not_png:
            raise DatasetError(f"{path}: {len(not_png)} image(s) are not PNG, e.g. "
                               f"{not_png[0]!r}; StyleGAN dataset zips hold lossless PNGs")
        names = tuple(i.filename for i in images)
        sizes: dict[tuple[int, int], str] = {}
        for info in images:
            with zf.open(info) as member:
                head = member.read(33)
            try:
                width, height, channels = png_header(head)
            except (DatasetError, struct.error):
                raise DatasetError(f"{path}: {info.filename} is not a PNG file (its bytes do "
                                   f"not start with a PNG header); re-export the dataset") from None
            if not channels:
                raise DatasetError(f"{path}: {info.filename} has an invalid PNG colour type")
            sizes.setdefault((width, height), info.filename)
        if len(sizes) > 1:
            (a, a_name), (b, b_name) = list(sizes.items())[:2]
            raise DatasetError(f"{path}: images differ in size: {a_name} is {a[0]}x{a[1]} but "
                               f"{b_name} is {b[0]}x{b[1]}; every image must have the same size")
        (width, height), first = next(iter(sizes.items()))
        if width != height or width < 4 or width & (width - 1):
            raise DatasetError(f"{path}: images are {width}x{height} ({first}); StyleGAN-format "
                               f"datasets are square with a power-of-two side (e.g. 256x256)")
        try:
            raw = zf.read("dataset.json")
        except KeyError:
            raw = b'{"labels": null}'  # optional in the format: no file means no labels
        labels = _parse_labels(raw, names, path)
        digest = hashlib.sha256()
        for info in sorted(infos, key=lambda i: i.filename):
            digest.update(f"{info.filename}\0{info.file_size}\0{info.CRC:08x}\n".encode())
        stored = all(i.compress_type == zipfile.ZIP_STORED for i in images)
    return DatasetInfo(path=path, names=names, resolution=width, labels=labels,
                       hash=digest.hexdigest(), stored=stored)


class ZipImageDataset(torch.utils.data.Dataset):
    """Images of a validated zip as uint8 CHW RGB tensors, optionally downsampled and mirrored,
    and with `labels` as (image, class index) pairs.

    The zip is opened lazily in each process (DataLoader workers fork after construction, and
    a shared file handle would be read concurrently). `resolution` below the native size
    reduces by box filtering (an exact power-of-two reduction), so a 256 px dataset can train
    a quick 32 px model. With `mirror`, indices from `len(names)` on are x-flipped copies.
    """

    def __init__(self, info: DatasetInfo, resolution: int | None = None,
                 mirror: bool = False, labels: bool = False) -> None:
        self.info = info
        self.resolution = resolution or info.resolution
        if self.resolution > info.resolution or info.resolution % self.resolution:
            raise DatasetError(f"{info.path}: cannot train at {self.resolution} px on "
                               f"{info.resolution} px images (only downsampling by powers of 2)")
        self.factor = info.resolution // self.resolution
        self.mirror = mirror
        self.classes = info.classes() if labels else 0
        if labels and not self.classes:
            raise DatasetError(f"{info.path} has no class labels (dataset.json labels: null), "
                               f"but train.conditional is true: export a labelled dataset with "
                               f"`curate prepare --combined NAME --dist A --dist B ...`, or set "
                               f"train.conditional: false")
        self._zip: zipfile.ZipFile | None = None
        self._pid = -1

    def __len__(self) -> int:
        return self.info.size * (2 if self.mirror else 1)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_zip"], state["_pid"] = None, -1  # never pickle an open file (spawned workers)
        return state

    def _archive(self) -> zipfile.ZipFile:
        if self._zip is None or self._pid != os.getpid():
            self._zip = zipfile.ZipFile(self.info.path)
            self._pid = os.getpid()
        return self._zip

    def image(self, index: int) -> np.ndarray:
        """HWC uint8 RGB pixels of image `index` (mirrored copies included)."""
        n = self.info.size
        name = self.info.names[index % n]
        try:
            img = decode(self._archive().read(name))
        except ImageRejected as exc:
            raise DatasetError(f"{self.info.path}: {name} cannot be decoded ({exc}); the "
                               f"dataset is damaged, export it again") from None
        if self.factor > 1:
            img = img.reduce(self.factor)
        if index >= n:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return np.asarray(img)

    def label(self, index: int) -> int:
        """Class index of image `index` (its mirrored copy has the same)."""
        assert self.info.labels is not None
        return int(self.info.labels[index % self.info.size])

    def class_frequencies(self) -> np.ndarray:
        """Share of each class among the images (what fakes' classes are drawn from)."""
        assert self.info.labels is not None
        counts = np.bincount(self.info.labels.astype(np.int64), minlength=self.classes)
        return counts / counts.sum()

    def pixels(self, index: int) -> torch.Tensor:
        """Image `index` as a uint8 CHW tensor."""
        return torch.from_numpy(np.ascontiguousarray(self.image(index).transpose(2, 0, 1)))

    def __getitem__(self, index: int) -> torch.Tensor | tuple[torch.Tensor, int]:
        if self.classes:
            return self.pixels(index), self.label(index)
        return self.pixels(index)


def open_dataset(path: Path, resolution: int | None = None, mirror: bool = False,
                 labels: bool = False) -> ZipImageDataset:
    """Validate the zip at `path` and return its dataset (raises DatasetError)."""
    return ZipImageDataset(inspect_zip(path), resolution=resolution, mirror=mirror,
                           labels=labels)


def includes_mirrors(path: Path) -> bool:
    """True when the dataset card next to the zip (NAME.json, written by `curate prepare`)
    says prepare already added a mirrored copy of every image: `train.mirror` would then
    count every image's mirror twice."""
    card = Path(path).with_suffix(".json")
    try:
        meta = json.loads(card.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    augmentation = meta.get("augmentation") if isinstance(meta, dict) else None
    return isinstance(augmentation, dict) and augmentation.get("mirror") is True


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1], the range every model here works in."""
    return images.to(torch.float32).mul_(2.0 / 255.0).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255] (clamped), for grids and exports."""
    return images.detach().float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)
