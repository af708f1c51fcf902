"""Edit params.yaml in place, keeping its comments and layout (ruamel's round trip).

Used by the commands that turn a user's decision into params: naming a proposed group
(`curate split --name cluster_0=soles`) and using a fresh pull (`curate tags pull --use`).
The file is checked by the normal loader before it replaces the old one, so a bad edit
never lands.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from core import atomic
from core.config import ConfigError
from curate.config import load_params


def _yaml() -> YAML:
    y = YAML()
    y.preserve_quotes = True
    y.width = 100
    y.indent(mapping=2, sequence=4, offset=2)
    y.representer.add_representer(  # `key: null` as written, not ruamel's bare `key:`
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null"))
    return y


def _load(path: Path) -> Any:
    return _yaml().load(Path(path).read_text(encoding="utf-8"))


def _save(path: Path, data: Any) -> None:
    buf = io.StringIO()
    _yaml().dump(data, buf)
    staged = Path(path).with_name(f".{Path(path).name}.edit")
    staged.write_text(buf.getvalue(), encoding="utf-8")
    try:
        load_params(staged)  # the edited file must still be valid params
    finally:
        text = staged.read_text(encoding="utf-8")
        staged.unlink()
    atomic.write_text(Path(path), text)


def _flow_list(items: list[str]) -> CommentedSeq:
    seq = CommentedSeq(items)
    seq.fa.set_flow_style()
    return seq


def name_proposals(path: Path, names: dict[str, str]) -> list[str]:
    """Give proposed groups to distributions (created when new); returns what was done.

    ``names`` maps ``cluster_<i>`` to a distribution name. A new distribution gathers the tag
    category of the same name when there is one. A group is taken from any distribution that
    had it. A catch-all distribution left with nothing to catch (every proposed group named)
    is removed, since its prepare stage would stop on an empty dataset.
    """
    data = _load(path)
    split = data.setdefault("split", CommentedMap())
    dists = split.setdefault("distributions", CommentedSeq())
    categories = set((data.get("tags") or {}).get("categories") or [])
    done = []
    for proposal, name in names.items():
        for d in dists:
            if d.get("name") != name and proposal in (d.get("proposals") or []):
                d["proposals"].remove(proposal)
                done.append(f"{proposal} no longer goes to {d['name']}")
        target = next((d for d in dists if d.get("name") == name), None)
        if target is None:
            target = CommentedMap(name=name)
            if name in categories:
                target["categories"] = _flow_list([name])
            catch_all = next((d for d in dists if d.get("catch_all")), None)
            align = list((catch_all or {}).get("align") or ["keypoints", "box", "mask", "center"])
            target["proposals"] = _flow_list([])
            target["align"] = _flow_list(align)
            dists.append(target)
            done.append(f"added distribution {name}")
        if "proposals" not in target:
            target["proposals"] = _flow_list([])
        if proposal not in target["proposals"]:
            target["proposals"].append(proposal)
            done.append(f"{proposal} -> {name}")
    params = load_params(path)
    named = {p for d in dists for p in (d.get("proposals") or [])}
    if {f"cluster_{i}" for i in range(params.split.n_proposals)} <= named:
        for d in [d for d in dists if d.get("catch_all")]:
            dists.remove(d)
            done.append(f"removed {d['name']} (catch_all): every proposed group is named now, "
                        "so it would catch nothing")
    try:
        _save(path, data)
    except ConfigError as exc:
        raise ConfigError(f"naming {names} would make params.yaml invalid: {exc}") from None
    return done


def use_categories(path: Path, tagged: list[str]) -> list[str]:
    """Give each tagged category a distribution of its own (when none gathers it yet).

    Called when a user adopts a pull (`curate tags pull --use`): once annotators have put
    images in categories, those are the datasets to build. The catch-all distribution of a first
    run is then removed: it would gather the images the tags leave unsure, a mixture no GAN
    should learn (they stay `unassigned`, for `curate tags push --strategy uncertain`).
    """
    data = _load(path)
    dists = data.setdefault("split", CommentedMap()).setdefault("distributions", CommentedSeq())
    gathered = {c for d in dists for c in (d.get("categories") or [])}
    names = {d.get("name") for d in dists}
    catch_all = next((d for d in dists if d.get("catch_all")), None)
    align = list((catch_all or {}).get("align") or ["keypoints", "box", "mask", "center"])
    done = []
    for category in tagged:
        if category in gathered:
            continue
        if category in names:
            raise ConfigError(f"split.distributions: {category!r} exists but does not gather "
                              f"the tag category {category!r}: add it to its categories")
        dists.append(CommentedMap(name=category, categories=_flow_list([category]),
                                  align=_flow_list(align)))
        done.append(f"added distribution {category} (tag category {category})")
    if done and catch_all is not None:
        dists.remove(catch_all)
        done.append(f"removed {catch_all['name']} (catch_all): the tag categories have "
                    "distributions now; images the tags leave unsure stay unassigned")
    if done:
        _save(path, data)
    return done


def set_key(path: Path, dotted: str, value: Any) -> None:
    """Set one key (``tags.snapshot``) of params.yaml, creating its sections as needed."""
    data = _load(path)
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, CommentedMap())
    node[last] = value
    _save(path, data)
