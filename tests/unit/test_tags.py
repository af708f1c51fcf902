"""Tags stage without a server: labeling config, normalisation, merge, agreement, selection.

The exports come from the demo generator (`curate.demo.labelstudio.build_export`), which writes
the exact shape Label Studio exports and also returns what a correct merge must conclude per
task, plus small hand-made exports where every number is known.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from core.config import ConfigError, from_mapping
from curate.config import Params
from curate.demo import labelstudio
from curate.demo.shapes import CATEGORIES
from curate.stages.tags import TagsError, run_import
from curate.tags import agreement, labelconfig, merge, normalise, select, serving
from curate.tags.client import Connection, LabelStudioError, display_url
from curate.tags.config import TagsConfig, TagsImagesConfig, TagsMergeConfig

CFG = TagsConfig()
SCHEMA = labelconfig.schema_for(CFG)


# ------------------------------------------------------------------ helpers


def synthetic_tasks(n: int, seed: int) -> list[labelstudio.TaskTruth]:
    """Tasks with random sizes and geometry, a few of them to be rejected."""
    rng = np.random.default_rng(seed)
    tasks = []
    for i in range(1, n + 1):
        w, h = int(rng.integers(300, 2000)), int(rng.integers(300, 2000))
        x, y = float(rng.uniform(0, w / 3)), float(rng.uniform(0, h / 3))
        bw, bh = float(rng.uniform(w / 4, w / 2)), float(rng.uniform(h / 4, h / 2))
        tasks.append(labelstudio.TaskTruth(
            i, f"{i:064x}", f"/data/local-files/?d=data/store/x/{i:064x}.jpg", w, h,
            str(rng.choice(CATEGORIES)), (x, y, bw, bh),
            (x + bw / 2, y + bh * 0.9), (x + bw / 2, y + bh * 0.1),
            should_reject=bool(rng.random() < 0.08)))
    return tasks


def region(from_name: str, kind: str, value: dict[str, Any], size: tuple[int, int] = (1000, 500),
           rid: str = "r") -> dict[str, Any]:
    return {"id": rid, "from_name": from_name, "to_name": "image", "type": kind, "value": value,
            "original_width": size[0], "original_height": size[1], "image_rotation": 0}


def annotation(ann_id: int, user: Any, result: list[dict[str, Any]], minute: int,
               cancelled: bool = False) -> dict[str, Any]:
    stamp = f"2026-10-01T10:{minute:02d}:00Z"
    return {"id": ann_id, "completed_by": user, "result": result, "was_cancelled": cancelled,
            "created_at": stamp, "updated_at": stamp, "lead_time": 3.5}


def task(task_id: int, image_id: str | None, annotations: list[dict[str, Any]]) -> dict[str, Any]:
    data = {"image": f"/data/local-files/?d=data/store/ab/cd/{image_id}.jpg"}
    if image_id:
        data["image_id"] = image_id
    return {"id": task_id, "data": data, "annotations": annotations}


def choice(value: str) -> dict[str, Any]:
    return region("category", "choices", {"choices": [value]})


def box(x: float, y: float, w: float, h: float, rotation: float = 0.0,
        size: tuple[int, int] = (1000, 500)) -> dict[str, Any]:
    return region("crop", "rectanglelabels", {"x": x, "y": y, "width": w, "height": h,
                                              "rotation": rotation, "rectanglelabels": ["crop"]},
                  size)


def point(label: str, x: float, y: float, size: tuple[int, int] = (1000, 500)) -> dict[str, Any]:
    return region("keypoints", "keypointlabels", {"x": x, "y": y, "width": 0.6,
                                                  "keypointlabels": [label]}, size)


def tables(export: list[dict[str, Any]], reject: str = "any") -> tuple[pd.DataFrame, pd.DataFrame]:
    tags = normalise.normalise(export, SCHEMA)
    return tags, merge.merge(tags, SCHEMA, TagsMergeConfig(reject=reject))


# ----------------------------------------------------------- labeling config


def test_generated_config_round_trips_to_its_schema() -> None:
    xml = labelconfig.generate(CFG)
    schema = labelconfig.parse(xml)
    assert schema.choices == ("soles", "pov", "reject")
    assert schema.categories == ("soles", "pov") and schema.reject == "reject"
    assert schema.keypoint_labels == ("heel", "toe")
    assert (schema.image_key, schema.category, schema.crop, schema.keypoints, schema.note) == (
        "image", "category", "crop", "keypoints", "note")
    assert 'canRotate="true"' in xml


def test_odd_category_names_are_escaped_in_the_xml() -> None:
    cfg = TagsConfig(categories=('say "hi"', "a<b & c"), keypoints=("l'eye",))
    schema = labelconfig.parse(labelconfig.generate(cfg))
    assert schema.categories == ('say "hi"', "a<b & c")
    assert schema.keypoint_labels == ("l'eye",)


def test_a_users_own_config_is_read_by_control_type(tmp_path: Path) -> None:
    xml = """<View><Image name="img" value="$image"/>
      <Choices name="kind" toName="img"><Choice value="a"/><Choice value="b"/>
        <Choice value="reject"/></Choices>
      <RectangleLabels name="box" toName="img"><Label value="x"/></RectangleLabels>
      <KeyPointLabels name="pts" toName="img"><Label value="p1"/></KeyPointLabels></View>"""
    path = tmp_path / "mine.xml"
    path.write_text(xml)
    cfg = from_mapping(TagsConfig, {"project": {"label_config": str(path)}}, "tags")
    schema = labelconfig.schema_for(cfg)
    assert (schema.category, schema.crop, schema.keypoints, schema.note) == (
        "kind", "box", "pts", None)
    assert schema.choices == ("a", "b", "reject") and schema.keypoint_labels == ("p1",)


@pytest.mark.parametrize(("xml", "message"), [
    ("<View><Image", "not valid XML"),
    ("<View><Choices name='c' toName='i'/></View>", "<Image"),
    (("<View><Image name='i' value='$image'/><Choices name='a' toName='i'/>"
     "<Choices name='b' toName='i'/></View>"), "several <Choices>"),
])
def test_unusable_configs_say_what_is_missing(xml: str, message: str) -> None:
    with pytest.raises(labelconfig.LabelConfigError, match=message):
        labelconfig.parse(xml)


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    cfg = from_mapping(TagsConfig, {"project": {"label_config": str(tmp_path / "no.xml")}}, "t")
    with pytest.raises(labelconfig.LabelConfigError, match="no.xml"):
        labelconfig.config_xml(cfg)


# --------------------------------------------------------------- normalise


def test_demo_shaped_export_merges_to_the_generators_verdicts() -> None:
    tasks = synthetic_tasks(300, seed=11)
    export, expected = labelstudio.build_export(tasks, CATEGORIES, seed=11)
    tags, merged = tables(export)
    assert dict(zip(merged["task_id"], merged["verdict"], strict=True)) == expected
    assert set(expected.values()) >= {"soles", "pov", "reject", "disputed"}
    # one row per annotation, cancelled ones kept and flagged
    n_annotations = sum(len(t["annotations"]) for t in export)
    n_cancelled = sum(a["was_cancelled"] for t in export for a in t["annotations"])
    assert len(tags) == n_annotations and int(tags["cancelled"].sum()) == n_cancelled > 0
    assert not tags.loc[tags["cancelled"], "latest"].any()
    assert tags["problems"].map(len).sum() == 0


def test_demo_geometry_lands_on_the_true_pixels() -> None:
    """Percent -> pixels: each annotator's box and points are within their jitter of the truth."""
    tasks = {t.task_id: t for t in synthetic_tasks(120, seed=5)}
    export, _ = labelstudio.build_export(list(tasks.values()), CATEGORIES, seed=5)
    tags, merged = tables(export)
    live = tags[tags["latest"]]
    for row in live.itertuples():
        t = tasks[row.task_id]
        tol = 0.006 * max(t.width, t.height) * 5  # five sigma of the noisiest annotator
        x, y, w, _h = t.bbox
        assert row.bbox_x == pytest.approx(x, abs=tol)
        assert row.bbox_y == pytest.approx(y, abs=tol)
        assert row.bbox_x + row.bbox_w == pytest.approx(min(x + w, t.width), abs=tol)
        assert row.kp_heel_x == pytest.approx(t.heel[0], abs=tol)
        assert row.kp_toe_y == pytest.approx(t.toe[1], abs=tol)
        assert (row.original_width, row.original_height) == (t.width, t.height)
    assert merged["bbox_w"].notna().all()


def test_exact_pixels_rotation_note_and_timestamps() -> None:
    export = [task(7, "a" * 64, [annotation(1, 3, [
        choice("soles"), box(12.5, 20.0, 50.0, 40.0, rotation=30.0), point("heel", 25.0, 80.0),
        point("toe", 75.0, 10.0), region("note", "textarea", {"text": ["left foot only"]})], 5)])]
    tags, merged = tables(export)
    row = tags.iloc[0]
    assert (row.bbox_x, row.bbox_y, row.bbox_w, row.bbox_h, row.bbox_rotation) == (
        125.0, 100.0, 500.0, 200.0, 30.0)
    assert (row.kp_heel_x, row.kp_heel_y, row.kp_toe_x, row.kp_toe_y) == (250.0, 400.0, 750.0, 50.0)
    assert row.note == "left foot only" and row.category == "soles" and not row.reject
    assert row.annotator == 3 and row.task_id == 7 and row.latest
    assert row.updated_at == pd.Timestamp("2026-10-01T10:05:00Z")
    assert merged.iloc[0]["verdict"] == "soles" and merged.iloc[0]["bbox_rotation"] == 30.0


def test_geometry_uses_the_stored_images_size_and_says_when_the_annotation_differs() -> None:
    """An annotation made against another copy (here: declared 1000x500, the stored image is
    800x600 upright) is converted with the stored size, and the mismatch is recorded."""
    image = "b" * 64
    export = [task(8, image, [annotation(1, 3, [
        choice("soles"), box(10.0, 20.0, 50.0, 40.0), point("heel", 25.0, 50.0)], 5)])]
    plain = normalise.normalise(export, SCHEMA).iloc[0]
    assert (plain.bbox_x, plain.bbox_w) == (100.0, 500.0) and plain.problems == []
    row = normalise.normalise(export, SCHEMA, {image: (800, 600)}).iloc[0]
    assert (row.bbox_x, row.bbox_y, row.bbox_w, row.bbox_h) == (80.0, 120.0, 400.0, 240.0)
    assert (row.kp_heel_x, row.kp_heel_y) == (200.0, 300.0)
    assert (row.original_width, row.original_height) == (800, 600)
    assert row.problems == [("size_mismatch:annotation 1000x500, image 800x600 (converted with "
                            "the image's)")]
    same = normalise.normalise(export, SCHEMA, {image: (1000, 500)}).iloc[0]
    assert same.problems == [] and same.bbox_x == 100.0


def test_results_that_break_the_config_are_kept_out_and_listed() -> None:
    export = [
        task(1, "1" * 64, [annotation(1, 1, [choice("sandals")], 1)]),
        task(2, "2" * 64, [annotation(2, 1, [choice("soles"), region("mood", "choices", {})], 2)]),
        task(3, "3" * 64, [annotation(3, 1, [choice("pov"), point("ankle", 5, 5),
                                             box(90, 90, 30, 30)], 3)]),
        task(4, "4" * 64, [annotation(4, 1, [choice("soles"), {
            "from_name": "crop", "type": "rectanglelabels",
            "value": {"x": 1, "y": 1, "width": 5, "height": 5}}], 4)]),
        task(5, "5" * 64, [annotation(5, 1, [region("category", "choices",
                                                    {"choices": ["soles", "pov"]})], 5)]),
        task(6, None, [annotation(6, {"id": 9, "email": "c@example.com"}, [choice("pov")], 6)]),
    ]
    tags, merged = tables(export)
    problems = dict(zip(tags["task_id"], tags["problems"].map(
        lambda ps: sorted(p.split(":")[0] for p in ps)), strict=True))
    assert problems == {1: ["unknown_choice"], 2: ["unknown_control"],
                        3: ["box_outside", "unknown_keypoint"], 4: ["no_size"],
                        5: ["several_categories"], 6: ["no_image_id"]}
    by_task = tags.set_index("task_id")
    assert pd.isna(by_task.loc[1, "category"]) and by_task.loc[2, "category"] == "soles"
    assert pd.isna(by_task.loc[3, "bbox_x"]) and pd.isna(by_task.loc[5, "category"])
    assert by_task.loc[6, "annotator"] == 9 and by_task.loc[6, "annotator_email"] == "c@example.com"
    # the image id also comes from a store file name in the URL
    assert by_task.loc[6, "image_id"] is pd.NA or pd.isna(by_task.loc[6, "image_id"])
    assert set(merged["task_id"]) == {1, 2, 3, 4, 5}  # no image id, no merged row
    summary = agreement.summarise(tags, merged, SCHEMA)
    assert summary["problems"]["unknown_choice"] == 1


def test_image_id_falls_back_to_the_store_file_name() -> None:
    t = {"id": 1, "data": {"image": "/data/local-files/?d=data/store/ab/cd/" + "ab" * 32 + ".png"}}
    assert normalise.image_id_of(t, SCHEMA) == "ab" * 32
    assert normalise.image_id_of({"id": 2, "data": {"image": "http://x/y.jpg"}}, SCHEMA) is None


def test_not_an_export_is_refused() -> None:
    with pytest.raises(ValueError, match="JSON export"):
        normalise.normalise({"tasks": []}, SCHEMA)  # type: ignore[arg-type]


# ------------------------------------------------------------------- merge

A, B, C = "a" * 64, "b" * 64, "c" * 64


def _votes_export(votes: list[tuple[int, str]], geometry: dict[int, list] | None = None
                  ) -> list[dict[str, Any]]:
    geometry = geometry or {}
    anns = [annotation(i + 1, user, [choice(v), *geometry.get(user, [])], i + 1)
            for i, (user, v) in enumerate(votes)]
    return [task(1, A, anns)]


@pytest.mark.parametrize(("votes", "rule", "verdict", "category"), [
    ([(1, "soles"), (2, "soles"), (3, "pov")], "any", "soles", "soles"),
    ([(1, "soles"), (2, "pov")], "any", "disputed", "disputed"),
    ([(1, "soles"), (2, "reject")], "any", "reject", "soles"),
    ([(1, "soles"), (2, "soles"), (3, "reject")], "majority", "soles", "soles"),
    ([(1, "soles"), (2, "reject")], "majority", "disputed", "soles"),
    ([(1, "reject"), (2, "reject"), (3, "pov")], "majority", "reject", "pov"),
    ([(1, "reject"), (2, "pov")], "never", "pov", "pov"),
    ([(1, "reject")], "never", None, None),
])
def test_verdict_rules(votes: list[tuple[int, str]], rule: str, verdict: str | None,
                       category: str | None) -> None:
    _, merged = tables(_votes_export(votes), reject=rule)
    row = merged.iloc[0]
    assert (None if pd.isna(row.verdict) else row.verdict) == verdict
    assert (None if pd.isna(row.category) else row.category) == category
    assert bool(row.reject) == (verdict == "reject")


def test_latest_annotation_per_annotator_wins_and_skips_do_not_count() -> None:
    export = [task(1, A, [
        annotation(1, 1, [choice("pov")], 1),
        annotation(2, 1, [choice("soles")], 9),      # annotator 1 changed their mind later
        annotation(3, 2, [], 5, cancelled=True),     # annotator 2 skipped
        annotation(4, 3, [choice("soles")], 3),
    ])]
    tags, merged = tables(export)
    assert tags.set_index("annotation_id")["latest"].to_dict() == {
        1: False, 2: True, 3: False, 4: True}
    row = merged.iloc[0]
    assert (row.verdict, row.n_annotators, row.n_agree, row.annotators, row.votes) == (
        "soles", 2, 2, "1,3", "soles:2")


def test_geometry_is_averaged_over_agreeing_annotators_only() -> None:
    geometry = {1: [box(10, 10, 20, 20, rotation=350), point("heel", 10, 10)],
                2: [box(20, 30, 40, 20, rotation=10), point("heel", 30, 50), point("toe", 60, 60)],
                3: [box(90, 90, 5, 5), point("heel", 90, 90)]}  # disagrees: excluded
    _, merged = tables(_votes_export([(1, "pov"), (2, "pov"), (3, "soles")], geometry))
    row = merged.iloc[0]
    assert (row.verdict, row.n_agree, row.agreement) == ("pov", 2, pytest.approx(2 / 3))
    assert (row.bbox_x, row.bbox_y, row.bbox_w, row.bbox_h) == (150.0, 100.0, 300.0, 100.0)
    assert row.bbox_rotation == 0.0  # circular mean of 350 and 10
    assert (row.kp_heel_x, row.kp_heel_y) == (200.0, 150.0)
    assert (row.kp_toe_x, row.kp_toe_y) == (600.0, 300.0)  # only annotator 2 placed it


def test_keypoint_spread_measures_how_far_apart_annotators_clicked() -> None:
    geometry = {1: [point("heel", 10, 10), point("toe", 60, 60)],
                2: [point("heel", 30, 50), point("toe", 60, 60)],
                3: [point("heel", 20, 20)]}  # not every keypoint: not counted
    _, merged = tables(_votes_export([(1, "pov"), (2, "pov"), (3, "pov")], geometry))
    row = merged.iloc[0]
    # heel 200 px apart in x and in y, toe together: sample variances 20000, 20000, 0, 0
    assert row.kp_annotators == 2 and row.kp_spread == pytest.approx(100.0)
    _, alone = tables(_votes_export([(1, "pov")], {1: geometry[1]}))
    assert alone.iloc[0].kp_annotators == 1 and np.isnan(alone.iloc[0].kp_spread)


def test_disputed_images_average_everyone() -> None:
    geometry = {1: [box(10, 10, 20, 20)], 2: [box(30, 10, 20, 20)]}
    _, merged = tables(_votes_export([(1, "pov"), (2, "soles")], geometry))
    row = merged.iloc[0]
    assert row.verdict == "disputed" and row.n_agree == 0 and row.bbox_x == 200.0


def test_merge_of_nothing_is_an_empty_table() -> None:
    tags, merged = tables([task(1, A, [annotation(1, 1, [], 1, cancelled=True)])])
    assert len(tags) == 1 and merged.empty
    assert list(merged.columns) == merge.merged_columns(SCHEMA)


# --------------------------------------------------------------- agreement


def test_cohen_kappa_known_values() -> None:
    a = ["x"] * 20 + ["y"] * 30 + ["x"] * 5 + ["y"] * 10
    b = ["x"] * 20 + ["y"] * 30 + ["y"] * 5 + ["x"] * 10
    # 2x2 table [[20, 5], [10, 30]] -> po = 50/65, pe = (25*30 + 40*35) / 65^2
    po, pe = 50 / 65, (25 * 30 + 40 * 35) / 65**2
    assert agreement.cohen_kappa(a, b) == pytest.approx((po - pe) / (1 - pe))
    assert agreement.cohen_kappa(["x", "y"], ["x", "y"]) == pytest.approx(1.0)
    assert agreement.cohen_kappa(["x", "x"], ["x", "x"]) is None
    assert agreement.cohen_kappa([], []) is None


def test_summary_counts_pairs_and_is_json() -> None:
    export = [task(1, A, [annotation(1, 1, [choice("pov")], 1),
                          annotation(2, 2, [choice("pov")], 2)]),
              task(2, B, [annotation(3, 1, [choice("soles")], 3),
                          annotation(4, 2, [choice("pov")], 4)]),
              task(3, C, [annotation(5, 1, [choice("reject")], 5),
                          annotation(6, 3, [], 6, cancelled=True)]),
              {"id": 4, "data": {"image_id": "d" * 64}, "annotations": []}]
    tags, merged = tables(export)
    summary = agreement.summarise(tags, merged, SCHEMA, normalise.pending_tasks(export))
    assert summary["verdicts"] == {"disputed": 1, "pov": 1, "reject": 1}
    assert summary["votes_per_annotator"] == {"1": {"pov": 1, "reject": 1, "soles": 1},
                                              "2": {"pov": 2}}
    (pair,) = summary["pairwise"]
    assert pair["annotators"] == [1, 2] and pair["images"] == 2 and pair["agreement"] == 0.5
    assert (summary["cancelled"], summary["pending_tasks"]) == (1, 1)
    json.dumps(summary)
    agreement.print_summary(summary)


# --------------------------------------------------------------- selection


def test_selection_strategies() -> None:
    candidates = pd.DataFrame({"image_id": [f"{i:02d}" for i in range(20, 0, -1)]})

    def pick(name: str, n: int | None, seed: int = 0) -> list[str]:
        return select.select(name, candidates, n, seed, Params())

    assert pick("untagged", None) == [f"{i:02d}" for i in range(1, 21)]
    assert pick("untagged", 3) == ["01", "02", "03"]
    first = pick("random", 5, seed=1)
    assert first == pick("random", 5, seed=1)
    assert first != pick("random", 5, seed=2)
    assert len(set(first)) == 5 and set(first) <= set(candidates["image_id"])
    assert len(pick("random", 50, seed=1)) == 20
    with pytest.raises(select.SelectionError, match="-n N"):
        pick("random", None)
    with pytest.raises(select.SelectionError,
                       match="available: diverse, random, uncertain, untagged"):
        pick("nearest", 3)


def test_a_later_stage_plugs_in_a_strategy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    (tmp_path / "least_sure.py").write_text(
        "from curate.tags.select import strategy\n"
        "@strategy('least_sure')\n"
        "def least_sure(candidates, n, rng, params):\n"
        "    ranked = candidates.sort_values('confidence')['image_id'].tolist()\n"
        "    return ranked[:n]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(select.PROVIDERS, "least_sure", "least_sure")
    monkeypatch.setattr(select, "STRATEGIES", dict(select.STRATEGIES))
    candidates = pd.DataFrame({"image_id": ["a", "b", "c"], "confidence": [0.9, 0.2, 0.5]})
    assert select.select("least_sure", candidates, 2, 0, Params()) == ["b", "c"]


# ----------------------------------------------------------------- serving


def test_local_files_urls_are_relative_to_the_document_root(tmp_path: Path) -> None:
    cfg = TagsImagesConfig(document_root=tmp_path)
    urls = serving.image_urls(cfg, tmp_path / "data" / "store")
    assert urls.url("ab/cd/x.jpg") == "/data/local-files/?d=data/store/ab/cd/x.jpg"
    assert urls.storage_path == f"{tmp_path.as_posix()}/data/store"
    with pytest.raises(serving.ServingError, match="not inside"):
        serving.image_urls(TagsImagesConfig(document_root=tmp_path / "elsewhere"),
                           tmp_path / "data" / "store")


def test_url_base_serving() -> None:
    urls = serving.image_urls(TagsImagesConfig(serve="url", url_base="https://cdn.example/s/"),
                              Path("data/store"))
    assert urls.url("ab/cd/x.jpg") == "https://cdn.example/s/ab/cd/x.jpg"
    assert urls.storage_path is None


# ------------------------------------------------------------ config, env


@pytest.mark.parametrize(("section", "message"), [
    ({"project": {"title": "ab"}}, "3 characters"),
    ({"images": {"serve": "url"}}, "url_base: required"),
    ({"categories": ["a", "a"]}, "distinct"),
    ({"categories": ["a", "reject"]}, "distinct"),
    ({"push": {"strategy": "everything"}}, "'untagged', 'random'"),
    ({"merge": {"reject": "some"}}, "'any', 'majority', 'never'"),
])
def test_bad_tags_params_name_the_key(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_mapping(Params, {"tags": section}, "")


def test_connection_comes_from_the_environment_and_hides_the_token() -> None:
    with pytest.raises(LabelStudioError, match="LABEL_STUDIO_URL is not set"):
        Connection.from_env({"LABEL_STUDIO_API_KEY": "x"})
    with pytest.raises(LabelStudioError, match="LABEL_STUDIO_API_KEY is not set"):
        Connection.from_env({"LABEL_STUDIO_URL": "http://localhost:8080"})
    with pytest.raises(LabelStudioError, match="not an http"):
        Connection.from_env({"LABEL_STUDIO_URL": "localhost:8080", "LABEL_STUDIO_API_KEY": "x"})
    conn = Connection.from_env({"LABEL_STUDIO_URL": "http://h:8080/", "LABEL_STUDIO_API_KEY": "s3"})
    assert conn.url == "http://h:8080" and "s3" not in repr(conn)
    assert display_url("https://me:pw@ls.example:8443/sub/?token=1") == "https://ls.example:8443/sub"


# ------------------------------------------------------------------ import


def _params(tmp_path: Path) -> Params:
    return from_mapping(Params, {"tags": {"snapshot": str(tmp_path / "export.json")}}, "")


def test_import_writes_tables_deterministically(tmp_path: Path) -> None:
    export, expected = labelstudio.build_export(synthetic_tasks(60, seed=2), CATEGORIES, seed=2)
    (tmp_path / "export.json").write_text(json.dumps(export))
    out = tmp_path / "tags"
    run_import(_params(tmp_path), out_dir=out)
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(first) == {"tags.parquet", "merged.parquet", "agreement.json"}
    merged = pd.read_parquet(out / "merged.parquet")
    assert dict(zip(merged["task_id"], merged["verdict"], strict=True)) == expected
    run_import(_params(tmp_path), out_dir=out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first


def test_import_refuses_bad_files_and_keeps_previous_outputs(tmp_path: Path) -> None:
    export, _ = labelstudio.build_export(synthetic_tasks(10, seed=3), CATEGORIES, seed=3)
    (tmp_path / "export.json").write_text(json.dumps(export))
    out = tmp_path / "tags"
    run_import(_params(tmp_path), out_dir=out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (tmp_path / "cut.json").write_text(json.dumps(export)[:5000])
    with pytest.raises(TagsError, match="not a complete JSON export"):
        run_import(_params(tmp_path), tmp_path / "cut.json", out)
    (tmp_path / "min.json").write_text(json.dumps({"id": 1}))
    with pytest.raises(TagsError, match="JSON_MIN"):
        run_import(_params(tmp_path), tmp_path / "min.json", out)
    with pytest.raises(TagsError, match="curate tags pull"):
        run_import(_params(tmp_path), tmp_path / "missing.json", out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_rotation_mean_wraps() -> None:
    tags = pd.DataFrame({"image_id": ["x", "x", "y"], "bbox_rotation": [359.0, 3.0, 90.0]})
    got = merge._rotation_mean(tags)
    assert got["x"] == pytest.approx(1.0) and got["y"] == pytest.approx(90.0)
    assert not math.isnan(got["y"])
