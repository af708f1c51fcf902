"""Typed configuration from params.yaml: the loader every section of every package uses.

Each section is a frozen dataclass. `from_mapping` checks every key against the dataclass
fields and every value against its type hint (including `Literal` choices), so a typo or a bad
value stops the run with a message naming the key, the bad value and what is allowed, instead
of a traceback from deep inside a stage. A dataclass may define `validate(key)` for checks
across its fields, and `resolve_mapping(data, key)` to rewrite its mapping first (the train
section's presets).

The sections shared by the whole pipeline (`paths`, `compute`) live here; each package reads
its own sections (`curate.config.Params`, `train.config.TrainConfig`) with `load_section`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from core.errors import ParamsError

DEFAULT_PARAMS = Path("params.yaml")


class ConfigError(ParamsError, ValueError):
    """A problem in params.yaml, phrased for the person editing it."""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
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
        options = [o for o in typing.get_args(tp) if o is not type(None)]
        if value is not None and len(options) == 1 and dataclasses.is_dataclass(options[0]):
            return _coerce(value, options[0], key)  # a section or null: name the bad key in it
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
    if origin is dict:  # a section another package validates (params.yaml's `train`)
        if not isinstance(value, dict):
            raise bad
        return value
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
    resolve = getattr(cls, "resolve_mapping", None)  # e.g. the train section's presets
    if resolve is not None:
        data = resolve(data, key)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names), key=str)
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


def read_params(path: Path = DEFAULT_PARAMS) -> dict[str, Any]:
    """params.yaml as a plain mapping; ConfigError when it is missing or not YAML."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found: run from the project root or pass --params")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return data or {}


def load_section(path: Path, key: str, cls: type) -> Any:
    """One section of params.yaml as its dataclass (defaults when the section is absent)."""
    try:
        return from_mapping(cls, read_params(path).get(key), key)
    except ConfigError as exc:
        raise ConfigError(exc.args[0] if str(exc).startswith(str(path)) else f"{path}: {exc}"
                          ) from exc


@dataclass(frozen=True)
class PathsConfig:
    """Where the pipeline keeps its data; relative paths are from the repo root."""

    data: Path = Path("data")
    store: Path = Path("data/store")
    cache: Path = Path(".cache/curate")
    reports: Path = Path("reports")
    models: Path = Path("models/pretrained")
    #: A queued DVC experiment runs in a temporary copy of the workspace: `shared` links its
    #: relative store, per-image caches and matte outputs to the workspace's (a warm run);
    #: `own` lets the copy build its own (a cold run). See curate/workspace.py.
    experiments: Literal["shared", "own"] = "shared"


@dataclass(frozen=True)
class ComputeConfig:
    """Where the stages run their per-image work. Not a DVC dependency: the outputs are the
    same on every engine."""

    engine: Literal["local", "dask"] = "local"
    #: dask only: a running scheduler (tcp://host:8786); null starts a LocalCluster of
    #: `workers` processes on this machine for the run.
    address: str | None = None
    connect_timeout_s: float = 30.0

    def validate(self, key: str) -> None:
        if self.address and self.engine != "dask":
            raise ConfigError(f"{key}.address is used only with engine: dask (got engine: "
                              f"{self.engine})")
        if self.connect_timeout_s <= 0:
            raise ConfigError(f"{key}.connect_timeout_s: got {self.connect_timeout_s}, "
                              "expected > 0")


