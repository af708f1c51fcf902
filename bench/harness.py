"""The one harness every benchmark runs under: turns, medians, peers' virtualenvs, provenance.

Every script in `bench/` is run from the repository root as `python bench/NAME.py [options]`;
it puts the root first on `sys.path` (so `bench/` cannot shadow the project's packages) and
does, through this module:

* `Bench(name)`: one benchmark run. `bench.log(...)` writes progress to stderr;
  `bench.run(argv)` runs and records a command; `bench.record(...)` records an in-process
  call (a public stage entry point); `bench.peer(PeerEnv(...))` makes (once) and returns a
  peer tool's virtualenv; `bench.compare({...}, repeat)` times the sides in alternating turns;
  `bench.publish(result)` adds the provenance block and writes `bench/results/NAME.json`.
* `alternate(sides, repeat)`: round r runs the sides in order rotated by r (A B, B A, A B, ...
  for two; A B C, B C A, C A B for three), so neither side always runs first (warm caches,
  thermal state, a load spike), and records each turn's seconds and the load before it. A
  comparison reports each side's median, minimum, maximum and spread, and every speed-up as
  the median of the per-round ratios `other side's time / ours` (higher is better, < 1 means
  ours is slower).
* `provenance()`: commit (and whether tracked files other than the results and README.md had
  uncommitted changes), date, CPU count,
  load average, Python and package versions. `Bench.publish` records it at the start, adds the
  load average at the end, the peers' versions and the exact commands run.

Figures in README.md's performance table are rendered from the files this writes
(`bench/table.py`, `make bench-table`).
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
#: Generated inputs and scratch folders of every bench.
SCRATCH = ROOT / ".cache" / "bench"
#: The peers' virtualenvs (one folder each); BENCH_VENVS moves them (e.g. to share them
#: between checkouts).
VENVS = Path(os.environ.get("BENCH_VENVS") or ROOT / ".cache" / "venvs")
#: Bumped when what the harness records changes; README's table reads it.
HARNESS_VERSION = 1
#: Versions recorded in every result file (those installed; missing ones are left out).
PACKAGES = ("gan-curate", "numpy", "pillow", "pandas", "torch", "onnxruntime", "numba")


# ------------------------------------------------------------------------------- small helpers


def log(bench: str, message: str) -> None:
    """One progress line on stderr (stdout carries the result's JSON only)."""
    print(f"[bench {bench}] {message}", file=sys.stderr, flush=True)


def median(values: Iterable[float], digits: int = 4) -> float:
    return round(statistics.median(list(values)), digits)


def spread(values: Sequence[float], digits: int = 4) -> dict[str, Any]:
    """Median, minimum, maximum and spread ((max - min) / median, in %) of some timings."""
    values = list(values)
    mid = statistics.median(values)
    return {"median": round(mid, digits), "min": round(min(values), digits),
            "max": round(max(values), digits),
            "spread_pct": round(100 * (max(values) - min(values)) / mid, 1) if mid else None,
            "n": len(values), "runs": [round(v, digits) for v in values]}


def load_avg() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def cpu_model() -> str | None:
    """The processor's model name (Linux): one machine kind here spans several CPU
    generations, and a figure measured on one is not comparable with another's."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def package_versions(names: Iterable[str]) -> dict[str, str]:
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def provenance(packages: Iterable[str] = ()) -> dict[str, Any]:
    """What a reader needs to weigh the figures: code, machine, load, versions."""
    # Result files and README's table change between benches of one session: not code.
    changes = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                  ":!bench/results", ":!README.md")
    return {
        "commit": git("rev-parse", "HEAD"),
        "uncommitted_changes": bool(changes) if changes is not None else None,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(), "machine": platform.machine(), "cpu_model": cpu_model(),
        "load_avg": load_avg(),
        "python": platform.python_version(),
        "versions": package_versions(dict.fromkeys([*PACKAGES, *packages])),
    }


def python_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment with the repository first on PYTHONPATH, so that a subprocess imports
    this checkout's packages (not another checkout's editable install)."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else ""),
            **(extra or {})}


def command_text(argv: Sequence[str | os.PathLike[str]], label: str | None = None) -> str:
    """`argv` as a shell line; an inline `-c` program is named, not copied (`label`), and an
    argument of more than 400 characters is cut to its start and length."""
    words = [str(a) for a in argv]
    for k, word in enumerate(words[:-1]):
        if word == "-c" and ("\n" in words[k + 1] or len(words[k + 1]) > 120):
            words[k + 1] = f"<{label or 'inline program'}>"
    return shlex.join(w if len(w) <= 400 else f"{w[:160]}... ({len(w):,} characters)"
                      for w in words)


# ------------------------------------------------------------------------- alternating turns


@dataclass
class Turn:
    """One timed run of one side."""

    round: int
    side: str
    seconds: float
    load_1m: float  # just before the turn
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Comparison:
    """The turns of some sides timed against each other (`alternate`)."""

    sides: list[str]
    turns: list[Turn]

    def seconds(self, side: str) -> list[float]:
        return [t.seconds for t in self.turns if t.side == side]

    def extras(self, side: str) -> list[dict[str, Any]]:
        return [t.extra for t in self.turns if t.side == side]

    def order(self) -> list[list[str]]:
        rounds: dict[int, list[str]] = {}
        for t in self.turns:
            rounds.setdefault(t.round, []).append(t.side)
        return [rounds[r] for r in sorted(rounds)]

    def ratios(self, numerator: str, denominator: str) -> list[float]:
        """Per round: `numerator`'s time / `denominator`'s time."""
        by_round: dict[int, dict[str, float]] = {}
        for t in self.turns:
            by_round.setdefault(t.round, {})[t.side] = t.seconds
        return [r[numerator] / r[denominator] for _, r in sorted(by_round.items())
                if numerator in r and denominator in r and r[denominator] > 0]

    def speedup(self, other: str, ours: str) -> dict[str, Any]:
        """`other`'s time / `ours`, the median of the rounds (higher is better for ours)."""
        ratios = self.ratios(other, ours)
        return {"median": round(statistics.median(ratios), 3), "min": round(min(ratios), 3),
                "max": round(max(ratios), 3), "rounds": len(ratios)}

    def to_dict(self, ours: str | None = None) -> dict[str, Any]:
        """Each side's timings and, when `ours` is given, every other side's time over ours."""
        loads = [t.load_1m for t in self.turns]
        out: dict[str, Any] = {
            "order": self.order(),
            "sides": {s: {**spread(self.seconds(s)),
                          "load_1m": [t.load_1m for t in self.turns if t.side == s]}
                      for s in self.sides},
            "load_1m": {"min": min(loads), "max": max(loads)} if loads else None,
        }
        if ours is not None:
            out["speedup_other_time_over_ours"] = {
                s: self.speedup(s, ours) for s in self.sides if s != ours}
        return out


Side = Callable[[], "float | Mapping[str, Any] | None"]


def alternate(sides: Mapping[str, Side], repeat: int,
              progress: Callable[[str], None] | None = None) -> Comparison:
    """Run every side `repeat` times, rotating the order each round; time what they report.

    A side returns its seconds (timed where it knows best, e.g. inside a subprocess around
    the call), a mapping with a "seconds" key and other figures kept with the turn, or None:
    then the harness's wall time around the call is used.
    """
    names = list(sides)
    if not names or repeat < 1:
        raise ValueError("need at least one side and repeat >= 1")
    turns = []
    for r in range(repeat):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            load = load_avg()[0]
            started = time.perf_counter()
            value = sides[name]()
            wall = time.perf_counter() - started
            if value is None:
                seconds, extra = wall, {}
            elif isinstance(value, Mapping):
                extra = {k2: v for k2, v in value.items() if k2 != "seconds"}
                seconds = float(value["seconds"])
            else:
                seconds, extra = float(value), {}
            turns.append(Turn(r, name, seconds, load, extra))
            if progress:
                progress(f"round {r + 1}/{repeat}: {name} {seconds:.3f} s (load {load})")
    return Comparison(names, turns)


# ------------------------------------------------------------------------ peers' virtualenvs


@dataclass(frozen=True)
class PeerEnv:
    """A peer tool's own virtualenv under VENVS, made on first use and remade when the
    requirements change (a marker file records them).

    `no_deps` are installed with --no-deps after `requirements`; with `share_site_packages`
    the venv also sees this interpreter's site-packages (a .pth file), for a peer whose own
    requirements would pull another torch. `probe` must run in the venv once it is ready.
    """

    name: str
    requirements: tuple[str, ...]
    probe: str
    no_deps: tuple[str, ...] = ()
    share_site_packages: bool = False
    report: tuple[str, ...] = ()  # packages whose versions the result records

    @property
    def path(self) -> Path:
        return VENVS / self.name

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def spec(self) -> str:
        return json.dumps({"requirements": self.requirements, "no_deps": self.no_deps,
                           "share": self.share_site_packages}, sort_keys=True)

    def ready(self) -> bool:
        marker = self.path / "bench-requirements.json"
        return (self.python.exists() and marker.exists() and marker.read_text() == self.spec()
                and subprocess.run([str(self.python), "-c", self.probe], check=False,
                                   capture_output=True).returncode == 0)

    def ensure(self, progress: Callable[[str], None] = print) -> Path:
        """The venv's interpreter, (re)making the venv when it is missing or out of date."""
        if self.ready():
            return self.python
        progress(f"creating {self.path} with {' '.join(self.requirements + self.no_deps)} "
                 "(once)")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(self.path)], check=True)
        if self.share_site_packages:
            site = next((self.path / "lib").glob("python3*/site-packages"))
            ours = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
            (site / "zz_project_venv.pth").write_text("\n".join(ours) + "\n")
        pip = [str(self.python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        if self.requirements:
            subprocess.run([*pip, *self.requirements], check=True, stdout=sys.stderr)
        if self.no_deps:
            subprocess.run([*pip, "--no-deps", *self.no_deps], check=True, stdout=sys.stderr)
        (self.path / "bench-requirements.json").write_text(self.spec())
        return self.python

    def versions(self) -> dict[str, str]:
        names = self.report or tuple(r.split("=")[0].split("[")[0] for r in
                                     self.requirements + self.no_deps)
        code = (f"import json, importlib.metadata as m\nout = {{}}\nfor n in {list(names)!r}:\n"
                "    try:\n        out[n] = m.version(n)\n    except m.PackageNotFoundError:\n"
                "        pass\nprint(json.dumps(out))")
        done = subprocess.run([str(self.python), "-c", code], capture_output=True, text=True,
                              check=False)
        return json.loads(done.stdout) if done.returncode == 0 else {}


# -------------------------------------------------------------------------------- one run


class Bench:
    """One benchmark run: its log, the commands it runs, its peers, its published result."""

    def __init__(self, name: str, argv: Sequence[str] | None = None,
                 packages: Iterable[str] = ()) -> None:
        self.name = name
        self.packages = tuple(packages)
        self.argv = list(sys.argv if argv is None else argv)
        self.started = time.perf_counter()
        self.start = provenance(self.packages)
        self.commands: list[str] = [command_text(["python", *self.argv])]
        self.peers: dict[str, dict[str, str]] = {}
        self.waits: list[dict[str, Any]] = []

    def log(self, message: str) -> None:
        log(self.name, message)

    def record(self, what: str) -> None:
        """Record a command, or an in-process call of a public entry point, once."""
        if what not in self.commands:
            self.commands.append(what)

    def run(self, argv: Sequence[str | os.PathLike[str]], *, label: str | None = None,
            check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess:
        """`subprocess.run(argv, **kwargs)`, recorded (output captured as text by default; the
        environment is `python_env()` unless `env` is given)."""
        self.record(command_text(argv, label))
        kwargs.setdefault("env", python_env())
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        done = subprocess.run([str(a) for a in argv], check=False, **kwargs)
        if check and done.returncode != 0:
            tail = (done.stderr or "")[-3000:] if kwargs.get("text") else ""
            raise RuntimeError(f"{command_text(argv, label)} exited with {done.returncode}:\n"
                               f"{tail}")
        return done

    def peer(self, env: PeerEnv) -> Path:
        python = env.ensure(self.log)
        self.peers[env.name] = env.versions()
        return python

    def compare(self, sides: Mapping[str, Side], repeat: int) -> Comparison:
        return alternate(sides, repeat, self.log)

    def wait_for_quiet(self, max_load: float, max_wait_s: float, what: str = "") -> bool:
        """Wait until the 1-minute load average is at most `max_load` (at most `max_wait_s`);
        the wait is recorded. True when the load came down."""
        started, load = time.perf_counter(), load_avg()[0]
        while load > max_load and time.perf_counter() - started < max_wait_s:
            self.log(f"load {load} > {max_load}: waiting before {what or 'timing'}")
            time.sleep(min(30.0, max(1.0, max_wait_s / 20)))
            load = load_avg()[0]
        reached = load <= max_load
        self.waits.append({"before": what, "max_load": max_load, "load_1m": load,
                           "waited_s": round(time.perf_counter() - started, 1),
                           "reached": reached})
        return reached

    def provenance(self) -> dict[str, Any]:
        start = {k: v for k, v in self.start.items() if k != "load_avg"}
        return {"harness": HARNESS_VERSION, **start, "load_avg_start": self.start["load_avg"],
                "load_avg_end": load_avg(),
                "date_end": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "duration_s": round(time.perf_counter() - self.started, 1),
                "peers": self.peers, "commands": self.commands,
                **({"load_waits": self.waits} if self.waits else {})}

    def publish(self, result: dict[str, Any], file: str | None = None, *, quick: bool = False,
                results_dir: Path | None = None) -> Path:
        """Write `result` plus its provenance to RESULTS_DIR/FILE.json (FILE defaults to the
        bench's name; a `quick` smoke run goes to RESULTS_DIR/tmp/, which git ignores and
        README's table never reads) and print it as one JSON line; return the file's path."""
        out = {"bench": self.name, **result, "provenance": self.provenance()}
        directory = results_dir or RESULTS_DIR
        if quick:
            out["quick"] = True
            directory = directory / "tmp"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{file or self.name}.json"
        path.write_text(json.dumps(out, indent=2) + "\n")
        print(json.dumps(out), flush=True)
        return path


def scratch() -> Path:
    """The benches' scratch folder, made on first use."""
    SCRATCH.mkdir(parents=True, exist_ok=True)
    return SCRATCH
