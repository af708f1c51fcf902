"""The ingest section of params.yaml: sources, file and archive limits, HTTP fetching."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from core.config import ConfigError


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
