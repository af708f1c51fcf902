"""Typed configuration loaded from `params.yaml`.

Each stage gets a frozen dataclass. The loader checks every key against the
dataclass fields and every value against its type hint (including `Literal`
choices), so a typo or a bad value stops the run with a message naming the
key, the bad value and what is allowed, instead of a traceback from deep
inside a stage.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

DEFAULT_PARAMS = Path("params.yaml")


class ConfigError(ValueError):
    """A problem in params.yaml, phrased for the person editing it."""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if dataclasses.is_dataclass(tp):
        return f"a mapping with keys {', '.join(f.name for f in dataclasses.fields(tp))}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            type(None): "null", Path: "a path"}.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against type hint `tp`; return it converted (lists to tuples, paths)."""
    origin = typing.get_origin(tp)
    bad = ConfigError(f"{key}: got {value!r}, expected {_type_name(tp)}")
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise bad
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise bad
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise bad
        (item_tp, *_rest) = typing.get_args(tp)
        return tuple(_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, key)
    if tp is type(None):
        if value is not None:
            raise bad
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    if tp is Path:
        if not isinstance(value, str):
            raise bad
        return Path(value)
    raise TypeError(f"unsupported config type {tp!r} for {key}")


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def from_mapping(cls: type, data: Any, key: str) -> Any:
    """Build dataclass `cls` from a YAML mapping, validating keys and values."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{key or 'top level'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(
            f"{key or 'top level'}: unknown key {unknown[0]!r}; allowed keys are {', '.join(names)}"
        )
    kwargs = {name: _coerce(data[name], hints[name], _join(key, name)) for name in data}
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{_join(key, missing[0])}: required key is missing")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(key)
    return obj


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
    allow_private_hosts: bool = False
    user_agent: str = "gan-curate/0.1 (+dataset curation; respects robots of its operator)"

    def validate(self, key: str) -> None:
        for name in ("concurrency", "per_host", "max_redirects"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{key}.{name}: got {getattr(self, name)}, expected >= 1")
        if self.retries < 0 or self.timeout_s <= 0 or self.backoff_s < 0:
            raise ConfigError(f"{key}: retries must be >= 0, timeout_s > 0, backoff_s >= 0")


@dataclass(frozen=True)
class IngestConfig:
    sources: tuple[SourceConfig, ...] = ()
    max_file_mb: float = 64.0
    max_pixels: int = 100_000_000
    scrape: ScrapeConfig = field(default_factory=ScrapeConfig)

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)

    def validate(self, key: str) -> None:
        if self.max_file_mb <= 0 or self.max_pixels <= 0:
            raise ConfigError(f"{key}: max_file_mb and max_pixels must be positive")


# ----------------------------------------------------------------- top level


@dataclass(frozen=True)
class PathsConfig:
    """Where the pipeline keeps its data; relative paths are from the repo root."""

    data: Path = Path("data")
    store: Path = Path("data/store")
    cache: Path = Path(".cache/curate")
    reports: Path = Path("reports")
    models: Path = Path("models/pretrained")


@dataclass(frozen=True)
class Params:
    """All of params.yaml. Sections of later stages are added as they land."""

    workers: int = 0
    background: tuple[int, ...] = (255, 255, 255)
    paths: PathsConfig = field(default_factory=PathsConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)

    def validate(self, key: str) -> None:
        if self.workers < 0:
            raise ConfigError(f"workers: got {self.workers}, expected 0 (all cores) or more")
        if len(self.background) != 3 or not all(0 <= c <= 255 for c in self.background):
            raise ConfigError(f"background: got {list(self.background)}, expected [R, G, B] 0-255")

    @property
    def n_workers(self) -> int:
        return self.workers or os.cpu_count() or 1


def load_params(path: Path = DEFAULT_PARAMS) -> Params:
    """Read and validate params.yaml; a missing file means all defaults."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found: run from the project root or pass --params")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    try:
        return from_mapping(Params, data or {}, "")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
