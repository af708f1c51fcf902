"""Repost verification on real photos: every kind of edited copy is linked to its original,
and the same edit of a look-alike (the other half of the same photo or texture) is not."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from curate.dedup import clusters as cl
from curate.dedup import verify as verify_module
from curate.dedup.borders import FULL, blur_fill, box_area, content_box
from curate.dedup.config import VerifyConfig
from curate.dedup.verify import (
    FEATURES_EXT,
    FEW_MATCHES,
    MIRROR_PERM,
    RICH_KEYPOINTS,
    Features,
    Verdict,
    VerifySpec,
    extract,
    pack,
    unpack,
    verify,
    verify_pairs,
)
from curate.demo.reposts import REPOST_KINDS, make_repost

SPEC = VerifySpec.from_config(VerifyConfig())


def _rgb(name: str) -> np.ndarray:
    arr = getattr(skimage.data, name)()
    arr = np.repeat(arr[..., None], 3, 2) if arr.ndim == 2 else arr[..., :3]
    return np.ascontiguousarray(arr)


def _halves(name: str) -> tuple[np.ndarray, np.ndarray]:
    img = _rgb(name)
    w = img.shape[1] // 2
    return np.ascontiguousarray(img[:, :w]), np.ascontiguousarray(img[:, w:2 * w])


def _features(rgb: np.ndarray) -> Features:
    """What the stage computes: JPEG round trip, gray, work scale, SIFT."""
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    gray = cv2.imdecode(jpeg, cv2.IMREAD_GRAYSCALE)
    h, w = gray.shape
    s = min(1.0, SPEC.max_side / max(h, w))
    if s < 1.0:
        gray = cv2.resize(gray, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    return extract(gray, gray.shape[1] / w, SPEC.features)


# Photos of different character: a face, a still life, a dense star field.
PHOTOS = ("astronaut", "coffee", "hubble_deep_field")


@pytest.mark.parametrize("kind", REPOST_KINDS)
@pytest.mark.parametrize("name", PHOTOS)
def test_each_repost_kind_is_linked_and_a_look_alike_is_not(name: str, kind: str) -> None:
    left, right = _halves(name)
    rng = np.random.default_rng([7, REPOST_KINDS.index(kind), PHOTOS.index(name)])
    copy = make_repost(left, kind, rng)
    look_alike = make_repost(right, kind, np.random.default_rng(
        [7, REPOST_KINDS.index(kind), PHOTOS.index(name)]))
    original = _features(left)
    linked = verify(original, _features(copy.rgb), SPEC)
    assert linked.linked, (copy.steps, linked)
    assert linked.mirror == ("mirror" in copy.steps)
    apart = verify(original, _features(look_alike.rgb), SPEC)
    assert not apart.linked, (copy.steps, apart)


def test_a_mirrored_fit_with_more_inliers_loses_to_the_fit_the_pixels_confirm(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A symmetric subject also matches its mirror image, on a turned, partial footprint,
    sometimes with a few more inliers than the true fit: the dense check decides."""
    left, _ = _halves("coffee")
    features = _features(left)
    h, w = features.gray.shape
    turned = cv2.getRotationMatrix2D((w / 2, h / 3), 13.0, 1.0)
    fits = {False: (np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), 20), True: (turned, 30)}
    monkeypatch.setattr(verify_module, "_fit", lambda a, b, mirror, spec: fits[mirror])
    verdict = verify(features, features, SPEC)
    assert verdict.linked and not verdict.mirror and verdict.inliers == 20


def test_the_transform_estimate_follows_the_edit() -> None:
    left, _ = _halves("coffee")
    h, w = left.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 7.0, 0.6)
    turned = cv2.warpAffine(left, m, (w, h), borderValue=(255, 255, 255))
    v = verify(_features(left), _features(turned), SPEC)
    assert v.linked and not v.mirror
    assert v.scale == pytest.approx(1 / 0.6, rel=0.03)  # turned's pixels into the original's
    assert abs(v.rotation_deg) == pytest.approx(7.0, abs=0.5)
    # the whole photo, shrunk onto a white canvas: b shows all of a, and b's rest is added
    assert v.a_covered > 0.95 and v.b_covered < 0.5 and v.b_rest_added and not v.a_rest_added
    back = v.flipped()
    assert back.scale == pytest.approx(0.6, rel=0.03) and back.a_covered == v.b_covered
    assert back.a_rest_added


def _turned(rgb: np.ndarray, degrees: float) -> np.ndarray:
    """`rgb` turned about its centre on a canvas that holds it whole (white corners)."""
    h, w = rgb.shape[:2]
    a = np.radians(abs(degrees))
    size = (int(w * np.cos(a) + h * np.sin(a)) + 1, int(w * np.sin(a) + h * np.cos(a)) + 1)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    m[:, 2] += (size[0] - w) / 2, (size[1] - h) / 2
    return cv2.warpAffine(rgb, m, size, borderValue=(255, 255, 255))


@pytest.mark.parametrize(("degrees", "linked"), [(8, True), (-12, True), (90, True),
                                                 (-84, True), (35, False), (-60, False)])
def test_a_copy_turned_far_from_upright_and_quarter_turns_is_not_linked(degrees: float,
                                                                       linked: bool) -> None:
    """Reposts are straightened a few degrees or turned by quarter turns; other turns are
    refused (`max_turn_deg`), and allowing any turn (45) links them all."""
    original = _features(_rgb("astronaut"))
    turned = _features(_turned(_rgb("astronaut"), degrees))
    verdict = verify(original, turned, SPEC)
    assert verdict.linked == linked, verdict
    assert verify(original, turned, VerifySpec.from_config(VerifyConfig(max_turn_deg=45))).linked


def _studio_shot(spot_x: float) -> np.ndarray:
    """A textured subject on a smooth sweep lit by a soft spot at `spot_x` (share of the
    width): the subject's edges are nearly all the texture there is."""
    h, w = 360, 480
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    lum = 40 + 70 * np.exp(-(((xx - spot_x * w) / (0.5 * w)) ** 2
                             + ((yy - 0.4 * h) / (0.6 * h)) ** 2))
    img = lum[..., None] * np.array([0.6, 0.7, 1.0], np.float32)
    img[80:280, 150:330] = _rgb("astronaut")[30:230, 150:330]
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def test_a_shot_lit_from_elsewhere_is_not_a_copy_and_a_graded_copy_is() -> None:
    """The same subject with the light moved agrees patch for patch on its texture, but its
    smooth backdrop is shaded differently: not a copy. A colour-graded, shrunk copy keeps the
    shading up to a tone curve and stays linked."""
    original = _features(_studio_shot(0.2))
    relit = verify(original, _features(_studio_shot(0.8)), SPEC)
    assert relit.agreement >= SPEC.min_agreement and relit.inliers >= 50
    assert relit.shading is not None and relit.shading > 5 and not relit.linked
    graded = make_repost(_studio_shot(0.2), "graded", np.random.default_rng(3)).rgb
    small = cv2.resize(graded, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    for copy in (graded, small):
        verdict = verify(original, _features(copy), SPEC)
        assert verdict.linked and verdict.shading is not None and verdict.shading < 0.25


@pytest.mark.parametrize("quality", [15, 40])
@pytest.mark.parametrize("scale", [1.0, 0.4])
@pytest.mark.parametrize("name", ["coffee", "studio"])
def test_a_recompressed_shrunk_copy_keeps_its_shading(name: str, scale: float,
                                                       quality: int) -> None:
    """JPEG blocks and resampling move a smooth patch's mean far less than the half level
    the shading check allows."""
    rgb = _studio_shot(0.3) if name == "studio" else _rgb(name)
    small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    copy = cv2.imdecode(jpeg, cv2.IMREAD_UNCHANGED)
    verdict = verify(_features(rgb), _features(copy), SPEC)
    assert verdict.linked, verdict
    assert verdict.shading is not None and verdict.shading < 0.25


@pytest.mark.parametrize("name", ["coffee", "studio"])
def test_a_degraded_copy_is_never_contradicted_and_a_look_alike_is(name: str) -> None:
    """A hash or embedding link is dropped when both images have `RICH_KEYPOINTS` keypoints
    and share almost none: blurred, shrunk or noisy copies keep a third of theirs or more."""
    rgb = _studio_shot(0.3) if name == "studio" else _rgb(name)
    original = _features(rgb)
    noise = np.random.default_rng(0).normal(0, 12, rgb.shape)
    for copy in (cv2.GaussianBlur(rgb, (0, 0), 3),
                 cv2.resize(rgb, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA),
                 np.clip(rgb + noise, 0, 255).astype(np.uint8)):
        verdict = verify(original, _features(copy), SPEC)
        assert verdict.keypoints >= RICH_KEYPOINTS and verdict.inliers >= 2 * FEW_MATCHES
        assert 3 * verdict.inliers >= verdict.keypoints  # a third of its keypoints or more
        assert not verdict.contradicts
    left, right = _halves(name) if name != "studio" else (_studio_shot(0.3), _studio_shot(0.7))
    if name == "studio":  # the same subject: a look-alike needs another one
        right = right.copy()
        right[80:280, 150:330] = _rgb("coffee")[100:300, 200:380]
    apart = verify(_features(left), _features(right), SPEC)
    assert apart.keypoints >= RICH_KEYPOINTS and apart.contradicts


def test_mirrored_descriptors_are_a_permutation_of_the_originals() -> None:
    """OpenCV's SIFT on the mirrored image gives (nearly) the permuted descriptors at the
    mirrored keypoints: what lets verification match mirrors without a second extraction."""
    gray = cv2.cvtColor(_rgb("astronaut"), cv2.COLOR_RGB2GRAY)
    w = gray.shape[1]
    sift = cv2.SIFT_create(500)
    k1, d1 = sift.detectAndCompute(gray, None)
    k2, d2 = sift.detectAndCompute(np.ascontiguousarray(gray[:, ::-1]), None)
    p2 = np.array([(w - 1 - k.pt[0], k.pt[1]) for k in k2])
    errors, identity = [], []
    for k, d in zip(k1, d1):
        dist = np.linalg.norm(p2 - np.array(k.pt), axis=1)
        j = int(dist.argmin())
        if dist[j] < 0.5 and abs(k.size / k2[j].size - 1) < 0.05:
            errors.append(np.linalg.norm(d[MIRROR_PERM] - d2[j]) / np.linalg.norm(d2[j]))
            identity.append(np.linalg.norm(d - d2[j]) / np.linalg.norm(d2[j]))
    assert len(errors) > 100
    assert np.median(errors) < 0.3 < np.median(identity)


def test_features_survive_the_cache_format() -> None:
    f = _features(_rgb("chelsea"))
    g = unpack(pack(f))
    assert g.scale == pytest.approx(f.scale) and g.size == f.size
    np.testing.assert_allclose(g.points, f.points, atol=1 / 32)
    np.testing.assert_allclose(g.desc, f.desc, atol=1 / 255)
    assert np.abs(g.gray.astype(int) - f.gray).mean() < 2


def test_pair_batches_read_the_feature_files_and_a_missing_one_fails_only_its_pairs(
        tmp_path) -> None:
    from core.imagemap import Failure
    from core.store import Store

    left, right = _halves("coffee")
    copy = make_repost(left, "mirror", np.random.default_rng(0)).rgb
    store = Store(tmp_path)
    for name, rgb in (("a", left), ("b", copy), ("c", right)):
        store.put(pack(_features(rgb)), name, FEATURES_EXT)
    out = verify_pairs((("a", "b"), ("a", "c"), ("a", "gone")), SPEC, str(tmp_path))
    assert out[0]["linked"] and not out[1]["linked"]
    assert isinstance(out[2], Failure) and out[2].reason == "unreadable"


def test_content_box_trims_added_framing_and_keeps_photos_whole() -> None:
    photo = cv2.cvtColor(_rgb("coffee"), cv2.COLOR_RGB2GRAY)
    assert content_box(photo) == FULL
    h, w = photo.shape
    boxed = np.zeros((h + 200, w), np.uint8)
    boxed[100:100 + h] = photo
    box = content_box(boxed)
    assert box[1] == pytest.approx(100 / (h + 200), abs=0.01)
    assert box[3] == pytest.approx((100 + h) / (h + 200), abs=0.01)
    captioned = np.full((h + 80, w), 255, np.uint8)
    captioned[80:] = photo
    cv2.putText(captioned, "WHEN THE MONDAY", (20, 55), cv2.FONT_HERSHEY_DUPLEX, 1.3, 0, 2)
    assert content_box(captioned)[1] == pytest.approx(80 / (h + 80), abs=0.02)
    assert box_area(content_box(np.full((50, 50), 7, np.uint8))) == 1.0  # blank: not framed


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "rocket"])
def test_content_box_finds_a_photo_centred_on_its_own_blur_fill(name: str) -> None:
    """The app-style frame: the photo stretched over a wider frame and blurred, the photo
    centred on it at full height (bands left and right; transposed, above and below). (A
    star field on its own black blur has no seam to see.)"""
    photo = cv2.cvtColor(_rgb(name), cv2.COLOR_RGB2GRAY)
    h, w = photo.shape
    wide = int(w * 1.6)
    fill = cv2.GaussianBlur(cv2.resize(photo, (wide, h), interpolation=cv2.INTER_AREA),
                            (0, 0), wide / 30)
    x0 = (wide - w) // 2
    fill[:, x0:x0 + w] = photo
    assert content_box(fill) == pytest.approx((x0 / wide, 0.0, (x0 + w) / wide, 1.0), abs=0.01)
    assert content_box(np.ascontiguousarray(fill.T)) == pytest.approx(
        (0.0, x0 / wide, 1.0, (x0 + w) / wide), abs=0.01)


def test_content_box_trims_a_screenshots_chrome_inside_a_pillarbox() -> None:
    """A screenshot (black app chrome above and below the photo) posted on a white square:
    the white bars are found as a fill, and the chrome inside them is trimmed as well."""
    photo = cv2.cvtColor(_rgb("coffee"), cv2.COLOR_RGB2GRAY)
    h, w = photo.shape
    shot = np.zeros((h + 240, w), np.uint8)
    shot[120:120 + h] = photo
    cv2.putText(shot, "@pov  9:41", (20, 70), cv2.FONT_HERSHEY_DUPLEX, 1.4, 255, 2)
    side = shot.shape[0]
    square = np.full((side, side), 255, np.uint8)
    x0 = (side - w) // 2
    square[:, x0:x0 + w] = shot
    assert content_box(square) == pytest.approx(
        (x0 / side, 120 / side, (x0 + w) / side, (120 + h) / side), abs=0.01)


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "rocket", "camera", "brick",
                                  "grass", "text", "checkerboard", "horse", "clock", "retina"])
def test_photos_with_strong_straight_lines_are_not_taken_for_a_blur_fill(name: str) -> None:
    arr = np.asarray(getattr(skimage.data, name)())
    gray = np.ascontiguousarray(
        (arr if arr.ndim == 2 else cv2.cvtColor(arr[..., :3], cv2.COLOR_RGB2GRAY)).astype(np.uint8))
    assert blur_fill(gray) is None and blur_fill(np.ascontiguousarray(gray.T)) is None


def _verdict(**kw: object) -> Verdict:
    base = {"linked": True, "inliers": 50, "agreement": 0.95, "coverage": 1.0,
            "a_covered": 1.0, "b_covered": 1.0}
    return Verdict(**{**base, **kw})  # type: ignore[arg-type]


def test_framing_flags_tell_a_crop_from_added_framing() -> None:
    def edge(v: Verdict) -> dict[tuple[int, int], cl.Edge]:
        return {(0, 1): cl.Edge("verified", 10, 0.9, v)}

    # 1 lies inside 0 and 0's rest is photo: 1 is a crop
    assert cl.framing_flags(edge(_verdict(a_covered=0.7, b_covered=1.0))) == {1: "cropped"}
    # 1 lies inside 0 and 0's rest looks added: 0 is the framed copy
    assert cl.framing_flags(edge(_verdict(a_covered=0.7, b_covered=1.0, a_rest_added=True))) \
        == {0: "framed"}
    # same framing, 1 carries text the other lacks
    assert cl.framing_flags(edge(_verdict(b_marked=0.1, a_marked=0.0))) == {1: "marked"}
    # cropped and then screenshotted: each side has a part the other lacks; the copy is
    # flagged, the original is not
    both = cl.framing_flags(edge(_verdict(a_covered=0.6, b_covered=0.5, b_rest_added=True)))
    assert set(both) == {1}
    # the part 0 shows beyond 1 is flat with no seam: a black backdrop cropped away, or a
    # bar; no flag, the next criterion decides
    assert cl.framing_flags(edge(_verdict(a_covered=0.7, a_rest_flat=True))) == {}
    assert cl.framing_flags(edge(_verdict())) == {}
    assert cl.framing_flags(edge(_verdict(linked=False, a_covered=0.5))) == {}


def test_keep_policy_prefers_the_clean_copy_over_a_bigger_framed_one() -> None:
    clean = cl.Candidate("a", 800, 600, 1.0, 100_000, ("x",))
    framed = cl.Candidate("b", 1080, 2200, 1.2, 300_000, ("y",), framing="framed")
    marked = cl.Candidate("c", 800, 600, 1.5, 120_000, ("z",), framing="marked")
    keep = ("framing", "resolution", "sharpness", "bytes", "source_priority")
    assert cl.choose_kept([framed, clean, marked], keep, []) is clean
    assert cl.decide(clean, framed, keep, [])[1] == "framing"
    assert cl.choose_kept([framed, marked], keep, []) is marked  # geometry outweighs marks
    assert cl.choose_kept([framed, clean], keep[1:], []) is framed  # without the criterion
