"""The quality stage end to end on rendered demo images, and its report in real Chromium.

The images are drawn by the demo generator (feet of both kinds, one planted outlier of every
kind), ingested into a temporary store, then judged. The report is opened from file:// in
Debian's headless Chromium driven by Playwright.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from core import imageio, models
from core.config import from_mapping
from core.manifest import read_table, write_table
from core.parallel import make_executor
from curate.config import Params
from curate.demo.generate import OUTLIER_KINDS, Job, encode, render_job
from curate.demo.shapes import render_foot
from curate.quality.config import Threshold
from curate.stages.ingest import IngestOptions, run_ingest
from curate.stages.quality import QualityOptions, run_quality

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EVIL_NAME = "<script>alert('x')<script>.jpg"
#: planted subkind -> the reason the default thresholds must give it
EXPECTED = {"blurry": "blurry", "dark": "dark", "overexposed": "overexposed", "tiny": "tiny",
            "extreme_aspect": "extreme_aspect", "grayscale": "grayscale", "noise": "noisy",
            "off_subject": "off_subject"}
N_BASE = 16


def _models_dir() -> Path:
    path = models.default_models_dir()
    if not models.check(path, [s for s in models.MODELS if s.name == "mobilenet_v2"])[0].ok:
        pytest.fail(f"MobileNetV2 weights missing under {path}: run `make models` first")
    return path


def _params(root: Path, **quality: object) -> Params:
    return from_mapping(Params, {
        "workers": 1,
        "paths": {"store": str(root / "store"), "cache": str(root / "cache"),
                  "reports": str(root / "reports"), "models": str(_models_dir())},
        "ingest": {"sources": [{"kind": "folder", "path": str(root / "raw")}]},
        "quality": quality,
    }, "")


def _base(i: int) -> bytes:
    """A clean demo foot, drawn at a modest size (drawing time grows with area)."""
    rng = np.random.default_rng([7, i])
    w, h = int(rng.integers(420, 640)), int(rng.integers(420, 640))
    return encode(render_foot(rng, ("soles", "pov")[i % 2], w, h).image, "jpg", 90)


def _render(root: Path) -> dict[str, str]:
    """Write base images and one outlier per kind under root/raw; return file -> subkind."""
    jobs = [Job(EVIL_NAME if kind == "tiny" else f"outlier_{kind}.jpg", "outlier", kind,
                1000 + n, None if kind == "off_subject" else "soles")
            for n, kind in enumerate(OUTLIER_KINDS)]
    (root / "raw").mkdir(parents=True)
    with make_executor(2) as pool:
        outliers = list(pool.map(render_job, jobs, [7] * len(jobs)))
        bases = list(pool.map(_base, range(N_BASE)))
    kinds = {}
    for job, r in zip(jobs, outliers, strict=True):
        (root / "raw" / job.file).write_bytes(r.data)
        kinds[job.file] = job.subkind
    for i, data in enumerate(bases):
        (root / "raw" / f"base_{i:02d}.jpg").write_bytes(data)
        kinds[f"base_{i:02d}.jpg"] = ""
    return kinds


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Rendered images ingested, one duplicate row and one tagged reject, quality run once."""
    root = tmp_path_factory.mktemp("quality")
    kinds = _render(root)
    params = _params(root)
    run_ingest(params, IngestOptions(out_dir=root / "ingest"))
    manifest = read_table(root / "ingest" / "manifest.parquet")
    manifest["subkind"] = manifest["source_uri"].map(lambda u: kinds[u.rsplit("/", 1)[-1]])
    # one base image stands for a duplicate removed by dedup: it must pass through untouched
    dup = manifest.index[manifest["subkind"].eq("")][0]
    manifest.loc[dup, ["status", "reason"]] = ["duplicate", "duplicate_of:x"]
    write_table(manifest.drop(columns="subkind"), root / "in.parquet", sort_by=["image_id"])
    base_ids = manifest.loc[manifest["subkind"].eq(""), "image_id"].tolist()
    tags = pd.DataFrame({"image_id": base_ids[1:6], "task_id": [11, 12, 13, 14, 15],
                         "category": ["soles", "pov", "soles", "pov", "disputed"],
                         "reject": [True, False, False, False, False]})
    tags.to_parquet(root / "merged.parquet")
    options = QualityOptions(manifest=root / "in.parquet", tags=root / "merged.parquet",
                             out_dir=root / "out", report=root / "reports" / "outliers.html")
    result = run_quality(params, options)
    out = read_table(root / "out" / "manifest.parquet")
    out = out.merge(manifest[["image_id", "subkind"]], on="image_id")
    return SimpleNamespace(root=root, params=params, options=options, result=result, out=out,
                           dup=manifest.loc[dup, "image_id"], rejected=base_ids[1],
                           inp=manifest)


def test_every_planted_outlier_gets_its_reason(stage: SimpleNamespace) -> None:
    out = stage.out.set_index("subkind", drop=False)
    for subkind, reason in EXPECTED.items():
        row = out.loc[subkind]
        assert reason in row["quality_reasons"], (subkind, list(row["quality_reasons"]))
        assert row["status"] == "outlier"
        assert reason in row["reason"].split(",")


def test_clean_images_are_kept_and_rows_are_all_there(stage: SimpleNamespace) -> None:
    out = stage.out
    assert len(out) == len(stage.inp) and set(out["image_id"]) == set(stage.inp["image_id"])
    assert set(stage.inp.columns) - {"subkind"} <= set(out.columns)
    base = out[out["subkind"].eq("") & out["image_id"].ne(stage.dup)
               & out["image_id"].ne(stage.rejected)]
    assert (base["status"] == "ok").mean() >= 0.9, base[["quality_reasons"]]
    for col in ("q_sharpness_peak", "q_luma_p99", "q_noise", "q_embed_outlier", "q_min_side",
                "q_score_blurry", "q_score_off_subject"):
        assert base[col].notna().all(), col


def test_duplicates_pass_through_untouched(stage: SimpleNamespace) -> None:
    row = stage.out.set_index("image_id").loc[stage.dup]
    assert row["status"] == "duplicate" and row["reason"] == "duplicate_of:x"
    assert list(row["quality_reasons"]) == [] and np.isnan(row["q_sharpness_peak"])


def test_annotator_reject_is_a_reason(stage: SimpleNamespace) -> None:
    row = stage.out.set_index("image_id").loc[stage.rejected]
    assert "annotator_reject" in row["quality_reasons"] and row["status"] == "outlier"


def test_threshold_change_rescores_without_decoding(stage: SimpleNamespace,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    calls: list[object] = []
    real = imageio.decode

    def counting(*args: object, **kwargs: object):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(imageio, "decode", counting)
    stricter = dataclasses.replace(stage.params.quality, checks=dataclasses.replace(
        stage.params.quality.checks, tiny=Threshold("percentile", 50.0),
        noisy=Threshold("disabled", 1.5)))
    params = dataclasses.replace(stage.params, quality=stricter)
    options = dataclasses.replace(stage.options, out_dir=tmp_path, report=tmp_path / "r.html")
    result = run_quality(params, options)
    assert calls == [] and result.computed == 0
    out = read_table(tmp_path / "manifest.parquet").merge(stage.inp[["image_id", "subkind"]])
    live = stage.out["status"].ne("duplicate").sum()
    assert out["quality_reasons"].map(lambda r: "tiny" in r).sum() == pytest.approx(live / 2, abs=1)
    noise_row = out.set_index("subkind").loc["noise"]
    assert "noisy" not in noise_row["quality_reasons"]


def test_new_image_costs_one_decode_and_unreadable_file_is_a_reason(
        stage: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[object] = []
    real = imageio.decode
    monkeypatch.setattr(imageio, "decode",
                        lambda *a, **k: (calls.append(a[0]), real(*a, **k))[1])
    inp = stage.inp.drop(columns="subkind")
    broken = inp.iloc[[0]].copy()
    broken["image_id"] = "f" * 64
    broken["status"], broken["reason"] = "ok", None
    broken["store_path"] = "ff/ff/broken.jpg"
    target = stage.params.paths.store / "ff/ff/broken.jpg"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    write_table(pd.concat([inp, broken]), tmp_path / "in.parquet", sort_by=["image_id"])
    options = dataclasses.replace(stage.options, manifest=tmp_path / "in.parquet",
                                  out_dir=tmp_path, report=tmp_path / "r.html")
    result = run_quality(stage.params, options)
    assert result.computed == 1  # only the new file; everything else from the cache
    row = read_table(tmp_path / "manifest.parquet").set_index("image_id").loc["f" * 64]
    assert list(row["quality_reasons"]) == ["unreadable"] and row["status"] == "outlier"
    assert "truncated" in row["quality_error"] or "cannot" in row["quality_error"]


# ----------------------------------------------------------------------------- browser

@pytest.fixture(scope="module")
def page(stage: SimpleNamespace, open_report) -> object:
    """The report opened from file:// in headless Chromium (tests/conftest.py)."""
    return open_report(stage.result.outputs["report"])


def test_report_loads_without_errors_or_injected_script(page: object) -> None:
    assert [m for m in page.messages if m[0] in ("error", "pageerror", "warning")] == []
    assert page.dialogs == []  # the <script> in a file name never ran
    assert page.locator(f"figure[title=\"{EVIL_NAME}\"]").count() >= 1  # shown as text


def test_report_filter_by_reason_and_search_by_id(page: object, stage: SimpleNamespace) -> None:
    cards = page.locator("section[data-section='gallery'] figure.card")
    total_visible = sum(1 for i in range(cards.count()) if cards.nth(i).is_visible())
    page.select_option("#reason-filter", "tiny")
    visible = [cards.nth(i) for i in range(cards.count()) if cards.nth(i).is_visible()]
    assert 0 < len(visible) < total_visible
    assert all("tiny" in c.get_attribute("data-reasons").split() for c in visible)
    assert not page.locator("section[data-check='blurry']").first.is_visible()
    page.select_option("#reason-filter", "")
    target = stage.out.set_index("subkind").loc["blurry", "image_id"]
    page.fill("#search", target[:12])
    shown = {c.get_attribute("data-id") for c in page.locator("figure.card").all()
             if c.is_visible()}
    assert shown == {target}
    page.locator(f"figure.card[data-id='{target}']").first.click()
    assert page.locator("#detail").is_visible()
    assert page.inner_text("#d-id") == target
    assert "blurry" in page.inner_text("#d-reasons")
    page.keyboard.press("Escape")
    page.fill("#search", "")


def test_report_screenshot_is_not_blank(page: object, stage: SimpleNamespace) -> None:
    from PIL import Image

    shot = stage.root / "reports" / "outliers.png"
    page.locator("section[data-section='gallery']").first.scroll_into_view_if_needed()
    page.screenshot(path=str(shot))
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (900, 1280)
    assert img.std() > 20 and len(np.unique(img.reshape(-1, 3), axis=0)) > 500
    thumbs = page.locator("figure.card img")
    loaded = page.evaluate("() => Array.from(document.querySelectorAll('figure.card img'))"
                           ".filter(i => i.complete && i.naturalWidth > 0).length")
    assert loaded == thumbs.count() > 0
