"""A corpus of hostile inputs of every kind the pipeline meets, with what each must become.

Images (empty, truncated, random bytes, HTML, SVG, PDF, a zip named .jpg, a decompression
bomb, an oversized file, corrupt data, and awkward-but-valid CMYK, 16-bit, palette+alpha,
EXIF-rotated, animated, 1-pixel files), archives (path escapes, absolute paths, links and
devices, damaged members of every compression, truncated and garbled streams, zip and tar
bombs, overlapping entries, too many members, overlong names, a nested archive), and params
files with mistakes. `ingest_corpus` runs ingest on it and reports, per kind, whether it was
accounted for (a manifest row or a reject row with the expected reason) and whether anything
crashed. Used by `bench/reliability.py`.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from curate.demo import badfiles

#: Expected outcome of an input: None = stored as an image, else the reject reason.
Expected = str | None


def _photo(seed: int, size: tuple[int, int] = (96, 72)) -> np.ndarray:
    small = np.random.default_rng(seed).integers(0, 256, (9, 12, 3), np.uint8)
    return np.asarray(Image.fromarray(small).resize(size, Image.Resampling.BILINEAR))


def _jpeg(seed: int) -> bytes:
    return badfiles.jpeg_bytes(_photo(seed))


def _zip(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _damaged_zip(method: int) -> bytes:
    raw = bytearray(_zip({"a.jpg": _jpeg(1), "b.jpg": _jpeg(2) * 3}, method))
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as zf:
        offset = zf.getinfo("b.jpg").header_offset
    name_len, extra_len = (int.from_bytes(raw[offset + k:offset + k + 2], "little")
                           for k in (26, 28))
    start = offset + 30 + name_len + extra_len + 4
    raw[start:start + 64] = bytes((b * 37 + 11) % 256 for b in range(64))
    return bytes(raw)


def _tar(members: list[tuple[tarfile.TarInfo, bytes]], mode: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tf.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buf.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _overlapping_zip() -> bytes:
    raw = _zip({"a.jpg": _jpeg(3)})
    eocd = raw.rindex(b"PK\x05\x06")
    cd_size = int.from_bytes(raw[eocd + 12:eocd + 16], "little")
    cd_offset = int.from_bytes(raw[eocd + 16:eocd + 20], "little")
    twin = bytearray(raw[cd_offset:cd_offset + cd_size])
    twin[46:51] = b"b.jpg"
    tail = bytearray(raw[eocd:])
    tail[8:10] = tail[10:12] = (2).to_bytes(2, "little")
    tail[12:16] = (2 * cd_size).to_bytes(4, "little")
    return raw[:cd_offset] + raw[cd_offset:cd_offset + cd_size] + bytes(twin) + bytes(tail)


@dataclass
class Kind:
    """One hostile kind: files to write (name -> bytes) and what each source URI must become
    (keys relative to the corpus folder; archive members as `archive!member`)."""

    files: dict[str, bytes]
    expected: dict[str, Expected]


def _one(name: str, data: bytes, outcome: Expected) -> Kind:
    return Kind({name: data}, {name: outcome})


def _archive(name: str, data: bytes, members: dict[str, Expected]) -> Kind:
    return Kind({name: data}, {f"{name}!{m}": r for m, r in members.items()})


def corpus() -> dict[str, Kind]:
    """Every hostile kind (ingest settings: max_file_mb 4, archive max_members 4)."""
    rng = np.random.default_rng(0)
    foot, mask = _photo(7, (160, 120)), np.full((120, 160), 255, np.uint8)
    kinds: dict[str, Kind] = {
        f"image_{k}": _one(f"img/{f}", badfiles.rejected_file(k, foot, rng), reason)
        for k, (f, reason) in badfiles.REJECTED.items()}
    kinds.update({f"image_{k}": _one(f"img/{f}", badfiles.accepted_file(k, foot, mask), None)
                  for k, f in badfiles.ACCEPTED.items()})
    corrupt = bytearray(badfiles.png_bytes(Image.fromarray(foot)))
    idat = corrupt.index(b"IDAT") + 24
    corrupt[idat:idat + 200] = bytes(200)
    kinds.update({
        "image_svg": _one("img/vector.jpg", b'<?xml version="1.0"?><svg xmlns="x"/>',
                          "not_an_image"),
        "image_pdf": _one("img/scan.jpg", b"%PDF-1.4\n%\xe2\xe3\n1 0 obj\n", "not_an_image"),
        "image_zip_named_jpg": _one("img/pack.jpg", _zip({"a.jpg": _jpeg(4)}), "not_an_image"),
        "image_too_large": _one("img/huge.jpg", rng.integers(0, 256, 5_000_000, np.uint8)
                                .tobytes(), "too_large"),
        "image_corrupt_data": _one("img/corrupt.png", bytes(corrupt), "corrupt"),
        "image_one_pixel": _one("img/dot.png", badfiles.png_bytes(Image.new("RGB", (1, 1))),
                                None),
        "archive_path_escape": _archive("a/escape.zip", _zip({"../up.jpg": _jpeg(5)}),
                                        {"../up.jpg": "unsafe_member"}),
        "archive_absolute_path": _archive("a/abs.tar", _tar([(_member("/etc/x.jpg"),
                                                              _jpeg(6))], "w"),
                                          {"/etc/x.jpg": "unsafe_member"}),
        "archive_symlink": _archive("a/link.tar.gz", _tar([(_member(
            "l.jpg", tarfile.SYMTYPE, "/etc/passwd"), b"")], "w:gz"), {"l.jpg": "unsafe_member"}),
        "archive_hardlink": _archive("a/hard.tar", _tar([(_member(
            "h.jpg", tarfile.LNKTYPE, "x"), b"")], "w"), {"h.jpg": "unsafe_member"}),
        "archive_device": _archive("a/fifo.tar", _tar([(_member("p", tarfile.FIFOTYPE), b"")],
                                                      "w"), {"p": "unsafe_member"}),
        "archive_not_an_archive": _archive("a/fake.zip", b"not a zip at all" * 10,
                                           {"": "corrupt_archive"}),
        "archive_truncated_tar_gz": _archive(
            "a/cut.tar.gz", _tar([(_member(f"{i}.jpg"), _jpeg(10 + i) * 20) for i in range(3)],
                                 "w:gz")[:1500], {"": "corrupt_archive"}),
        "archive_nested": _archive("a/nest.zip", _zip({"inner.zip": _zip({"x.jpg": _jpeg(8)})}),
                                   {"inner.zip": "not_an_image"}),
        "archive_overlapping_entries": _archive("a/overlap.zip", _overlapping_zip(),
                                                {"a.jpg": None, "b.jpg": "overlapping_entries"}),
        "archive_too_many_members": _archive(
            "a/many.zip", _zip({f"m{i}.jpg": _jpeg(20 + i) for i in range(6)}),
            {**{f"m{i}.jpg": None for i in range(4)}, "": "too_many_members"}),
        "archive_zip_bomb_member": _archive(
            "a/bomb.zip", _zip({"zeros.jpg": bytes(3 * 1024 * 1024), "ok.jpg": _jpeg(9)}),
            {"ok.jpg": None, "zeros.jpg": "compression_ratio"}),
        "archive_tar_gz_bomb": _archive(
            "a/bomb.tar.gz", _tar([(_member("zeros.bin"), bytes(8 * 1024 * 1024))], "w:gz"),
            {"": "compression_ratio"}),
        "archive_long_name": _archive("a/long.zip", _zip({"n" * 300 + ".jpg": _jpeg(30)}),
                                      {"n" * 255: "name_too_long"}),
    })
    for method, label in ((zipfile.ZIP_STORED, "stored"), (zipfile.ZIP_DEFLATED, "deflate"),
                          (zipfile.ZIP_BZIP2, "bzip2"), (zipfile.ZIP_LZMA, "lzma")):
        kinds[f"archive_damaged_{label}_member"] = _archive(
            f"a/damaged-{label}.zip", _damaged_zip(method),
            {"a.jpg": None, "b.jpg": "corrupt_member"})
    for mode, suffix in (("w:bz2", "tar.bz2"), ("w:xz", "tar.xz")):
        raw = bytearray(_tar([(_member(f"{i}.jpg"), _jpeg(40 + i) * 20) for i in range(3)], mode))
        raw[len(raw) // 2:len(raw) // 2 + 200] = bytes(200)
        kinds[f"archive_garbled_{suffix.replace('.', '_')}"] = Kind(
            {f"a/garbled.{suffix}": bytes(raw)}, {})  # some members may come first: see below
    return kinds


#: Params mistakes, each must stop with a ConfigError naming the key (never a traceback).
BAD_PARAMS: dict[str, tuple[str, str]] = {
    "params_unknown_source_kind": ("ingest:\n  sources:\n    - {kind: zip, path: x}\n",
                                   "ingest.sources[0].kind"),
    "params_negative_workers": ("workers: -3\n", "workers"),
    "params_unknown_key": ("ingest:\n  max_file_gb: 3\n", "max_file_gb"),
    "params_not_yaml": ("ingest: [unclosed\n", "not valid YAML"),
    "params_bad_resolution": ("prepare:\n  resolution: 500\n", "prepare.resolution"),
}


@dataclass
class CorpusRun:
    kinds: int = 0
    crashes: list[str] = field(default_factory=list)
    unaccounted: list[str] = field(default_factory=list)  # an input with no row at all
    wrong: dict[str, tuple[Expected, Expected]] = field(default_factory=dict)


def ingest_corpus(root: Path, log: Callable[[str], None] = print) -> CorpusRun:
    """Write the corpus under `root`, ingest it, and check every input's outcome."""
    from core.config import ConfigError, from_mapping
    from core.manifest import read_table
    from curate.config import Params, load_params
    from curate.stages.ingest import IngestOptions, run_ingest

    kinds = corpus()
    folder = root / "corpus"
    for kind in kinds.values():
        for name, data in kind.files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
    result = CorpusRun()
    params = from_mapping(Params, {
        "workers": 2, "paths": {"store": str(root / "store"), "cache": str(root / "cache")},
        "ingest": {"sources": [{"kind": "folder", "path": str(folder)}], "max_file_mb": 4.0,
                   "archive": {"max_members": 4, "max_name_length": 255}}}, "")
    try:
        run_ingest(params, IngestOptions(out_dir=root / "out"))
    except Exception as exc:  # noqa: BLE001 - any escape is the crash being counted
        result.crashes.append(f"ingest: {type(exc).__name__}: {exc}")
        return result
    base = folder.resolve().as_posix() + "/"
    manifest = read_table(root / "out" / "manifest.parquet")
    rejects = read_table(root / "out" / "rejects.parquet")
    got: dict[str, Expected] = {u.removeprefix(base): None
                                for uris in manifest.source_uris for u in uris}
    got.update({u.removeprefix(base): r for u, r in zip(rejects.source_uri, rejects.reason)})
    for name, kind in kinds.items():
        result.kinds += 1
        for uri, want in kind.expected.items():
            if uri not in got:
                result.unaccounted.append(f"{name}: {uri}")
            elif got[uri] != want:
                result.wrong[f"{name}: {uri}"] = (want, got[uri])
        for archive in kind.files:  # a garbled stream: every member read or rejected
            if not kind.expected and not any(u.startswith(f"{archive}!") for u in got):
                result.unaccounted.append(f"{name}: {archive}")
    for name, (text, names) in BAD_PARAMS.items():
        result.kinds += 1
        path = root / f"{name}.yaml"
        path.write_text(text)
        try:
            load_params(path)
            result.wrong[name] = ("ConfigError", "accepted")
        except ConfigError as exc:
            if names not in str(exc):
                result.wrong[name] = (names, str(exc))
        except Exception as exc:  # noqa: BLE001 - any escape is the crash being counted
            result.crashes.append(f"{name}: {type(exc).__name__}: {exc}")
    log(f"hostile corpus: {result.kinds} kinds, {len(result.crashes)} crashes, "
        f"{len(result.unaccounted)} unaccounted, {len(result.wrong)} unexpected outcomes")
    return result
