"""The matte stage on a few small images with the real u2netp model (and the model-free methods).

Images: two demo feet drawn small (to keep the test fast), a synthetic studio shot,
and a blank frame with nothing to cut out. Masks are compared with rembg's own `remove`.
"""

from __future__ import annotations

import dataclasses
import io
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from core import models
from core.atomic import TEMP_MARKER
from core.config import from_mapping
from core.manifest import read_table, write_table
from core.store import Store
from curate.config import Params
from curate.demo.shapes import render_foot
from curate.stages.ingest import IngestOptions, run_ingest
from curate.stages.matte import MatteOptions, run_matte

pytestmark = pytest.mark.integration


def _studio(size: tuple[int, int] = (240, 320)) -> np.ndarray:
    rng = np.random.default_rng(3)
    h, w = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.full((h, w, 3), 226.0, np.float32) + rng.normal(0, 1.5, (h, w, 3))
    inside = ((x - w / 2) / (w * 0.18)) ** 2 + ((y - h / 2) / (h * 0.35)) ** 2 < 1
    img[inside] = (185, 120, 95)
    return np.clip(img, 0, 255).astype(np.uint8)


def _jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=92)
    return buf.getvalue()


def _models_dir() -> Path:
    path = models.default_models_dir()
    if not models.check(path, [s for s in models.MODELS if s.name == "u2netp"])[0].ok:
        pytest.fail(f"u2netp.onnx missing under {path}: run `make models` first")
    return path


def _params(root: Path, models_dir: Path, **matte: object) -> Params:
    return from_mapping(Params, {
        "workers": 1,
        "paths": {"store": str(root / "store"), "cache": str(root / "cache"),
                  "reports": str(root / "reports"), "models": str(models_dir)},
        "ingest": {"sources": [{"kind": "folder", "path": str(root / "raw")}]},
        "matte": {"model": "u2netp", **matte},
    }, "")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("matte")
    raw = root / "raw"
    raw.mkdir()
    for i, category in enumerate(("soles", "pov")):
        foot = render_foot(np.random.default_rng(40 + i), category, 300, 360)
        (raw / f"foot_{category}.jpg").write_bytes(_jpeg(foot.image))
    (raw / "studio.jpg").write_bytes(_jpeg(_studio()))
    (raw / "blank.jpg").write_bytes(_jpeg(np.full((200, 260, 3), 128, np.uint8)))
    (raw / "dup.jpg").write_bytes(_jpeg(_studio((200, 200))))
    params = _params(root, _models_dir())
    run_ingest(params, IngestOptions(out_dir=root / "ingest"))
    manifest = read_table(root / "ingest" / "manifest.parquet")
    name = manifest["source_uri"].map(lambda u: u.rsplit("/", 1)[-1])
    manifest.loc[name.eq("dup.jpg"), ["status", "reason"]] = ["duplicate", "duplicate_of:y"]
    write_table(manifest, root / "in.parquet", sort_by=["image_id"])
    ids = dict(zip(name, manifest["image_id"], strict=True))
    options = MatteOptions(manifest=root / "in.parquet", out_dir=root / "matte",
                           report=root / "reports" / "mattes.html")
    result = run_matte(params, options)
    out = read_table(root / "matte" / "manifest.parquet").set_index("image_id")
    # this run's report, kept apart: later tests write reports/mattes.html again
    report = root / "first-run" / "mattes.html"
    report.parent.mkdir()
    shutil.copy(options.report, report)
    return SimpleNamespace(root=root, params=params, options=options, result=result, out=out,
                           ids=ids, manifest=manifest, report=report)


def _load(data: SimpleNamespace, rel: str) -> np.ndarray:
    return np.asarray(Image.open(data.root / "matte" / rel))


def test_outputs_for_live_images_only(data: SimpleNamespace) -> None:
    out = data.out
    assert len(out) == len(data.manifest)
    dup = out.loc[data.ids["dup.jpg"]]
    assert dup["status"] == "duplicate" and pd.isna(dup["matte_path"])
    for name in ("foot_soles.jpg", "foot_pov.jpg", "studio.jpg", "blank.jpg"):
        row = out.loc[data.ids[name]]
        img, mask = _load(data, row["matte_path"]), _load(data, row["mask_path"])
        assert img.shape[:2] == mask.shape == (row["height"], row["width"])
        assert img.ndim == 3 and mask.dtype == np.uint8
        assert (img[mask == 0] == 255).all()  # composited on the white background
        assert 0 <= row["m_fg_fraction"] <= 1


def test_masks_match_rembg_within_rounding(data: SimpleNamespace) -> None:
    """The backend's own (raw) masks are rembg's; the cleaned mask only keeps or cuts them."""
    from rembg import new_session, remove

    from core.store import Store

    models.configure_environment(_models_dir())
    session = new_session("u2netp")
    for name in ("foot_soles.jpg", "studio.jpg"):
        row = data.out.loc[data.ids[name]]
        source = (data.params.paths.store / row["store_path"]).read_bytes()
        theirs = np.asarray(Image.open(io.BytesIO(remove(source, session=session,
                                                         only_mask=True))))
        (raw_root,) = (data.root / "matte" / "out").glob("raw-*")
        raw = np.asarray(Image.open(Store(raw_root).path(data.ids[name], "png")))
        assert np.abs(theirs.astype(int) - raw.astype(int)).max() <= 1, name
        cleaned = _load(data, row["mask_path"])
        assert ((cleaned >= 128) <= (theirs >= 128)).mean() > 0.99, name  # nothing invented


def test_studio_shot_is_cut_out_and_blank_frame_is_flagged(data: SimpleNamespace) -> None:
    studio = data.out.loc[data.ids["studio.jpg"]]
    assert studio["status"] == "ok" and 0.1 < studio["m_fg_fraction"] < 0.4
    assert studio["m_separation"] > 0.5
    blank = data.out.loc[data.ids["blank.jpg"]]
    assert blank["status"] == "outlier"
    assert {"small_foreground", "soft_matte"} & set(blank["matte_reasons"])
    assert (data.root / "reports" / "mattes.html").exists()


def test_rerun_is_cached_and_new_settings_make_a_new_variant(data: SimpleNamespace) -> None:
    again = run_matte(data.params, data.options)
    assert again.computed == 0 and again.details["remeasured"] == 0
    assert again.details["variant"] == data.result.details["variant"]
    grey = dataclasses.replace(data.params, background=(128, 128, 128))
    other = run_matte(grey, dataclasses.replace(data.options, out_dir=data.root / "grey"))
    assert other.details["variant"] != data.result.details["variant"] and other.computed == 4
    row = read_table(data.root / "grey" / "manifest.parquet").set_index("image_id").loc[
        data.ids["blank.jpg"]]
    img = np.asarray(Image.open(data.root / "grey" / row["matte_path"]))
    mask = np.asarray(Image.open(data.root / "grey" / row["mask_path"]))
    assert (img[mask == 0] == 128).all()


def test_a_damaged_composite_is_matted_again_not_reused(data: SimpleNamespace,
                                                        tmp_path: Path) -> None:
    """Every reused cache entry is checked against the sizes recorded when it was written."""
    options = dataclasses.replace(data.options, out_dir=tmp_path / "matte")
    run_matte(data.params, options)
    out = read_table(tmp_path / "matte" / "manifest.parquet").set_index("image_id")
    composite = tmp_path / "matte" / out.loc[data.ids["studio.jpg"], "matte_path"]
    whole = composite.read_bytes()
    composite.write_bytes(whole[: len(whole) // 2])  # a copy cut short (disk full, sync lost)
    again = run_matte(data.params, options)
    assert again.computed == 1
    assert composite.read_bytes() == whole


def test_pngs_a_killed_run_left_staged_are_swept_at_the_next_run(data: SimpleNamespace,
                                                                 tmp_path: Path) -> None:
    """Workers stage each PNG in its store's .tmp folder, which a run sweeps first: a rerun
    after a SIGKILL leaves the same files as a run that was never killed."""
    options = dataclasses.replace(data.options, out_dir=tmp_path / "matte")
    run_matte(data.params, options)
    out = read_table(tmp_path / "matte" / "manifest.parquet").dropna(subset=["matte_path"])
    left = []
    for column in ("matte_path", "mask_path"):
        png = tmp_path / "matte" / out[column].iloc[0]
        staged = Store.staging_dir(png) / f".{png.name}{TEMP_MARKER}k1ll3d.png"
        assert staged.parent.parent == png.parents[2]
        staged.parent.mkdir(exist_ok=True)
        staged.write_bytes(png.read_bytes()[:100])  # the write the kill cut short
        left.append(staged)
    again = run_matte(data.params, options)
    assert again.computed == 0
    assert not any(p.exists() for p in left)
    assert not list((tmp_path / "matte").rglob(f"*{TEMP_MARKER}*"))


def test_missing_model_names_the_provisioning_command(data: SimpleNamespace, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(models.ENV_MODELS_DIR, raising=False)
    empty = dataclasses.replace(data.params, paths=dataclasses.replace(data.params.paths,
                                                                       models=tmp_path))
    with pytest.raises(models.ModelMissingError, match="curate models provision"):
        run_matte(empty, dataclasses.replace(data.options, out_dir=tmp_path / "m"))
    # the same through the CLI: exit code 1 and the command in the message
    import yaml

    from curate.cli import app

    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({
        "paths": {"store": str(data.params.paths.store), "cache": str(tmp_path / "c"),
                  "models": str(tmp_path / "none")},
        "matte": {"model": "u2netp"}}))
    result = CliRunner().invoke(app, ["matte", "--params", str(params_file), "--manifest",
                                      str(data.options.manifest), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "curate models provision" in " ".join(result.output.split())


def test_model_free_method_needs_no_model(data: SimpleNamespace, tmp_path: Path) -> None:
    params = _params(data.root, tmp_path / "no-models", method="border_key")
    result = run_matte(params, dataclasses.replace(data.options, out_dir=tmp_path / "bk"))
    out = read_table(tmp_path / "bk" / "manifest.parquet").set_index("image_id")
    studio = out.loc[data.ids["studio.jpg"]]
    assert result.details["variant"].startswith("border_key-")
    assert 0.1 < studio["m_fg_fraction"] < 0.4 and studio["m_boundary_sharpness"] > 0.5
    assert "small_foreground" in out.loc[data.ids["blank.jpg"], "matte_reasons"]


def test_a_composite_unlike_all_others_is_flagged_matte_off_subject(tmp_path: Path) -> None:
    """22 soles and one frame holding only a box: its matte keeps the box, not a foot."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for seed in range(22):
        foot = render_foot(np.random.default_rng(100 + seed), "soles", 200, 240)
        (raw / f"sole_{seed:02d}.jpg").write_bytes(_jpeg(foot.image))
    box = np.full((240, 200, 3), 235, np.uint8)
    box[60:180, 40:160] = (40, 60, 200)
    (raw / "box.jpg").write_bytes(_jpeg(box))
    params = _params(tmp_path, _models_dir())
    run_ingest(params, IngestOptions(out_dir=tmp_path / "ingest"))
    run_matte(params, MatteOptions(manifest=tmp_path / "ingest" / "manifest.parquet",
                                   out_dir=tmp_path / "matte"))
    out = read_table(tmp_path / "matte" / "manifest.parquet")
    name = out["source_uri"].map(lambda u: u.rsplit("/", 1)[-1])
    flagged = set(name[out["matte_reasons"].map(lambda r: "matte_off_subject" in r)])
    assert flagged == {"box.jpg"}
    scores = out.set_index(name)["m_matte_outlier"]
    assert scores["box.jpg"] > 2 * scores.drop("box.jpg").median()


def test_report_opens_in_chromium_and_filters_by_reason(data: SimpleNamespace,
                                                        open_report) -> None:
    """reports/mattes.html in headless Chromium (tests/conftest.py), as outliers.html."""
    page = open_report(data.report)
    assert page.problems() == [] and page.dialogs == []
    loaded, total = page.images_loaded("figure.card img")
    assert loaded == total > 0
    blank = data.ids["blank.jpg"]
    reasons = list(data.out.loc[blank, "matte_reasons"])
    cards = page.locator("section[data-section='gallery'] figure.card")
    page.select_option("#reason-filter", reasons[0])
    visible = [cards.nth(i) for i in range(cards.count()) if cards.nth(i).is_visible()]
    assert blank in {c.get_attribute("data-id") for c in visible}
    assert all(reasons[0] in c.get_attribute("data-reasons").split() for c in visible)
    page.select_option("#reason-filter", "")
    page.fill("#search", blank[:12])
    shown = {c.get_attribute("data-id") for c in page.locator("figure.card").all()
             if c.is_visible()}
    assert shown == {blank}
    page.locator(f"figure.card[data-id='{blank}']").first.click()
    assert page.inner_text("#d-id") == blank
    assert reasons[0] in page.inner_text("#d-reasons")
