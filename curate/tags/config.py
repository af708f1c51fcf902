"""The tags section of params.yaml: categories and keypoints, the Label Studio project, how
images are served, pushed and merged."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from core.config import ConfigError


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
