"""Geometric verification of candidate pairs: is one image an edited copy of the other?

Copy detection's second step, after a cheap high-recall candidate search. Local features
(SIFT, RootSIFT-normalised, Lowe's ratio test) of the two images are matched, also against
the mirror image's features, and a similarity transform (scale, rotation, translation,
optionally mirrored) is fitted with RANSAC. Consistent features alone do not prove a copy:
two photos taken on one floor or studio backdrop share many. So the fitted transform is then
checked densely: each image is warped onto the other and the band-passed patches of the
overlap must agree (normalised cross-correlation), which a different foot on the same floor
does not. Nor do two look-alike subjects on smooth backdrops (soles on a studio sweep,
figures on a plain wash): there the edges of the subject are almost all the texture, and one
outline laid on a similar one agrees patch by patch. So the smooth patches speak too: a copy
keeps the shading of its backdrop (the fall-off of the light, a vignette) up to a tone curve:
the brightness of its smooth patches maps onto the other's through one non-decreasing curve
within a fraction of a gray level, which two photos lit from different places do not.

Mirrored features cost nothing extra: mirroring a patch about the vertical axis reverses the
rows of SIFT's 4x4 grid (in the keypoint's own frame) and negates each orientation bin, so
the mirror image's descriptors are a fixed permutation of the image's (`MIRROR_PERM`,
measured against OpenCV's SIFT on mirrored photos in the tests).

The verdict also says how the two frames relate: which share of each image the other
covers, and whether the part of an image the other lacks looks added (a plain bar, caption,
letterbox, canvas or app chrome), photographed, or flat without telling. The keep policy
uses that to prefer the uncropped, unframed copy.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from scipy.optimize import isotonic_regression

from core.imagemap import Failure, attempt
from core.parallel import one_thread_per_worker
from core.store import Store
from curate.dedup.borders import FULL, Box

if TYPE_CHECKING:
    from curate.dedup.config import VerifyConfig

#: Bump when matching or the dense check change a verdict ...
VERIFY_VERSION = 17
#: ... and this when the features (work image, keypoints, descriptors) change.
FEATURES_VERSION = 10
#: Images with at least this many keypoints each always share some when one is a copy of the
#: other (re-encoded, resized, brightened, cropped; blurred, shrunk to a quarter or noisy
#: copies keep a third of theirs or more): none shared contradicts a link.
RICH_KEYPOINTS = 50
#: ... and fewer consistent matches than this count as none shared (a fixed count, not
#: `dedup.verify.min_inliers`: raising the bar for a link must not widen what contradicts one).
FEW_MATCHES = 10
#: A copy whose overlap has at least this share of patches with marks the other lacks
#: carries laid-over text or a logo.
MARKED = 0.03
_RATIO = 0.8  # Lowe's ratio test
_CONTRAST_THRESHOLDS = (0.02, 0.005)  # half SIFT's default (soft photos), then lower ...
_ENOUGH_KEYPOINTS = 50  # ... for an image that found fewer keypoints than this
_PATCH = 16  # dense check patch side, work pixels
_TEXTURED = 1.5  # band-pass RMS (gray levels) above which a patch carries evidence
_AGREE_NCC = 0.7  # a textured patch agrees when its NCC is at least this
_MARK = 8.0  # band-pass RMS of drawn text or a logo's edges; a photo's lost grain is far less
_MIN_PATCHES = 12  # fewer textured patches in the overlap: no evidence either way
#: Smooth patches (textured in neither image) of a copy map onto the other's through one
#: tone curve with a median error below this many gray levels: JPEG and resampling move the
#: mean of a patch's 256 pixels by a small fraction of a level.
_SHADING_LEVELS = 0.5
_PLAIN_TOL = 4  # gray levels: pixels this close to a region's mode colour are "plain" ...
_PLAIN_SHARE = 0.5  # ... and a region this plain is added framing
_BLURRED_DETAIL = 0.4  # a region with less fine detail than this share of the photo's is too
_UNIFORM_SHARE = 0.9  # this much within +-2 gray levels of one value is a drawn colour
_STEP_RATIO, _STEP_MIN = 3.0, 12.0  # a footprint edge this much sharper than the photo: a seam


def _mirror_perm() -> np.ndarray:
    perm = np.empty(128, np.int64)
    for r in range(4):
        for c in range(4):
            for o in range(8):
                perm[((3 - r) * 4 + c) * 8 + (-o) % 8] = (r * 4 + c) * 8 + o
    return perm


#: Descriptor of the mirrored patch = descriptor[MIRROR_PERM] (an involution).
MIRROR_PERM = _mirror_perm()


@dataclass(frozen=True)
class VerifySpec:
    """How hard to look, and what counts as a copy (params `dedup.verify`)."""

    max_side: int  # features and the dense check run on the image scaled to this
    features: int  # SIFT keypoints kept per image
    min_inliers: int  # RANSAC inliers of the fitted transform
    min_coverage: float  # overlap / the smaller image's area (in the first's frame)
    min_agreement: float  # share of textured overlap patches that agree
    background: tuple[int, int, int] = (255, 255, 255)
    max_turn_deg: float = 45.0  # farthest turn from upright or a quarter turn (45: any)

    @classmethod
    def from_config(cls, cfg: VerifyConfig, background: tuple[int, ...] = (255, 255, 255)
                    ) -> VerifySpec:
        return cls(cfg.max_side, cfg.features, cfg.min_inliers, cfg.min_coverage,
                   cfg.min_agreement, (background[0], background[1], background[2]),
                   cfg.max_turn_deg)

    def cache_params(self) -> dict[str, object]:
        return {"max_side": self.max_side, "features": self.features,
                "min_inliers": self.min_inliers, "min_coverage": self.min_coverage,
                "min_agreement": self.min_agreement, "background": list(self.background),
                "max_turn_deg": self.max_turn_deg}


@dataclass
class Features:
    """One image at work scale: gray pixels, keypoints and RootSIFT descriptors."""

    gray: np.ndarray  # uint8, work scale
    scale: float  # work pixels per image pixel
    points: np.ndarray  # (n, 2) float32, work pixels
    desc: np.ndarray  # (n, 128) float32

    @property
    def size(self) -> tuple[int, int]:
        return self.gray.shape[1], self.gray.shape[0]



@dataclass(frozen=True, slots=True)
class Verdict:
    """What verification found for the pair (a, b): b's frame mapped into a's. Slotted: a
    collection of 100k images holds a million of them while dedup runs."""

    linked: bool
    inliers: int
    agreement: float  # share of textured overlap patches that agree (0 if no transform)
    coverage: float  # overlap / smaller image area
    mirror: bool = False
    scale: float = 1.0  # b pixels -> a pixels
    rotation_deg: float = 0.0
    a_covered: float = 0.0  # share of a's area that b shows
    b_covered: float = 0.0  # share of b's area that a shows
    a_rest_added: bool = False  # the part of a that b lacks looks added (bar, canvas, UI)
    b_rest_added: bool = False
    a_rest_flat: bool = False  # ... or is flat without a seam: added or photographed, unsure
    b_rest_flat: bool = False
    a_marked: float = 0.0  # share of the overlap where a has marks b lacks (text, logo)
    b_marked: float = 0.0
    keypoints: int = 0  # the fewer of the two images' keypoints
    a_box: tuple[float, ...] = (0.0, 0.0, 1.0, 1.0)  # the part of a that b shows (x0, y0,
    b_box: tuple[float, ...] = (0.0, 0.0, 1.0, 1.0)  # x1, y1 in fractions); of b that a shows
    shading: float | None = None  # smooth overlap off one tone curve, levels (None: no evidence)

    @property
    def contradicts(self) -> bool:
        """Both images are rich in features and yet almost none match: whatever made the
        pair look alike (a hash, an embedding), the pixels are not the same photo."""
        return (not self.linked and self.inliers < FEW_MATCHES
                and self.keypoints >= RICH_KEYPOINTS)

    def to_json(self) -> dict[str, object]:
        def rounded(v: object) -> object:
            if isinstance(v, float):
                return round(v, 4)
            return [round(x, 4) for x in v] if isinstance(v, tuple) else v

        return {f.name: rounded(getattr(self, f.name)) for f in fields(self)}

    @staticmethod
    def from_json(data: dict[str, object]) -> Verdict:
        fields = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
        return Verdict(**fields)  # type: ignore[arg-type]

    def flipped(self) -> Verdict:
        """The same verdict with the roles swapped (a mapped into b)."""
        return Verdict(self.linked, self.inliers, self.agreement, self.coverage, self.mirror,
                       1.0 / self.scale if self.scale else 0.0,
                       -self.rotation_deg if not self.mirror else self.rotation_deg,
                       self.b_covered, self.a_covered, self.b_rest_added, self.a_rest_added,
                       self.b_rest_flat, self.a_rest_flat, self.b_marked, self.a_marked,
                       self.keypoints, self.b_box, self.a_box, self.shading)

    def describe(self) -> str:
        """b relative to a in words, e.g. 'mirror, x0.62, -7.1 deg, shows 78% of the other'."""
        parts = ["mirror"] if self.mirror else []
        if abs(math.log(max(self.scale, 1e-6))) > 0.03:
            parts.append(f"scale x{self.scale:.2f}")
        if abs(self.rotation_deg) >= 1.0:
            parts.append(f"{self.rotation_deg:+.1f} deg")
        if self.a_covered < 0.95:
            x0, y0, x1, y1 = self.a_box
            parts.append(f"shows {self.a_covered:.0%} of the other (box {x0:.2f},{y0:.2f}-"
                         f"{x1:.2f},{y1:.2f})")
        if self.b_covered < 0.95:
            parts.append("added border" if self.b_rest_added
                         else f"{1 - self.b_covered:.0%} more than the other")
        if self.b_marked >= MARKED:
            parts.append("text or marks laid over")
        return ", ".join(parts) or "same framing"


def work_gray(source: Path | bytes, width: int, max_side: int,
              background: tuple[int, int, int], content: Box = FULL) -> tuple[np.ndarray, float]:
    """Upright 8-bit gray image scaled so the photo's longer side is at most `max_side`, and
    its scale (work pixels per image pixel; `width` is the upright image's full width).

    The photo is the content box: a screenshot or letterbox keeps its photo at full work
    size (the whole image then up to twice `max_side`), or the photo inside would be left
    with too few pixels for features."""
    from core.imageio import decode

    span = max(content[2] - content[0], content[3] - content[1], 0.5)
    longest = max_side / span
    gray = np.asarray(decode(source, background=background, gray=True,
                             min_side=max(16, int(longest // 2))))
    h, w = gray.shape
    s = min(1.0, longest / max(h, w))
    if s < 1.0:
        gray = cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))),
                          interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(gray), gray.shape[1] / max(1, width)


def extract(gray: np.ndarray, scale: float, n_features: int) -> Features:
    """SIFT keypoints and RootSIFT descriptors (L1-normalised, square-rooted).

    SIFT's default contrast threshold leaves a soft, low-contrast photo (misty, blurred, a
    smooth studio backdrop or clock face) with a handful of keypoints, too few to fit
    anything. The first pass runs at half the default, and an image that still finds too
    few is searched again lower (descriptors are contrast-normalised, so they stay
    comparable with a contrasty copy's); `n_features` keeps the strongest."""
    for threshold in _CONTRAST_THRESHOLDS:
        sift = cv2.SIFT_create(nfeatures=n_features, contrastThreshold=threshold)
        kps, desc = sift.detectAndCompute(gray, None)
        if len(kps) >= _ENOUGH_KEYPOINTS:
            break
    if desc is None or not kps:
        return Features(gray, scale, np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32))
    desc = desc.astype(np.float32)
    desc /= desc.sum(axis=1, keepdims=True) + 1e-7
    return Features(gray, scale, np.array([k.pt for k in kps], np.float32), np.sqrt(desc))


def features_of(source: Path | bytes, width: int, spec: VerifySpec, content: Box = FULL
                ) -> Features:
    """Features of one image (`width`: its upright full width, from the manifest; `content`:
    its content box, `curate.dedup.borders`)."""
    gray, scale = work_gray(source, width, spec.max_side, spec.background, content)
    return extract(gray, scale, spec.features)


def _matches(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (into a, into b) passing Lowe's ratio test.

    RootSIFT descriptors have unit length, so squared distances are 2 - 2 cos: one matrix
    product finds every nearest and second-nearest neighbour (several times faster than
    OpenCV's brute-force kNN matcher at these sizes)."""
    if len(a) < 2 or len(b) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    sims = a @ b.T
    nearest = np.argmax(sims, axis=1)
    top2 = np.partition(sims, sims.shape[1] - 2, axis=1)[:, -2:]
    d1 = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * top2[:, 1]))
    d2 = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * top2[:, 0]))
    good = np.flatnonzero(d1 < _RATIO * d2)
    return good.astype(np.int64), nearest[good].astype(np.int64)


def _fit(a: Features, b: Features, mirror: bool, spec: VerifySpec
         ) -> tuple[np.ndarray | None, int]:
    """Similarity b -> a (b mirrored first when `mirror`), and its inlier count."""
    desc_b = b.desc[:, MIRROR_PERM] if mirror else b.desc
    ia, ib = _matches(a.desc, desc_b)
    if len(ia) < spec.min_inliers:
        return None, 0
    pts_b = b.points[ib].copy()
    if mirror:
        pts_b[:, 0] = b.size[0] - 1 - pts_b[:, 0]  # pixel centres: column c <-> w - 1 - c
    m, inliers = cv2.estimateAffinePartial2D(pts_b, a.points[ia], method=cv2.RANSAC,
                                             ransacReprojThreshold=3.0, maxIters=500,
                                             confidence=0.995, refineIters=10)
    if m is None:
        return None, 0
    scale = math.sqrt(abs(np.linalg.det(m[:, :2])))
    if not 1 / 8 <= scale <= 8:
        return None, 0
    return m, int(inliers.sum())


def _bandpass(gray: np.ndarray) -> np.ndarray:
    g = gray.astype(np.float32)
    return cv2.GaussianBlur(g, (0, 0), 1.0) - cv2.GaussianBlur(g, (0, 0), 4.0)


@dataclass(frozen=True)
class _Agreement:
    share: float  # of textured overlap patches that agree, judged from the better side
    a_marked: float  # share of overlap patches where a has marks b lacks (text, watermark)
    b_marked: float
    shading: float | None = None  # smooth patches' distance from one tone curve; None: few


def _tone_error(x: np.ndarray, y: np.ndarray) -> float:
    """Median distance (gray levels) of y from the best non-decreasing curve of x."""
    y = y[np.lexsort((y, x))]
    return float(np.median(np.abs(y - isotonic_regression(y).x)))


def _shading(a: np.ndarray, b: np.ndarray, smooth: np.ndarray) -> float | None:
    """How far the mean brightness of the smooth patches of a and b (rows of pixels per
    patch) is from one tone curve, in gray levels (the better direction), or None with fewer
    than `_MIN_PATCHES` of them. Flat backdrops in both give about 0: no evidence against."""
    if smooth.sum() < _MIN_PATCHES:
        return None
    ma, mb = a[smooth].mean(axis=1), b[smooth].mean(axis=1)
    return min(_tone_error(ma, mb), _tone_error(mb, ma))


def _agreement(a_gray: np.ndarray, b_gray: np.ndarray, valid: np.ndarray) -> _Agreement:
    """How well the overlap patches of a and b (aligned gray images) correlate: band-passed
    where they are textured, in brightness where both are smooth (`_shading`).

    Judged twice, over the patches textured in a and over those textured in b, and the
    better kept: text or a watermark laid over one copy adds texture that the other lacks,
    and judging from the other side ignores it. A different subject on the same floor fails
    both ways: each side's textured patches include ones the other covers with something
    else. Patches that disagree where one side has far more texture than usual between the
    two (one copy may be sharper throughout) are that side's marks.
    """
    h, w = a_gray.shape
    ph, pw = h // _PATCH, w // _PATCH
    if ph == 0 or pw == 0:
        return _Agreement(0.0, 0.0, 0.0)

    def tiles(x: np.ndarray) -> np.ndarray:
        x = x[:ph * _PATCH, :pw * _PATCH].reshape(ph, _PATCH, pw, _PATCH)
        return x.swapaxes(1, 2).reshape(ph * pw, _PATCH * _PATCH)

    full = tiles(valid.astype(np.float32)).mean(axis=1) >= 0.98
    ta, tb = tiles(_bandpass(a_gray))[full], tiles(_bandpass(b_gray))[full]
    if not len(ta):
        return _Agreement(0.0, 0.0, 0.0)
    ta = ta - ta.mean(axis=1, keepdims=True)
    tb = tb - tb.mean(axis=1, keepdims=True)
    sa, sb = np.sqrt((ta**2).mean(axis=1)), np.sqrt((tb**2).mean(axis=1))
    ncc = (ta * tb).mean(axis=1) / (sa * sb + 1e-6)
    agrees = ncc >= _AGREE_NCC
    best = 0.0
    for textured in (sa > _TEXTURED, sb > _TEXTURED):
        if textured.sum() >= _MIN_PATCHES:
            best = max(best, float(agrees[textured].mean()))
    both = (sa > _TEXTURED) & (sb > _TEXTURED)
    gain = float(np.median(sa[both] / sb[both])) if both.any() else 1.0  # one side sharper
    a_marked = float(((sa > _MARK) & (sa > 2 * gain * sb) & ~agrees).mean())
    b_marked = float(((sb > _MARK) & (gain * sb > 2 * sa) & ~agrees).mean())
    smooth = (sa <= _TEXTURED) & (sb <= _TEXTURED)
    shading = _shading(tiles(a_gray.astype(np.float32))[full],
                       tiles(b_gray.astype(np.float32))[full], smooth)
    return _Agreement(best, a_marked, b_marked, shading)


def _warp(gray: np.ndarray, m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`gray` mapped by `m` into an image of `size`, low-passed first when `m` shrinks it
    (a linear warp alone would alias fine texture into patterns the other image lacks)."""
    shrink = math.sqrt(abs(np.linalg.det(m[:, :2])))
    if shrink < 0.8:
        gray = cv2.GaussianBlur(gray, (0, 0), 0.5 / shrink)
    return cv2.warpAffine(gray, m, size, flags=cv2.INTER_LINEAR)


def _inner(mask: np.ndarray) -> np.ndarray:
    """The mask less a 2-pixel rim (where interpolation mixes in the outside)."""
    return cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0


def _rest_kind(gray: np.ndarray, covered: np.ndarray) -> str:
    """Whether the part of an image outside the other's footprint looks "added", not shot,
    or "photo", or is "flat" without telling (a flat backdrop or sky that the crop left out
    looks like a bar that meets the photo without a seam).

    Added framing (letterbox bars, caption bars, a canvas behind a tilted photo, app chrome)
    is nearly all one exact colour, or mostly one flat colour (text and icons are thin
    strokes on it) or the photo stretched and blurred behind it (far less fine detail than
    the photo it frames) that meets the photo at a step along the footprint's edge or
    frames it as centred bands.
    Photographed surroundings continue the photo across that edge, even where they are flat
    (night sky, a black backdrop).
    """
    rest = ~covered
    if rest.mean() < 0.03 or covered.mean() < 0.03:
        return "photo"
    values = gray[rest]
    mode = np.bincount(values, minlength=256)
    if np.convolve(mode, np.ones(5), mode="same").max() / values.size >= _UNIFORM_SHARE:
        return "added"  # one exact colour (a bar, a canvas): no camera sees that
    window = np.convolve(mode, np.ones(2 * _PLAIN_TOL + 1), mode="same")
    detail = np.abs(cv2.Laplacian(gray, cv2.CV_32F))
    flat = (window.max() / values.size >= _PLAIN_SHARE
            or detail[rest].mean() < _BLURRED_DETAIL * detail[covered].mean())
    if not flat:
        return "photo"
    return "added" if _centred_band(covered) or _step_along_edge(gray, covered) else "flat"


def _box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Bounding box of a mask as fractions of its image (x0, y0, x1, y1)."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return (0.0, 0.0, 0.0, 0.0)
    h, w = mask.shape
    return (float(xs.min()) / w, float(ys.min()) / h, float(xs.max() + 1) / w,
            float(ys.max() + 1) / h)


def _centred_band(covered: np.ndarray) -> bool:
    """Whether the footprint fills one axis and sits centred on the other, with margins:
    how letterboxing and pillarboxing place a photo (a crop lands anywhere)."""
    x0, y0, x1, y1 = _box(covered)
    for lo, hi, a0, a1 in ((x0, x1, y0, y1), (y0, y1, x0, x1)):
        if a0 <= 0.01 and a1 >= 0.99 and lo >= 0.03 and abs(lo - (1 - hi)) <= 0.02:
            return True
    return False


def _step_along_edge(gray: np.ndarray, covered: np.ndarray) -> bool:
    """Whether the footprint's edge (away from the image border) is a step in the pixels:
    the gradient along it is well above the photo's typical gradient near it."""
    kernel = np.ones((3, 3), np.uint8)
    mask = covered.astype(np.uint8)
    edge = (cv2.dilate(mask, kernel) > 0) & (cv2.erode(mask, kernel) == 0)
    edge[:2, :] = edge[-2:, :] = False  # the image's own border is no evidence
    edge[:, :2] = edge[:, -2:] = False
    if edge.sum() < 20:
        return False
    g = gray.astype(np.float32)
    magnitude = np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))
    near = (cv2.erode(mask, kernel, iterations=6) == 0) & covered & ~edge
    typical = float(np.median(magnitude[near])) if near.any() else 0.0
    return float(np.median(magnitude[edge])) > max(_STEP_RATIO * typical, _STEP_MIN)


def off_quarter_turn(degrees: float) -> float:
    """How far a turn is from the nearest multiple of 90 degrees (0..45)."""
    return abs((degrees + 45.0) % 90.0 - 45.0)


def verify(a: Features, b: Features, spec: VerifySpec) -> Verdict:
    """Fit b onto a, plain and mirrored, and check the overlap of each fit densely.

    Both fits are checked when both find enough inliers: a symmetric subject (a figure
    facing the viewer, a pair of feet) also matches its mirror image, on a turned and partial
    footprint, sometimes with a few more inliers than the true fit. The verdict kept is the
    linked one, then the one whose textured patches agree best, then the larger overlap."""
    keypoints = min(len(a.points), len(b.points))
    verdicts = []
    for mirror in (False, True):
        m, inliers = _fit(a, b, mirror, spec)
        if m is None or inliers < spec.min_inliers:
            verdicts.append(Verdict(False, inliers, 0.0, 0.0, keypoints=keypoints))
        else:
            verdicts.append(_judge(a, b, m, inliers, mirror, spec))
    return max(verdicts, key=lambda v: (v.linked, v.agreement, v.coverage, v.inliers))


def _judge(a: Features, b: Features, m: np.ndarray, inliers: int, mirror: bool,
           spec: VerifySpec) -> Verdict:
    """The dense check of one fit `m` of b (mirrored when `mirror`) onto a."""
    keypoints = min(len(a.points), len(b.points))
    gray_b = np.ascontiguousarray(b.gray[:, ::-1]) if mirror else b.gray  # m's frame for b
    (wa, ha), (wb, hb) = a.size, b.size
    inverse = cv2.invertAffineTransform(m)
    in_a = cv2.warpAffine(np.full((hb, wb), 255, np.uint8), m, (wa, ha),
                          flags=cv2.INTER_NEAREST) > 0
    in_b = cv2.warpAffine(np.full((ha, wa), 255, np.uint8), inverse, (wb, hb),
                          flags=cv2.INTER_NEAREST) > 0  # in b mirrored, when mirror
    # Judged in both frames and the better kept: resampling either image onto the other
    # loses some fine texture, and which loss matters depends on the pair.
    in_a_frame = _agreement(a.gray, _warp(gray_b, m, (wa, ha)), _inner(in_a))
    swapped = _agreement(gray_b, _warp(a.gray, inverse, (wb, hb)), _inner(in_b))
    in_b_frame = _Agreement(swapped.share, swapped.b_marked, swapped.a_marked, swapped.shading)
    agreement = max(in_a_frame, in_b_frame, key=lambda x: x.share)
    shadings = [x.shading for x in (in_a_frame, in_b_frame) if x.shading is not None]
    shading = min(shadings) if shadings else None
    if mirror:
        in_b = in_b[:, ::-1]
    scale_work = math.sqrt(abs(np.linalg.det(m[:, :2])))
    smaller = min(wa * ha, wb * hb * scale_work**2)
    coverage = float(in_a.sum()) / max(1.0, smaller)
    rotation = math.degrees(math.atan2(m[1, 0], m[0, 0]))
    linked = (agreement.share >= spec.min_agreement and coverage >= spec.min_coverage
              and off_quarter_turn(rotation) <= spec.max_turn_deg
              and (shading is None or shading <= _SHADING_LEVELS))
    rest_a, rest_b = _rest_kind(a.gray, in_a), _rest_kind(b.gray, in_b)
    return Verdict(
        linked, inliers, agreement.share, min(1.0, coverage), mirror,
        scale_work * b.scale / a.scale, rotation, float(in_a.mean()), float(in_b.mean()),
        rest_a == "added", rest_b == "added", rest_a == "flat", rest_b == "flat",
        agreement.a_marked, agreement.b_marked, keypoints, _box(in_a), _box(in_b), shading)


# --------------------------------------------------------------------------- cache format

_HEADER = struct.Struct("<4sIIIf")  # magic, keypoints, width, height, scale
_MAGIC = b"SFT1"


def pack(f: Features) -> bytes:
    """Compact bytes of `f` for the feature cache: keypoints in 1/16 px, descriptors in 8
    bits (RootSIFT values are in [0, 1]), the gray image as a quality-95 JPEG."""
    n = len(f.points)
    ok, jpeg = cv2.imencode(".jpg", f.gray, [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise ValueError("could not encode the work image")
    pts = np.clip(np.round(f.points * 16), 0, 65535).astype("<u2")
    desc = np.clip(np.round(f.desc * 255), 0, 255).astype(np.uint8)
    return (_HEADER.pack(_MAGIC, n, f.size[0], f.size[1], f.scale) + pts.tobytes()
            + desc.tobytes() + jpeg.tobytes())


def unpack(blob: bytes) -> Features:
    magic, n, _, _, scale = _HEADER.unpack_from(blob)
    if magic != _MAGIC:
        raise ValueError("not a packed feature blob")
    at = _HEADER.size
    pts = np.frombuffer(blob, "<u2", 2 * n, at).reshape(n, 2).astype(np.float32) / 16
    at += 4 * n
    desc = np.frombuffer(blob, np.uint8, 128 * n, at).reshape(n, 128).astype(np.float32) / 255
    at += 128 * n
    gray = cv2.imdecode(np.frombuffer(blob, np.uint8, offset=at), cv2.IMREAD_GRAYSCALE)
    return Features(gray, scale, pts, desc)


# --------------------------------------------------------------------------- worker tasks

#: One image whose features to compute: id, path, stored width, content box.
FeatureItem = tuple[str, str, int, Box]
#: Extension of a feature file (`pack`'s format) in its store.
FEATURES_EXT = "sft"


def store_features(item: FeatureItem, spec: VerifySpec, root: str) -> dict[str, int]:
    """Compute one image's features and write them, packed, to the feature store at `root`;
    their size in bytes (raises `ImageRejected` or `OSError` when the image cannot be read)."""
    one_thread_per_worker()
    image_id, path, width, content = item
    data = pack(features_of(Path(path), width, spec, content))
    Store(Path(root)).put(data, image_id, FEATURES_EXT)
    return {"bytes": len(data)}


def verify_pairs(pairs: tuple[tuple[str, str], ...], spec: VerifySpec, root: str
                 ) -> list[dict[str, object] | Failure]:
    """Verdicts (as JSON) of a batch of pairs, from the feature files of their images in the
    store at `root`: each image is read and unpacked once per batch, and a pair whose
    features cannot be read, or whose check fails, fails alone (it is verified again on the
    next run)."""
    one_thread_per_worker()
    store = Store(Path(root))
    feats = {image_id: attempt(_read_features, store, image_id)
             for image_id in sorted({x for pair in pairs for x in pair})}

    def one(a: str, b: str) -> dict[str, object] | Failure:
        fa, fb = feats[a], feats[b]
        if isinstance(fa, Failure):
            return fa
        if isinstance(fb, Failure):
            return fb
        return verify(fa, fb, spec).to_json()

    return [attempt(one, a, b) for a, b in pairs]


def _read_features(store: Store, image_id: str) -> Features:
    return unpack(store.read(image_id, FEATURES_EXT))
