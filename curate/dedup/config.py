"""The dedup section of params.yaml: hashes, embedding links, repost verification, the keep
policy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from core.config import ConfigError

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
    #: Reposts are straightened by a few degrees or turned by quarter turns (a phone photo
    #: that lost its EXIF orientation); a fit turned further than this from both is two
    #: different images whose textures happen to line up, not a copy. 45 allows any turn.
    max_turn_deg: float = 15.0

    def validate(self, key: str) -> None:
        if self.candidates < 1 or not -1.0 <= self.candidate_cosine < 1.0:
            raise ConfigError(f"{key}: candidates must be >= 1 and candidate_cosine in [-1, 1)")
        if not 64 <= self.max_side <= 4096 or self.features < 16 or self.min_inliers < 3:
            raise ConfigError(f"{key}: expected max_side 64..4096, features >= 16 and "
                              "min_inliers >= 3")
        if not (0.0 < self.min_agreement <= 1.0 and 0.0 < self.min_coverage <= 1.0):
            raise ConfigError(f"{key}: min_agreement and min_coverage must be in (0, 1]")
        if not 0.0 <= self.max_turn_deg <= 45.0:
            raise ConfigError(f"{key}.max_turn_deg: got {self.max_turn_deg}, expected 0..45 "
                              "(45: any turn)")


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
