"""The dataset format of NVlabs' StyleGAN2-ADA, StyleGAN3 and EDM2: written by `curate
prepare`, read by `train fit`.

Their ``dataset_tool.py`` writes, and their training code reads, an uncompressed (stored) zip of
PNG files named ``00000/img00000000.png`` (1000 images per folder) plus ``dataset.json`` holding
``{"labels": [["00000/img00000000.png", 3], ...]}`` or ``{"labels": null}``. Their loader assumes
every image is square, of one resolution and one channel count, and fails late (or trains on
garbage) otherwise, so we validate each PNG's header before the zip is renamed into place.
"""

from __future__ import annotations

import json
import struct
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from core.atomic import atomic_path
from core.errors import UserError

_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # IHDR colour type -> channels


class DatasetError(UserError, ValueError):
    """The images do not form a valid StyleGAN dataset (says which image and why)."""


def archive_name(index: int) -> str:
    return f"{index // 1000:05d}/img{index:08d}.png"


def png_header(data: bytes) -> tuple[int, int, int]:
    """(width, height, channels) from a PNG's IHDR without decoding it."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise DatasetError("not a PNG")
    width, height, _depth, colour = struct.unpack(">IIBB", data[16:26])
    return width, height, _PNG_CHANNELS.get(colour, 0)


@dataclass(frozen=True)
class ExportResult:
    path: Path
    count: int
    resolution: int
    channels: int


def write_dataset_zip(path: Path, images: Iterable[bytes], labels: list[int] | None = None
                      ) -> ExportResult:
    """Stream PNG bytes into a StyleGAN dataset zip at ``path`` (atomically, validated)."""
    shape: tuple[int, int, int] | None = None
    count = 0
    with atomic_path(Path(path)) as tmp, \
            zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for index, data in enumerate(images):
            name = archive_name(index)
            header = png_header(data)
            if header[0] != header[1]:
                raise DatasetError(f"{name}: {header[0]}x{header[1]} is not square")
            if shape is None:
                shape = header
            elif header != shape:
                raise DatasetError(f"{name}: {header[0]}x{header[1]}x{header[2]} differs from "
                                   f"the first image's {shape[0]}x{shape[1]}x{shape[2]}")
            info = zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0))  # fixed: same bytes each run
            zf.writestr(info, data)
            count += 1
        if shape is None:
            raise DatasetError("no images to export")
        if labels is not None and len(labels) != count:
            raise DatasetError(f"{len(labels)} labels for {count} images")
        meta = {"labels": None if labels is None else
                [[archive_name(i), int(c)] for i, c in enumerate(labels)]}
        zf.writestr(zipfile.ZipInfo("dataset.json", (2020, 1, 1, 0, 0, 0)),
                    json.dumps(meta))
    return ExportResult(Path(path), count, shape[0], shape[2])


def read_dataset_zip(path: Path) -> tuple[list[str], dict]:
    """Image names and dataset.json of an exported zip (as StyleGAN's loader would see them)."""
    with zipfile.ZipFile(path) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".png"))
        meta = json.loads(zf.read("dataset.json")) if "dataset.json" in zf.namelist() else {}
    return names, meta


