"""A queued experiment's temporary copy shares the workspace's store and caches (links), only
there and only when params ask; run locks see through the links."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.runlock import RunLocked, exclusive, shared
from curate.config import Params, PathsConfig
from curate.workspace import link, queued_from, share_with_workspace


@pytest.fixture
def copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workspace and an experiment's copy inside it, run from the copy as DVC runs it."""
    workspace = tmp_path / "ws"
    here = workspace / ".dvc" / "tmp" / "exps" / "tmpabc"
    here.mkdir(parents=True)
    monkeypatch.chdir(here)
    monkeypatch.setenv("DVC_ROOT", str(workspace))
    return here


def test_only_a_copy_under_the_workspace_counts(copy: Path, monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    workspace = copy.parents[3]
    assert queued_from() == workspace.resolve()
    assert queued_from(workspace) is None  # dvc repro in the workspace itself
    assert queued_from(workspace.parent) is None  # a DVC_ROOT left in some shell
    monkeypatch.delenv("DVC_ROOT")
    assert queued_from() is None


def test_the_copy_links_store_cache_and_mattes_to_the_workspace(copy: Path) -> None:
    workspace = copy.parents[3]
    (workspace / "data" / "store").mkdir(parents=True)
    (workspace / "data" / "store" / "x.jpg").write_bytes(b"x")
    (copy / "data" / "matte" / "out").mkdir(parents=True)  # empty: made by the copy, replaced
    linked = share_with_workspace(Params(), Path("data/matte/out"))
    assert linked == [workspace / "data/store", workspace / ".cache/curate",
                      workspace / "data/matte/out"]
    for rel in ("data/store", ".cache/curate", "data/matte/out"):
        assert (copy / rel).is_symlink() and (copy / rel).resolve() == (workspace / rel).resolve()
    assert (copy / "data/store/x.jpg").read_bytes() == b"x"
    assert share_with_workspace(Params(), Path("data/matte/out")) == linked  # idempotent


def test_own_absolute_and_filled_folders_are_left_alone(copy: Path, tmp_path: Path) -> None:
    assert share_with_workspace(Params(paths=PathsConfig(experiments="own"))) == []
    assert not (copy / "data").exists()
    elsewhere = Params(paths=PathsConfig(store=tmp_path / "store", cache=tmp_path / "cache"))
    assert share_with_workspace(elsewhere) == []
    (copy / "data" / "store").mkdir(parents=True)
    (copy / "data" / "store" / "own.jpg").write_bytes(b"o")
    assert link(Path("data/store"), copy.parents[3]) is None  # the copy keeps what it made
    assert not (copy / "data/store").is_symlink()


def test_outside_an_experiment_nothing_is_linked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                 ) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert share_with_workspace(Params()) == []
    assert not (tmp_path / "data").exists()


def test_a_linked_folder_and_its_target_share_one_lock(tmp_path: Path) -> None:
    target = tmp_path / "ws" / "store"
    target.mkdir(parents=True)
    alias = tmp_path / "copy" / "store"
    alias.parent.mkdir()
    alias.symlink_to(target, target_is_directory=True)
    locks = tmp_path / "locks"
    with exclusive(locks, target), pytest.raises(RunLocked, match="another run"), \
            exclusive(locks, alias):
        pass


def test_shared_holders_coexist_and_exclude_an_exclusive_one(tmp_path: Path) -> None:
    locks, cache = tmp_path / "locks", tmp_path / "cache"
    with shared(locks, cache), shared(locks, cache), pytest.raises(RunLocked), \
            exclusive(locks, cache):
        pass
    with exclusive(locks, cache), pytest.raises(RunLocked, match="pid"), shared(locks, cache):
        pass
