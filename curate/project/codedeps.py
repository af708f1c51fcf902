"""The code each pipeline stage runs, found from its imports, for dvc.yaml's `deps`.

DVC reruns a stage when one of its dependencies changes, so a stage's `deps` must name every
source file its command can execute, and nothing more (or every edit reruns everything). Written
by hand they drift: a stage starts importing a helper and dvc.yaml never learns of it. Here the
list is derived: starting from the stage's entry module, every `import` and `from ... import`
(also those inside functions, which the code uses to keep start-up fast) of the project's own
packages is followed to its file, transitively. A package folder whose every module is reached
is written as the folder (its templates and data files come with it).
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

#: The project's own top-level packages: imports of anything else are third-party.
PACKAGES = ("core", "curate", "train")


def _module_file(root: Path, module: str) -> Path | None:
    """The source file of a dotted module name under `root`, if it is one of ours."""
    if module.split(".", 1)[0] not in PACKAGES:
        return None
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _imports(root: Path, path: Path) -> frozenset[str]:
    """Dotted names `path` imports (absolute and relative, at any depth), ours or not."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _module_name(root, path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(names)


def import_graph(root: Path) -> dict[str, set[str]]:
    """Every project module and the project modules it imports (at any depth of its code,
    type-only imports included): what the layering and cycle checks read."""
    graph: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            if "__pycache__" in path.parts:
                continue
            me = _module_name(root, path)
            found = (_module_file(root, name) for name in _imports(root, path))
            graph[me] = {_module_name(root, f) for f in found if f is not None} - {me}
    return graph


def reached_files(root: Path, entry: str) -> set[Path]:
    """Every project source file `entry` (a dotted module) can import, itself included;
    parent packages' `__init__.py` files count (importing a.b runs a/__init__.py)."""
    start = _module_file(root, entry)
    if start is None:
        raise ValueError(f"{entry} is not a module of {', '.join(PACKAGES)} under {root}")
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        name = _module_name(root, path)
        parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        for module in [*parents, *_imports(root, path)]:
            found = _module_file(root, module)
            if found is not None and found not in seen:
                todo.append(found)
    return seen


def _collapse(root: Path, files: set[Path]) -> list[str]:
    """Paths relative to `root`, a folder written once when every module in it (and in its
    sub-packages) is reached."""
    def complete(folder: Path) -> bool:
        return all(p in files for p in folder.rglob("*.py") if "__pycache__" not in p.parts)

    out: set[str] = set()
    for path in files:
        folder = path.parent
        best = None
        while folder != root and (folder / "__init__.py").exists():
            if complete(folder):
                best = folder
            folder = folder.parent
        out.add((best or path).relative_to(root).as_posix())
    # a folder listed makes its files and sub-folders redundant
    folders = {o for o in out if (root / o).is_dir()}
    return sorted(o for o in out
                  if not any(o != f and o.startswith(f + "/") for f in folders))


def module_level_imports(root: Path, path: Path) -> set[str]:
    """The project modules `path` imports at its top level (not inside functions): what a
    command-line module runs for every command, whichever command it is."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = {alias.name for node in tree.body if isinstance(node, ast.Import)
             for alias in node.names}
    names |= {node.module for node in tree.body
              if isinstance(node, ast.ImportFrom) and node.module and not node.level}
    return {n for n in names if _module_file(root, n) is not None}


def code_deps(root: Path, entry: str, cli: str) -> list[str]:
    """dvc.yaml `deps` for a stage whose command line `cli` (a file) runs module `entry`: all
    `entry` reaches, the command-line file, and what it imports at its top level."""
    files = reached_files(root, entry) | {root / cli}
    for module in module_level_imports(root, root / cli):
        files |= reached_files(root, module)
    return _collapse(root, files)
