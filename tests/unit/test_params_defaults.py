"""params.yaml against the code: the dataclasses hold the defaults, params.yaml shows every
curation key with its value, and the two disagree only where the demo means to (its own inputs,
a CPU-sized training run). A default changed in one place and not the other fails here."""

from __future__ import annotations

import copy
import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.config import ConfigError, _coerce, from_mapping
from curate.config import Params
from train.config import train_config_from_mapping

REPO = Path(__file__).resolve().parents[2]

#: Where the demo's params.yaml differs from the code on purpose.
DEMO_OVERRIDES: dict[str, Any] = {
    "ingest.sources": [{"kind": "folder", "path": "data/demo/raw", "include": ["*"],
                        "exclude": [".*", "*/.*"]}],           # the demo's photos
    "tags.snapshot": "data/demo/labelstudio_export.json",        # the demo's annotations
    "demo": {"n_base": 420, "seed": 0},  # the demo pipeline generates its raw inputs
    # train: the `quick` preset's run-management cadence, for minutes on a CPU
    "train.tick_kimg": 0.5,
    "train.checkpoint_kimg": 2,
    "train.sample_kimg": 2,
}


def _differences(obj: Any, data: dict[str, Any], key: str, missing: list[str],
                 diffs: dict[str, Any], skip: tuple[str, ...] = ()) -> None:
    """Walk dataclass instance `obj` against the mapping: keys it lacks, values that differ."""
    hints = typing.get_type_hints(type(obj))
    for field in dataclasses.fields(obj):
        name = f"{key}.{field.name}" if key else field.name
        if name in skip:
            continue
        if field.name not in data:
            missing.append(name)
            continue
        default = getattr(obj, field.name)
        if dataclasses.is_dataclass(default) and isinstance(data[field.name], dict):
            _differences(default, data[field.name], name, missing, diffs, skip)
        elif _coerce(data[field.name], hints[field.name], name) != default:
            diffs[name] = data[field.name]


def test_params_yaml_shows_every_curation_key_with_the_code_default() -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    missing: list[str] = []
    diffs: dict[str, Any] = {}
    _differences(Params(), raw, "", missing, diffs, skip=("train",))
    assert missing == [], f"params.yaml lacks {missing}: add them to params.yaml.j2"
    assert diffs == {k: v for k, v in DEMO_OVERRIDES.items() if not k.startswith("train.")}


def test_the_train_section_differs_from_its_preset_only_where_listed() -> None:
    """The train section names a preset (the recipe's defaults) and the run-management keys;
    a key written there with the preset's own value would hide a later change of the preset."""
    section = yaml.safe_load((REPO / "params.yaml").read_text())["train"]
    expanded = train_config_from_mapping({"preset": section["preset"]})
    missing: list[str] = []
    diffs: dict[str, Any] = {}
    written = {k: v for k, v in section.items() if k != "preset"}
    _differences(expanded, written, "train", missing, diffs)
    assert diffs == {k: v for k, v in DEMO_OVERRIDES.items() if k.startswith("train.")}


def test_names_one_section_uses_must_exist_in_the_section_that_gives_them() -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    typo = copy.deepcopy(raw)
    typo["prepare"]["keypoints"]["names"] = ["heel", "tow"]
    with pytest.raises(ConfigError, match=r"prepare.keypoints.names: \['tow'\] not among "
                                          r"tags.keypoints"):
        from_mapping(Params, typo, "")
    stray = copy.deepcopy(raw)
    stray["split"]["distributions"][-1]["categories"] = ["sols"]
    with pytest.raises(ConfigError, match=r"categories: \['sols'\] not among tags.categories"):
        from_mapping(Params, stray, "")
