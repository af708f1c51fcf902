"""The dedup stage on real photos: the right clusters, the right image kept, every row kept,
an escaped report, and incremental reruns that compute only what is new."""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pytest
import skimage.data
from PIL import Image, ImageEnhance

from core.config import from_mapping
from core.manifest import read_table, write_table
from core.stage import StageResult
from curate.config import Params
from curate.dedup.reposts import FEATURES_SUBDIR
from curate.stages.dedup import DEDUP_COLUMNS, NEIGHBOURS_SUBDIR, DedupOptions, run_dedup
from curate.stages.ingest import IngestOptions, run_ingest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry",
          "hubble_deep_field", "retina")
HOSTILE = "<img src=x onerror=alert(1)>&\"q\".jpg"  # no "/": it is a file name


def make_params(root: Path, workers: int = 1, **dedup: Any) -> Params:
    return from_mapping(Params, {
        "workers": workers,
        "paths": {"store": str(root / "store"), "cache": str(root / "cache"),
                  "reports": str(root / "reports"), "models": str(REPO / "models/pretrained")},
        "ingest": {"sources": [{"kind": "folder", "path": str(root / "raw")}]},
        "dedup": dedup,
    }, "")


def photo(name: str, scale: float = 1.0) -> Image.Image:
    arr = getattr(skimage.data, name)()
    img = Image.fromarray(arr[..., :3] if arr.ndim == 3 else arr).convert("RGB")
    if scale != 1.0:
        size = (int(img.width * scale), int(img.height * scale))
        img = img.resize(size, Image.Resampling.BICUBIC)
    return img


def build_raw(raw: Path) -> dict[str, str]:
    """Distinct photos plus planted copies; returns file -> what it is."""
    raw.mkdir(parents=True)
    truth = {}
    for name in PHOTOS:
        photo(name, 1.5).save(raw / f"{name}.jpg", quality=92)
        truth[f"{name}.jpg"] = "original"
    coffee = Image.open(raw / "coffee.jpg")
    coffee.resize((coffee.width * 6 // 10, coffee.height * 6 // 10), Image.Resampling.LANCZOS
                  ).save(raw / "coffee-resized.jpg", quality=90)
    Image.open(raw / "chelsea.jpg").save(raw / "chelsea-reencoded.jpg", quality=30)
    astro = Image.open(raw / "astronaut.jpg")
    w, h = astro.size
    astro.crop((w * 3 // 100, h * 2 // 100, w - w * 2 // 100, h - h // 100)).save(
        raw / "astronaut-cropped.jpg", quality=90)
    ImageEnhance.Brightness(Image.open(raw / "rocket.jpg")).enhance(1.1).save(
        raw / "rocket-brighter.jpg", quality=90)
    # Same pixels, different bytes: PNG saved with two compression levels.
    brick = photo("brick")
    brick.save(raw / "brick-a.png", compress_level=1)
    brick.save(raw / "brick-b.png", compress_level=9)
    # Blank images: two identical (exact) and one of another size (not linked by hashes).
    Image.new("RGB", (300, 200), "white").save(raw / "blank-a.png", compress_level=1)
    Image.new("RGB", (300, 200), "white").save(raw / "blank-b.png", compress_level=9)
    Image.new("RGB", (500, 400), "white").save(raw / "blank-c.png")
    # A byte-identical copy under a hostile name: one row, two URIs, escaped in the report.
    shutil.copy(raw / "camera.jpg", raw / HOSTILE)
    truth.update({"coffee-resized.jpg": "coffee.jpg", "chelsea-reencoded.jpg": "chelsea.jpg",
                  "astronaut-cropped.jpg": "astronaut.jpg", "rocket-brighter.jpg": "rocket.jpg"})
    return truth


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("dedup")
    build_raw(root / "raw")
    params = make_params(root, workers=2)
    run_ingest(params, IngestOptions(out_dir=root / "ingest", workers=1))
    result = run_dedup(params, DedupOptions(in_manifest=root / "ingest/manifest.parquet",
                                            out_dir=root / "dedup"))
    out = read_table(root / "dedup/manifest.parquet")
    by_file = {Path(u).name: row for row in out.itertuples() for u in row.source_uris}
    return {"root": root, "params": params, "result": result, "out": out, "by_file": by_file}


def test_planted_copies_are_clustered_with_the_original_kept(run) -> None:
    f = run["by_file"]
    for copy, original in [("coffee-resized.jpg", "coffee.jpg"),
                           ("chelsea-reencoded.jpg", "chelsea.jpg"),
                           ("astronaut-cropped.jpg", "astronaut.jpg"),
                           ("rocket-brighter.jpg", "rocket.jpg")]:
        assert f[copy].status == "duplicate", copy
        assert f[copy].duplicate_of == f[original].image_id, copy
        assert f[copy].reason == f"duplicate_of:{f[original].image_id}"
        assert f[original].status == "ok" and f[original].cluster_id == f[original].image_id
        assert f[copy].dup_kind in ("hash", "embedding") and f[copy].distance >= 0
    assert f["coffee-resized.jpg"].kept_because == "resolution"
    assert f["astronaut-cropped.jpg"].kept_because == "resolution"
    assert f["chelsea-reencoded.jpg"].kept_because == "bytes"  # same size, sharpness a tie


def test_identical_pixels_are_exact_and_blanks_only_match_exactly(run) -> None:
    f = run["by_file"]
    pair = sorted([f["brick-a.png"], f["brick-b.png"]], key=lambda r: r.status)
    assert [r.status for r in pair] == ["duplicate", "ok"]
    assert pair[0].dup_kind == "exact" and pair[0].distance == 0.0
    blanks = sorted([f["blank-a.png"], f["blank-b.png"]], key=lambda r: r.status)
    assert [r.status for r in blanks] == ["duplicate", "ok"] and blanks[0].dup_kind == "exact"
    assert f["blank-c.png"].status == "ok" and pd.isna(f["blank-c.png"].cluster_id)
    assert json.loads((run["root"] / "dedup/summary.json").read_text())["blank_images"] == 3


def test_distinct_photos_stay_apart_and_every_row_is_kept(run) -> None:
    out, f = run["out"], run["by_file"]
    ingest = read_table(run["root"] / "ingest/manifest.parquet")
    assert len(out) == len(ingest) and set(out.image_id) == set(ingest.image_id)
    assert list(out.columns[: len(ingest.columns)]) == list(ingest.columns)
    assert set(DEDUP_COLUMNS) <= set(out.columns)
    originals = {f[f"{n}.jpg"].cluster_id for n in PHOTOS if not pd.isna(f[f"{n}.jpg"].cluster_id)}
    kept = {f[f"{n}.jpg"].image_id for n in PHOTOS}
    assert originals <= kept  # no original was merged into another photo's cluster
    assert all(f[f"{n}.jpg"].status == "ok" for n in PHOTOS)
    assert (out.status == "duplicate").sum() == 6
    assert out.perceptual_hash.str.fullmatch(r"[0-9a-f]{16}").all()
    summary = json.loads((run["root"] / "dedup/summary.json").read_text())
    assert summary["counts"] == {"duplicate": 6, "kept": len(out) - 6, "passed_through": 0}
    assert summary["ingest_byte_copies"] == 1


def test_report_is_self_contained_and_escapes_names(run) -> None:
    page = (run["root"] / "reports/duplicates.html").read_text()
    assert "<img src=x" not in page
    assert html.escape(HOSTILE, quote=True).replace("&quot;", "&#34;") in page
    assert page.count("data:image/jpeg;base64,") >= 12  # 6 clusters + the byte copy
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "Clusters (6)" in page


def test_rerun_reads_everything_from_the_cache_and_gives_the_same_bytes(run) -> None:
    root, params = run["root"], run["params"]
    before = (root / "dedup/manifest.parquet").read_bytes()
    report = (root / "reports/duplicates.html").read_bytes()
    again = run_dedup(params, DedupOptions(in_manifest=root / "ingest/manifest.parquet",
                                           out_dir=root / "dedup", workers=1))
    assert again.computed == 0 and again.details["embeddings_computed"] == 0
    assert (root / "dedup/manifest.parquet").read_bytes() == before
    assert (root / "reports/duplicates.html").read_bytes() == report


def test_rows_of_other_statuses_pass_through_and_unreadable_images_get_a_reason(run, tmp_path
                                                                                ) -> None:
    root, params = run["root"], run["params"]
    manifest = read_table(root / "ingest/manifest.parquet").sort_values("image_id")
    manifest.loc[manifest.index[0], ["status", "reason"]] = ["outlier", "blurry"]
    # An image whose stored bytes went missing: reported, and the run goes on.
    victim = manifest.iloc[1]
    store = tmp_path / "store"
    shutil.copytree(root / "store", store)
    (store / victim.store_path).unlink()
    params = from_mapping(Params, {
        "workers": 1, "paths": {"store": str(store), "cache": str(tmp_path / "cache"),
                                "reports": str(tmp_path / "reports"),
                                "models": str(REPO / "models/pretrained")}}, "")
    write_table(manifest, tmp_path / "in.parquet", sort_by=["image_id"])
    res = run_dedup(params, DedupOptions(in_manifest=tmp_path / "in.parquet",
                                         out_dir=tmp_path / "out"))
    out = read_table(res.outputs["manifest"]).set_index("image_id")
    first = manifest.iloc[0]
    assert out.loc[first.image_id, "status"] == "outlier"
    assert out.loc[first.image_id, "reason"] == "blurry"
    assert pd.isna(out.loc[first.image_id, "perceptual_hash"])
    assert out.loc[victim.image_id, "status"] == "unreadable"
    assert out.loc[victim.image_id, "reason"].startswith("unreadable:")
    assert (out.status == "ok").sum() >= len(out) - 8


def test_adding_one_percent_of_images_computes_only_those(tmp_path, images) -> None:
    """The incremental promise, counted: 100 images, then 1 more."""
    raw = tmp_path / "raw"
    for k in range(100):
        images.write(raw / f"img{k:03d}.jpg", images.jpeg(160, 120, seed=k))
    params = make_params(tmp_path)
    run_ingest(params, IngestOptions(out_dir=tmp_path / "ingest", workers=1))
    opts = DedupOptions(in_manifest=tmp_path / "ingest/manifest.parquet",
                        out_dir=tmp_path / "dedup", workers=1)
    first = run_dedup(params, opts)
    assert (first.computed, first.details["embeddings_computed"]) == (100, 100)
    assert first.details["neighbours_searched"] == 100
    first_hashes = read_table(first.outputs["manifest"]).set_index("image_id")["perceptual_hash"]
    images.write(raw / "new.png", images.png(200, 150, seed=1000))
    run_ingest(params, IngestOptions(out_dir=tmp_path / "ingest", workers=1))
    second = run_dedup(params, opts)
    assert (second.computed, second.cached) == (1, 100)
    assert (second.details["embeddings_computed"], second.details["embeddings_cached"]) == (1, 100)
    assert second.details["neighbours_searched"] == 1  # the others' lists were updated
    second_hashes = read_table(second.outputs["manifest"]).set_index("image_id")["perceptual_hash"]
    assert len(second_hashes) == 101
    np.testing.assert_array_equal(second_hashes.loc[first_hashes.index], first_hashes)
    updated = second.outputs["manifest"].read_bytes()
    shutil.rmtree(Path(params.paths.cache) / NEIGHBOURS_SUBDIR)  # the search from scratch
    scratch = run_dedup(params, opts)
    assert scratch.details["neighbours_searched"] == 101
    assert scratch.outputs["manifest"].read_bytes() == updated


def test_embedding_links_what_a_strict_hash_threshold_misses(run, tmp_path) -> None:
    root = run["root"]
    opts = DedupOptions(in_manifest=root / "ingest/manifest.parquet", out_dir=tmp_path / "a",
                        report=tmp_path / "a.html", workers=1)
    strict = make_params(root, hash_threshold=2, cosine_threshold=0.95,
                         verify={"enabled": False})  # else verification claims the link
    res = run_dedup(strict, opts)
    assert res.computed == 0 and res.details["embeddings_computed"] == 0  # all from the cache
    row = _rows_by_uri(res)["astronaut-cropped.jpg"]
    assert row.status == "duplicate" and row.dup_kind == "embedding"
    assert row.hash_distance > 2 and row.distance == pytest.approx(1 - row.cosine, abs=1e-5)
    no_embed = run_dedup(make_params(root, hash_threshold=2, embeddings=False), opts)
    row = _rows_by_uri(no_embed)["astronaut-cropped.jpg"]
    assert row.status == "ok" and pd.isna(row.cluster_id)


def _rows_by_uri(result: StageResult) -> dict[str, Any]:
    """File name of every source URI -> its row of the run's output manifest."""
    return {Path(u).name: r for r in read_table(result.outputs["manifest"]).itertuples()
            for u in r.source_uris}


def _jpeg(rgb: np.ndarray, path: Path, quality: int = 88) -> None:
    Image.fromarray(rgb).save(path, quality=quality)


def test_reposts_are_verified_with_their_transform_and_the_clean_copy_kept(tmp_path) -> None:
    """Mirrored, captioned, letterboxed and screenshotted copies of real photos join their
    original through verification; the same edit of the other half of the photo does not;
    the original is kept for the framed copies and the report says why. A rerun verifies
    nothing again, and one new image costs only its own features and pairs."""
    from curate.demo.reposts import caption, mirror, screenshot

    raw = tmp_path / "raw"
    raw.mkdir()
    coffee = np.asarray(photo("coffee"))
    left, right = coffee[:, :300], coffee[:, 300:]
    _jpeg(np.ascontiguousarray(left), raw / "left.jpg", 95)
    rng = np.random.default_rng(3)
    planted = {"mirror.jpg": mirror, "screenshot.jpg": screenshot}
    for name, edit in planted.items():
        _jpeg(edit(np.ascontiguousarray(left), rng)[0], raw / name)
    bar = np.full((left.shape[0] + 70, 300, 3), 255, np.uint8)
    bar[70:] = left
    cv2.putText(bar, "WHEN THE COFFEE", (10, 45), cv2.FONT_HERSHEY_DUPLEX, 1.0, (0, 0, 0), 2)
    _jpeg(bar, raw / "caption.jpg")
    boxed = np.zeros((left.shape[0], 560, 3), np.uint8)
    boxed[:, 130:430] = left
    _jpeg(boxed, raw / "letterbox.jpg")
    _jpeg(caption(np.ascontiguousarray(right), np.random.default_rng(3))[0],
          raw / "other-half-captioned.jpg")
    for name in ("astronaut", "rocket"):
        photo(name).save(raw / f"{name}.jpg", quality=92)
    params = make_params(tmp_path, workers=2)
    run_ingest(params, IngestOptions(out_dir=tmp_path / "ingest", workers=1))
    opts = DedupOptions(in_manifest=tmp_path / "ingest/manifest.parquet",
                        out_dir=tmp_path / "dedup")
    first = run_dedup(params, opts)
    by_file = {Path(r.source_uri).name: r
               for r in read_table(first.outputs["manifest"]).itertuples()}
    original = by_file["left.jpg"]
    assert original.status == "ok" and original.cluster_size == 5
    for name in ("mirror.jpg", "caption.jpg", "letterbox.jpg", "screenshot.jpg"):
        row = by_file[name]
        assert row.status == "duplicate" and row.duplicate_of == original.image_id, name
        assert row.dup_kind in ("verified", "hash", "embedding"), name
    assert "mirror" in by_file["mirror.jpg"].transform
    for name in ("caption.jpg", "letterbox.jpg", "screenshot.jpg"):
        assert by_file[name].framing == "framed", name
        assert by_file[name].kept_because == "framing", name
    for name in ("other-half-captioned.jpg", "astronaut.jpg", "rocket.jpg"):
        assert by_file[name].status == "ok" and pd.isna(by_file[name].cluster_id), name
    page = (tmp_path / "reports/duplicates.html").read_text()
    assert "verified repost" in page and "adds a border, caption or app UI" in page
    verified = first.details["reposts"]
    assert verified is not None and verified.pairs_computed > 0

    again = run_dedup(params, opts).details["reposts"]
    assert again.pairs_computed == 0 and again.features_computed == 0
    assert again.pairs_cached == verified.candidates
    _jpeg(np.ascontiguousarray(left[20:, 30:]), raw / "crop.jpg")
    run_ingest(params, IngestOptions(out_dir=tmp_path / "ingest", workers=1))
    third = run_dedup(params, opts)
    reverified = third.details["reposts"]
    assert reverified.features_computed == 1  # partners' features come from the cache
    assert 0 < reverified.pairs_computed < verified.pairs_computed
    crop = {Path(r.source_uri).name: r
            for r in read_table(third.outputs["manifest"]).itertuples()}["crop.jpg"]
    assert crop.duplicate_of == original.image_id

    # The features are files the workers wrote, one per image; one that is gone (or not the
    # size the cache recorded) is computed again when a new pair needs it.
    stored = {p.stem: p for p in (tmp_path / "cache" / FEATURES_SUBDIR).rglob("*.sft")}
    assert original.image_id in stored and crop.image_id in stored
    stored[original.image_id].unlink()
    _jpeg(np.ascontiguousarray(left[10:, :-25]), raw / "crop2.jpg")
    run_ingest(params, IngestOptions(out_dir=tmp_path / "ingest", workers=1))
    fourth = run_dedup(params, opts)
    assert fourth.details["reposts"].features_computed == 2
    assert stored[original.image_id].exists()
    crop2 = {Path(r.source_uri).name: r
             for r in read_table(fourth.outputs["manifest"]).itertuples()}["crop2.jpg"]
    assert crop2.duplicate_of == original.image_id


def test_report_opens_in_chromium_with_every_cluster_and_thumbnail(run, open_report) -> None:
    """reports/duplicates.html in headless Chromium (tests/conftest.py): no script error, the
    hostile file name shown as text (its onerror never ran), every thumbnail decoded."""
    page = open_report(run["root"] / "reports/duplicates.html")
    assert page.problems() == [] and page.dialogs == []
    assert page.get_by_text(HOSTILE).count() >= 1
    loaded, total = page.images_loaded("img")
    assert loaded == total >= 12
    assert page.get_by_text("Clusters (6)").first.is_visible()
