"""Name registries: the class decorator that files plug-in classes under their `name`.

Checks, raw properties and matte backends are each a family of small classes looked up by the
name params.yaml uses; one decorator files them, so a second class taking a name already taken
fails at import, loudly, instead of silently replacing the first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T", bound=type)


def name_registry(registry: dict[str, Any], kind: str) -> Callable[[T], T]:
    """A class decorator filing each class in `registry` under its `name` attribute."""

    def register(cls: T) -> T:
        name = cls.name  # type: ignore[attr-defined]
        if name in registry:
            raise ValueError(f"{kind} {name!r} registered twice")
        registry[name] = cls
        return cls

    return register
