"""README.md's performance table is the rendering of bench/results/*.json (bench/table.py).

`tests/unit/bench_results/` holds outputs of the harness benches' `--quick` smoke runs (their
`quick` flag removed), so the renderer's harness-format branches are checked before the full
runs replace the pre-harness files in bench/results/.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench import table

FIXTURES = Path(__file__).parent / "bench_results"


def _rows(rendered: str) -> dict[str, str]:
    """Table lines by their bench cell's script (the last row of a script wins)."""
    out = {}
    for line in rendered.splitlines():
        if line.startswith("| ") and "`bench/" in line:
            out[line.split("`")[1]] = line
    return out


@pytest.mark.parametrize("name", sorted(table.BLOCKS))
def test_readme_tables_are_the_rendering_of_the_result_files(name: str) -> None:
    readme = table.README.read_text()
    assert table.current_block(readme, name) == table.BLOCKS[name](table.RESULTS_DIR), \
        f"README.md's {name} is stale: run `make bench-table`"


def test_scale_table_reads_scale_json(tmp_path: Path) -> None:
    data = json.loads((table.RESULTS_DIR / "scale.json").read_text())
    data["stages"]["dedup"]["images_per_s"] = 123.4
    (tmp_path / "scale.json").write_text(json.dumps(data))
    (row,) = [r for r in table.render_scale(tmp_path).splitlines() if r.startswith("| dedup")]
    assert "| 123 |" in row


def test_every_result_file_is_in_the_table_or_named_in_its_notes() -> None:
    rendered = table.render()
    for path in table.RESULTS_DIR.glob("*.json"):
        assert f"`{path.name}`" in rendered, path.name


def test_no_committed_result_is_a_smoke_run() -> None:
    for path in table.RESULTS_DIR.glob("*.json"):
        assert not json.loads(path.read_text()).get("quick"), path.name


def test_the_header_says_which_way_is_better() -> None:
    header = table.render().splitlines()[0]
    assert "peer time / ours (higher is better; < 1: ours is slower)" in header
    assert "load avg" in header


def test_pre_harness_files_are_marked_and_their_unfair_ratios_withheld() -> None:
    rows = _rows(table.render())
    old = {n for n, d in table.load_results().items() if not table.harnessed(d)}
    if "prepare" in old:
        assert "withheld until re-run" in rows["bench/prepare.py"]
        assert table.PRE_HARNESS in rows["bench/prepare.py"]


def test_harness_results_render_the_fair_figures(tmp_path: Path) -> None:
    for path in table.RESULTS_DIR.glob("*.json"):
        shutil.copy(path, tmp_path)
    for path in FIXTURES.glob("*.json"):
        shutil.copy(path, tmp_path)
    rendered = table.render(tmp_path)
    rows = _rows(rendered)
    prepare = rows["bench/prepare.py"]
    assert "(algorithmic)" in prepare and "dataset_tool's loop as its user runs it" in prepare
    assert "withheld" not in prepare and table.PRE_HARNESS not in prepare
    assert "both cold (headline)" in rows["bench/quality.py"]
    search = next(line for line in rendered.splitlines() if "near-pair search" in line)
    assert "counting our compile time" in search and "withheld" not in search
    assert "turns" in prepare  # the per-turn load stands next to the ratios
    for script in ("bench/tags.py", "bench/ingest.py", "bench/quality.py", "bench/dedup.py",
                   "bench/matte.py"):
        assert table.PRE_HARNESS not in rows[script], script
    assert "push 0.24x and pull 0.52x the bare SDK call" in rows["bench/tags.py"]


def test_the_block_is_replaced_between_the_markers() -> None:
    text = f"before\n{table.BEGIN}\nold\n{table.END}\nafter\n"
    new = table.replace_block(text, "| a |")
    assert new == f"before\n{table.BEGIN}\n| a |\n{table.END}\nafter\n"
    assert table.current_block(new) == "| a |"
