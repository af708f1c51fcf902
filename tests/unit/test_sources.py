"""Unit tests for input enumeration: folders, archives (safely) and URL lists."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from curate.ingest.local import (
    ArchiveLimits,
    is_archive,
    iter_archive,
    matches,
    unsafe_reason,
    walk_folder,
)
from curate.ingest.urls import UrlListError, read_url_list

DEFAULT_EXCLUDE = (".*", "*/.*")

# --------------------------------------------------------------------- folders


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for rel in ["b.jpg", "a.png", "notes.txt", ".hidden.jpg", "sub/z.jpg", "sub/c.JPG",
                "sub/.DS_Store", ".git/config", "sub/.cache/x.jpg", "sub/deeper/y.webp",
                "a_dir/m.jpg"]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rel.encode())
    return tmp_path


def rels(root: Path, include=("*",), exclude=DEFAULT_EXCLUDE) -> list[str]:
    found = list(walk_folder(root, include, exclude))
    assert all(path == root.resolve() / rel and st.st_size == path.stat().st_size
               for path, rel, st in found)
    return [rel for _, rel, _ in found]


def test_walk_folder_sorted_and_hidden_excluded(tree):
    assert rels(tree) == [
        "a.png", "b.jpg", "notes.txt", "a_dir/m.jpg", "sub/c.JPG", "sub/z.jpg",
        "sub/deeper/y.webp",
    ]


def test_walk_folder_order_is_stable_across_calls(tree):
    assert rels(tree) == rels(tree)


def test_walk_folder_include_and_exclude_globs(tree):
    assert rels(tree, include=("*.jpg",)) == ["b.jpg", "a_dir/m.jpg", "sub/z.jpg"]  # case-sensitive
    assert rels(tree, include=("*.jpg", "*.JPG")) == ["b.jpg", "a_dir/m.jpg", "sub/c.JPG",
                                                      "sub/z.jpg"]
    assert rels(tree, include=("sub/*",)) == ["sub/c.JPG", "sub/z.jpg", "sub/deeper/y.webp"]
    assert rels(tree, exclude=DEFAULT_EXCLUDE + ("sub/*", "*.txt")) == ["a.png", "b.jpg",
                                                                        "a_dir/m.jpg"]
    assert ".hidden.jpg" in rels(tree, exclude=())


def test_walk_folder_skips_symlinks_to_folders(tree, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.jpg").write_bytes(b"x")
    (tree / "linked").symlink_to(outside, target_is_directory=True)
    assert not any(rel.startswith("linked/") for rel in rels(tree))


def test_matches_star_crosses_folders():
    assert matches("a/b/c.jpg", ("*.jpg",), ())
    assert not matches("a/.x/c.jpg", ("*.jpg",), DEFAULT_EXCLUDE)


def test_is_archive():
    assert all(is_archive(Path(n)) for n in ["a.zip", "b.tar.gz", "c.TGZ", "d.tar", "e.tar.xz"])
    assert not any(is_archive(Path(n)) for n in ["a.jpg", "b.gz", "zip"])


# -------------------------------------------------------------------- archives


@pytest.mark.parametrize(
    ("name", "unsafe"),
    [
        ("ok/a.jpg", None),
        ("a..b.jpg", None),
        ("../escape.jpg", "(..)"),
        ("a/../../escape.jpg", "(..)"),
        ("a/../b.jpg", "(..)"),
        ("/etc/passwd", "absolute path"),
        ("\\windows\\x.jpg", "absolute path"),
        ("C:/x.jpg", "absolute path"),
        ("", "empty"),
        ("a\x00.jpg", "NUL"),
    ],
)
def test_unsafe_reason(name, unsafe):
    reason = unsafe_reason(name)
    assert (reason is None) if unsafe is None else (unsafe in reason)


GOOD = {"imgs/one.jpg": b"\xff\xd8\xff one", "imgs/two.png": b"\x89PNG two", "z.jpg": b"z"}
UNSAFE = {"../escape.jpg": "(..)", "/abs/evil.jpg": "absolute path"}


def make_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in GOOD.items():
            zf.writestr(name, data)
        zf.writestr("imgs/", b"")  # a folder entry
        for name in UNSAFE:
            zf.writestr(zipfile.ZipInfo(name), b"pwned")
        link = zipfile.ZipInfo("imgs/link.jpg")
        link.external_attr = 0o120777 << 16  # a symlink to outside the root
        zf.writestr(link, "../../../etc/passwd")
        zf.writestr("big.bin", b"x" * 1000)
    return path


def make_tar(path: Path) -> Path:
    def add(tf: tarfile.TarFile, info: tarfile.TarInfo, data: bytes = b"") -> None:
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data) if data else None)

    with tarfile.open(path, "w:gz") as tf:
        folder = tarfile.TarInfo("imgs")
        folder.type = tarfile.DIRTYPE
        add(tf, folder)
        for name, data in GOOD.items():
            add(tf, tarfile.TarInfo(name), data)
        for name in UNSAFE:
            add(tf, tarfile.TarInfo(name), b"pwned")
        link = tarfile.TarInfo("imgs/link.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "../../../etc/passwd"
        add(tf, link)
        hard = tarfile.TarInfo("imgs/hard.jpg")
        hard.type, hard.linkname = tarfile.LNKTYPE, "imgs/one.jpg"
        add(tf, hard)
        fifo = tarfile.TarInfo("imgs/pipe")
        fifo.type = tarfile.FIFOTYPE
        add(tf, fifo)
        add(tf, tarfile.TarInfo("big.bin"), b"x" * 1000)
    return path


def check_members(members, expected_links: dict[str, str]) -> None:
    by_name = {m.name: m for m in members}
    assert len(by_name) == len(members)  # each member once, folders skipped
    for name, data in GOOD.items():
        assert by_name[name].data == data and by_name[name].reason is None
    for name, why in {**UNSAFE, **expected_links}.items():
        member = by_name[name]
        assert member.data is None and member.reason == "unsafe_member"
        assert why in member.message
    assert by_name["big.bin"].reason == "too_large" and by_name["big.bin"].data is None
    assert "1,000 bytes" in by_name["big.bin"].message
    assert set(by_name) == {*GOOD, *UNSAFE, *expected_links, "big.bin"}


def test_zip_members_safe_and_unsafe(tmp_path):
    members = list(iter_archive(make_zip(tmp_path / "a.zip"), ArchiveLimits(max_bytes=100)))
    check_members(members, {"imgs/link.jpg": "symlink"})
    names = [m.name for m in members]
    assert names == sorted(names)  # stable order
    assert not (tmp_path.parent / "escape.jpg").exists()


def test_tar_gz_members_safe_and_unsafe(tmp_path):
    members = list(iter_archive(make_tar(tmp_path / "a.tar.gz"), ArchiveLimits(max_bytes=100)))
    check_members(members, {"imgs/link.jpg": "link", "imgs/hard.jpg": "link",
                            "imgs/pipe": "special file"})
    assert [m.name for m in members][:3] == list(GOOD)  # archive order


@pytest.mark.parametrize("name", ["broken.zip", "broken.tar.gz", "broken.tar"])
def test_broken_archive_yields_one_reject(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"this is not an archive at all" * 20)
    members = list(iter_archive(path, ArchiveLimits(max_bytes=10_000)))
    assert len(members) == 1
    assert members[0].reason == "corrupt_archive" and members[0].data is None
    assert "cannot be read" in members[0].message


# ------------------------------------------------------ damaged archives

PAYLOADS = {f"m{i}.jpg": bytes(range(256)) * 40 + bytes([i]) * 4000 for i in range(3)}


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED,
                                    zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_zip_damaged_member_rejected_others_read(tmp_path, images, method):
    """A garbled member (deflate/bzip2/lzma stream error or CRC mismatch) costs that member."""
    path = images.damaged_zip(tmp_path / "d.zip", PAYLOADS, "m1.jpg", method)
    members = list(iter_archive(path, ArchiveLimits(max_bytes=10**6)))
    by_name = {m.name: m for m in members}
    assert set(by_name) == set(PAYLOADS)
    assert by_name["m0.jpg"].data == PAYLOADS["m0.jpg"]
    assert by_name["m2.jpg"].data == PAYLOADS["m2.jpg"]
    assert by_name["m1.jpg"].data is None and by_name["m1.jpg"].reason == "corrupt_member"
    assert by_name["m1.jpg"].message  # says what broke


def tar_bytes(mode: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in PAYLOADS.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("suffix,mode,damage", [
    *((suffix, mode, damage) for suffix, mode in [(".tar.gz", "w:gz"), (".tar.bz2", "w:bz2"),
                                                  (".tar.xz", "w:xz")]
      for damage in ("truncated", "garbled")),
    (".tar", "w", "truncated"),  # a plain tar has no checksum over data: garbling is undetectable
])
def test_tar_damaged_stream_never_raises(tmp_path, suffix, mode, damage):
    """Past a damaged spot of a tar stream nothing more is read; what came before is kept."""
    raw = bytearray(tar_bytes(mode))
    if damage == "truncated":
        raw = raw[: len(raw) * 2 // 3]
    else:
        middle = len(raw) // 2
        raw[middle:middle + 200] = bytes((b * 53 + 7) % 256 for b in range(200))
    path = tmp_path / f"d{suffix}"
    path.write_bytes(bytes(raw))
    members = list(iter_archive(path, ArchiveLimits(max_bytes=10**6)))
    read = [m for m in members if m.data is not None]
    assert all(m.data == PAYLOADS[m.name] for m in read), "a damaged member passed as good"
    assert any(m.reason in ("corrupt_member", "corrupt_archive") for m in members)
    assert all(m.reason in (None, "corrupt_member", "corrupt_archive") for m in members)


# ------------------------------------------------------ archive limits (bombs)


def _zip(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _random(n: int, seed: int) -> bytes:
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, n, np.uint8).tobytes()


def _reasons(members) -> list[tuple[str, str | None]]:
    return [(m.name, m.reason) for m in members]


def test_member_count_limit_refuses_the_rest(tmp_path):
    path = _zip(tmp_path / "many.zip", {f"{i}.jpg": _random(100, i) for i in range(5)})
    members = list(iter_archive(path, ArchiveLimits(max_bytes=10**6, max_members=3)))
    assert _reasons(members) == [("0.jpg", None), ("1.jpg", None), ("2.jpg", None),
                                 ("", "too_many_members")]
    assert "max_members" in members[-1].message


def test_total_bytes_limit_refuses_the_rest(tmp_path):
    path = _zip(tmp_path / "big.zip", {f"{i}.jpg": _random(40_000, i) for i in range(4)},
                zipfile.ZIP_STORED)
    members = list(iter_archive(path, ArchiveLimits(max_bytes=10**6, max_total_bytes=70_000)))
    assert _reasons(members) == [("0.jpg", None), ("1.jpg", None), ("", "archive_too_large")]


def test_zip_member_with_a_bomb_ratio_is_refused_unread(tmp_path):
    path = _zip(tmp_path / "bomb.zip", {"a.jpg": _random(1000, 1),
                                        "b.jpg": bytes(20 * 1024 * 1024),
                                        "c.png": bytes(4000)})  # small and flat: fine
    members = list(iter_archive(path, ArchiveLimits(max_bytes=64 * 1024 * 1024)))
    assert _reasons(members) == [("a.jpg", None), ("b.jpg", "compression_ratio"),
                                 ("c.png", None)]
    assert "ratio above 200" in members[1].message


def test_tar_gz_bomb_is_stopped_by_the_archive_ratio(tmp_path):
    path = tmp_path / "bomb.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for name, data in (("a.jpg", _random(2000, 1)), ("zeros.bin", bytes(30 * 1024 * 1024)),
                           ("c.jpg", _random(2000, 2))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    members = list(iter_archive(path, ArchiveLimits(max_bytes=1024 * 1024)))
    assert _reasons(members) == [("a.jpg", None), ("", "compression_ratio")]


def test_overlapping_zip_entries_are_refused(tmp_path):
    """Two central-directory entries over the same data: how zip bombs multiply a kernel."""
    path = _zip(tmp_path / "overlap.zip", {"a.jpg": _random(3000, 1)})
    raw = path.read_bytes()
    eocd = raw.rindex(b"PK\x05\x06")
    cd_size = int.from_bytes(raw[eocd + 12:eocd + 16], "little")
    cd_offset = int.from_bytes(raw[eocd + 16:eocd + 20], "little")
    entry = bytearray(raw[cd_offset:cd_offset + cd_size])
    twin = bytearray(entry)
    twin[46:46 + len("a.jpg")] = b"b.jpg"
    tail = bytearray(raw[eocd:])
    tail[8:10] = tail[10:12] = (2).to_bytes(2, "little")
    tail[12:16] = (2 * cd_size).to_bytes(4, "little")
    path.write_bytes(raw[:cd_offset] + bytes(entry) + bytes(twin) + bytes(tail))
    members = list(iter_archive(path, ArchiveLimits(max_bytes=10**6)))
    assert _reasons(members) == [("a.jpg", None), ("b.jpg", "overlapping_entries")]


def test_overlong_member_names_are_refused(tmp_path):
    long_name = "x" * 300 + ".jpg"
    path = _zip(tmp_path / "names.zip", {long_name: _random(100, 1), "ok.jpg": _random(100, 2)})
    members = list(iter_archive(path, ArchiveLimits(max_bytes=10**6, max_name_length=255)))
    assert _reasons(members) == [("ok.jpg", None), ("x" * 255, "name_too_long")]


# ------------------------------------------------------------------- URL lists


def test_txt_list_drops_comments_blanks_and_duplicates(tmp_path):
    path = tmp_path / "urls.txt"
    path.write_text(
        "# my list\n\nhttp://a/1.jpg\n  http://a/2.jpg  \n\n   # indented comment\n"
        "http://a/1.jpg\nhttp://b/3.png\n",
        encoding="utf-8",
    )
    assert read_url_list(path) == ["http://a/1.jpg", "http://a/2.jpg", "http://b/3.png"]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_table_lists(tmp_path, suffix):
    df = pd.DataFrame({
        "id": [1, 2, 3, 4, 5],
        "link": ["http://x/a.jpg", None, " http://x/b.jpg ", "http://x/a.jpg", "http://x/c,d.jpg"],
    })
    path = tmp_path / f"list{suffix}"
    if suffix == ".parquet":
        df.to_parquet(path)
    else:
        df.to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False)
    assert read_url_list(path, column="link") == ["http://x/a.jpg", "http://x/b.jpg",
                                                  "http://x/c,d.jpg"]


def test_missing_column_names_column_and_columns(tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("id,link\n1,http://x/a.jpg\n", encoding="utf-8")
    with pytest.raises(UrlListError) as exc:
        read_url_list(path)  # default column "url"
    message = str(exc.value)
    assert "no column 'url'" in message and "id, link" in message and "url_column" in message


def test_missing_list_file(tmp_path):
    with pytest.raises(UrlListError, match="not found"):
        read_url_list(tmp_path / "nope.txt")


def test_scrape_limits_are_shared_between_worker_processes():
    from curate.ingest.config import ScrapeConfig
    from curate.ingest.scrape_worker import share_of_limits

    share = share_of_limits(ScrapeConfig(concurrency=32, per_host=8), processes=4)
    assert (share.concurrency, share.per_host) == (8, 2)  # hosts still see at most 32 and 8
    tiny = share_of_limits(ScrapeConfig(concurrency=2, per_host=1), processes=4)
    assert (tiny.concurrency, tiny.per_host) == (1, 1)  # every process needs one connection
