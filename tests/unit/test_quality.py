"""Quality building blocks: raw properties, checks and thresholds, outlier scores, tags, report.

All inputs are synthetic and deterministic (numpy/Pillow from fixed seeds).
"""

from __future__ import annotations

import dataclasses
import io
import json
import re

import cv2
import numpy as np
import pandas as pd
import pytest
import skimage.data
from PIL import Image

from core.config import ConfigError, from_mapping
from curate.config import Params
from curate.matte.config import MatteChecks
from curate.quality import outliers
from curate.quality.checks import CHECKS, evaluate, evaluate_all, make_check, reasons_per_row
from curate.quality.config import QualityChecks, Threshold
from curate.quality.properties import PROPERTIES, WorkImage, measure, property_columns
from curate.quality.report import ExtraReason, ReportInput, json_island, render
from curate.quality.tags import load_tags


def scene(seed: int = 0, size: tuple[int, int] = (240, 320)) -> np.ndarray:
    """A textured colour scene: shapes on a gradient with fine grain (sharp, well exposed)."""
    rng = np.random.default_rng(seed)
    h, w = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([60 + 120 * x / w, 90 + 80 * y / h, 140 - 60 * x / w], axis=2)
    for _ in range(12):
        cx, cy, r = rng.integers(0, w), rng.integers(0, h), rng.integers(8, 40)
        colour = rng.integers(0, 256, 3)
        img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = colour
    img += rng.normal(0, 2.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def props(rgb: np.ndarray) -> dict[str, float]:
    return measure(WorkImage(rgb))


def jpeg_roundtrip(rgb: np.ndarray, quality: int = 90) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


# ------------------------------------------------------------------------ properties


def test_every_property_returns_its_declared_columns() -> None:
    values = props(scene())
    assert list(values) == property_columns()
    assert all(np.isfinite(v) for v in values.values())
    assert len(set(property_columns())) == len(property_columns())
    assert set(PROPERTIES) >= {"sharpness", "exposure", "contrast", "entropy", "chroma",
                               "colour", "noise"}


def test_blur_lowers_peak_sharpness_but_darkening_does_not() -> None:
    base = scene()
    blurred = cv2.GaussianBlur(base, (0, 0), 4)
    dark = (base * 0.2).astype(np.uint8)
    s_base, s_blur, s_dark = (props(a)["sharpness_peak"] for a in (base, blurred, dark))
    assert s_blur < s_base - 0.5
    assert abs(s_dark - s_base) < 0.4  # exposure-independent, unlike raw Laplacian variance
    assert props(dark)["sharpness"] < props(base)["sharpness"] - 0.8


def small_subject_on_backdrop(blur_sigma: float = 0.0) -> np.ndarray:
    """A sharp disc covering ~2% of the frame on a smooth vignetted backdrop."""
    h, w = 360, 480
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((x - w / 2) / w) ** 2 + ((y - h / 2) / h) ** 2
    img = np.stack([200 - 260 * r2, 160 - 220 * r2, 40 - 40 * r2], axis=2)
    img[(x - 300) ** 2 + (y - 150) ** 2 < 35 ** 2] = (230, 190, 170)
    if blur_sigma:
        img = cv2.GaussianBlur(img, (0, 0), blur_sigma)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def test_a_small_sharp_subject_on_a_smooth_backdrop_is_not_blurry() -> None:
    """The whole-image ratio is dominated by the backdrop; the peak looks where the edges are."""
    cutoff = QualityChecks().blurry.value
    sharp = props(small_subject_on_backdrop())["sharpness_peak"]
    soft = props(small_subject_on_backdrop(blur_sigma=4.0))["sharpness_peak"]
    assert sharp > cutoff + 0.3 and soft < cutoff - 0.3, (sharp, soft)


def test_a_featureless_image_scores_its_whole_image_ratio() -> None:
    flat = np.full((120, 160, 3), 128, np.uint8)
    assert np.isfinite(props(flat)["sharpness_peak"])
    assert np.isfinite(props(flat[:20, :20])["sharpness_peak"])  # smaller than one tile


def test_exposure_percentiles_and_fractions() -> None:
    base = scene()
    dark = (base * 0.1).astype(np.uint8)
    blown = np.clip(base.astype(np.float32) * 2.2 + 70, 0, 255).astype(np.uint8)
    p_base, p_dark, p_blown = props(base), props(dark), props(blown)
    assert p_dark["luma_p99"] < 0.2 < p_base["luma_p99"]
    assert p_dark["dark_fraction"] > 0.95
    assert p_blown["bright_fraction"] > 0.5 > p_base["bright_fraction"]
    # a studio shot on black: mostly dark pixels, but real highlights
    studio = np.zeros((200, 200, 3), np.uint8)
    studio[60:140, 60:140] = (230, 190, 160)
    assert props(studio)["dark_fraction"] > 0.8 and props(studio)["luma_p99"] > 0.6
    # ... however small the subject, down to 1% of the frame (here 2%; the 95th percentile
    # would read the backdrop)
    small = np.full((200, 200, 3), 12, np.uint8)
    small[100:128, 100:128] = (230, 190, 160)
    assert props(small)["luma_p95"] < 0.2 < props(small)["luma_p99"]
    assert evaluate(make_check("dark"), pd.DataFrame([props(small)]),
                    QualityChecks().dark).flags.sum() == 0


def on_white_paper(subject: np.ndarray, size: tuple[int, int] = (360, 300)) -> np.ndarray:
    """`subject` pasted in the middle of a white frame, as drawn art is."""
    h, w = size
    frame = np.full((h, w, 3), 255.0, np.float32)
    sh, sw = subject.shape[:2]
    y, x = (h - sh) // 2, (w - sw) // 2
    frame[y:y + sh, x:x + sw] = subject
    return np.clip(frame, 0, 255).astype(np.uint8)


def test_a_white_backdrop_is_neither_overexposure_nor_missing_information() -> None:
    drawing = props(on_white_paper(scene(2, size=(150, 120))))
    assert drawing["bright_fraction"] > 0.5 and drawing["entropy"] < 2.0  # the whole frame
    assert drawing["subject_bright_fraction"] < 0.05 and drawing["subject_entropy"] > 4.0
    checks = QualityChecks()
    assert drawing["subject_bright_fraction"] < checks.overexposed.value
    assert drawing["subject_entropy"] > checks.low_information.value


def test_a_blown_out_subject_and_a_blank_frame_are_still_judged() -> None:
    blown = np.clip(scene(2, size=(150, 120)).astype(np.float32) * 2.2 + 70, 0, 255)
    assert props(on_white_paper(blown.astype(np.uint8)))["subject_bright_fraction"] > 0.5
    blank = props(np.full((200, 200, 3), 255, np.uint8))  # all backdrop: judged whole
    assert blank["subject_bright_fraction"] == 1.0 and blank["subject_entropy"] < 0.1


def photo_under_a_bright_sky() -> np.ndarray:
    """A subject low in a frame whose light falls off smoothly from the top (sky, a window)."""
    h, w = 240, 320
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = (235 - 170 * (y / h) ** 1.5)[..., None] * np.array([1.0, 0.96, 0.9], np.float32)
    img[((x - 160) / 50) ** 2 + ((y - 170) / 40) ** 2 < 1] = (150, 110, 90)
    return img + np.random.default_rng(0).normal(0, 2.0, img.shape)


def test_blown_white_that_shades_into_the_scene_is_not_a_backdrop() -> None:
    """Over-exposure clips the bright top of the frame to a flat white that holds the border,
    as paper does; but it fades into nearly clipped pixels where paper meets an outline."""
    photo = photo_under_a_bright_sky()
    well_exposed = props(np.clip(photo, 0, 255).astype(np.uint8))
    blown = props(np.clip(photo * 1.8 + 60, 0, 255).astype(np.uint8))
    assert well_exposed["subject_bright_fraction"] < 0.01
    assert blown["subject_bright_fraction"] == pytest.approx(blown["bright_fraction"])
    assert blown["subject_bright_fraction"] > QualityChecks().overexposed.value


def _jpeg(rgb: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _blocking(data: bytes, reduction: int = 1, crop: int = 0) -> float:
    """The blocking property as the stage measures it: decoded `reduction` times smaller."""
    img = Image.open(io.BytesIO(data))
    img.draft("RGB", (img.width // reduction, img.height // reduction))
    img = img.convert("RGB").crop((crop, crop, img.width, img.height))
    return measure(WorkImage.from_pil(img, 256, reduction))["blocking"]


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
def test_a_heavily_compressed_copy_is_blocky_and_a_fine_one_is_not(name: str) -> None:
    """JPEG quality 5 (then saved again at 90, as a repost is) against 60 and 90, decoded at
    the file's scale, at half and at a quarter, and with the grid moved by a crop."""

    photo = cv2.resize(getattr(skimage.data, name)(), None, fx=2, fy=2,
                       interpolation=cv2.INTER_CUBIC)
    blocked = np.asarray(Image.open(io.BytesIO(_jpeg(photo, 5))).convert("RGB"))
    limit = QualityChecks().blocky.value
    for reduction in (1, 2, 4):
        assert _blocking(_jpeg(blocked, 90), reduction) > limit
        assert max(_blocking(_jpeg(photo, q), reduction) for q in (60, 90)) < limit / 2
    assert _blocking(_jpeg(blocked, 90), 1, crop=3) > limit
    assert np.isnan(_blocking(_jpeg(blocked, 90), 8))  # a block is one pixel: not measured


def test_grayscale_is_detected_from_pixels_even_in_rgb_jpeg() -> None:
    base = scene()
    gray = np.repeat(cv2.cvtColor(base, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    assert props(jpeg_roundtrip(gray))["channel_spread"] < 3.0
    assert props(jpeg_roundtrip(base))["channel_spread"] > 20.0
    assert props(gray)["colourfulness"] == pytest.approx(0.0, abs=1e-6)


def test_noise_estimate_rises_with_noise_and_ignores_edges() -> None:
    base = scene()
    noisy = np.clip(base + np.random.default_rng(1).normal(0, 12, base.shape), 0, 255)
    assert props(noisy.astype(np.uint8))["noise"] > 3 * props(base)["noise"]
    edges = np.zeros((200, 200, 3), np.uint8)
    edges[:, ::20] = 255  # strong edges, no noise
    assert props(edges)["noise"] < 0.5


def test_entropy_and_contrast_of_flat_image() -> None:
    flat = np.full((64, 64, 3), 128, np.uint8)
    p = props(flat)
    assert p["entropy"] == pytest.approx(0.0, abs=1e-9)
    assert p["contrast"] == pytest.approx(0.0, abs=1e-9)
    assert props(scene())["entropy"] > 5.0


def test_work_image_downscales_to_work_side_and_never_upscales() -> None:
    big = Image.fromarray(scene(size=(600, 900)))
    assert WorkImage.from_pil(big, 256).rgb.shape[:2] == (256, 384)
    small = Image.fromarray(scene(size=(60, 90)))
    assert WorkImage.from_pil(small, 256).rgb.shape[:2] == (60, 90)


# ------------------------------------------------------------------------- checks


def test_registry_and_params_have_the_same_checks() -> None:
    fields = [f.name for cls in (QualityChecks, MatteChecks) for f in dataclasses.fields(cls)]
    assert list(CHECKS) == fields
    assert {CHECKS[f.name].source for f in dataclasses.fields(MatteChecks)} == {"matte"}
    for name in CHECKS:
        check = make_check(name)
        assert check.bad in ("low", "high") and check.title and check.description
    with pytest.raises(KeyError, match="known: blurry"):
        make_check("nope")


def _frame(values: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"min_side": values}, index=[f"id{i}" for i in range(len(values))])


def test_absolute_threshold_flags_the_bad_side_only() -> None:
    frame = _frame([100, 300, 255, 256, np.nan])
    result = evaluate(make_check("tiny"), frame, Threshold("absolute", 256))
    assert result.flags.tolist() == [True, False, True, False, False]
    assert result.cutoff == 256


def test_percentile_threshold_flags_worst_share_of_judged_rows() -> None:
    values = list(range(100, 200))  # 100 images
    frame = _frame(values + [1.0])  # a tiny one that is not judged (e.g. a duplicate)
    judged = pd.Series([True] * 100 + [False], index=frame.index)
    result = evaluate(make_check("tiny"), frame, Threshold("percentile", 5), judged)
    assert result.flags.sum() == 5
    assert result.flags[result.flags].index.tolist() == [f"id{i}" for i in range(5)]
    assert not result.flags.iloc[-1]  # never flags outside the judged set
    assert np.isnan(result.scores.iloc[-1])
    # severity: 1 = worst (smallest for a "low" check), 0 = best
    assert result.scores.iloc[0] == 1.0 and result.scores.iloc[99] == 0.0


def test_a_spread_flags_what_lies_far_out_for_a_set_more_alike_than_the_absolute_allows(
) -> None:
    """The off-subject distances of drawings in one style: median 0.13, robust SD 0.025.
    A fish at 0.27 is far out for them and under the absolute 0.34 chosen on photos."""
    rng = np.random.default_rng(0)
    alike = list(0.13 + 0.025 * rng.standard_normal(60))
    frame = pd.DataFrame({"embed_outlier": alike + [0.27, 0.40]})
    check = make_check("off_subject")
    plain = evaluate(check, frame, Threshold("absolute", 0.34))
    spread = evaluate(check, frame, Threshold("absolute", 0.34, spread=3.0))
    assert plain.flags.tolist()[-2:] == [False, True]
    assert spread.flags.tolist()[-2:] == [True, True]
    assert spread.flags[:60].sum() <= 1 and spread.cutoff < 0.34
    # A varied set (photos): the median plus 3 SDs lies past the absolute value, which holds.
    varied = pd.DataFrame({"embed_outlier": list(0.19 + 0.11 * rng.standard_normal(60))})
    assert evaluate(check, varied, Threshold("absolute", 0.34, spread=3.0)).cutoff == 0.34
    # Too few values, or no spread: the absolute value alone.
    assert evaluate(check, frame[:10], Threshold("absolute", 0.34, spread=3.0)).cutoff == 0.34
    flat = pd.DataFrame({"embed_outlier": [0.1] * 30 + [0.2]})
    assert evaluate(check, flat, Threshold("absolute", 0.34, spread=3.0)).cutoff == 0.34
    # A "low" check mirrors it: the cut-off rises to the median minus the spread.
    tiny = evaluate(make_check("tiny"), _frame([1000.0 + k for k in range(30)] + [900.0]),
                    Threshold("absolute", 256, spread=3.0))
    assert tiny.flags.tolist()[-1] and tiny.flags.sum() == 1


def test_the_report_says_when_the_spread_set_the_cut_off() -> None:
    sides = [1000.0 + k for k in range(30)] + [900.0]
    ids = [f"{i:064x}" for i in range(len(sides))]
    frame = pd.DataFrame({"image_id": ids, "source_uri": [f"p/{i}.jpg" for i in ids],
                          "source_uris": [[]] * len(ids), "status": "ok", "width": sides,
                          "height": sides, "min_side": sides}, index=ids)
    checks = dataclasses.replace(QualityChecks(), tiny=Threshold("absolute", 256, spread=3.0))
    results = evaluate_all(frame, checks, sources=("metadata",))
    html = render(ReportInput(
        title="t", frame=frame, results=results, reasons=reasons_per_row(results, frame.index),
        thumbs={}, judged=pd.Series(True, index=ids), extra_reasons=[],
        metric_columns=["min_side"], task_ids={}, task_url=""))
    assert f"&lt; {results['tiny'].cutoff:.3g} px (median - 3 robust SD)" in html


def test_a_spread_goes_only_with_an_absolute_threshold() -> None:
    with pytest.raises(ConfigError, match=r"quality\.checks\.tiny\.spread: got 2\.0 with mode "
                                          "percentile"):
        from_mapping(Params, {"quality": {"checks": {"tiny": {
            "mode": "percentile", "value": 5, "spread": 2}}}}, "")
    with pytest.raises(ConfigError, match=r"spread: got -1\.0"):
        from_mapping(Params, {"quality": {"checks": {"tiny": {
            "mode": "absolute", "value": 5, "spread": -1}}}}, "")


def test_disabled_check_records_values_but_never_flags() -> None:
    frame = _frame([1, 2, 3])
    result = evaluate(make_check("tiny"), frame, Threshold("disabled", 256))
    assert not result.flags.any() and result.cutoff is None
    assert result.values.tolist() == [1, 2, 3]


def test_evaluate_all_by_source_and_reasons_keep_every_flag() -> None:
    frame = pd.DataFrame({"min_side": [100, 500], "aspect": [5.0, 1.2], "luma_p99": [0.1, 0.8]},
                         index=["a", "b"])
    results = evaluate_all(frame, QualityChecks(), sources=("metadata", "pixels"))
    assert "off_subject" not in results and "poor_separation" not in results
    reasons = reasons_per_row(results, frame.index)
    assert reasons["a"] == ["dark", "tiny", "extreme_aspect"]
    assert reasons["b"] == []


def test_threshold_config_errors_name_key_and_choices() -> None:
    with pytest.raises(ConfigError, match=r"quality\.checks\.blurry\.mode: got 'sometimes'.*"
                                          r"'absolute', 'percentile', 'disabled'"):
        from_mapping(Params, {"quality": {"checks": {"blurry": {"mode": "sometimes"}}}}, "")
    with pytest.raises(ConfigError, match=r"quality\.checks\.dark\.value: got 150"):
        from_mapping(Params, {"quality": {"checks": {"dark": {"mode": "percentile",
                                                               "value": 150}}}}, "")
    p = from_mapping(Params, {"quality": {"checks": {"dark": {"mode": "percentile",
                                                              "value": 2}}}}, "")
    assert p.quality.checks.dark == Threshold("percentile", 2.0)
    assert p.quality.checks.blurry == QualityChecks().blurry  # others keep their defaults


# ------------------------------------------------------------------ outlier scores


def _clusters(seed: int = 0) -> tuple[np.ndarray, list[str | None]]:
    rng = np.random.default_rng(seed)
    centre_a, centre_b, odd = np.zeros(32), np.zeros(32), np.zeros(32)
    centre_a[0], centre_b[1], odd[2] = 6.0, 6.0, 6.0
    a = rng.normal(0, 0.5, (40, 32)) + centre_a
    b = rng.normal(0, 0.5, (40, 32)) + centre_b
    o = rng.normal(0, 0.5, (1, 32)) + odd
    emb = np.vstack([a, b, o])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    groups: list[str | None] = ["a"] * 10 + [None] * 30 + ["b"] * 10 + [None] * 31
    return emb.astype(np.float32), groups


def test_knn_scores_put_the_odd_one_out_on_top_with_and_without_tags() -> None:
    emb, groups = _clusters()
    judged = np.ones(len(emb), bool)
    for g in (None, groups):
        scores = outliers.knn_scores(emb, judged, k=5, groups=g)
        assert np.argmax(scores) == len(emb) - 1
        assert scores[-1] > 1.4 * scores[:-1].max()


def test_a_handful_of_tags_does_not_make_outliers_of_their_category() -> None:
    """Six tagged images of one category: the distance to the 5 nearest of them is noise, so
    the whole set stays a reference and no member of either cluster stands out."""
    emb, _ = _clusters()
    groups = ["a"] * 6 + [None] * 34 + ["b"] * 6 + [None] * 35
    rows = np.arange(len(emb))
    refs = outliers.reference_sets(rows, groups)
    assert any(len(r) == len(emb) for r in refs)
    scores = outliers.knn_scores(emb, np.ones(len(emb), bool), k=5, groups=groups)
    assert np.argmax(scores) == len(emb) - 1
    assert scores[:-1].max() < 0.5 * scores[-1]
    assert len(outliers.reference_sets(rows, ["a"] * 40 + ["b"] * 41)) == 2  # both big enough


def test_knn_reference_sampling_keeps_the_ranking() -> None:
    emb, _ = _clusters()
    judged = np.ones(len(emb), bool)
    full = outliers.knn_scores(emb, judged, k=3)
    sampled = outliers.knn_scores(emb, judged, k=3, max_refs=30)
    assert np.argmax(sampled) == len(emb) - 1
    assert np.corrcoef(full, sampled)[0, 1] > 0.8
    np.testing.assert_array_equal(sampled, outliers.knn_scores(emb, judged, k=3, max_refs=30))


def test_knn_excludes_self_and_unjudged_rows() -> None:
    emb, _ = _clusters()
    judged = np.ones(len(emb), bool)
    judged[5] = False
    scores = outliers.knn_scores(emb, judged, k=3)
    assert np.isnan(scores[5])
    dup = np.vstack([emb, emb[:1]])  # an exact copy of row 0: distance 0 only via the copy
    s = outliers.knn_scores(dup, np.ones(len(dup), bool), k=1)
    assert s[0] == pytest.approx(0.0, abs=1e-5) and s[-1] == pytest.approx(0.0, abs=1e-5)
    single = outliers.knn_scores(emb[:1], np.ones(1, bool), k=5)
    assert np.isnan(single[0])  # nobody to compare with


def test_knn_scores_equal_brute_force_and_rank_rows_without_an_embedding_last() -> None:
    emb, _ = _clusters()
    judged = np.ones(len(emb), bool)
    sims = emb @ emb.T
    np.fill_diagonal(sims, -np.inf)
    want = 1.0 - np.sort(sims, axis=1)[:, -3:].mean(axis=1)
    np.testing.assert_allclose(outliers.knn_scores(emb, judged, k=3), want, atol=1e-6)
    holes = emb.copy()
    holes[7] = np.nan  # judged but not embeddable: nobody's neighbour, its own score NaN
    scores = outliers.knn_scores(holes, judged, k=3)
    others = np.delete(np.arange(len(emb)), 7)
    sims = emb[others] @ emb[others].T
    np.fill_diagonal(sims, -np.inf)
    np.testing.assert_allclose(scores[others], 1.0 - np.sort(sims, axis=1)[:, -3:].mean(axis=1),
                               atol=1e-6)
    assert np.isnan(scores[7])


def test_isolation_forest_scores_rank_the_odd_one_high() -> None:
    emb, _ = _clusters()
    scores = outliers.isolation_forest_scores(emb, np.ones(len(emb), bool), 100, seed=0)
    assert scores[-1] > np.percentile(scores[:-1], 90)
    again = outliers.isolation_forest_scores(emb, np.ones(len(emb), bool), 100, seed=0)
    np.testing.assert_array_equal(scores, again)  # seeded: deterministic


def test_colour_style_distance_is_per_distribution() -> None:
    rng = np.random.default_rng(0)
    warm = rng.normal([60, 20, 30, 40], 2, (20, 4))
    cool = rng.normal([50, -10, -30, 30], 2, (20, 4))
    odd = np.array([[50, 60, -60, 90]])
    style = np.vstack([warm, cool, odd])
    groups = ["warm"] * 20 + ["cool"] * 20 + [None]
    d = outliers.colour_style_distance(style, np.ones(len(style), bool), groups)
    assert d[-1] > 10 * np.median(d[:-1])
    assert np.median(d[:40]) < 1.5  # each look is close to its own distribution


# --------------------------------------------------------------------------- tags


def test_load_tags_keeps_known_categories_and_rejects(tmp_path) -> None:
    path = tmp_path / "merged.parquet"
    pd.DataFrame({"image_id": ["a", "b", "c"], "task_id": [1, 2, 3],
                  "category": ["soles", "disputed", None],
                  "reject": [False, False, True]}).to_parquet(path)
    tags = load_tags(path, ["soles", "pov"])
    assert tags["category"].tolist() == ["soles", None, None]
    assert tags["reject"].tolist() == [False, False, True]
    assert tags["task_id"].tolist() == [1, 2, 3]
    assert load_tags(tmp_path / "missing.parquet", ["soles"]) is None


# -------------------------------------------------------------------------- report

EVIL = "</script><script>alert('pwned')</script><img src=x onerror=alert(1)>.jpg"


def _report_input() -> ReportInput:
    ids = [f"{i:064x}" for i in range(6)]
    frame = pd.DataFrame({
        "image_id": ids, "source_uri": [f"photos/{EVIL}", *[f"photos/ok{i}.jpg" for i in range(5)]],
        "source_uris": [[f"photos/{EVIL}", "https://example.com/<b>x</b>"]] + [[]] * 5,
        "status": ["ok"] * 6, "width": [100, 800, 900, 700, 650, 1000],
        "height": [90, 600, 700, 500, 640, 800],
        "min_side": [90, 600, 700, 500, 640, 800]}, index=ids)
    results = evaluate_all(frame, QualityChecks(), sources=("metadata",))
    reasons = reasons_per_row(results, frame.index)
    reasons[ids[1]] = [*reasons[ids[1]], "annotator_reject"]
    thumb = "data:image/jpeg;base64,/9j/4AAQ"
    return ReportInput(title="t <b>", frame=frame, results=results, reasons=reasons,
                       thumbs={i: thumb for i in ids}, judged=pd.Series(True, index=ids),
                       extra_reasons=[ExtraReason("annotator_reject", "Rejected", "by people",
                                                  [ids[1]])],
                       metric_columns=["min_side"], task_ids={ids[0]: 7},
                       task_url="javascript:alert(1)//{task_id}")


def test_report_escapes_every_data_string() -> None:
    html = render(_report_input())
    assert "<script>alert" not in html
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;.jpg" in html  # visible, escaped, in the cards
    assert "t &lt;b&gt;" in html
    # exactly the two script elements of the template
    assert len(re.findall(r"<script\b", html)) == 2
    island = html.split('<script id="report-data" type="application/json">', 1)[1]
    island = island.split("</script>", 1)[0]
    data = json.loads(island)
    record = data["records"][f"{0:064x}"]
    assert record["uri"] == f"photos/{EVIL}"  # the JSON round-trips the original string
    assert record["task_url"] is None  # a javascript: link is never produced
    assert "tiny" in record["reasons"]


def test_json_island_cannot_close_its_script() -> None:
    text = str(json_island({"x": "</script><!-- \u2028 &"}))
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"x": "</script><!-- \u2028 &"}


def test_report_has_histograms_galleries_and_borderline() -> None:
    html = render(_report_input())
    assert 'data-section="hist" data-check="tiny"' in html
    assert 'data-section="gallery" data-check="tiny"' in html
    assert 'data-section="gallery" data-check="annotator_reject"' in html
    assert 'data-section="borderline" data-check="tiny"' in html
    assert 'class="cut"' in html  # threshold line drawn


# ------------------------------------------- from pixels to a reason, default thresholds


def _reasons_from_pixels(images: dict[str, np.ndarray], checks: QualityChecks) -> dict:
    """The quality stage's path without the embeddings: measure each image, score colour
    style against the set, judge with `checks`; image name -> reasons."""
    frame = pd.DataFrame([props(rgb) for rgb in images.values()], index=list(images))
    style = frame.reindex(columns=list(outliers.STYLE_COLUMNS)).to_numpy(dtype=float)
    frame["colour_distance"] = outliers.colour_style_distance(style, np.ones(len(frame), bool))
    results = evaluate_all(frame, checks, sources=("pixels", "embedding"))
    return reasons_per_row(results, frame.index)


def test_low_contrast_and_low_information_are_flagged_from_pixels() -> None:
    scenes = {f"scene{i}": scene(i) for i in range(6)}
    s = scene(0).astype(np.float32)
    washed = np.clip(128 + (s - s.mean()) * 0.04, 0, 255).astype(np.uint8)  # a foggy print
    poster = np.zeros((240, 320, 3), np.uint8)  # three flat colours: high contrast, 1.6 bits
    poster[:, :100] = (200, 40, 40)
    poster[:, 100:200] = (40, 160, 60)
    poster[:, 200:] = (60, 90, 240)
    reasons = _reasons_from_pixels({**scenes, "washed": washed, "poster": poster},
                                   QualityChecks())
    assert "low_contrast" in reasons["washed"]
    assert reasons["poster"] == ["low_information"]
    assert all(reasons[name] == [] for name in scenes), reasons


def test_colour_style_flags_an_off_colour_image_when_enabled() -> None:
    scenes = {f"scene{i}": scene(i) for i in range(12)}
    tinted = scene(3).astype(np.float32) * (0.35, 0.55, 1.0) + (0, 0, 60)  # a deep blue cast
    images = {**scenes, "tinted": np.clip(tinted, 0, 255).astype(np.uint8)}
    # disabled by default (params.yaml): recorded, never flagged
    assert _reasons_from_pixels(images, QualityChecks())["tinted"] == []
    on = dataclasses.replace(QualityChecks(), colour_style=Threshold("absolute", 3.0))
    reasons = _reasons_from_pixels(images, on)
    assert reasons["tinted"] == ["colour_style"]
    assert all(reasons[name] == [] for name in scenes), reasons
