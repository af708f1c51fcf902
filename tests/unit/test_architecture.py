"""The layering the code promises (ARCHITECTURE.md), checked from the imports themselves:
`core` imports neither `curate` nor `train`, those two never import each other, no module
imports itself back through others, and dvc.yaml lists every source file each stage runs."""

from __future__ import annotations

from pathlib import Path

import yaml

from curate.project.codedeps import import_graph, module_level_imports, reached_files
from curate.project.render import STAGE_ENTRIES

REPO = Path(__file__).resolve().parents[2]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def test_no_import_cycles() -> None:
    assert _cycles(import_graph(REPO)) == []


def test_the_cycle_finder_finds_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_core_curate_and_train_keep_their_layers() -> None:
    crossings = [(a, b) for a, deps in import_graph(REPO).items() for b in deps
                 if (a.startswith("core") and not b.startswith("core"))
                 or (a.startswith("curate") and b.startswith("train"))
                 or (a.startswith("train") and b.startswith("curate"))]
    assert crossings == []


def test_dvc_yaml_lists_the_code_each_stage_runs() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for stage, (module, cli) in STAGE_ENTRIES.items():
        spec = stages[stage].get("do", stages[stage])
        listed = [REPO / d for d in spec["deps"]]
        needed = {*reached_files(REPO, module), REPO / cli,
                  *(f for m in module_level_imports(REPO, REPO / cli)
                    for f in reached_files(REPO, m))}
        missing = [f.relative_to(REPO).as_posix() for f in needed
                   if not any(f == d or d in f.parents for d in listed)]
        assert not missing, f"{stage}: dvc.yaml does not list {missing}"
