"""The split section of params.yaml: the distributions, k-NN propagation and proposals."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from core.config import ConfigError
from curate.prepare.config import check_targets

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
    #: Where this distribution's two keypoints land, [x, y] fractions of the output side
    #: (null: prepare.keypoints.targets). Framing differs by distribution: the same eyes sit
    #: far apart in a head-and-shoulders crop and close together in a full-body one.
    keypoint_targets: tuple[tuple[float, ...], ...] | None = None
    #: Where `face` alignment puts the detected eyes (null: an FFHQ-like face crop).
    face_targets: tuple[tuple[float, ...], ...] | None = None

    def validate(self, key: str) -> None:
        if not self.name or not all(c.isalnum() or c in "-_" for c in self.name):
            raise ConfigError(f"{key}.name: got {self.name!r}, expected letters, digits, - or _ "
                              "(it names files and dvc stages)")
        for field_name in ("keypoint_targets", "face_targets"):
            check_targets(f"{key}.{field_name}", getattr(self, field_name))
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
