"""Per-image state in a queued DVC experiment: the workspace's, linked, or the copy's own.

`dvc exp run --queue` and `dvc queue start` run each experiment in a temporary copy of the git
workspace (`<workspace>/.dvc/tmp/exps/<tmp>/`), with DVC-tracked files checked out from DVC's
cache. The content store, the per-image caches (SQLite, prepare's crops) and the matte
composites are not in DVC's cache (they grow per image; the manifests pin what they hold), so
the copy starts without them, and every stage would redo every image: a cold run per
experiment. With `paths.experiments: shared` (the default) a stage running in such a copy first
makes those folders symlinks to the same folders of the workspace the experiment was queued
from, which DVC names in `$DVC_ROOT`; the experiment then costs what it changes. Manifests
keep their relative paths, so an experiment's outputs are byte for byte what the same run in
the workspace gives. Run locks resolve the links (core.runlock), so an experiment and a run in
the workspace never write one store at once: the second refuses and names the first. `own`
leaves the copy alone (isolated experiments, in parallel, at the cost of cold runs).

Absolute paths are shared anyway and need nothing here.
"""

from __future__ import annotations

import os
from pathlib import Path

from curate.config import Params

#: Where DVC puts an experiment's temporary copy, under the workspace it was queued from.
EXPERIMENTS_DIR = Path(".dvc") / "tmp" / "exps"


def queued_from(cwd: Path | None = None) -> Path | None:
    """The workspace a queued experiment came from, when `cwd` is its temporary copy; else None.

    DVC sets DVC_ROOT for every stage command: the project's root, or, for a queued
    experiment, the workspace it was queued from. Only a copy under that workspace's
    `.dvc/tmp/exps/` counts, so a DVC_ROOT left in a shell never redirects a run elsewhere.
    """
    root = os.environ.get("DVC_ROOT")
    if not root:
        return None
    workspace = Path(root).resolve()
    here = Path(cwd or Path.cwd()).resolve()
    if here == workspace or not here.is_relative_to(workspace / EXPERIMENTS_DIR):
        return None
    return workspace


def link(folder: Path, workspace: Path, cwd: Path | None = None) -> Path | None:
    """Make relative `folder` (in the copy at `cwd`) a symlink to the same folder of
    `workspace`; return the target, or None when it was left alone (absolute, or a real folder
    with files in it: the copy keeps what it has)."""
    if folder.is_absolute():
        return None
    here = Path(cwd or Path.cwd())
    path, target = here / folder, workspace / folder
    if path.is_symlink() and path.resolve() == target.resolve():
        return target
    if path.is_dir() and not path.is_symlink():
        if any(path.iterdir()):
            return None
        path.rmdir()
    target.mkdir(parents=True, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.link-{os.getpid()}")
    staged.unlink(missing_ok=True)
    os.symlink(target.resolve(), staged, target_is_directory=True)
    os.replace(staged, path)  # atomic: a killed stage leaves no half-made link
    return target


def share_with_workspace(params: Params, *folders: Path) -> list[Path]:
    """In a queued experiment's copy with `paths.experiments: shared`: link the store, the
    per-image caches and `folders` (a stage's own per-image outputs, such as the mattes) to the
    workspace's. Returns what was linked; nothing outside an experiment."""
    if params.paths.experiments != "shared":
        return []
    workspace = queued_from()
    if workspace is None:
        return []
    linked = []
    for folder in (params.paths.store, params.paths.cache, *folders):
        target = link(Path(folder), workspace)
        if target is not None:
            linked.append(target)
    return linked
