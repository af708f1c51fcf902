"""Alignment geometry, augmentation and the StyleGAN export format."""

from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.datasetzip import DatasetError, read_dataset_zip, write_dataset_zip
from curate.prepare.align import (
    NotApplicable,
    _file_axis,
    angle_error,
    box_crop,
    keypoint_crop,
    mask_crop,
    mask_file_axis,
    rotation_of,
)
from curate.prepare.augment import AugmentConfig, variants
from curate.prepare.task import Settings, Task
from curate.prepare.warp import transform_points, warp
from curate.prepare.worker import choose_crop, encode_png, prepare

TARGETS = np.array([[0.5, 0.8], [0.5, 0.2]])


@pytest.mark.parametrize("angle", [-170.0, -45.0, 0.0, 30.0, 90.0, 179.0])
def test_keypoints_land_on_their_targets(angle: float) -> None:
    a = math.radians(angle)
    up = np.array([-math.sin(a), -math.cos(a)])  # the subject's "up", turned CCW by angle
    heel = np.array([400.0, 300.0])
    points = np.array([heel, heel + 250 * up])
    assert rotation_of(points) == pytest.approx(angle)
    crop = keypoint_crop(points, TARGETS)
    assert angle_error(crop.angle_deg, angle) < 1e-9
    assert np.allclose(transform_points(points, crop, 512), TARGETS * 512)


def test_keypoints_missing_or_coincident_are_not_applicable() -> None:
    with pytest.raises(NotApplicable):
        keypoint_crop(np.array([[1.0, 1.0], [1.0, 1.0]]), TARGETS)
    with pytest.raises(NotApplicable):
        keypoint_crop(np.array([[np.nan, 1.0], [1.0, 5.0]]), TARGETS)


def test_rotated_box_centre_and_angle() -> None:
    # Label Studio: rotation clockwise (on screen) around the top-left corner.
    crop = box_crop(100, 100, 200, 100, rotation_deg=90, margin=0.0)
    assert (crop.cx, crop.cy) == pytest.approx((50.0, 200.0))
    assert crop.angle_deg == -90 and crop.side == 200


def test_mask_axis_recovers_an_elongated_shape_rotation() -> None:
    import cv2

    for angle in (-120.0, -20.0, 0.0, 40.0, 150.0):
        mask = np.zeros((600, 600), np.uint8)
        # A "foot": narrow at the heel (bottom), wide at the toes (top), then rotated by angle.
        poly = np.array([[280, 480], [320, 480], [350, 150], [250, 150]], np.float64)
        a = math.radians(angle)
        rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
        pts = (poly - 300) @ rot.T + 300
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255)
        assert angle_error(mask_crop(mask).angle_deg, angle) < 2.0, angle
    with pytest.raises(NotApplicable):
        mask_crop(np.zeros((50, 50), np.uint8))


def test_mask_axis_ignores_a_stray_blob_beside_the_subject() -> None:
    import cv2

    mask = np.zeros((600, 600), np.uint8)
    cv2.fillPoly(mask, [np.array([[280, 480], [320, 480], [350, 150], [250, 150]], np.int32)], 255)
    cv2.rectangle(mask, (420, 420), (590, 520), 255, -1)  # a salient box on the floor
    assert angle_error(mask_crop(mask).angle_deg, 0.0) < 2.0


def test_mask_axis_takes_the_end_leaving_the_frame_as_the_bottom() -> None:
    import cv2

    for angle in (-40.0, 0.0, 35.0):
        # A leg seen from above: wide where it leaves the frame, narrower at the toes, so the
        # width rule alone would turn it upside down.
        mask = np.zeros((600, 600), np.uint8)
        a = math.radians(angle)
        rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
        poly = np.array([[220, 900], [380, 900], [340, 150], [260, 150]], np.float64)
        pts = (poly - [300, 600]) @ rot.T + [300, 600]
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255)
        assert mask[599].any(), "the leg must leave the frame"
        # The frame cuts the leg obliquely, which tilts the axis a little; a flip would be 180.
        assert angle_error(mask_crop(mask).angle_deg, angle) < 5.0, angle


def test_a_mask_file_is_read_once_per_version_and_a_rewrite_is_read_again(
        tmp_path: Path) -> None:
    """Calibrations and crops share one reading of each mask file, keyed by its mtime and
    size: a mask made again is never judged by the old one's axis."""
    import cv2

    def tilted(angle: float, side: int) -> np.ndarray:
        mask = np.zeros((side, side), np.uint8)
        a = math.radians(angle)
        rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
        poly = np.array([[-20, 170], [20, 170], [50, -150], [-50, -150]], np.float64)
        cv2.fillPoly(mask, [np.round(poly @ rot.T + side / 2).astype(np.int32)], 255)
        return mask

    path = tmp_path / "mask.png"
    cv2.imwrite(str(path), tilted(30.0, 500))
    first, size = mask_file_axis(path)
    hits = _file_axis.cache_info().hits
    assert mask_file_axis(path)[0] is first and _file_axis.cache_info().hits == hits + 1
    assert size == (500, 500) and angle_error(first.angle_deg, 30.0) < 2.0
    assert mask_crop(tilted(30.0, 500)) == first.crop(0.08)
    cv2.imwrite(str(path), tilted(-60.0, 520))
    again, size = mask_file_axis(path)
    assert size == (520, 520) and angle_error(again.angle_deg, -60.0) < 2.0
    path.write_bytes(b"not a png")
    with pytest.raises(NotApplicable, match="unreadable"):
        mask_file_axis(path)
    with pytest.raises(NotApplicable):
        mask_file_axis(tmp_path / "missing.png")


def test_warp_output_is_square_and_padded_with_background() -> None:
    img = np.zeros((300, 200, 3), np.uint8)
    crop = keypoint_crop(np.array([[100.0, 250.0], [100.0, 50.0]]), np.array([[0.5, 0.95],
                                                                             [0.5, 0.05]]))
    out = warp(img, crop, 64, background=(255, 0, 0))
    assert out.shape == (64, 64, 3)
    assert (out[32, 1] == [255, 0, 0]).all() and (out[32, 32] == 0).all()


def test_augmentation_is_reproducible_and_described() -> None:
    cfg = AugmentConfig(mirror=True, copies=3, seed=7)
    a, b = variants("img", 128, cfg), variants("img", 128, cfg)
    assert [v.description for v in a] == [v.description for v in b]
    assert [v.description for v in a][:2] == ["aligned", "mirror"] and len(a) == 5
    other = {v.description for v in variants("other", 128, cfg)}
    assert len(other - {v.description for v in a}) == 3


def test_prepare_falls_back_and_refuses_big_upscales(tmp_path: Path) -> None:
    path = tmp_path / "small.png"
    Image.new("RGB", (100, 80), (10, 200, 30)).save(path)
    s = Settings(resolution=128, augment=AugmentConfig(mirror=False))
    done = prepare(Task("x", path, 100, 80), s)  # no tags, no mask: falls back to center
    assert done.method == "center" and done.skipped is None
    assert Image.open(io.BytesIO(done.outputs[0].png)).size == (128, 128)
    tiny = prepare(Task("x", path, 100, 80), Settings(resolution=512, max_upscale=2.0))
    assert tiny.outputs == [] and "upscale" in tiny.skipped


def test_export_writes_the_stylegan_layout(tmp_path: Path) -> None:
    pngs = [encode_png(np.full((32, 32, 3), i, np.uint8), 3) for i in range(3)]
    result = write_dataset_zip(tmp_path / "d.zip", pngs, labels=[0, 1, 0])
    names, meta = read_dataset_zip(tmp_path / "d.zip")
    assert names == ["00000/img00000000.png", "00000/img00000001.png", "00000/img00000002.png"]
    assert meta["labels"][1] == ["00000/img00000001.png", 1]
    assert (result.count, result.resolution, result.channels) == (3, 32, 3)
    with zipfile.ZipFile(tmp_path / "d.zip") as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}
    write_dataset_zip(tmp_path / "n.zip", pngs)
    assert json.loads(zipfile.ZipFile(tmp_path / "n.zip").read("dataset.json")) == {"labels": None}


def test_export_rejects_mixed_shapes_and_leaves_nothing(tmp_path: Path) -> None:
    good = encode_png(np.zeros((32, 32, 3), np.uint8), 3)
    for bad in (encode_png(np.zeros((32, 48, 3), np.uint8), 3),
                encode_png(np.zeros((64, 64, 3), np.uint8), 3)):
        with pytest.raises(DatasetError, match="img00000001"):
            write_dataset_zip(tmp_path / "bad.zip", [good, bad])
    assert list(tmp_path.iterdir()) == []


def test_framing_between_two_crops_turns_one_into_the_other() -> None:
    from curate.prepare.align import Crop, framing_between, reframe

    crop = Crop(300.0, 200.0, 150.0, 35.0, "mask")
    reference = Crop(310.0, 180.0, 220.0, 35.0, "keypoints")
    again = reframe(crop, framing_between(crop, reference))
    assert (again.cx, again.cy, again.side) == pytest.approx((310.0, 180.0, 220.0))
    assert again.angle_deg == 35.0 and again.method == "mask"


def test_mask_crops_are_framed_like_keypoint_crops(tmp_path) -> None:
    """Mask crops fill the frame, keypoint crops leave a margin; calibrated, they agree."""
    import cv2

    from curate.prepare.framing import calibrate_framing

    tasks = []
    for i, (angle, length) in enumerate([(0, 300), (20, 260), (-30, 340), (45, 280), (-10, 320),
                                         (70, 300)]):
        a = math.radians(angle)
        up = np.array([-math.sin(a), -math.cos(a)])  # the subject's up, turned CCW by angle
        right = np.array([-up[1], up[0]])
        centre = np.array([400.0, 400.0])
        heel, toe = centre - up * length / 2, centre + up * length / 2
        poly = [heel - right * 40, heel + right * 40, toe + right * 70, toe - right * 70]
        mask = np.zeros((800, 800), np.uint8)
        cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 255)
        path = tmp_path / f"m{i}.png"
        cv2.imwrite(str(path), mask)
        tasks.append(Task(f"{i}", path, 800, 800, (tuple(heel), tuple(toe)), None, path))
    raw = Settings(align=("keypoints", "mask", "center"))
    framed = calibrate_framing(tasks, raw)
    assert [m for m, _ in framed.framing] == ["mask"]
    for task in tasks:  # an image with keypoints, cropped by its mask alone, framed alike
        only_mask = Task(task.image_id, task.image, 800, 800, None, None, task.mask)
        by_keypoints = choose_crop(task, raw)
        by_mask = choose_crop(only_mask, framed)
        assert by_mask.method == "mask"
        assert by_mask.side == pytest.approx(by_keypoints.side, rel=0.03)
        assert math.hypot(by_mask.cx - by_keypoints.cx,
                          by_mask.cy - by_keypoints.cy) < 0.03 * by_keypoints.side
        assert choose_crop(only_mask, raw).side < 0.8 * by_keypoints.side  # before: tighter


# ------------------------------------------ box framing, face alignment, reflect padding


def _first_png(done) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(done.outputs[0].png)).convert("RGB"))


def _red_extent(img: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the red pixels."""
    ys, xs = np.nonzero((img[..., 0] > 150) & (img[..., 1] < 100) & (img[..., 2] < 100))
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


@pytest.mark.parametrize("margin", [0.0, 0.25])
def test_box_alignment_frames_the_box_with_box_margin_around_it(tmp_path: Path,
                                                                margin: float) -> None:
    img = np.full((300, 400, 3), 255, np.uint8)
    img[60:160, 220:320] = (220, 20, 20)  # the annotated subject: a 100 px square at (220, 60)
    path = tmp_path / "boxed.png"
    Image.fromarray(img).save(path)
    task = Task("x", path, 400, 300, box=(220.0, 60.0, 100.0, 100.0, 0.0))
    s = Settings(resolution=128, align=("box", "center"), box_margin=margin,
                 augment=AugmentConfig(mirror=False))
    done = prepare(task, s)
    assert done.method == "box"
    x0, y0, x1, y1 = _red_extent(_first_png(done))
    # the box fills 1 / (1 + 2 margin) of the side, centred
    expected = 128 / (1 + 2 * margin)
    assert x1 - x0 == pytest.approx(expected, abs=2) and y1 - y0 == pytest.approx(expected, abs=2)
    assert (x0 + x1) / 2 == pytest.approx(64, abs=1.5)
    assert (y0 + y1) / 2 == pytest.approx(64, abs=1.5)


def test_reflect_padding_mirrors_the_image_instead_of_the_background() -> None:
    x = np.tile(np.linspace(0, 255, 200, dtype=np.float32), (200, 1))
    img = np.stack([x, 255 - x, np.full_like(x, 90)], axis=2).astype(np.uint8)  # a ramp
    crop = box_crop(-100, 0, 200, 200, margin=0.0)  # half the square lies left of the image
    plain = warp(img, crop, 64, background=(0, 255, 0))
    mirrored = warp(img, crop, 64, pad="reflect", background=(0, 255, 0))
    assert (plain[:, :30] == (0, 255, 0)).all()  # background on the outside half
    assert not (mirrored == (0, 255, 0)).all(axis=2).any()  # no background anywhere
    # the outside half is the inside half mirrored about the image's left edge
    assert np.abs(mirrored[:, :31].astype(int) - mirrored[:, 33:64][:, ::-1].astype(int)
                  ).max() <= 12


def test_export_rejects_a_different_channel_count(tmp_path: Path) -> None:
    rgb = encode_png(np.zeros((32, 32, 3), np.uint8), 3)
    gray = io.BytesIO()
    Image.new("L", (32, 32)).save(gray, "PNG")
    rgba = io.BytesIO()
    Image.new("RGBA", (32, 32)).save(rgba, "PNG")
    for other, channels in ((gray.getvalue(), 1), (rgba.getvalue(), 4)):
        with pytest.raises(DatasetError,
                           match=rf"img00000001\.png: 32x32x{channels} differs .* 32x32x3"):
            write_dataset_zip(tmp_path / "mixed.zip", [rgb, other])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("targets", [None, ((0.43, 0.36), (0.57, 0.36))])
def test_face_alignment_puts_the_eyes_on_their_targets(tmp_path: Path, targets) -> None:
    """MTCNN (facenet-pytorch's bundled weights) on a real photo: scikit-image's astronaut,
    framed as a face crop (the default) and wider, as a distribution's `face_targets` asks."""
    import skimage.data  # facenet-pytorch is installed by `make setup`: no skip without it

    from curate.prepare.face import eye_landmarks

    path = tmp_path / "astronaut.png"
    Image.fromarray(skimage.data.astronaut()).save(path)
    task = Task("x", path, 512, 512)
    s = Settings(resolution=256, align=("face", "center"), augment=AugmentConfig(mirror=False),
                 **({} if targets is None else {"face_targets": targets}))
    done = prepare(task, s)
    assert done.method == "face"
    out = tmp_path / "aligned.png"
    Image.fromarray(_first_png(done)).save(out)
    eyes = eye_landmarks(Task("y", out, 256, 256))  # found again on the output
    assert np.abs(eyes / 256 - np.array(s.face_targets)).max() < 0.03
    # no face: the next method in the list
    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 200), (120, 160, 200)).save(blank)
    assert prepare(Task("z", blank, 200, 200), s).method == "center"
