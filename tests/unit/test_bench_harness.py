"""bench/harness.py: alternating turns, medians and spread, provenance, the published JSON.

Nothing real is timed: the sides are tiny callables that report the seconds they are told to.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from bench import harness
from bench.harness import Bench, PeerEnv, alternate, command_text, spread


def _sides(times: dict[str, list[float]], calls: list[str]) -> dict[str, object]:
    """Sides that record their calls and report their next time from `times`."""
    queues = {k: list(v) for k, v in times.items()}

    def side(name: str):
        def run() -> float:
            calls.append(name)
            return queues[name].pop(0)
        return run

    return {name: side(name) for name in times}


def test_two_sides_alternate_who_goes_first() -> None:
    calls: list[str] = []
    comparison = alternate(_sides({"ours": [1.0, 2.0, 3.0, 4.0],
                                   "peer": [2.0, 4.0, 9.0, 8.0]}, calls), repeat=4)
    assert calls == ["ours", "peer", "peer", "ours", "ours", "peer", "peer", "ours"]
    assert comparison.order() == [["ours", "peer"], ["peer", "ours"]] * 2
    assert comparison.seconds("ours") == [1.0, 2.0, 3.0, 4.0]
    assert comparison.seconds("peer") == [2.0, 4.0, 9.0, 8.0]


def test_three_sides_rotate() -> None:
    calls: list[str] = []
    alternate(_sides({"a": [1.0] * 3, "b": [1.0] * 3, "c": [1.0] * 3}, calls), repeat=3)
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]


def test_speedup_is_the_median_of_the_rounds_ratios() -> None:
    comparison = alternate(_sides({"ours": [1.0, 2.0, 3.0, 4.0],
                                   "peer": [2.0, 4.0, 9.0, 8.0]}, []), repeat=4)
    # per round: 2, 2, 3, 2 -> median 2 (the ratio of the medians would be 6 / 2.5 = 2.4)
    assert comparison.speedup("peer", "ours") == {"median": 2.0, "min": 2.0, "max": 3.0,
                                                  "rounds": 4}
    table = comparison.to_dict(ours="ours")
    assert table["speedup_other_time_over_ours"]["peer"]["median"] == 2.0
    assert table["sides"]["ours"]["median"] == 2.5
    assert set(table["sides"]["peer"]) >= {"median", "min", "max", "spread_pct", "runs",
                                           "load_1m"}
    assert len(table["sides"]["peer"]["load_1m"]) == 4
    assert table["load_1m"]["min"] <= table["load_1m"]["max"]


def test_a_side_reports_seconds_a_mapping_or_nothing() -> None:
    comparison = alternate({"float": lambda: 0.5,
                            "mapping": lambda: {"seconds": 0.25, "zip_mb": 3.0},
                            "none": lambda: None}, repeat=1)
    assert comparison.seconds("float") == [0.5]
    assert comparison.seconds("mapping") == [0.25]
    assert comparison.extras("mapping") == [{"zip_mb": 3.0}]
    assert 0 <= comparison.seconds("none")[0] < 1  # the harness's own wall time


def test_alternate_refuses_no_rounds() -> None:
    with pytest.raises(ValueError):
        alternate({"a": lambda: 1.0}, repeat=0)


def test_spread() -> None:
    s = spread([3.0, 1.0, 2.0])
    assert (s["median"], s["min"], s["max"], s["n"]) == (2.0, 1.0, 3.0, 3)
    assert s["spread_pct"] == 100.0
    assert s["runs"] == [3.0, 1.0, 2.0]  # in turn order


def test_command_text_names_inline_programs_and_cuts_long_arguments() -> None:
    text = command_text(["python", "-c", "import x\nprint(1)", "a b"], label="RUNNER")
    assert text == "python -c '<RUNNER>' 'a b'"
    assert "(1,000 characters)" in command_text(["python", "x" * 1000])


def test_publish_records_provenance_and_the_commands(tmp_path: Path) -> None:
    bench = Bench("unit", argv=["bench/unit.py", "--repeat", "2"])
    bench.record("in-process: curate.stages.x.run_x(params)")
    done = bench.run([sys.executable, "-c", "print(42)"])
    assert done.stdout.strip() == "42"
    comparison = bench.compare({"ours": lambda: 1.0, "peer": lambda: 3.0}, 2)
    path = bench.publish({"speedup": comparison.speedup("peer", "ours")["median"],
                          "comparison": comparison.to_dict(ours="ours")}, results_dir=tmp_path)
    assert path == tmp_path / "unit.json"
    data = json.loads(path.read_text())
    assert data["bench"] == "unit" and data["speedup"] == 3.0
    prov = data["provenance"]
    assert prov["harness"] == harness.HARNESS_VERSION
    for key in ("commit", "uncommitted_changes", "date", "date_end", "cpus", "cpu_model",
                "python", "versions", "load_avg_start", "load_avg_end", "duration_s", "peers",
                "commands"):
        assert key in prov, key
    assert prov["cpus"] == os.cpu_count()
    assert prov["cpu_model"] == harness.cpu_model() and prov["cpu_model"]
    assert len(prov["load_avg_start"]) == 3 and len(prov["load_avg_end"]) == 3
    assert "numpy" in prov["versions"]
    assert prov["commands"][0] == "python bench/unit.py --repeat 2"
    assert prov["commands"][1].startswith("in-process: ")
    assert prov["commands"][2] == f"{sys.executable} -c 'print(42)'"


def test_quick_runs_go_where_the_table_never_looks(tmp_path: Path) -> None:
    path = Bench("unit", argv=["x"]).publish({}, quick=True, results_dir=tmp_path)
    assert path == tmp_path / "tmp" / "unit.json"
    assert json.loads(path.read_text())["quick"] is True


def test_python_env_puts_this_checkout_first() -> None:
    env = harness.python_env({"EXTRA": "1"})
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(harness.ROOT)
    assert env["EXTRA"] == "1"


def test_wait_for_quiet_records_the_wait() -> None:
    bench = Bench("unit", argv=["x"])
    assert bench.wait_for_quiet(max_load=1e9, max_wait_s=0, what="search")
    assert not bench.wait_for_quiet(max_load=-1, max_wait_s=0, what="search")
    assert [w["reached"] for w in bench.waits] == [True, False]
    assert bench.provenance()["load_waits"][0]["before"] == "search"


def test_a_missing_peer_venv_is_not_ready(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    monkeypatch.setattr(harness, "VENVS", tmp_path)
    env = PeerEnv("nothing", ("nothing==1.0",), probe="import nothing")
    assert env.python == tmp_path / "nothing" / "bin" / "python"
    assert not env.ready()
    assert json.loads(env.spec())["requirements"] == ["nothing==1.0"]
