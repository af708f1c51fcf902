"""Local ingest end to end: bad files, duplicates, incremental reruns, and SIGKILL + resume."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from core import atomic
from core.cache import ResultCache
from curate.ingest import worker as ingest_worker
from curate.stages.ingest import FILE_OP

pytestmark = pytest.mark.integration

N_IMAGES = 300


def temp_leftovers(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("*") if atomic.TEMP_MARKER in p.name]


def curate_ingest(params: Path, out: Path) -> subprocess.Popen:
    """`curate ingest` in a subprocess (its own process group, so a kill reaches its workers)."""
    return subprocess.Popen(
        [sys.executable, "-m", "curate.cli", "ingest", "--params", str(params), "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )


def finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err.decode(errors="replace")


def count_stored(store: Path) -> int:
    """Images completely written to the store (temp files excluded)."""
    if not store.exists():
        return 0
    return sum(1 for p in store.rglob("*.jpg") if atomic.TEMP_MARKER not in p.name)


def kill_midway(params: Path, out: Path, store: Path) -> int:
    """Start `curate ingest`, SIGKILL it once `store` holds some images; return how many.

    At 150 stored images at least 134 results reached the coordinator (at most 16 are
    in flight), so its first cache batch is committed. Should a fast machine get to the
    end first, start over from scratch with an earlier kill.
    """
    for threshold in (150, 60, 10):
        proc = curate_ingest(params, out)
        try:
            deadline = time.monotonic() + 120
            while proc.poll() is None and count_stored(store) < threshold:
                assert time.monotonic() < deadline, "ingest made no progress"
                time.sleep(0.002)
        finally:
            if proc.poll() is None:  # the coordinator, its forkserver and its workers
                os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate(timeout=30)
        assert proc.returncode in (0, -signal.SIGKILL), err.decode(errors="replace")
        if proc.returncode == -signal.SIGKILL:
            stored = count_stored(store)
            print(f"killed at {stored} stored images (threshold {threshold})")
            if stored < N_IMAGES - 4:
                return stored
        for path in (store, store.parent / "cache", out):  # it got to the end: start over
            shutil.rmtree(path, ignore_errors=True)
    pytest.fail("ingest always got to the end before it could be killed")


@pytest.fixture
def photo_folder(tmp_path_factory, images) -> Path:
    """~300 small JPEGs (one exact duplicate) plus a few bad files, sorted names."""
    root = tmp_path_factory.mktemp("photos")
    for i in range(N_IMAGES - 4):
        images.write(root / f"batch{i // 100}" / f"{i:04d}.jpg", images.jpeg(96, 72, seed=i))
    images.write(root / "batch9" / "copy-of-0007.jpg", images.jpeg(96, 72, seed=7))
    images.write(root / "batch9" / "corrupt.png", images.corrupt_png(seed=1))
    images.write(root / "batch9" / "truncated.jpg", images.truncated_jpeg(seed=2))
    images.write(root / "batch9" / "notes.jpg", b"not a photo\n")
    return root


def test_sigkill_then_rerun_matches_a_clean_run(tmp_path, photo_folder, write_params):
    sources = [{"kind": "folder", "path": str(photo_folder)}]
    clean = write_params(tmp_path / "clean", sources, workers=2)
    killed = write_params(tmp_path / "killed", sources, workers=2)
    clean_out, killed_out = tmp_path / "clean" / "out", tmp_path / "killed" / "out"

    finish(curate_ingest(clean, clean_out))

    store = tmp_path / "killed" / "store"
    stored = kill_midway(killed, killed_out, store)
    assert not (killed_out / "manifest.parquet").exists()
    with ResultCache(tmp_path / "killed" / "cache" / "cache.sqlite") as cache:
        cached = cache.count(FILE_OP)
    assert cached < N_IMAGES - 4  # a partial state to resume from
    if stored >= 150:  # the first cache batch (128 images: probe + file entries) is in
        assert cached >= 128

    finish(curate_ingest(killed, killed_out))

    for name in ("manifest.parquet", "rejects.parquet", "summary.json"):
        assert (killed_out / name).read_bytes() == (clean_out / name).read_bytes(), name
    assert temp_leftovers(tmp_path, photo_folder) == []
    stored_clean = sorted(p.relative_to(tmp_path / "clean" / "store")
                          for p in (tmp_path / "clean" / "store").rglob("*.*") if p.is_file())
    assert sorted(p.relative_to(store) for p in store.rglob("*.*") if p.is_file()) == stored_clean
    assert len(stored_clean) == N_IMAGES - 4


def make_mixed_folder(root: Path, images) -> dict[str, str | None]:
    """Good, bad and duplicate inputs in a folder with a zip inside; uri -> expected reason."""
    w = images.write
    w(root / "good" / "a.jpg", images.jpeg(seed=1))
    w(root / "good" / "b.png", images.png(seed=2))
    w(root / "good" / "c.webp", images.webp(seed=3))
    w(root / "other" / "a-copy.jpg", images.jpeg(seed=1))  # exact duplicate of good/a.jpg
    w(root / "bad" / "corrupt.png", images.corrupt_png(seed=4))
    w(root / "bad" / "truncated.jpg", images.truncated_jpeg(seed=5))
    w(root / "bad" / "notes.jpg", b"shopping list: milk, eggs\n")
    w(root / "bad" / "random.jpg", images.random_bytes(3000, seed=6))
    w(root / "bad" / "bomb.png", images.bomb_png())
    w(root / "bad" / "empty.jpg", b"")
    w(root / "bad" / "huge.jpg", images.random_bytes(60_000, seed=7))  # above max_file_mb
    w(root / ".hidden.jpg", images.jpeg(seed=8))  # excluded by default
    with zipfile.ZipFile(root / "bundle.zip", "w") as zf:
        zf.writestr("inner/a.jpg", images.jpeg(seed=1))  # a third copy of good/a.jpg
        zf.writestr("inner/d.jpg", images.jpeg(seed=9))
        zf.writestr(zipfile.ZipInfo("../escape.jpg"), images.jpeg(seed=10))
    images.damaged_zip(root / "damaged.zip", {"e.jpg": images.jpeg(seed=11),
                                              "f.jpg": images.jpeg(seed=12)}, damaged="f.jpg")
    base = root.as_posix()
    return {
        f"{base}/good/a.jpg": None, f"{base}/good/b.png": None, f"{base}/good/c.webp": None,
        f"{base}/other/a-copy.jpg": None, f"{base}/bundle.zip!inner/a.jpg": None,
        f"{base}/bundle.zip!inner/d.jpg": None, f"{base}/damaged.zip!e.jpg": None,
        f"{base}/damaged.zip!f.jpg": "corrupt_member",
        f"{base}/bad/corrupt.png": "corrupt", f"{base}/bad/truncated.jpg": "truncated",
        f"{base}/bad/notes.jpg": "not_an_image", f"{base}/bad/random.jpg": "not_an_image",
        f"{base}/bad/bomb.png": "too_many_pixels", f"{base}/bad/empty.jpg": "empty_file",
        f"{base}/bad/huge.jpg": "too_large", f"{base}/bundle.zip!../escape.jpg": "unsafe_member",
    }


def test_local_bad_files_rejected_and_duplicates_merged(tmp_path, images, make_params, ingest):
    folder = tmp_path / "in"
    expected = make_mixed_folder(folder, images)
    extra = tmp_path / "extra.tar.gz"  # a second source: an archive with one more copy
    with tarfile.open(extra, "w:gz") as tf:
        tf.add(folder / "good" / "b.png", arcname="b-again.png")
    expected[f"{extra.as_posix()}!b-again.png"] = None
    params = make_params(tmp_path, [{"kind": "folder", "path": str(folder)},
                                    {"kind": "archive", "path": str(extra)}], max_file_mb=0.05)
    first = ingest(params, tmp_path / "out")

    assert first.reasons() == {uri: r for uri, r in expected.items() if r is not None}
    assert set(first.rejects["source"]) == {"folder", "archive"}
    by_first_uri = {uris[0]: uris for uris in first.stored_uris().values()}
    base = folder.as_posix()
    assert by_first_uri[f"{base}/bundle.zip!inner/a.jpg"] == [
        f"{base}/bundle.zip!inner/a.jpg", f"{base}/good/a.jpg", f"{base}/other/a-copy.jpg"]
    assert by_first_uri[f"{base}/good/b.png"] == [f"{base}/good/b.png",
                                                  f"{extra.as_posix()}!b-again.png"]
    assert len(first.manifest) == 5  # a, b, c, d, e
    stored = [uri for uris in first.stored_uris().values() for uri in uris]
    assert sorted(stored) == sorted(uri for uri, r in expected.items() if r is None)  # no .hidden
    assert (first.manifest["status"] == "ok").all()
    row = first.manifest.set_index("format").loc["WEBP"]
    assert (row["width"], row["height"], row["ext"]) == (64, 48, "webp")
    assert (tmp_path / "store" / row["store_path"]).read_bytes() == images.webp(seed=3)
    assert first.summary.counts["exact_duplicate"] == 3

    second = ingest(params, tmp_path / "out")  # everything from the cache now
    assert second.table_bytes() == first.table_bytes()
    # every input but huge.jpg (refused by its size, before any read) comes from the cache
    assert second.summary.cached == len(expected) - 1


def test_rerun_after_adding_one_percent_probes_only_the_new(
    tmp_path, images, make_params, ingest, monkeypatch
):
    folder = tmp_path / "in"
    for i in range(100):
        images.write(folder / f"{i:03d}.jpg", images.jpeg(32, 24, seed=i))
    params = make_params(tmp_path, [{"kind": "folder", "path": str(folder)}], workers=1)
    probed: list[int] = []
    real_probe = ingest_worker.probe
    monkeypatch.setattr(ingest_worker, "probe",
                        lambda data, *a, **k: probed.append(len(data)) or real_probe(data, *a, **k))

    first = ingest(params, tmp_path / "out")
    assert len(probed) == 100 and first.summary.cached == 0

    probed.clear()
    new = images.write(folder / "new.jpg", images.jpeg(32, 24, seed=1000))
    second = ingest(params, tmp_path / "out")
    assert probed == [new.stat().st_size]  # only the new file was decoded
    assert second.summary.cached == 100
    assert len(second.manifest) == 101

    probed.clear()
    (tmp_path / "store" / second.manifest.iloc[0]["store_path"]).unlink()  # lost from the store
    third = ingest(params, tmp_path / "out")
    assert len(probed) == 1 and third.summary.cached == 100  # re-read, re-stored
    assert third.table_bytes() == second.table_bytes()
    assert (tmp_path / "store" / second.manifest.iloc[0]["store_path"]).exists()
