"""Typed configuration loaded from `params.yaml`.

Each stage gets a frozen dataclass. The loader checks every key against the
dataclass fields and every value against its type hint (including `Literal`
choices), so a typo or a bad value stops the run with a message naming the
key, the bad value and what is allowed, instead of a traceback from deep
inside a stage.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from core.config import (
    DEFAULT_PARAMS,
    ComputeConfig,
    ConfigError,
    PathsConfig,
    from_mapping,
    read_params,
)
from core.device import Device
from curate.prepare.augment import AugmentConfig

# --------------------------------------------------------------------- ingest


@dataclass(frozen=True)
class SourceConfig:
    """One input: a folder (recursive), an archive, or a URL list."""

    kind: Literal["folder", "archive", "urls"]
    path: Path
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = (".*", "*/.*")
    expand_archives: bool = True
    url_column: str = "url"

    def validate(self, key: str) -> None:
        if not str(self.path):
            raise ConfigError(f"{key}.path: must not be empty")


@dataclass(frozen=True)
class ScrapeConfig:
    """HTTP fetching limits; the defaults are polite to the hosts being scraped."""

    concurrency: int = 32
    per_host: int = 8
    timeout_s: float = 20.0
    retries: int = 3
    backoff_s: float = 0.5
    max_redirects: int = 5
    total_timeout_s: float = 180.0  # one URL's whole time: lookups, attempts, backoff waits
    allow_private_hosts: bool = False
    user_agent: str = "gan-curate/0.1 (+dataset curation; respects robots of its operator)"

    def validate(self, key: str) -> None:
        for name in ("concurrency", "per_host", "max_redirects"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{key}.{name}: got {getattr(self, name)}, expected >= 1")
        if self.retries < 0 or self.timeout_s <= 0 or self.backoff_s < 0 or (
                self.total_timeout_s <= 0):
            raise ConfigError(f"{key}: retries must be >= 0, timeout_s and total_timeout_s > 0, "
                              "backoff_s >= 0")


@dataclass(frozen=True)
class ArchiveConfig:
    """Limits of one zip/tar archive (zip and tar bombs); past one, the rest is refused."""

    max_members: int = 100_000
    max_total_mb: float = 16_384.0  # uncompressed bytes of all members read
    max_ratio: float = 200.0  # uncompressed / compressed, per zip member (over 1 MB) and archive
    max_name_length: int = 1024

    def validate(self, key: str) -> None:
        if min(self.max_members, self.max_total_mb, self.max_ratio, self.max_name_length) <= 0:
            raise ConfigError(f"{key}: every limit must be positive")


@dataclass(frozen=True)
class IngestConfig:
    sources: tuple[SourceConfig, ...] = ()
    max_file_mb: float = 64.0
    max_pixels: int = 100_000_000
    archive: ArchiveConfig = field(default_factory=ArchiveConfig)
    scrape: ScrapeConfig = field(default_factory=ScrapeConfig)

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)

    def validate(self, key: str) -> None:
        if self.max_file_mb <= 0 or self.max_pixels <= 0:
            raise ConfigError(f"{key}: max_file_mb and max_pixels must be positive")


# ----------------------------------------------------------------- embeddings


@dataclass(frozen=True)
class EmbeddingsConfig:
    """Image embeddings shared by dedup, quality and split (see curate/embeddings.py).

    MobileNetV2 ImageNet features, pooled to 1280-d and L2-normalised, cached per image id.
    """

    model: Literal["mobilenet_v2"] = "mobilenet_v2"
    image_size: int = 224          # images are squashed to image_size x image_size
    batch_size: int = 32           # images per forward pass (and per worker task)
    threads_per_worker: int = 1    # torch CPU threads per worker process; 0 = cores / workers
    device: Device = "auto"        # auto: a CUDA GPU where the worker has one, else the CPU

    def validate(self, key: str) -> None:
        if not 32 <= self.image_size <= 1024:
            raise ConfigError(f"{key}.image_size: got {self.image_size}, expected 32..1024")
        if self.batch_size < 1 or self.threads_per_worker < 0:
            raise ConfigError(f"{key}: batch_size must be >= 1 and threads_per_worker >= 0")


# ---------------------------------------------------------------------- dedup

KeepKey = Literal["framing", "resolution", "sharpness", "bytes", "source_priority"]


@dataclass(frozen=True)
class VerifyConfig:
    """Reposts (mirrored, cropped, captioned, letterboxed, rotated copies): each image's most
    similar images by embedding are candidates, and a candidate pair is linked only when
    local features fit a similarity transform and the aligned pixels agree
    (curate/dedup/verify.py)."""

    enabled: bool = True
    candidates: int = 12           # nearest images per image (embedding cosine) to verify
    candidate_cosine: float = 0.5  # ... that are at least this similar
    max_side: int = 448            # features and the pixel check on the image scaled to this
    features: int = 800            # SIFT keypoints per image
    min_inliers: int = 10          # features that agree on one transform
    min_agreement: float = 0.8     # share of textured overlap patches whose pixels agree
    min_coverage: float = 0.3      # overlap / the smaller image

    def validate(self, key: str) -> None:
        if self.candidates < 1 or not -1.0 <= self.candidate_cosine < 1.0:
            raise ConfigError(f"{key}: candidates must be >= 1 and candidate_cosine in [-1, 1)")
        if not 64 <= self.max_side <= 4096 or self.features < 16 or self.min_inliers < 3:
            raise ConfigError(f"{key}: expected max_side 64..4096, features >= 16 and "
                              "min_inliers >= 3")
        if not (0.0 < self.min_agreement <= 1.0 and 0.0 < self.min_coverage <= 1.0):
            raise ConfigError(f"{key}: min_agreement and min_coverage must be in (0, 1]")


@dataclass(frozen=True)
class DedupConfig:
    """Near-duplicate search (curate/stages/dedup.py); distances are inclusive thresholds."""

    hash_method: Literal["phash", "dhash", "whash", "colorhash"] = "phash"
    hash_size: int = 8             # 8 -> 64-bit hashes (colorhash: binbits, 14*binbits bits)
    hash_threshold: int = 6        # a pair is a duplicate at Hamming distance <= this (bits)
    fast_decode: bool = True       # JPEG DCT-domain 1/2 decode for hashing (tested: same hash)
    embeddings: bool = True        # also link pairs by embedding cosine similarity
    cosine_threshold: float = 0.975  # ... when cosine >= this
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    #: "framing" prefers a copy that is neither a crop of another nor framed by added bars,
    #: captions or app chrome (known for pairs linked by verification).
    keep: tuple[KeepKey, ...] = ("framing", "resolution", "sharpness", "bytes",
                                 "source_priority")
    sharpness_tolerance: float = 0.1  # sharpness within 10% counts as a tie (JPEG blocks
                                      # make a re-encoded copy look a few % "sharper")
    source_priority: tuple[str, ...] = ()  # source_uri globs, most trusted first
    report_max_clusters: int = 500 # clusters shown in reports/duplicates.html (largest first)
    thumb_px: int = 160            # longer side of report thumbnails

    def validate(self, key: str) -> None:
        bits = 14 * self.hash_size if self.hash_method == "colorhash" else self.hash_size ** 2
        if self.hash_size < 2 or bits > 64:
            raise ConfigError(f"{key}.hash_size: got {self.hash_size}, expected 2..8 "
                              "(2..4 for colorhash): hashes must fit in 64 bits")
        if self.hash_method == "whash" and self.hash_size & (self.hash_size - 1):
            raise ConfigError(f"{key}.hash_size: got {self.hash_size}, whash needs a power of 2")
        if not 0 <= self.hash_threshold < bits:
            raise ConfigError(f"{key}.hash_threshold: got {self.hash_threshold}, expected "
                              f"0..{bits - 1} for {bits}-bit hashes")
        if not 0.0 < self.cosine_threshold <= 1.0:
            raise ConfigError(f"{key}.cosine_threshold: got {self.cosine_threshold}, "
                              "expected 0 < value <= 1")
        if not 0.0 <= self.sharpness_tolerance < 1.0:
            raise ConfigError(f"{key}.sharpness_tolerance: got {self.sharpness_tolerance}, "
                              "expected 0 <= value < 1")
        if len(set(self.keep)) != len(self.keep):
            raise ConfigError(f"{key}.keep: got {list(self.keep)}, keys must be distinct")
        if self.report_max_clusters < 0 or not 32 <= self.thumb_px <= 512:
            raise ConfigError(f"{key}: report_max_clusters must be >= 0 and thumb_px 32..512")


# ----------------------------------------------------------------------- tags


@dataclass(frozen=True)
class TagsProjectConfig:
    """The Label Studio project `curate tags push` creates or updates (found by title)."""

    title: str = "gan-curate"
    description: str = "Tag each image: category (or reject), crop box, alignment keypoints."
    label_config: Path | None = None  # your own XML; null = generated from categories/keypoints
    annotators_per_task: int = 1  # Label Studio's "maximum annotations" (overlap)

    def validate(self, key: str) -> None:
        if len(self.title.strip()) < 3:
            raise ConfigError(f"{key}.title: got {self.title!r}, Label Studio needs >= 3 "
                              "characters")
        if self.annotators_per_task < 1:
            raise ConfigError(f"{key}.annotators_per_task: got {self.annotators_per_task}, "
                              "expected >= 1")


@dataclass(frozen=True)
class TagsImagesConfig:
    """How Label Studio's browser gets the image bytes (see README, "Serving images")."""

    serve: Literal["local-files", "url"] = "local-files"
    document_root: Path | None = None  # server's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT; null = cwd
    url_base: str | None = None  # serve: url -> <url_base>/<ab>/<cd>/<id>.<ext>

    def validate(self, key: str) -> None:
        if self.serve == "url" and not self.url_base:
            raise ConfigError(f"{key}.url_base: required when {key}.serve is 'url' "
                              "(e.g. https://cdn.example.com/store)")


@dataclass(frozen=True)
class TagsPushConfig:
    """Which images `curate tags push` sends to annotators."""

    manifest: Path = Path("data/ingest/manifest.parquet")
    strategy: Literal["untagged", "random", "uncertain", "diverse"] = "untagged"
    n: int | None = None  # at most this many new tasks per push; null = all (random needs n)
    seed: int = 0
    batch_size: int = 500  # tasks per import request

    def validate(self, key: str) -> None:
        if self.n is not None and self.n < 1:
            raise ConfigError(f"{key}.n: got {self.n}, expected >= 1 or null (all)")
        if self.batch_size < 1:
            raise ConfigError(f"{key}.batch_size: got {self.batch_size}, expected >= 1")


@dataclass(frozen=True)
class TagsMergeConfig:
    """How several annotators' answers for one image become one verdict."""

    reject: Literal["any", "majority", "never"] = "any"  # when an image counts as rejected


@dataclass(frozen=True)
class TagsConfig:
    categories: tuple[str, ...] = ("soles", "pov")
    reject_choice: str = "reject"
    keypoints: tuple[str, ...] = ("heel", "toe")
    #: The export file `dvc repro` normalises; null = no tags yet (empty tag tables).
    snapshot: Path | None = None
    export: Path = Path("data/tags/export.json")  # where `curate tags pull` writes the snapshot
    timeout_s: float = 120.0
    project: TagsProjectConfig = field(default_factory=TagsProjectConfig)
    images: TagsImagesConfig = field(default_factory=TagsImagesConfig)
    push: TagsPushConfig = field(default_factory=TagsPushConfig)
    merge: TagsMergeConfig = field(default_factory=TagsMergeConfig)

    def validate(self, key: str) -> None:
        names = (*self.categories, self.reject_choice)
        if any(not n.strip() for n in names) or len(set(names)) != len(names):
            raise ConfigError(f"{key}.categories: got {list(self.categories)} with reject_choice "
                              f"{self.reject_choice!r}; names must be non-empty and distinct")
        if len(set(self.keypoints)) != len(self.keypoints) or any(
                not k.strip() for k in self.keypoints):
            raise ConfigError(f"{key}.keypoints: got {list(self.keypoints)}, "
                              "expected distinct non-empty names")
        if self.timeout_s <= 0:
            raise ConfigError(f"{key}.timeout_s: got {self.timeout_s}, expected > 0")


# --------------------------------------------------------------------- quality


@dataclass(frozen=True)
class Threshold:
    """When a quality check flags an image.

    `absolute`: flag values past `value`, in the check's own unit (see the report);
    `percentile`: flag the worst `value` percent of the images judged; `disabled`: never
    flag (the value is still measured and shown).
    """

    mode: Literal["absolute", "percentile", "disabled"]
    value: float = 0.0

    def validate(self, key: str) -> None:
        if self.mode == "percentile" and not 0.0 < self.value < 100.0:
            raise ConfigError(f"{key}.value: got {self.value}, a percentile mode needs "
                              "0 < value < 100 (the percent of images to flag)")


def _t(mode: Literal["absolute", "percentile", "disabled"], value: float = 0.0) -> Any:
    return field(default_factory=lambda: Threshold(mode, value))


@dataclass(frozen=True)
class QualityChecks:
    """One threshold per quality check (curate/quality/checks.py documents each value and
    unit); the checks judged from a matte are configured under `matte.checks`."""

    blurry: Threshold = _t("absolute", -0.8)
    dark: Threshold = _t("absolute", 0.2)
    overexposed: Threshold = _t("absolute", 0.5)
    low_contrast: Threshold = _t("absolute", 0.025)
    low_information: Threshold = _t("absolute", 2.0)
    grayscale: Threshold = _t("absolute", 3.0)
    noisy: Threshold = _t("absolute", 1.5)
    tiny: Threshold = _t("absolute", 256.0)
    extreme_aspect: Threshold = _t("absolute", 3.0)
    off_subject: Threshold = _t("absolute", 0.34)
    colour_style: Threshold = _t("disabled", 3.0)


@dataclass(frozen=True)
class MatteChecks:
    """Thresholds of the checks the matte stage judges from its masks and composites (the same
    check machinery as quality's: curate/quality/checks.py, source "matte")."""

    poor_separation: Threshold = _t("absolute", 0.3)
    small_foreground: Threshold = _t("absolute", 0.02)
    soft_matte: Threshold = _t("absolute", 0.5)
    matte_off_subject: Threshold = _t("absolute", 2.7)


@dataclass(frozen=True)
class EmbeddingOutlierConfig:
    """How the off-subject score is computed from MobileNetV2 embeddings."""

    method: Literal["knn", "isolation_forest"] = "knn"
    k: int = 5                     # neighbours averaged by the kNN distance
    per_distribution: bool = True  # kNN against each tagged category, keep the closest
    n_estimators: int = 200        # isolation forest trees
    seed: int = 0

    def validate(self, key: str) -> None:
        if self.k < 1 or self.n_estimators < 1:
            raise ConfigError(f"{key}: k and n_estimators must be >= 1")


@dataclass(frozen=True)
class QualityReportConfig:
    """What reports/outliers.html shows."""

    gallery: int = 60      # images per reason gallery (worst first)
    borderline: int = 8    # images shown on each side of each threshold
    # Link to an image's Label Studio task; {task_id} is replaced. Empty = no link.
    task_url: str = "http://localhost:8080/tasks/{task_id}"

    def validate(self, key: str) -> None:
        if self.gallery < 1 or self.borderline < 0:
            raise ConfigError(f"{key}: gallery must be >= 1 and borderline >= 0")


@dataclass(frozen=True)
class QualityConfig:
    work_side: int = 256           # shorter side of the working image metrics are measured on
    thumb_px: int = 128            # longer side of report thumbnails (cached with the metrics)
    annotator_rejects: bool = True # images rejected in Label Studio are flagged too
    embedding: EmbeddingOutlierConfig = field(default_factory=EmbeddingOutlierConfig)
    checks: QualityChecks = field(default_factory=QualityChecks)
    report: QualityReportConfig = field(default_factory=QualityReportConfig)

    def validate(self, key: str) -> None:
        if not 32 <= self.work_side <= 4096 or not 16 <= self.thumb_px <= 1024:
            raise ConfigError(f"{key}: work_side must be 32..4096 and thumb_px 16..1024")


# ----------------------------------------------------------------------- matte


@dataclass(frozen=True)
class AlphaMattingConfig:
    """rembg's optional closed-form alpha matting refinement (slow; finer hair/edges)."""

    enabled: bool = False
    foreground_threshold: int = 240
    background_threshold: int = 10
    erode_size: int = 10

    def validate(self, key: str) -> None:
        if not 0 <= self.background_threshold < self.foreground_threshold <= 255:
            raise ConfigError(f"{key}: expected 0 <= background_threshold < "
                              "foreground_threshold <= 255")
        if self.erode_size < 0:
            raise ConfigError(f"{key}.erode_size: got {self.erode_size}, expected >= 0")


@dataclass(frozen=True)
class BorderKeyConfig:
    """Plain-background keying: the background colour is estimated from the image border."""

    border: float = 0.03     # border band width, fraction of the shorter side
    tolerance: float = 18.0  # colour distance (CIE76 Delta E) still counted as background
    feather_px: float = 1.5  # edge softening (Gaussian sigma, pixels of the working size)
    work_side: int = 512     # keying runs at this shorter side, the mask is resized back

    def validate(self, key: str) -> None:
        if not 0 < self.border < 0.5 or self.tolerance <= 0 or self.feather_px < 0:
            raise ConfigError(f"{key}: expected 0 < border < 0.5, tolerance > 0, feather_px >= 0")
        if self.work_side < 32:
            raise ConfigError(f"{key}.work_side: got {self.work_side}, expected >= 32")


@dataclass(frozen=True)
class SubjectConfig:
    """Subject selection on the matte (curate/matte/subject.py): keep the subject's parts and
    cut attached clutter, with a model of the subject learned from the collection itself."""

    enabled: bool = True
    sample: int = 200        # images the subject model is learned from (the lowest image ids)
    rounds: int = 4          # self-training rounds (each refits on the sample it just cleaned)
    train_side: int = 160    # longer side of the sample images during self-training
    work_side: int = 400     # longer side at which each image's matte is cut
    min_images: int = 20     # fewer live images: no model, parts chosen by tags or position
    refit_below: float = 0.9  # refit when less than this share of the sample is the model's

    def validate(self, key: str) -> None:
        if self.sample < 1 or self.rounds < 1 or self.min_images < 1:
            raise ConfigError(f"{key}: sample, rounds and min_images must be >= 1")
        if self.train_side < 64 or self.work_side < 64:
            raise ConfigError(f"{key}: train_side and work_side must be >= 64")
        if not 0 < self.refit_below <= 1:
            raise ConfigError(f"{key}.refit_below: got {self.refit_below}, expected 0 < x <= 1")


@dataclass(frozen=True)
class GrabCutConfig:
    """OpenCV GrabCut seeded by border keying (a fallback that needs no model)."""

    margin: float = 0.04     # inset of the fallback rectangle when keying finds nothing
    iterations: int = 3
    work_side: int = 384

    def validate(self, key: str) -> None:
        if not 0 < self.margin < 0.45 or self.iterations < 1 or self.work_side < 32:
            raise ConfigError(f"{key}: expected 0 < margin < 0.45, iterations >= 1, "
                              "work_side >= 32")


@dataclass(frozen=True)
class MatteConfig:
    method: Literal["rembg", "border_key", "grabcut"] = "rembg"
    model: Literal["u2net", "u2netp"] = "u2net"  # rembg model (u2netp: ~4x faster, coarser)
    threads_per_worker: int = 1  # ONNX Runtime threads in each worker process
    device: Device = "auto"  # U^2-Net and the subject model's features: auto | cpu | cuda
    post_process_mask: bool = False  # rembg's morphological clean-up of the mask
    alpha_matting: AlphaMattingConfig = field(default_factory=AlphaMattingConfig)
    border_key: BorderKeyConfig = field(default_factory=BorderKeyConfig)
    grabcut: GrabCutConfig = field(default_factory=GrabCutConfig)
    subject: SubjectConfig = field(default_factory=SubjectConfig)
    checks: MatteChecks = field(default_factory=MatteChecks)
    png_compress_level: int = 1  # 0-9: output PNGs are lossless either way; 1 is fast
    #: Longer side of composites and masks: bigger images are matted at this size (memory stays
    #: bounded for a 100-megapixel photo; prepare crops at most 1024 or so from it anyway).
    max_side: int = 4096

    def validate(self, key: str) -> None:
        if self.max_side < 256:
            raise ConfigError(f"{key}.max_side: got {self.max_side}, expected >= 256")
        if self.threads_per_worker < 1:
            raise ConfigError(f"{key}.threads_per_worker: got {self.threads_per_worker}, "
                              "expected >= 1")
        if not 0 <= self.png_compress_level <= 9:
            raise ConfigError(f"{key}.png_compress_level: got {self.png_compress_level}, "
                              "expected 0..9")


# ----------------------------------------------------------------- split / prepare


AlignMethod = Literal["keypoints", "box", "mask", "face", "center"]
PROPOSAL_NAME = re.compile(r"cluster_\d+")


@dataclass(frozen=True)
class DistributionConfig:
    """One sub-distribution: the tag categories it gathers and how its images are aligned."""

    name: str
    categories: tuple[str, ...] = ()
    #: Proposed groups (`cluster_<n>`, see split.proposals) whose images it takes when neither a
    #: tag nor a confident neighbour decides: how a user names a proposal without tagging.
    proposals: tuple[str, ...] = ()
    #: Takes every live image that nothing else assigns (the first run's `all`, before any
    #: categories exist). At most one distribution may.
    catch_all: bool = False
    align: tuple[AlignMethod, ...] = ("keypoints", "box", "mask", "center")  # fallback order

    def validate(self, key: str) -> None:
        if not self.name or not all(c.isalnum() or c in "-_" for c in self.name):
            raise ConfigError(f"{key}.name: got {self.name!r}, expected letters, digits, - or _ "
                              "(it names files and dvc stages)")
        bad = [p for p in self.proposals if not PROPOSAL_NAME.fullmatch(p)]
        if bad:
            raise ConfigError(f"{key}.proposals: got {bad[0]!r}, expected a proposed group's "
                              "name such as 'cluster_0' (see data/split/report.json)")


@dataclass(frozen=True)
class SplitConfig:
    """Which images belong to which distribution (tags first, then k-NN on embeddings)."""

    distributions: tuple[DistributionConfig, ...] = (
        DistributionConfig("soles", ("soles",)), DistributionConfig("pov", ("pov",)))
    k: int = 10  # neighbours voting for an untagged image
    #: Below it: `unassigned` (and a candidate for `tags push --strategy uncertain`).
    min_confidence: float = 0.7
    #: With no tags at all (or when a distribution names proposals), k-means proposes this many
    #: groups (`cluster_0` largest, ...); null = as many as there are distributions, at least 2.
    proposals: int | None = None
    cluster_when_untagged: bool = True  # no tags at all: propose k-means groups
    seed: int = 0

    @property
    def n_proposals(self) -> int:
        return self.proposals or max(2, len(self.distributions))

    def validate(self, key: str) -> None:
        names = [d.name for d in self.distributions]
        if not names or len(set(names)) != len(names):
            raise ConfigError(f"{key}.distributions: got {names}, expected at least one, unique")
        if self.k < 1 or not 0.0 <= self.min_confidence <= 1.0:
            raise ConfigError(f"{key}: k must be >= 1 and min_confidence in [0, 1]")
        if self.proposals is not None and self.proposals < 2:
            raise ConfigError(f"{key}.proposals: got {self.proposals}, expected >= 2 or null")
        if sum(d.catch_all for d in self.distributions) > 1:
            raise ConfigError(f"{key}.distributions: at most one may set catch_all: true")
        claimed: dict[str, str] = {}
        for d in self.distributions:
            for p in d.proposals:
                if int(p.split("_")[1]) >= self.n_proposals:
                    raise ConfigError(f"{key}.distributions[{d.name}].proposals: {p!r} does not "
                                      f"exist: the split proposes cluster_0 .. "
                                      f"cluster_{self.n_proposals - 1} ({key}.proposals)")
                if p in claimed:
                    raise ConfigError(f"{key}.distributions: {p!r} is named by both "
                                      f"{claimed[p]!r} and {d.name!r}")
                claimed[p] = d.name


@dataclass(frozen=True)
class KeypointTemplateConfig:
    """Two named annotator keypoints and where they land, as fractions of the output side."""

    names: tuple[str, ...] = ("heel", "toe")
    targets: tuple[tuple[float, ...], ...] = ((0.5, 0.8), (0.5, 0.2))

    def validate(self, key: str) -> None:
        if len(self.names) not in (0, 2) or len(self.targets) != 2 or any(
                len(t) != 2 for t in self.targets):
            raise ConfigError(f"{key}: expected two names (or none: no keypoint alignment) and "
                              "two [x, y] targets")


@dataclass(frozen=True)
class PrepareConfig:
    """Align, crop and resize to a square, augment, export one StyleGAN zip per distribution."""

    resolution: int = 512
    source: Literal["matte", "original"] = "matte"  # matte: background removed onto `background`
    pad: Literal["background", "reflect"] = "background"
    max_upscale: float = 2.0  # images needing more are left out (listed in the card), not blurred
    box_margin: float = 0.1
    mask_margin: float = 0.08
    #: Reframe box and mask crops to frame the subject as the keypoint crops do (measured on
    #: the images that have both; see stages.prepare.calibrate_framing).
    match_keypoint_framing: bool = True
    keypoints: KeypointTemplateConfig = field(default_factory=KeypointTemplateConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # see curate/prepare/augment.py
    png_compression: int = 3  # 0-9, lossless either way
    grid: int = 64  # images in the dataset card's sample grid
    face_device: Device = "auto"  # MTCNN face detection (align: face): auto | cpu | cuda

    def validate(self, key: str) -> None:
        if self.resolution < 8 or self.resolution & (self.resolution - 1):
            raise ConfigError(f"{key}.resolution: got {self.resolution}, expected a power of two "
                              ">= 8 (StyleGAN needs one)")
        if self.max_upscale < 1.0:
            raise ConfigError(f"{key}.max_upscale: got {self.max_upscale}, expected >= 1")


# ----------------------------------------------------------------- top level


@dataclass(frozen=True)
class DemoConfig:
    """The generated demo collection (`curate demo-data`), when the pipeline makes it: the
    demo's dvc.yaml has a stage that runs the generator with these, so DVC versions its
    output like any raw input. Absent from a project on a user's own photos."""

    n_base: int = 420  # base photos before the planted cases, which scale with it
    seed: int = 0

    def validate(self, key: str) -> None:
        if self.n_base < 1:
            raise ConfigError(f"{key}.n_base: got {self.n_base}, expected 1 or more")


@dataclass(frozen=True)
class Params:
    """All of params.yaml. Sections of later stages are added as they land."""

    workers: int = 0
    background: tuple[int, ...] = (255, 255, 255)
    paths: PathsConfig = field(default_factory=PathsConfig)
    demo: DemoConfig | None = None  # the demo pipeline only: its generated raw inputs
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    embeddings: EmbeddingsConfig = field(default_factory=EmbeddingsConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    tags: TagsConfig = field(default_factory=TagsConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    matte: MatteConfig = field(default_factory=MatteConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    train: dict[str, Any] = field(default_factory=dict)  # validated by train.config

    def validate(self, key: str) -> None:
        if self.workers < 0:
            raise ConfigError(f"workers: got {self.workers}, expected 0 (all cores) or more")
        if len(self.background) != 3 or not all(0 <= c <= 255 for c in self.background):
            raise ConfigError(f"background: got {list(self.background)}, expected [R, G, B] 0-255")
        self._check_names_across_sections()

    def _check_names_across_sections(self) -> None:
        """Names one section gives and another uses must match: a typo would otherwise surface
        late (no keypoint alignment, or "no live images assigned" after hours of curation)."""
        labels = self.tags.keypoints
        unknown = [n for n in self.prepare.keypoints.names if n not in labels]
        if unknown:
            raise ConfigError(f"prepare.keypoints.names: {unknown} not among tags.keypoints "
                              f"{list(labels)} (the names annotators place)")
        for dist in self.split.distributions:
            strays = [c for c in dist.categories if c not in self.tags.categories]
            if strays:
                raise ConfigError(f"split.distributions[{dist.name}].categories: {strays} not "
                                  f"among tags.categories {list(self.tags.categories)}")

    @property
    def n_workers(self) -> int:
        return self.workers or os.cpu_count() or 1


def load_params(path: Path = DEFAULT_PARAMS) -> Params:
    """Read and validate params.yaml's curation sections (`train` is `train`'s to validate)."""
    try:
        return from_mapping(Params, read_params(path), "")
    except ConfigError as exc:
        raise ConfigError(exc.args[0] if str(exc).startswith(str(path)) else f"{path}: {exc}"
                          ) from exc
