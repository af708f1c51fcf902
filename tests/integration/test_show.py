"""`curate show ID`: one image's story from every stage's outputs.

The fast tests run on a small project whose manifests are built here with the stages' own
column layouts (the column constants and functions the stages write them with), so they run
in seconds; the slow one runs the real stages on a tiny demo and checks the story against
the manifests they wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from core.manifest import REJECT_COLUMNS, write_table
from core.store import Store
from curate.cli import app
from curate.config import Params
from curate.matte.stats import STAT_COLUMNS
from curate.quality.checks import CHECKS
from curate.quality.properties import property_columns
from curate.stages.dedup import DEDUP_COLUMNS
from curate.stages.ingest import MANIFEST_COLUMNS
from curate.stages.matte import COMPOSITE_OUTLIER, SUBJECT_COLUMNS
from curate.stages.prepare import _labelled_table, _numbered, _rows
from curate.stages.quality import QUALITY_SOURCES
from curate.tags.config import TagsConfig
from curate.tags.labelconfig import schema_for
from curate.tags.merge import merged_columns
from curate.tags.normalise import tag_columns

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
KEPT = "ab" + "1" * 62          # kept image of a cluster; tagged; in dataset soles
DUP = "ab" + "2" * 62           # its duplicate (shares the prefix "ab" with KEPT)
BLURRY = "c3" * 32              # flagged by quality
PROPAGATED = "d4" * 32          # split by k-NN; left out by prepare (upscale)
REJECTED = "e5" * 32            # refused at ingest (two inputs with these bytes)
LIVE = (KEPT, BLURRY, PROPAGATED)
SETTINGS_HASH = "0123456789abcdef"
CLASS_HASH = "fedcba9876543210"  # class soles of the combined dataset "both"
OTHER = "f6" * 32               # the one image of class pov in "both"
#: The cut-offs the stages' summary.json record: params.yaml's defaults.
_THRESHOLDS = {**vars(Params().quality.checks), **vars(Params().matte.checks)}
CUTOFFS = {name: None if _THRESHOLDS[name].mode == "disabled" else _THRESHOLDS[name].value
           for name in CHECKS}


# ---------------------------------------------------------------------------- the project


def _ingest(store: Store) -> pd.DataFrame:
    rows = []
    for k, image_id in enumerate((KEPT, DUP, BLURRY, PROPAGATED)):
        uri = f"photos/{k}.jpg"
        rows.append({"image_id": image_id, "source": "folder", "source_uri": uri,
                     "width": 800 - 100 * k, "height": 600, "format": "JPEG", "mode": "RGB",
                     "bytes": 1000 + k, "ext": "jpg", "store_path": store.relpath(image_id, "jpg"),
                     "exif_orientation": 1, "n_frames": 1,
                     "source_uris": [uri, f"copies/[red]{k}.jpg"] if image_id == KEPT
                     else [uri],
                     "status": "ok", "reason": None})
    frame = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    frame["n_sources"] = frame["source_uris"].map(len)
    return frame


def _dedup(ingest: pd.DataFrame) -> pd.DataFrame:
    out = ingest.copy()
    for column in DEDUP_COLUMNS:
        out[column] = None
    out["perceptual_hash"] = "f0f0f0f0f0f0f0f0"
    out["cluster_size"] = pd.array([2, 2, 1, 1], dtype="Int64")
    out["hash_distance"] = pd.array([None, 3, None, None], dtype="Int64")
    out["distance"] = [np.nan, 3.0, np.nan, np.nan]
    out["cosine"] = [np.nan, 0.981, np.nan, np.nan]
    dup = out.image_id == DUP
    out.loc[out.image_id.isin([KEPT, DUP]), "cluster_id"] = KEPT
    out.loc[dup, ["duplicate_of", "linked_to", "dup_kind", "kept_because"]] = [
        KEPT, KEPT, "hash", "resolution"]
    out.loc[dup, ["status", "reason"]] = ["duplicate", f"duplicate_of:{KEPT}"]
    return out


def _passing(name: str) -> float:
    """A value on the good side of check `name`'s default threshold."""
    cutoff = CUTOFFS[name] or 0.0
    return cutoff + (1 if CHECKS[name].bad == "low" else -1) * max(abs(cutoff), 1.0) / 2


def _quality(dedup: pd.DataFrame) -> pd.DataFrame:
    out = dedup.copy()
    live = out.status.eq("ok")
    for column in (*property_columns(), "min_side", "aspect", "embed_outlier",
                   "colour_distance"):
        out[f"q_{column}"] = np.where(live, 0.5, np.nan)
    for name, check in CHECKS.items():
        if check.source in QUALITY_SOURCES:
            out[f"q_{check.metric}"] = np.where(live, _passing(name), np.nan)
            out[f"q_score_{name}"] = np.where(live, 0.25, np.nan)
    out["q_sharpness_peak"] = np.where(out.image_id == BLURRY, -1.5, out["q_sharpness_peak"])
    out["q_score_blurry"] = np.where(out.image_id == BLURRY, 1.0, out["q_score_blurry"])
    out["quality_reasons"] = [["blurry"] if i == BLURRY else [] for i in out.image_id]
    out["quality_error"] = pd.array([None] * len(out), dtype="string")
    out.loc[out.image_id == BLURRY, ["status", "reason"]] = ["outlier", "blurry"]
    return out


def _matte(quality: pd.DataFrame) -> pd.DataFrame:
    out = quality.copy()
    live = out.status.eq("ok")
    store = Store(Path())
    out["matte_path"] = [f"out/v1/images/{store.relpath(i, 'png')}" if ok else None
                         for i, ok in zip(out.image_id, live, strict=True)]
    out["mask_path"] = [f"out/v1/masks/{store.relpath(i, 'png')}" if ok else None
                        for i, ok in zip(out.image_id, live, strict=True)]
    out["subject_by"] = np.where(live, "whole", None)
    for column in (*STAT_COLUMNS, COMPOSITE_OUTLIER, *SUBJECT_COLUMNS):
        out[f"m_{column}"] = np.where(live, 0.0, np.nan)
    for name, check in CHECKS.items():
        if check.source == "matte":
            out[f"m_{check.metric}"] = np.where(live, _passing(name), np.nan)
            out[f"m_score_{name}"] = np.where(live, 0.1, np.nan)
    out["matte_reasons"] = [[] for _ in out.image_id]
    out["matte_error"] = pd.array([None] * len(out), dtype="string")
    return out


def _split(matte: pd.DataFrame) -> pd.DataFrame:
    out = matte.copy()
    assigned = {KEPT: ("soles", "tag", 1.0), PROPAGATED: ("soles", "propagated", 0.8)}
    out["distribution"] = out.image_id.map(lambda i: assigned.get(i, (None,))[0])
    out["dist_source"] = out.image_id.map(lambda i: assigned.get(i, (None, None))[1])
    out["dist_confidence"] = out.image_id.map(lambda i: assigned.get(i, (0, 0, np.nan))[2])
    out["proposal"] = None
    return out


def _tags() -> tuple[pd.DataFrame, pd.DataFrame]:
    schema = schema_for(TagsConfig())
    merged = pd.DataFrame([{"image_id": KEPT, "task_id": 7, "verdict": "soles",
                            "category": "soles", "reject": False, "n_annotators": 1,
                            "n_agree": 1, "agreement": 1.0, "annotators": "3",
                            "votes": "soles:1", "note": "nice arch",
                            "updated_at": pd.Timestamp("2024-05-01T10:00:00Z"),
                            "problems": []}], columns=merged_columns(schema))
    tags = pd.DataFrame([{"image_id": KEPT, "task_id": 7, "annotation_id": 70,
                          "annotator": 3, "annotator_email": "ann@example.org",
                          "cancelled": False, "latest": True, "category": "soles",
                          "reject": False, "note": "nice arch",
                          "updated_at": pd.Timestamp("2024-05-01T10:00:00Z"),
                          "problems": []}], columns=tag_columns(schema))
    return merged, tags


def _prepare(root: Path) -> None:
    """soles: KEPT with its mirror (two zip members), PROPAGATED left out (upscale); both
    (combined): class pov (OTHER), then class soles (KEPT). Rows made and numbered by the
    prepare stage's own functions."""
    meta = {KEPT: {"method": "keypoints", "angle_deg": 2.5, "upscale": 1.1, "skipped": None,
                   "outputs": [{"variant": 0, "transform": "aligned", "bytes": 10},
                               {"variant": 1, "transform": "mirror", "bytes": 10}]},
            PROPAGATED: {"method": "center", "angle_deg": 0.0, "upscale": 3.1,
                         "skipped": "needs x3.1 > prepare.max_upscale 2.0", "outputs": []},
            OTHER: {"method": "mask", "angle_deg": 0.0, "upscale": 1.0, "skipped": None,
                    "outputs": [{"variant": 0, "transform": "aligned", "bytes": 10}]}}
    soles = _rows(pd.DataFrame({"image_id": [KEPT, PROPAGATED]}), meta, {})
    pov = _rows(pd.DataFrame({"image_id": [OTHER]}), meta, {})
    both = _labelled_table([SimpleNamespace(name="pov", table=pov),
                            SimpleNamespace(name="soles", table=soles)])
    for name, table in (("soles", _numbered(soles)), ("both", both)):
        write_table(table, root / f"data/prepare/{name}/manifest.parquet",
                    sort_by=["image_id", "variant"])
    datasets = root / "data/datasets"
    datasets.mkdir(parents=True)
    (datasets / "soles.json").write_text(json.dumps({"name": "soles",
                                                     "settings_hash": SETTINGS_HASH}))
    (datasets / "both.json").write_text(json.dumps({
        "name": "both", "settings_hash": "not a folder",
        "classes": [{"index": 0, "name": "pov", "settings_hash": "1" * 16},
                    {"index": 1, "name": "soles", "settings_hash": CLASS_HASH}]}))
    with zipfile.ZipFile(datasets / "soles.zip", "w") as zf:
        zf.writestr("00000/img00000000.png", b"png")
    png = root / "cache/prepare" / SETTINGS_HASH / KEPT[:2] / f"{KEPT}-0.png"
    png.parent.mkdir(parents=True)
    png.write_bytes(b"png")  # variant 1's PNG is missing: shown as such


def _params(root: Path) -> Path:
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump({"paths": {
        "data": str(root / "data"), "store": str(root / "data/store"),
        "cache": str(root / "cache")}}))
    return path


def build_project(root: Path) -> SimpleNamespace:
    """Every stage's outputs for the five images above, as the stages lay them out."""
    data = root / "data"
    store = Store(data / "store")
    for image_id in (KEPT, DUP, BLURRY, PROPAGATED):
        store.put(b"bytes of " + image_id.encode(), image_id, "jpg")
    ingest = _ingest(store)
    write_table(ingest, data / "ingest/manifest.parquet", sort_by=["image_id"])
    rejects = pd.DataFrame([
        {"source": "folder", "source_uri": uri, "reason": "truncated",
         "message": "JPEG data cannot be decoded: image file is truncated", "bytes": 9,
         "sha256": REJECTED} for uri in ("bad/half.jpg", "bad/half_again.jpg")]
        + [{"source": "url", "source_uri": "http://x/404", "reason": "http_404",
            "message": "404 Not Found", "bytes": None, "sha256": None}],
        columns=list(REJECT_COLUMNS)).astype({"bytes": "Int64"})
    write_table(rejects, data / "ingest/rejects.parquet", sort_by=["source_uri", "reason"])
    frames = {"dedup": _dedup(ingest)}
    frames["quality"] = _quality(frames["dedup"])
    frames["matte"] = _matte(frames["quality"])
    frames["split"] = _split(frames["matte"])
    for stage, frame in frames.items():
        write_table(frame, data / stage / "manifest.parquet", sort_by=["image_id"])
    for stage in ("quality", "matte"):
        (data / stage / "summary.json").write_text(json.dumps({"cutoffs": CUTOFFS}))
    merged, tags = _tags()
    write_table(merged, data / "tags/merged.parquet", sort_by=["image_id"])
    write_table(tags, data / "tags/tags.parquet", sort_by=["image_id"])
    composite = data / "matte/out/v1/images" / Store(Path()).relpath(KEPT, "png")
    composite.parent.mkdir(parents=True)
    composite.write_bytes(b"png")
    _prepare(root)
    return SimpleNamespace(root=root, params=_params(root), frames=frames)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    return build_project(tmp_path_factory.mktemp("show"))


def show(project: SimpleNamespace, *args: str) -> SimpleNamespace:
    result = CliRunner().invoke(app, ["show", *args, "--params", str(project.params)])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def story(project: SimpleNamespace, image: str) -> dict:
    result = show(project, image, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# ---------------------------------------------------------------------------- fast tests


def test_kept_image_cluster_tags_split_and_zip_members(project: SimpleNamespace) -> None:
    s = story(project, KEPT[:6])
    assert s["image_id"] == KEPT
    assert s["ingest"]["source_uris"] == ["photos/0.jpg", "copies/[red]0.jpg"]
    dedup = s["dedup"]
    assert dedup["status"] == "ok" and dedup["kept_image"] == KEPT
    assert [m["image_id"] for m in dedup["members"]] == [KEPT, DUP]
    assert dedup["members"][1]["dup_kind"] == "hash" and dedup["members"][1]["distance"] == 3.0
    assert s["tags"]["merged"]["verdict"] == "soles"
    assert s["tags"]["annotations"][0]["annotator_email"] == "ann@example.org"
    assert s["tags"]["merged"]["updated_at"].startswith("2024-05-01T10:00:00")
    assert (s["split"]["distribution"], s["split"]["dist_source"]) == ("soles", "tag")
    assert s["matte"]["matte_path"].endswith(f"data/matte/out/v1/images/ab/11/{KEPT}.png")
    both, soles = s["prepare"]["datasets"]
    assert [(r["variant"], r["archive_name"], r["transform"]) for r in soles["rows"]] == [
        (0, "00000/img00000000.png", "aligned"), (1, "00000/img00000001.png", "mirror")]
    assert soles["rows"][1]["zip_member"].endswith("soles.zip!00000/img00000001.png")
    # combined: after class pov's image, and its PNGs in its class's settings folder
    assert [(r["archive_name"], r["class_index"], r["class_name"]) for r in both["rows"]] == [
        ("00000/img00000001.png", 1, "soles"), ("00000/img00000002.png", 1, "soles")]
    assert f"prepare/{CLASS_HASH}/ab/{KEPT}-1.png" in both["rows"][1]["png"]
    files = {f["kind"]: f for f in s["files"]}
    assert files["original (store)"]["exists"] and files["matte composite"]["exists"]
    assert not files["matte mask"]["exists"]
    assert files["prepared PNG (soles variant 0)"]["exists"]
    assert files["zip member (soles variant 0)"]["exists"]
    assert not files["zip member (soles variant 1)"]["exists"]  # not in the zip
    assert not files["zip member (both variant 0)"]["exists"]  # no zip
    assert not files["prepared PNG (soles variant 1)"]["exists"]
    assert files["prepared PNG (soles variant 1)"]["path"].endswith(
        f"prepare/{SETTINGS_HASH}/ab/{KEPT}-1.png")

    table = show(project, KEPT[:6]).stdout
    for text in ("00000/img00000001.png", "verdict soles", "distribution soles (tag",
                 "ann@example.org", DUP[:16], "missing", "copies/[red]0.jpg"):
        assert text in table, text


def test_duplicate_names_its_kept_image(project: SimpleNamespace) -> None:
    s = story(project, DUP)
    assert s["dedup"]["status"] == "duplicate" and s["dedup"]["kept_image"] == KEPT
    assert s["dedup"]["reason"] == f"duplicate_of:{KEPT}"
    assert (s["dedup"]["dup_kind"], s["dedup"]["hash_distance"]) == ("hash", 3)
    assert s["quality"]["status"] == "duplicate"  # carried through, not judged again
    assert s["prepare"]["state"] == "absent"
    table = show(project, DUP).stdout
    assert f"kept image {KEPT[:16]}" in table and "(carried over)" in table
    assert "quality: not judged" in table


def test_quality_flag_shows_the_measured_value_and_cutoff(project: SimpleNamespace) -> None:
    s = story(project, "c3")
    assert (s["quality"]["status"], s["quality"]["reason"]) == ("outlier", "blurry")
    checks = {c["check"]: c for c in s["quality"]["checks"]}
    assert checks["blurry"] == {"check": "blurry", "metric": "q_sharpness_peak", "value": -1.5,
                                "cutoff": 0.1, "bad": "low", "unit": "log10", "score": 1.0,
                                "flagged": True}
    assert not checks["dark"]["flagged"]
    assert {c["check"] for c in s["matte"]["checks"]} == {
        n for n, c in CHECKS.items() if c.source == "matte"}
    row = next(line for line in show(project, "c3").stdout.splitlines()
               if line.startswith("│ blurry"))
    assert "-1.5" in row and "0.1" in row and "below" in row and "FLAGGED" in row


def test_split_propagated_and_prepare_exclusion(project: SimpleNamespace) -> None:
    s = story(project, "d4")
    assert (s["split"]["dist_source"], s["split"]["dist_confidence"]) == ("propagated", 0.8)
    (row,) = s["prepare"]["datasets"][0]["rows"]
    assert (row["status"], row["reason"], row["archive_name"]) == ("excluded", "upscale", None)
    assert "needs x3.1" in show(project, "d4").stdout


def test_ingest_rejection_keeps_its_story(project: SimpleNamespace) -> None:
    s = story(project, "e5e5")
    ingest = s["ingest"]
    assert (ingest["status"], ingest["reason"]) == ("rejected", "truncated")
    assert ingest["source_uris"] == ["bad/half.jpg", "bad/half_again.jpg"]
    assert [r["message"] for r in ingest["rejects"]] == [
        "JPEG data cannot be decoded: image file is truncated"] * 2
    assert {s[stage]["state"] for stage in ("dedup", "quality", "matte", "split")} == {"absent"}
    table = show(project, "e5e5").stdout
    assert "truncated" in table and "bad/half_again.jpg" in table


def test_ambiguous_and_unknown_ids(project: SimpleNamespace) -> None:
    ambiguous = show(project, "ab")
    assert ambiguous.exit_code == 2
    assert KEPT in ambiguous.stderr and DUP in ambiguous.stderr
    for bad in ("0f0f", "not-hex"):
        unknown = show(project, bad)
        assert unknown.exit_code == 1
        assert unknown.stdout == "" and unknown.stderr.startswith("error:")
        assert "Traceback" not in unknown.output


def test_json_is_stable_and_strict(project: SimpleNamespace) -> None:
    text = show(project, BLURRY, "--json").stdout
    s = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert text.strip() == json.dumps(s, sort_keys=True, indent=2)
    assert s["dedup"]["cosine"] is None  # NaN in the manifest
    assert text == show(project, BLURRY, "--json").stdout


def test_stages_not_run_and_the_candidate_limit(tmp_path: Path) -> None:
    """Only ingest has run: every later stage says so; a prefix of many lists ten."""
    ids = [f"0{k:x}" + "7" * 62 for k in range(12)]
    frame = pd.DataFrame([{"image_id": i, "source": "folder", "source_uri": f"{i}.png",
                           "width": 8, "height": 8, "format": "PNG", "mode": "RGB", "bytes": 1,
                           "ext": "png", "store_path": f"{i}.png", "exif_orientation": 1,
                           "n_frames": 1, "source_uris": [f"{i}.png"], "status": "ok",
                           "reason": None} for i in ids], columns=MANIFEST_COLUMNS)
    write_table(frame, tmp_path / "data/ingest/manifest.parquet", sort_by=["image_id"])
    project = SimpleNamespace(params=_params(tmp_path))
    s = story(project, ids[3][:2])
    assert s["ingest"]["status"] == "ok"
    assert {s[k]["state"] for k in ("dedup", "tags", "quality", "matte", "split", "prepare")
            } == {"not_run"}
    assert show(project, ids[3][:2]).stdout.count("not run") == 6
    many = show(project, "0")
    assert many.exit_code == 2 and "matches 12 images" in many.stderr
    assert sum(i in many.stderr for i in ids) == 10 and "and 2 more" in many.stderr


def test_cli_subprocess_prints_json_on_stdout(project: SimpleNamespace) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.run([sys.executable, "-m", "curate.cli", "show", DUP[:10], "--json",
                           "--params", str(project.params)], cwd=project.root, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["dedup"]["kept_image"] == KEPT


# ---------------------------------------------------------------------------- the real stages


def _run_stages(root: Path) -> Params:
    """The pipeline on a tiny demo (16 base photos, with its planted duplicates, outliers and
    bad files), every stage writing where the CLI's defaults put it under `root`/data."""
    from curate.config import from_mapping
    from curate.demo import generate_demo
    from curate.stages.dedup import DedupOptions, run_dedup
    from curate.stages.ingest import IngestOptions, run_ingest
    from curate.stages.matte import MatteOptions, run_matte
    from curate.stages.prepare import PrepareError, PrepareOptions, run_prepare
    from curate.stages.quality import QualityOptions, run_quality
    from curate.stages.split import SplitOptions, run_split
    from curate.stages.tags import run_import

    data = root / "data"
    generate_demo(data / "demo", seed=0, n_base=16, workers=2)
    mapping = yaml.safe_load((REPO / "params.yaml").read_text())
    mapping.update(workers=2, paths={"data": str(data), "store": str(data / "store"),
                                     "cache": str(root / "cache"),
                                     "reports": str(root / "reports"),
                                     "models": os.environ.get("CURATE_MODELS_DIR",
                                                              str(REPO / "models/pretrained"))})
    mapping["ingest"]["sources"][0]["path"] = str(data / "demo/raw")
    mapping["tags"]["snapshot"] = str(data / "demo/labelstudio_export.json")
    mapping["matte"]["method"] = "border_key"  # no model: the story, not the matte, is tested
    mapping["prepare"]["resolution"] = 64
    mapping["split"].update(k=3, min_confidence=0.6)
    params = from_mapping(Params, mapping, "")
    tags = data / "tags/merged.parquet"
    run_ingest(params, IngestOptions(out_dir=data / "ingest"))
    run_import(params, None, data / "tags", data / "ingest/manifest.parquet")
    run_dedup(params, DedupOptions(in_manifest=data / "ingest/manifest.parquet",
                                   out_dir=data / "dedup"))
    run_quality(params, QualityOptions(manifest=data / "dedup/manifest.parquet", tags=tags,
                                       out_dir=data / "quality"))
    run_matte(params, MatteOptions(manifest=data / "quality/manifest.parquet",
                                   out_dir=data / "matte", tags=tags))
    run_split(params, SplitOptions(manifest=data / "matte/manifest.parquet", tags=tags,
                                   out_dir=data / "split"))
    options = PrepareOptions(split_manifest=data / "split/manifest.parquet", tags=tags,
                             matte_dir=data / "matte", datasets_dir=data / "datasets",
                             out_dir=data / "prepare")
    for dist in params.split.distributions:
        try:
            run_prepare(params, dist.name, options)
        except PrepareError:  # a distribution the tiny demo leaves empty
            pass
    (root / "params.yaml").write_text(yaml.safe_dump(mapping))
    return params


@pytest.mark.slow
def test_real_pipeline_outputs(tmp_path: Path) -> None:
    """Every kind of image the demo plants, told from the manifests the stages wrote."""
    _run_stages(tmp_path)
    project = SimpleNamespace(root=tmp_path, params=tmp_path / "params.yaml")
    data = tmp_path / "data"
    split = pd.read_parquet(data / "split/manifest.parquet")
    rejects = pd.read_parquet(data / "ingest/rejects.parquet").dropna(subset=["sha256"])
    prepared = pd.concat([pd.read_parquet(p) for p in data.glob("prepare/*/manifest.parquet")])

    dup = split[split.status == "duplicate"].iloc[0]
    s = story(project, dup.image_id[:12])
    assert s["dedup"]["kept_image"] == dup.duplicate_of == s["dedup"]["members"][0]["image_id"]
    assert s["dedup"]["dup_kind"] == dup.dup_kind

    flagged = split[split.quality_reasons.map(len) > 0].iloc[0]
    s = story(project, flagged.image_id)
    name = flagged.quality_reasons[0]
    check = next(c for c in s["quality"]["checks"] if c["check"] == name)
    assert check["flagged"] and check["value"] == pytest.approx(
        flagged[f"q_{CHECKS[name].metric}"])

    s = story(project, rejects.sha256.iloc[0])
    assert s["ingest"]["status"] == "rejected"
    assert s["ingest"]["reason"] == rejects.reason.iloc[0]

    ok = prepared[prepared.status == "ok"]
    image_id = ok.image_id.iloc[0]
    s = story(project, image_id)
    rows = [r for d in s["prepare"]["datasets"] for r in d["rows"]]
    assert sorted(r["archive_name"] for r in rows) == sorted(
        ok[ok.image_id == image_id].archive_name)
    assert all(f["exists"] for f in s["files"]), s["files"]
    for image in (dup.image_id, flagged.image_id, rejects.sha256.iloc[0], image_id):
        assert show(project, image).exit_code == 0
