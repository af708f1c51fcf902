"""Benchmark the ingest stage against img2dataset, on the same inputs in the same run.

Run from the repository root with the project's virtualenv:

    .venv/bin/python bench/ingest.py [--images 2000] [--workers N] [--repeat 3] [--skip-peer]
                                     [--quick]

It prints one JSON line on stdout (progress goes to stderr) and writes the same object,
indented, to `bench/results/ingest.json` (`--quick`, `--skip-peer`: to bench/results/tmp/).

What is measured, and why
-------------------------
Both tools run the same way: in their own interpreter (curate in this virtualenv, img2dataset
in its own), started by this script. Each run yields these figures:

* `call_s`: the tool's entry point (`run_ingest(...)`, `img2dataset.download(...)`), timed
  inside the subprocess: process pool start, fetching, hashing, validation, writes and output
  tables included; interpreter start and imports excluded. Throughputs use this figure.
* `whole_s`: the whole subprocess, what a user waits for at the command line.
* `cpu_s`: CPU time of the subprocess and all its descendants (from `RUSAGE_CHILDREN`; the
  curate runner reaps its forkserver so its workers count). It moves much less than wall time
  when other work shares the machine, so the CPU ratio is the sturdier comparison there.
* `main_process_cpu_s`: the part of `cpu_s` spent in the tool's main process (all its
  threads). For curate that is the coordinator, which does all the HTTP: a serial stage whose
  CPU per URL bounds the throughput however many workers there are.

Measurements:

* **Local ingest** (`local`): `run_ingest` on a folder of synthetic JPEGs.
  - *cold*: empty store and empty result cache (fresh `paths.store`/`paths.cache`); the OS page
    cache is warm, so this is the CPU cost, not the disk's.
  - *warm*: the same run again, everything cached: the cost of a no-op `dvc repro`.
  - *+1 %*: 1 % new files added to the folder, run again, reported over the cold run's time:
    the design promises that adding 1 % of the images costs about 1 % of a cold run.
* **Scraping** (`scrape`): the same files, plus ~1 % URLs that 404 and a few bodies that are
  not images or are broken, served by a `ThreadingHTTPServer` on 127.0.0.1 in a separate
  process (it never shares a GIL with a measured tool; its CPU is reported separately). The
  two tools take alternating turns (bench/harness.py: curate first in odd rounds,
  img2dataset first in even ones) on the same URL list and server:
  - curate: a `urls` source with the scrape defaults and `allow_private_hosts: true`;
  - img2dataset (the peer, `.cache/venvs/img2dataset`, made on first use by the harness):
    `resize_mode="no"` with `skip_reencode=True` (like curate it decodes to validate and keeps
    the original bytes, instead of re-encoding every JPEG), `output_format="files"`,
    `processes_count` = workers, `thread_count=32` (curate's default scrape concurrency),
    `compute_hash="sha256"`, and shards sized so that every process gets work.
  - Accounting, from each tool's own output files: every URL must end as stored, duplicate
    (the same bytes as another URL) or rejected with a reason; the rest is `unaccounted`.
    img2dataset does not deduplicate, so its duplicates are counted from its sha256 column.

`busy_cores` is the average number of busy cores on the whole machine during a run (from
/proc/stat; 2.0 on 2 cores = saturated). `load_average_1min` says whether other work was
running. Each figure is the median of `--repeat` runs; `speedup_peer_time_over_ours` is the
median of the rounds' img2dataset time / curate time (higher is better, < 1: ours is slower).

Generated images are cached in `.cache/bench/ingest-images/` (its `VERSION` file records how
they were made; any change regenerates them). Everything else goes to temporary folders under
`.cache/bench/tmp/`, removed at the end, as is the HTTP server.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import math
import multiprocessing
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/ must not shadow the project's packages

from bench.harness import Bench, Comparison, PeerEnv, command_text, median, python_env

BENCH_CACHE = ROOT / ".cache" / "bench"
IMAGE_CACHE = BENCH_CACHE / "ingest-images"
SCRATCH = BENCH_CACHE / "tmp"

GENERATOR_VERSION = 1
DUPLICATE_FRACTION = 0.02
NEW_FRACTION = 0.01
MISSING_FRACTION = 0.01
JPEG_QUALITY = 90
SIDE_RANGE = (400, 1200)

#: img2dataset 1.47.0 installs on Python 3.11 with no extra pins (it caps pandas < 3 and
#: albumentations < 2 itself); the versions that resolved are reported in the JSON.
PEER = PeerEnv("img2dataset", ("img2dataset==1.47.0",), probe="import img2dataset",
               report=("img2dataset", "opencv-python-headless", "albumentations", "numpy",
                       "pandas"))
PEER_THREADS = 32
#: No update check (there may be no network) and no wandb.
PEER_ENV = {"NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "disabled"}

#: Both runners: argv[1] = JSON arguments, argv[2] = where to write the timing report.
CURATE_RUNNER = """
import json, resource, sys, time
from pathlib import Path
started = time.perf_counter()
from curate.config import load_params
from curate.stages.ingest import IngestOptions, run_ingest
imported = time.perf_counter()
args = json.loads(sys.argv[1])
run_ingest(load_params(Path(args["params"])), IngestOptions(out_dir=Path(args["out"])))
done = time.perf_counter()
main = resource.getrusage(resource.RUSAGE_SELF)
# Reap the forkserver, which reaped the workers, so the parent's RUSAGE_CHILDREN has their CPU.
import multiprocessing.forkserver as forkserver
getattr(forkserver._forkserver, "_stop", lambda: None)()
with open(sys.argv[2], "w") as fh:
    json.dump({"import_s": imported - started, "call_s": done - imported,
               "main_cpu_s": main.ru_utime + main.ru_stime}, fh)
"""
PEER_RUNNER = """
import json, resource, sys, time
from importlib.metadata import version
started = time.perf_counter()
import img2dataset
imported = time.perf_counter()
img2dataset.download(**json.loads(sys.argv[1]))
done = time.perf_counter()
main = resource.getrusage(resource.RUSAGE_SELF)
packages = ("img2dataset", "opencv-python-headless", "albumentations", "numpy", "pandas")
with open(sys.argv[2], "w") as fh:
    json.dump({"import_s": imported - started, "call_s": done - imported,
               "main_cpu_s": main.ru_utime + main.ru_stime,
               "versions": {p: version(p) for p in packages}}, fh)
"""


def median_present(values: Sequence[float | None]) -> float | None:
    """Median of the values that could be measured (some are None off Linux)."""
    present = [v for v in values if v is not None]
    return median(present) if present else None


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1)


# ------------------------------------------------------------ the image set


@dataclass(frozen=True)
class Corpus:
    """The generated files: `images/` (with planted duplicates), `extra/` (the +1 %), `junk/`."""

    root: Path
    images: tuple[str, ...]
    extra: tuple[str, ...]
    junk: tuple[str, ...]
    duplicates: int

    @property
    def image_dir(self) -> Path:
        return self.root / "images"

    @property
    def extra_dir(self) -> Path:
        return self.root / "extra"


def image_relpath(index: int) -> str:
    return f"d{index // 100:03d}/img_{index:05d}.jpg"


def render_jpeg(seed: int, index: int) -> bytes:
    """A photo-like JPEG: smooth gradient and waves, blurred shapes, sensor noise."""
    rng = np.random.default_rng([seed, index])
    width, height = (int(v) for v in rng.integers(SIDE_RANGE[0], SIDE_RANGE[1] + 1, size=2))
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    c0, cx, cy = rng.uniform(0, 255, size=(3, 3)).astype(np.float32)
    fx, fy, phase = rng.uniform(0.5, 4.0), rng.uniform(0.5, 4.0), rng.uniform(0, 2 * np.pi)
    base = c0 + (cx - c0) * xs + (cy - c0) * ys
    base = base + 25.0 * np.sin(2 * np.pi * (fx * xs + fy * ys) + phase)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 14))):
        x0, x1 = sorted(int(v) for v in rng.integers(0, width, size=2))
        y0, y1 = sorted(int(v) for v in rng.integers(0, height, size=2))
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        kind = int(rng.integers(3))
        if kind == 0:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif kind == 1:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            corners = zip(rng.integers(0, width, 5), rng.integers(0, height, 5), strict=True)
            draw.polygon([(int(x), int(y)) for x, y in corners], fill=colour)
    img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.5, 2.0))))
    noise = rng.standard_normal((height, width, 3), dtype=np.float32) * float(rng.uniform(2, 7))
    pixels = np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def _render_to(job: tuple[int, int, str]) -> None:
    seed, index, path = job
    Path(path).write_bytes(render_jpeg(seed, index))


def _junk_files(seed: int, n_total: int) -> dict[str, bytes]:
    """Bodies that are not images, or not whole ones: what real URL lists are full of."""
    rng = np.random.default_rng([seed, n_total, 1])
    whole = render_jpeg(seed, n_total + 10_000)
    return {
        "page.html": b"<!doctype html><html><body><h1>Image moved</h1></body></html>\n",
        "notes.txt": b"this is not an image\n" * 20,
        "meta.json": b'{"error": "rate limited"}\n',
        "random.jpg": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "empty.jpg": b"",
        "truncated.jpg": whole[: len(whole) * 2 // 5],
    }


def _spec(n: int, seed: int) -> str:
    return json.dumps({"generator": GENERATOR_VERSION, "images": n, "seed": seed,
                       "duplicates": DUPLICATE_FRACTION, "new": NEW_FRACTION}, sort_keys=True)


def ensure_corpus(bench: Bench, n: int, seed: int, workers: int) -> Corpus:
    """Generate (or reuse from the cache) `n` JPEGs of which ~2 % are exact duplicates."""
    n_dup = max(1, round(n * DUPLICATE_FRACTION))
    n_new = max(1, round(n * NEW_FRACTION))
    unique = n - n_dup
    dup_sources = np.random.default_rng([seed, n]).choice(unique, size=n_dup, replace=False)
    junk = _junk_files(seed, n)
    corpus = Corpus(IMAGE_CACHE, tuple(image_relpath(i) for i in range(n)),
                    tuple(image_relpath(i) for i in range(n, n + n_new)), tuple(sorted(junk)),
                    n_dup)
    marker = IMAGE_CACHE / "VERSION"
    if marker.exists() and marker.read_text() == _spec(n, seed):
        bench.log(f"reusing {n:,} cached images in {IMAGE_CACHE}")
        return corpus
    bench.log(f"generating {n:,} + {n_new} JPEGs into {IMAGE_CACHE} (cached for later runs)")
    shutil.rmtree(IMAGE_CACHE, ignore_errors=True)
    jobs = [(seed, i, str(corpus.image_dir / image_relpath(i))) for i in range(unique)]
    jobs += [(seed, i, str(corpus.extra_dir / image_relpath(i))) for i in range(n, n + n_new)]
    for _, _, path in jobs:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_render_to, jobs, chunksize=16))
    for k, source in enumerate(dup_sources):
        target = corpus.image_dir / image_relpath(unique + k)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(corpus.image_dir / image_relpath(int(source)), target)
    (IMAGE_CACHE / "junk").mkdir()
    for name, body in junk.items():
        (IMAGE_CACHE / "junk" / name).write_bytes(body)
    marker.write_text(_spec(n, seed))
    return corpus


def link_files(src_root: Path, dst_root: Path, relpaths: tuple[str, ...]) -> None:
    """Hard-link (copy across filesystems) files into a scratch folder: fast and cache-safe."""
    for rel in relpaths:
        dst = dst_root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src_root / rel, dst)
        except OSError:
            shutil.copy2(src_root / rel, dst)


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    SCRATCH.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=prefix, dir=SCRATCH) as path:
        yield Path(path)


# ------------------------------------------------------------- HTTP server


class _FileHandler(SimpleHTTPRequestHandler):
    """Static files over keep-alive HTTP/1.1, sent with sendfile(2), without request logs."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def copyfile(self, source: Any, outputfile: Any) -> None:
        self.connection.sendfile(source)


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024  # the default backlog of 5 drops connections under 32 clients
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that went away
            super().handle_error(request, client_address)


def _serve(root: str, port_out: Connection) -> None:
    parent = os.getppid()
    with _Server(("127.0.0.1", 0), functools.partial(_FileHandler, directory=root)) as server:

        def stop_when_orphaned() -> None:  # the benchmark was killed without cleaning up
            while os.getppid() == parent:
                time.sleep(1)
            server.shutdown()

        threading.Thread(target=stop_when_orphaned, daemon=True).start()
        port_out.send(server.server_address[1])
        server.serve_forever()


@dataclass(frozen=True)
class Server:
    base_url: str
    pid: int

    def cpu_seconds(self) -> float | None:
        """CPU time the server process has used so far (all its threads), or None off Linux."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return None
        utime, stime = (int(v) for v in stat.rsplit(")", 1)[1].split()[11:13])
        return (utime + stime) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def http_server(root: Path) -> Iterator[Server]:
    """Serve `root` on 127.0.0.1 from a separate process; always stopped on exit.

    Forked rather than spawned so the child does not re-import this script: this process
    runs no threads and no tool in-process, so forking it is safe.
    """
    ctx = multiprocessing.get_context("fork")
    port_in, port_out = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_serve, args=(str(root), port_out), daemon=True)
    process.start()
    try:
        if not port_in.poll(30):
            raise RuntimeError("the benchmark's HTTP server did not start within 30 s")
        assert process.pid is not None
        yield Server(f"http://127.0.0.1:{port_in.recv()}", process.pid)
    finally:
        process.terminate()
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join()


def write_url_list(corpus: Corpus, base_url: str, path: Path, seed: int) -> int:
    """All images, ~1 % URLs that 404 and the junk files, shuffled; returns the count."""
    n_missing = max(1, round(len(corpus.images) * MISSING_FRACTION))
    urls = [f"{base_url}/images/{rel}" for rel in corpus.images]
    urls += [f"{base_url}/missing/img_{i:05d}.jpg" for i in range(n_missing)]
    urls += [f"{base_url}/junk/{name}" for name in corpus.junk]
    np.random.default_rng([seed, 2]).shuffle(urls)
    path.write_text("\n".join(urls) + "\n")
    return len(urls)


# ------------------------------------------------------------ measured runs


@dataclass
class Timing:
    """Wall time of a block and the average number of busy cores on the machine during it."""

    wall_s: float = 0.0
    busy_cores: float | None = None


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies over all cores since boot, or None off Linux."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


@contextlib.contextmanager
def timed() -> Iterator[Timing]:
    timing = Timing()
    before, start = _cpu_jiffies(), time.perf_counter()
    yield timing
    timing.wall_s = time.perf_counter() - start
    after = _cpu_jiffies()
    if before and after and after[1] > before[1]:
        share = (after[0] - before[0]) / (after[1] - before[1])
        timing.busy_cores = round(share * (os.cpu_count() or 1), 2)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Run:
    """One run of a tool in its own interpreter (see the module docstring for the figures)."""

    call_s: float
    whole_s: float
    cpu_s: float
    main_cpu_s: float
    busy_cores: float | None
    server_cpu_s: float | None
    versions: dict[str, str]


def _run_in_own_group(argv: list[str], log_file: IO[bytes], env: dict[str, str]) -> int:
    """Run `argv` to completion in a new process group, killed whole if we are interrupted.

    Killing only the tool's main process would orphan its worker processes (pool workers
    do not notice their parent's death), so the group goes down together.
    """
    process = subprocess.Popen(argv, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT,
                               env=env, start_new_session=True)
    try:
        return process.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise


def run_measured(bench: Bench, python: Path, runner: str, args: dict[str, Any], work: Path,
                 server: Server | None = None, env: dict[str, str] | None = None,
                 label: str = "") -> Run:
    """Run `runner` with `python -c`; raise with the end of its log if it fails."""
    report, log_path = work / "timing.json", work / "run.log"
    report.unlink(missing_ok=True)
    cpu_before = _children_cpu_s()
    server_before = server.cpu_seconds() if server else None
    argv = [str(python), "-c", runner, json.dumps(args), str(report)]
    bench.record(command_text(argv, label))
    with timed() as timing, open(log_path, "wb") as log_file:
        returncode = _run_in_own_group(argv, log_file, python_env(env))
    server_after = server.cpu_seconds() if server else None
    if returncode != 0 or not report.exists():
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{python} exited with {returncode}; its log ends:\n{tail}")
    inner = json.loads(report.read_text())
    server_cpu = (None if server_before is None or server_after is None
                  else round(server_after - server_before, 2))
    return Run(inner["call_s"], timing.wall_s, _children_cpu_s() - cpu_before, inner["main_cpu_s"],
               timing.busy_cores, server_cpu, inner.get("versions", {}))


# ------------------------------------------------------------------ curate


def curate_run(bench: Bench, work: Path, source: dict[str, Any], workers: int,
               server: Server | None = None) -> Run:
    """`run_ingest` on one source with store, cache and outputs all under `work`."""
    params = {
        "workers": workers,
        "paths": {"data": str(work / "data"), "store": str(work / "data" / "store"),
                  "cache": str(work / "cache"), "reports": str(work / "reports")},
        "ingest": {"sources": [source], "scrape": {"allow_private_hosts": True}},
    }
    params_path = work / "params.yaml"
    params_path.write_text(json.dumps(params, indent=2))  # JSON is YAML
    args = {"params": str(params_path), "out": str(work / "data" / "ingest")}
    return run_measured(bench, Path(sys.executable), CURATE_RUNNER, args, work, server,
                        label="bench/ingest.py CURATE_RUNNER: run_ingest(params, options)")


def local_trial(bench: Bench, corpus: Corpus, workers: int) -> dict[str, Run]:
    """Cold, warm and +1 % runs over a scratch copy of the image folder."""
    with scratch_dir("curate-local-") as work:
        folder = work / "images"
        link_files(corpus.image_dir, folder, corpus.images)
        source = {"kind": "folder", "path": str(folder)}
        cold = curate_run(bench, work, source, workers)
        warm = curate_run(bench, work, source, workers)
        link_files(corpus.extra_dir, folder, corpus.extra)
        plus = curate_run(bench, work, source, workers)
    return {"cold": cold, "warm": warm, "plus_1pct": plus}


# -------------------------------------------------------------- accounting


@dataclass
class Accounting:
    """Where every URL ended: stored, duplicate of another URL's bytes, or rejected (reason)."""

    urls: int
    stored: int
    duplicate: int
    rejected: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        rejected = sum(self.rejected.values())
        return {"urls": self.urls, "stored": self.stored, "duplicate": self.duplicate,
                "rejected": rejected, "rejected_by_reason": dict(sorted(self.rejected.items())),
                "unaccounted": self.urls - self.stored - self.duplicate - rejected}


def curate_accounting(out_dir: Path, n_urls: int) -> Accounting:
    """From curate's manifest (one row per image, all its source URIs) and rejects table."""
    manifest = pd.read_parquet(out_dir / "manifest.parquet")
    rejects = pd.read_parquet(out_dir / "rejects.parquet")
    return Accounting(n_urls, len(manifest), int(manifest["n_sources"].sum()) - len(manifest),
                      Counter(rejects["reason"].astype(str)))


def peer_accounting(out_dir: Path, n_urls: int) -> Accounting:
    """From img2dataset's per-shard Parquet files (status and error_message per URL)."""
    rows = pd.concat([pd.read_parquet(p) for p in sorted(out_dir.glob("*.parquet"))],
                     ignore_index=True)
    ok = rows[rows["status"] == "success"]
    failed = rows[rows["status"] != "success"]
    reasons = Counter(f"{s}: {str(m).strip()}"
                      for s, m in zip(failed["status"], failed["error_message"], strict=True))
    unique = int(ok["sha256"].nunique())
    return Accounting(n_urls, unique, len(ok) - unique, reasons)


# -------------------------------------------------------------------- peer


def peer_run(bench: Bench, python: Path, url_list: Path, n_urls: int, work: Path,
             workers: int, server: Server) -> Run:
    options = {
        "url_list": str(url_list), "input_format": "txt", "output_folder": str(work / "out"),
        "output_format": "files", "resize_mode": "no", "skip_reencode": True,
        "processes_count": workers, "thread_count": PEER_THREADS,
        "number_sample_per_shard": max(1, math.ceil(n_urls / (4 * workers))),
        "compute_hash": "sha256",
    }
    return run_measured(bench, python, PEER_RUNNER, options, work, server, PEER_ENV,
                        label="bench/ingest.py PEER_RUNNER: img2dataset.download(**options)")


# ------------------------------------------------------------------ trials


@dataclass
class ScrapeRuns:
    curate: list[Run] = field(default_factory=list)
    peer: list[Run] = field(default_factory=list)
    curate_accounting: Accounting | None = None
    peer_accounting: Accounting | None = None
    comparison: Comparison | None = None


def scrape_trials(bench: Bench, corpus: Corpus, workers: int, repeat: int, seed: int,
                  peer_python: Path | None) -> tuple[int, ScrapeRuns]:
    """Curate and img2dataset in alternating turns against one server, `repeat` times each."""
    runs = ScrapeRuns()
    with http_server(corpus.root) as server, scratch_dir("urls-") as lists:
        url_list = lists / "urls.txt"
        n_urls = write_url_list(corpus, server.base_url, url_list, seed)
        bench.log(f"serving {corpus.root} at {server.base_url} (pid {server.pid}); "
                  f"{n_urls:,} URLs")

        def curate() -> dict[str, Any]:
            with scratch_dir("curate-urls-") as work:
                source = {"kind": "urls", "path": str(url_list)}
                run = curate_run(bench, work, source, workers, server)
                runs.curate.append(run)
                runs.curate_accounting = curate_accounting(work / "data" / "ingest", n_urls)
            return {"seconds": run.call_s}

        def img2dataset() -> dict[str, Any]:
            assert peer_python is not None
            with scratch_dir("img2dataset-") as work:
                run = peer_run(bench, peer_python, url_list, n_urls, work, workers, server)
                runs.peer.append(run)
                runs.peer_accounting = peer_accounting(work / "out", n_urls)
            return {"seconds": run.call_s}

        sides = {"ours": curate, **({"img2dataset": img2dataset} if peer_python else {})}
        runs.comparison = bench.compare(sides, repeat)
    return n_urls, runs


def local_trials(bench: Bench, corpus: Corpus, workers: int, repeat: int
                 ) -> dict[str, list[Run]]:
    runs: dict[str, list[Run]] = {"cold": [], "warm": [], "plus_1pct": []}
    for i in range(repeat):
        bench.log(f"local run {i + 1}/{repeat}: cold, warm, +1 %")
        for kind, run in local_trial(bench, corpus, workers).items():
            runs[kind].append(run)
    return runs


# ------------------------------------------------------------------ report


def summarize(runs: Sequence[Run], count: int) -> dict[str, Any]:
    """Medians of a tool's runs over `count` inputs."""
    call_s = median([r.call_s for r in runs])
    cpu_s = median([r.cpu_s for r in runs])
    return {
        "per_s": rate(count, call_s),
        "per_s_whole_subprocess": rate(count, median([r.whole_s for r in runs])),
        "call_s": call_s,
        "whole_s": median([r.whole_s for r in runs]),
        "cpu_s": cpu_s,
        "cpu_ms_per_item": round(cpu_s / count * 1000, 2),
        "main_process_cpu_s": median([r.main_cpu_s for r in runs]),
        "busy_cores": median_present([r.busy_cores for r in runs]),
        "server_cpu_s": median_present([r.server_cpu_s for r in runs]),
        "runs_call_s": [round(r.call_s, 3) for r in runs],
    }


def local_report(corpus: Corpus, runs: dict[str, list[Run]]) -> dict[str, Any]:
    n = len(corpus.images)
    cold = summarize(runs["cold"], n)
    warm = summarize(runs["warm"], n)
    plus = summarize(runs["plus_1pct"], n + len(corpus.extra))
    ratios = [p.call_s / c.call_s for p, c in zip(runs["plus_1pct"], runs["cold"], strict=True)]
    return {
        "curate_cold_img_s": cold["per_s"],
        "curate_warm_img_s": warm["per_s"],
        "plus_1pct_cost_ratio": median(ratios),
        "new_files_in_plus_1pct": len(corpus.extra),
        "cold": cold,
        "warm": warm,
        "plus_1pct": plus,
    }


def scrape_report(corpus: Corpus, n_urls: int, runs: ScrapeRuns) -> dict[str, Any]:
    curate = summarize(runs.curate, n_urls)
    report: dict[str, Any] = {
        "urls": n_urls,
        "expected": {"unique_images": len(corpus.images) - corpus.duplicates,
                     "duplicates": corpus.duplicates,
                     "missing_404": n_urls - len(corpus.images) - len(corpus.junk),
                     "not_images_or_broken": len(corpus.junk)},
        "curate_url_s": curate["per_s"],
        "img2dataset_url_s": None,
        "speedup_peer_time_over_ours": None,
        "curate_accounting": runs.curate_accounting.to_dict() if runs.curate_accounting else None,
        "curate": curate,
    }
    if not runs.peer:
        return report
    peer = summarize(runs.peer, n_urls)
    assert runs.comparison is not None
    report.update({
        "img2dataset_url_s": peer["per_s"],
        "speedup_peer_time_over_ours": runs.comparison.speedup("img2dataset", "ours")["median"],
        "speedup_whole_subprocess": round(peer["whole_s"] / curate["whole_s"], 3),
        "cpu_ratio_img2dataset_over_curate": round(peer["cpu_s"] / curate["cpu_s"], 3),
        "img2dataset_accounting": (runs.peer_accounting.to_dict() if runs.peer_accounting
                                   else None),
        "img2dataset": peer,
        "img2dataset_options": {"resize_mode": "no", "skip_reencode": True,
                                "output_format": "files", "thread_count": PEER_THREADS,
                                "compute_hash": "sha256"},
        "accounting_note": "img2dataset does not detect duplicates: it stores every copy; its "
                           "`duplicate` count comes from its sha256 column",
        "comparison": runs.comparison.to_dict(ours="ours"),
    })
    return report


# -------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--images", type=int, default=2000,
                        help="JPEG files to generate, duplicates included (default 2000)")
    parser.add_argument("--workers", type=int, default=0,
                        help="worker processes for both tools (default 0 = all cores)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per measurement; medians are reported (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated data")
    parser.add_argument("--skip-peer", action="store_true",
                        help="measure curate only (no img2dataset venv, no peer runs)")
    parser.add_argument("--quick", action="store_true",
                        help="200 images, one round (a smoke run, written to bench/results/tmp/)")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.repeat = 200, 1
    if args.images < 100 or args.repeat < 1 or args.workers < 0:
        parser.error("need --images >= 100, --repeat >= 1 and --workers >= 0")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the server and the scratch folders are cleaned up.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    bench = Bench("ingest", packages=("httpx",))
    cores = os.cpu_count() or 1
    workers = args.workers or cores
    load_at_start = os.getloadavg()[0]
    if load_at_start > cores / 2:
        bench.log(f"warning: load average {load_at_start:.1f} on {cores} cores: other work is "
                  "running; wall-clock figures will suffer more than the CPU ones")
    corpus = ensure_corpus(bench, args.images, args.seed, cores)
    peer_python = None if args.skip_peer else bench.peer(PEER)
    local_runs = local_trials(bench, corpus, workers, args.repeat)
    n_urls, scrape_runs = scrape_trials(bench, corpus, workers, args.repeat, args.seed,
                                        peer_python)
    result = {
        "images": len(corpus.images),
        "workers": workers,
        "repeat": args.repeat,
        "local": local_report(corpus, local_runs),
        "scrape": scrape_report(corpus, n_urls, scrape_runs),
    }
    bench.publish(result, quick=args.quick or args.skip_peer)
    return result


if __name__ == "__main__":
    main()
