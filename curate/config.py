"""Typed configuration loaded from `params.yaml`: `Params`, made of one section per stage.

Each stage's section is a frozen dataclass in its own package (`curate/<stage>/config.py`),
beside the code that reads it; this module assembles them, holds the section shared by
several stages (`embeddings`) and the checks across sections. The loader (`core.config`)
checks every key against the dataclass fields and every value against its type hint
(including `Literal` choices), so a typo or a bad value stops the run with a message naming
the key, the bad value and what is allowed, instead of a traceback from deep inside a stage.
"""

from __future__ import annotations

import os
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
from curate.dedup.config import DedupConfig
from curate.demo.config import DemoConfig
from curate.ingest.config import IngestConfig
from curate.matte.config import MatteConfig
from curate.prepare.config import PrepareConfig
from curate.quality.config import QualityConfig
from curate.split.config import SplitConfig
from curate.tags.config import TagsConfig


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
