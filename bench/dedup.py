"""Benchmark the dedup stage's hashing and Hamming search against imagededup, in one run.

Run from the repository root with the project's virtualenv:

    .venv/bin/python bench/dedup.py [--images 2000] [--workers N] [--repeat 1]
                                    [--search-n 100000] [--million] [--skip-peer]

It prints one JSON object on stdout (progress goes to stderr) and writes it, indented, to
`bench/results/dedup.json`.

What is measured
----------------
* **Hashing throughput** (`hashing` with `--workers`, `hashing_1_worker` with one process
  each) on `--images` JPEGs of 1-2 megapixels (crops of scikit-image's
  bundled photos, rescaled, with random brightness, flips and JPEG quality 85-95; generated
  once into `.cache/bench/dedup-images/`, a VERSION file records how).
  - ours: the stage's own hashing step (`DedupRun.hash_images`: process pool of `--workers`,
    phash of the half-scale-decoded canonical image, sharpness, cache commits), cold cache,
    timed inside its own process around the call (imports excluded, pool start included);
  - peer: imagededup's `PHash().encode_images(dir, num_enc_workers=--workers)`, timed inside
    its own process around the call (imports excluded).
  Also reported: how far our phash is from imagededup's on the same files (two
  implementations of the same idea; imagededup resizes RGB with Lanczos and ignores the DC
  term in the median).
* **Search at `--search-n` (100k) synthetic 64-bit hashes**, threshold 10: uniform random
  hashes plus 1% planted near copies (1-10 bits flipped).
  - ours: `hamming_pairs` (multi-index hashing, numba), after one small warm-up call that
    loads the compiled kernels (its time is reported separately);
  - peer: imagededup's `find_duplicates(encoding_map=..., max_distance_threshold=10)` with its
    default `brute_force_cython` search and `num_dist_workers=--workers`;
  - the two pair sets are compared: they must be identical.
* **1M hashes, ours alone** (`--million`): time and peak memory of `hamming_pairs` in a fresh
  process (goal: under 5 minutes and 4 GiB on 2 cores).

The peer lives in its own virtualenv, `.cache/venvs/imagededup`, created on first use:
`imagededup==0.3.3.post2` is installed with `--no-deps` (its requirements would pull another
torch) and sees this project's packages (torch, numpy, Pillow, scipy, PyWavelets) through a
`.pth` file; only matplotlib, which imagededup imports at module level, is added there.

Figures are medians of `--repeat` rounds; in each round both tools run in turns on the same
files, and a speedup is the median of the per-round ratios, so it holds on a shared machine
even when the absolute times do not (`load_avg_1m_at_end` gives the context).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/ must not shadow the project's packages

from bench.publish import publish
from curate.dedup.hamming import hamming_pairs, plan
from curate.dedup.hashing import from_hex

BENCH_CACHE = ROOT / ".cache" / "bench"
IMAGE_CACHE = BENCH_CACHE / "dedup-images"
PEER_VENV = ROOT / ".cache" / "venvs" / "imagededup"
RESULTS = ROOT / "bench" / "results" / "dedup.json"
GENERATOR_VERSION = 1
PEER_REQUIREMENT = "imagededup==0.3.3.post2"
PEER_EXTRA = ("matplotlib>=3.7",)
THRESHOLD = 10

PEER_RUNNER = r"""
import json, sys, time
from importlib.metadata import version
args = json.loads(sys.argv[1])
from imagededup.methods import PHash
phasher = PHash(verbose=False)
out = {"version": version("imagededup")}
if args["mode"] == "encode":
    started = time.perf_counter()
    hashes = phasher.encode_images(image_dir=args["dir"], num_enc_workers=args["workers"])
    out["seconds"] = time.perf_counter() - started
    out["hashes"] = hashes
else:
    with open(args["hashes"]) as fh:
        encoding = json.load(fh)
    started = time.perf_counter()
    found = phasher.find_duplicates(encoding_map=encoding, max_distance_threshold=args["t"],
                                    scores=True, search_method=args["method"],
                                    num_dist_workers=args["workers"])
    out["seconds"] = time.perf_counter() - started
    pairs = set()
    for a, dups in found.items():
        for b, _d in dups:
            i, j = int(a), int(b)
            pairs.add((min(i, j), max(i, j)))
    out["pairs"] = sorted(pairs)
with open(args["result"], "w") as fh:
    json.dump(out, fh)
"""

OURS_RUNNER = r"""
import json, sys, time
from pathlib import Path
args = json.loads(sys.argv[1])
sys.path.insert(0, args["root"])
import pandas as pd
from core.cache import ResultCache
from core.config import from_mapping
from curate.config import Params
from curate.stages.dedup import DedupOptions, DedupRun
images = pd.read_csv(args["table"])
params = from_mapping(Params, {"workers": args["workers"],
                               "paths": {"store": args["store"], "cache": args["cache"]}}, "")
run = DedupRun(params, DedupOptions(workers=args["workers"]))
live = pd.DataFrame({"image_id": images["name"], "store_path": images["name"],
                     "width": images["width"], "height": images["height"]})
cache = ResultCache(Path(args["cache"]) / "cache.sqlite")
started = time.perf_counter()
found, errors = run.hash_images(cache, live)
seconds = time.perf_counter() - started
cache.close()
with open(args["result"], "w") as fh:
    json.dump({"seconds": seconds, "hashes": {k: v["h"] for k, v in found.items()},
               "errors": list(errors.items())}, fh)
"""

MILLION_RUNNER = r"""
import json, resource, sys, time
import numpy as np
sys.path.insert(0, sys.argv[2])
from curate.dedup.hamming import hamming_pairs, plan
n, t = int(sys.argv[1]), 10
rng = np.random.default_rng(1)
h = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
k = n // 100
src, dst = rng.choice(n, k, replace=False), rng.choice(n, k, replace=False)
flips = np.zeros(k, dtype=np.uint64)
for _ in range(5):
    flips ^= np.uint64(1) << rng.integers(0, 64, k).astype(np.uint64)
h[dst] = h[src] ^ flips
hamming_pairs(h[:2000], t)  # load the compiled kernels
started = time.perf_counter()
i, j, d = hamming_pairs(h, t)
seconds = time.perf_counter() - started
print(json.dumps({"n": n, "seconds": seconds, "pairs": int(len(i)), "chunks": plan(n, t)[0],
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def log(message: str) -> None:
    print(f"[bench.dedup] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ images


def _make_image(args: tuple[int, Path]) -> tuple[str, int, int]:
    """One 1-2 MP JPEG from a random crop of a bundled photo (deterministic per index)."""
    import skimage.data
    from PIL import Image, ImageEnhance, ImageOps

    index, folder = args
    rng = np.random.default_rng([7, index])
    names = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "retina",
             "hubble_deep_field", "camera", "brick", "grass", "gravel", "moon", "page")
    arr = getattr(skimage.data, names[index % len(names)])()
    img = Image.fromarray(arr[..., :3] if arr.ndim == 3 else arr).convert("RGB")
    w, h = img.size
    cw, ch = int(w * rng.uniform(0.5, 1.0)), int(h * rng.uniform(0.5, 1.0))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    img = img.crop((x, y, x + cw, y + ch))
    megapixels = rng.uniform(1.0, 2.0) * 1e6
    aspect = rng.uniform(0.6, 1.6)
    tw = int((megapixels * aspect) ** 0.5)
    th = int(megapixels / tw)
    img = img.resize((tw, th), Image.Resampling.BICUBIC)
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.8, 1.2))
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    name = f"img{index:05d}.jpg"
    img.save(folder / name, quality=int(rng.integers(85, 96)))
    return name, tw, th


def ensure_images(n: int, workers: int) -> pd.DataFrame:
    """The benchmark JPEGs (made once); a table of name, width, height."""
    version = json.dumps({"generator": GENERATOR_VERSION, "n": n})
    marker = IMAGE_CACHE / "VERSION"
    table = IMAGE_CACHE / "images.csv"
    if marker.exists() and marker.read_text() == version and table.exists():
        return pd.read_csv(table)
    IMAGE_CACHE.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    for old in IMAGE_CACHE.glob("*.jpg"):
        old.unlink()
    log(f"generating {n} JPEGs of 1-2 MP in {IMAGE_CACHE} (once)")
    with ProcessPoolExecutor(workers) as pool:
        rows = list(pool.map(_make_image, [(i, IMAGE_CACHE) for i in range(n)], chunksize=16))
    df = pd.DataFrame(rows, columns=["name", "width", "height"])
    df.to_csv(table, index=False)
    marker.write_text(version)
    return df


# ------------------------------------------------------------------ peer


def ensure_peer() -> Path:
    """The peer's virtualenv (made on first use); returns its python."""
    python = PEER_VENV / "bin" / "python"
    if python.exists() and subprocess.run([str(python), "-c", "import imagededup.methods"],
                                          check=False, capture_output=True).returncode == 0:
        return python
    log(f"creating {PEER_VENV} with {PEER_REQUIREMENT} (no deps; shares this venv's torch)")
    subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    site = next((PEER_VENV / "lib").glob("python3*/site-packages"))
    ours = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (site / "zz_project_venv.pth").write_text("\n".join(ours) + "\n")
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "--no-deps", PEER_REQUIREMENT], check=True)
    subprocess.run([*pip, *PEER_EXTRA], check=True)
    return python


def run_peer(python: Path, args: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(dir=BENCH_CACHE) as tmp:
        args = {**args, "result": str(Path(tmp) / "result.json")}
        started = time.perf_counter()
        proc = subprocess.run([str(python), "-c", PEER_RUNNER, json.dumps(args)],
                              check=False, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"imagededup failed:\n{proc.stderr[-3000:]}")
        out = json.loads(Path(args["result"]).read_text())
    out["process_seconds"] = wall
    return out


# ------------------------------------------------------------------ ours


def ours_hashing(images: pd.DataFrame, workers: int) -> tuple[float, dict[str, str]]:
    """The stage's hashing step on the benchmark files, cold cache; (seconds, name -> hex).

    Run in a fresh process and timed there around the call, like the peer: the process pool
    then starts from a light `__main__` (as under the `curate` command), not from this script.
    """
    with tempfile.TemporaryDirectory(dir=BENCH_CACHE) as tmp:
        table = Path(tmp) / "images.csv"
        images.to_csv(table, index=False)
        args = {"root": str(ROOT), "store": str(IMAGE_CACHE), "cache": str(Path(tmp) / "c"),
                "table": str(table), "workers": workers, "result": str(Path(tmp) / "r.json")}
        subprocess.run([sys.executable, "-c", OURS_RUNNER, json.dumps(args)], check=True)
        out = json.loads(Path(args["result"]).read_text())
    if out["errors"]:
        raise RuntimeError(f"hashing failed: {out['errors'][:3]}")
    return out["seconds"], out["hashes"]


def synthetic_hashes(n: int, seed: int = 0) -> np.ndarray:
    """Uniform 64-bit hashes plus 1% planted near copies (1-10 bits flipped)."""
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    k = max(1, n // 100)
    src, dst = rng.choice(n, k, replace=False), rng.choice(n, k, replace=False)
    for idx in range(k):
        bits = rng.choice(64, int(rng.integers(1, 11)), replace=False)
        h[dst[idx]] = h[src[idx]] ^ np.uint64(sum(1 << int(b) for b in bits))
    return h


def median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def hashing_bench(images: pd.DataFrame, workers: int, repeat: int, peer: Path | None,
                  result: dict[str, Any]) -> dict[str, Any]:
    """Ours and imagededup in turns on the same files; the ratio is the median of the rounds."""
    mp = float((images.width * images.height).mean() / 1e6)
    ours_s: list[float] = []
    peer_s: list[float] = []
    ours_hex: dict[str, str] = {}
    peer_hex: dict[str, str] = {}
    for path in IMAGE_CACHE.rglob("*.jpg"):  # both tools then read from the page cache (ours
        path.read_bytes()                     # goes first in a round: it must not read cold)
    for r in range(repeat):
        s, ours_hex = ours_hashing(images, workers)
        ours_s.append(s)
        if peer:
            out = run_peer(peer, {"mode": "encode", "dir": str(IMAGE_CACHE),
                                  "workers": workers if workers > 1 else 0})  # 0: no pool
            peer_s.append(out["seconds"])
            peer_hex = out["hashes"]
            result["peer_version"] = out["version"]
        log(f"hashing {len(images)} JPEGs ({mp:.2f} MP), {workers} worker(s), round {r + 1}: "
            f"ours {ours_s[-1]:.2f} s" + (f", imagededup {peer_s[-1]:.2f} s" if peer_s else ""))
    hashing: dict[str, Any] = {
        "images": len(images), "mean_megapixels": round(mp, 3), "workers": workers,
        "ours_seconds": median(ours_s), "ours_rounds": [round(x, 2) for x in ours_s],
        "ours_images_per_s": round(len(images) / statistics.median(ours_s), 1),
    }
    if peer_s:
        common = sorted(set(ours_hex) & set(peer_hex))
        dist = [(from_hex(ours_hex[k]) ^ from_hex(peer_hex[k])).bit_count() for k in common]
        hashing.update({
            "peer_seconds": median(peer_s), "peer_rounds": [round(x, 2) for x in peer_s],
            "peer_images_per_s": round(len(images) / statistics.median(peer_s), 1),
            "speedup": round(statistics.median([p / o for p, o in zip(peer_s, ours_s)]), 2),
            "goal_speedup": 3.0,
            "peer_hashed": len(peer_hex),
            "hash_distance_ours_vs_peer": {"median": float(np.median(dist)),
                                           "mean": round(float(np.mean(dist)), 2),
                                           "p95": float(np.percentile(dist, 95))},
        })
    hashing["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    hashing["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)  # shared machine: context
    return hashing


def search_bench(args: argparse.Namespace, n: int, peer: Path | None,
                 result: dict[str, Any]) -> None:
    """Ours vs imagededup's default search on `n` synthetic hashes (pair sets compared)."""
    h = synthetic_hashes(n)
    started = time.perf_counter()
    hamming_pairs(h[:2000], THRESHOLD)
    warmup = time.perf_counter() - started
    ours_s, pairs = [], None
    for _ in range(args.repeat):
        started = time.perf_counter()
        i, j, _d = hamming_pairs(h, THRESHOLD)
        ours_s.append(time.perf_counter() - started)
        pairs = set(zip(i.tolist(), j.tolist()))
    search: dict[str, Any] = {
        "n": n, "threshold": THRESHOLD, "planted_near_pairs": max(1, n // 100),
        "ours_seconds": median(ours_s), "ours_kernel_load_seconds": round(warmup, 3),
        "ours_pairs": len(pairs or ()), "ours_chunks": plan(n, THRESHOLD)[0],
    }
    if peer:
        with tempfile.NamedTemporaryFile("w", suffix=".json", dir=BENCH_CACHE, delete=False) as fh:
            json.dump({str(k): f"{int(v):016x}" for k, v in enumerate(h)}, fh)
            hashes_file = fh.name
        try:
            peer_s = []
            for _ in range(args.repeat):
                log(f"search: imagededup find_duplicates at {n:,} hashes (brute_force_cython)")
                out = run_peer(peer, {"mode": "search", "hashes": hashes_file, "t": THRESHOLD,
                                      "method": "brute_force_cython", "workers": args.workers})
                peer_s.append(out["seconds"])
            peer_pairs = {tuple(p) for p in out["pairs"]}
        finally:
            os.unlink(hashes_file)
        search.update({
            "peer_method": "brute_force_cython", "peer_seconds": median(peer_s),
            "peer_pairs": len(peer_pairs),
            "speedup": round(statistics.median(peer_s) / statistics.median(ours_s), 1),
            "goal_speedup": 10.0,
            "identical_pair_sets": peer_pairs == pairs,
        })
    search["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    search["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    result["search_100k" if n == 100_000 else f"search_{n}"] = search
    log(json.dumps(search))


# ------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--search-n", type=int, default=100_000)
    ap.add_argument("--million", action="store_true", help="also time 1M hashes (ours alone)")
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--skip-hashing", action="store_true")
    args = ap.parse_args()
    BENCH_CACHE.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "bench": "dedup", "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "workers": args.workers, "repeat": args.repeat,
    }
    peer = None if args.skip_peer else ensure_peer()

    if not args.skip_hashing:
        images = ensure_images(args.images, args.workers)
        for workers in dict.fromkeys((args.workers, 1)):
            key = "hashing" if workers == args.workers else "hashing_1_worker"
            result[key] = hashing_bench(images, workers, args.repeat, peer, result)
            log(json.dumps(result[key]))

    n = args.search_n
    if n > 0:
        search_bench(args, n, peer, result)
    if args.million:
        log("search: 1M hashes, ours alone, in a fresh process")
        proc = subprocess.run([sys.executable, "-c", MILLION_RUNNER, "1000000", str(ROOT)],
                              capture_output=True, text=True, check=True)
        million = json.loads(proc.stdout.strip().splitlines()[-1])
        million.update({"seconds": round(million["seconds"], 2),
                        "peak_rss_mib": round(million["peak_rss_mib"], 1),
                        "goal": "under 300 s and 4096 MiB",
                        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
        result["search_1m"] = million
        log(json.dumps(million))

    # Sections skipped this time (--skip-hashing, --search-n 0, no --million) keep their figures
    # from the previous run, marked as such: each section's ratio is internally consistent.
    if RESULTS.exists():
        previous = json.loads(RESULTS.read_text())
        for key, section in previous.items():
            if key not in result and isinstance(section, dict) and "measured_at" in section:
                result[key] = {**section, "from_previous_run": True}
    publish("dedup", result)


if __name__ == "__main__":
    main()
