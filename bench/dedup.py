"""Benchmark the dedup stage's hashing and Hamming search against imagededup, in one run.

Run from the repository root with the project's virtualenv:

    .venv/bin/python bench/dedup.py [--images 2000] [--workers N] [--repeat 3]
                                    [--search-n 100000] [--search-repeat 1]
                                    [--max-load 1.0] [--max-wait 1800] [--no-million]
                                    [--skip-peer] [--skip-hashing] [--quick]

It prints one JSON object on stdout (progress goes to stderr) and writes it, indented, to
`bench/results/dedup.json`; a partial run (`--skip-*`, `--no-million`, `--quick`) goes to
bench/results/tmp/ instead, so the committed file is always one whole run. `--search-n` smaller
than 100,000 is a whole run at that size (the result says which: `search_<n>`), for a machine
where the peer's quadratic search would take too long at 100k.

What is measured
----------------
Every comparison runs both tools in alternating turns (bench/harness.py: A B, B A, ...), each
in its own fresh interpreter timed there around the call (imports excluded); a speed-up is
the median of the per-round ratios imagededup time / ours (higher is better, < 1: ours is
slower), and every turn records the load average before it.

* **Hashing throughput** (`hashing` with `--workers`, `hashing_1_worker` with one process
  each) on `--images` JPEGs of 1-2 megapixels (crops of scikit-image's
  bundled photos, rescaled, with random brightness, flips and JPEG quality 85-95; generated
  once into `.cache/bench/dedup-images/`, a VERSION file records how).
  - ours: the stage's own hashing step (`DedupRun.hash_images`: process pool of `--workers`,
    phash of the half-scale-decoded canonical image, sharpness, cache commits), cold cache
    (pool start included);
  - peer: imagededup's `PHash().encode_images(dir, num_enc_workers=--workers)`.
  Both read the files from the page cache (read once before the first turn). Also reported:
  how far our phash is from imagededup's on the same files (two implementations of the same
  idea; imagededup resizes RGB with Lanczos and ignores the DC term in the median).
* **Search at `--search-n` (100k) synthetic 64-bit hashes**, threshold 10: uniform random
  hashes plus 1% planted near copies (1-10 bits flipped). First the harness waits (up to
  `--max-wait` s) for the 1-minute load average to drop to `--max-load` and records whether
  it did; then `--search-repeat` rounds of:
  - ours: `hamming_pairs` (multi-index hashing, numba) in a fresh interpreter with an empty
    numba cache (NUMBA_CACHE_DIR), called twice: the first call includes compiling the
    kernels (`ours_first_call_s`), the second does not (`ours_seconds`); `ours_compile_s` is
    their difference. The headline `speedup` counts the compile (`ours_first_call_s`),
    `speedup_compiled` does not;
  - peer: imagededup's `find_duplicates(encoding_map=..., max_distance_threshold=10)` with its
    default `brute_force_cython` search and `num_dist_workers=--workers`;
  - the two pair sets are compared: they must be identical.
* **1M hashes, ours alone** (unless `--no-million`): time and peak memory of `hamming_pairs`
  in a fresh process (goal: under 5 minutes and 4 GiB on 2 cores).

The peer lives in its own virtualenv, `.cache/venvs/imagededup`, made on first use by the
harness: `imagededup==0.3.3.post2` is installed with `--no-deps` (its requirements would pull
another torch) and sees this project's packages (torch, numpy, Pillow, scipy, PyWavelets)
through a `.pth` file; only matplotlib, which imagededup imports at module level, is added.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/ must not shadow the project's packages

from bench.harness import SCRATCH, Bench, Comparison, PeerEnv, median, python_env, scratch
from curate.dedup.hashing import from_hex

BENCH_CACHE = SCRATCH
IMAGE_CACHE = BENCH_CACHE / "dedup-images"
GENERATOR_VERSION = 1
PEER = PeerEnv("imagededup", ("matplotlib>=3.7",), probe="import imagededup.methods",
               no_deps=("imagededup==0.3.3.post2",), share_site_packages=True,
               report=("imagededup", "numpy", "pillow", "scipy", "matplotlib"))
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

#: ours on a file of hashes in a fresh interpreter whose numba cache is empty: the first call
#: compiles the kernels, the second runs them compiled.
SEARCH_RUNNER = r"""
import json, sys, time
import numpy as np
from curate.dedup.hamming import hamming_pairs, plan
args = json.loads(sys.argv[1])
h = np.load(args["hashes"])
started = time.perf_counter()
hamming_pairs(h, args["t"])
first = time.perf_counter() - started
started = time.perf_counter()
i, j, d = hamming_pairs(h, args["t"])
second = time.perf_counter() - started
with open(args["result"], "w") as fh:
    json.dump({"first_s": first, "second_s": second, "chunks": plan(len(h), args["t"])[0],
               "pairs": np.stack([i, j], 1).tolist()}, fh)
"""

MILLION_RUNNER = r"""
import json, resource, sys, time
import numpy as np
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


def ensure_images(bench: Bench, n: int, workers: int) -> pd.DataFrame:
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
    bench.log(f"generating {n} JPEGs of 1-2 MP in {IMAGE_CACHE} (once)")
    with ProcessPoolExecutor(workers) as pool:
        rows = list(pool.map(_make_image, [(i, IMAGE_CACHE) for i in range(n)], chunksize=16))
    df = pd.DataFrame(rows, columns=["name", "width", "height"])
    df.to_csv(table, index=False)
    marker.write_text(version)
    return df


# ------------------------------------------------------------------ the two sides


def run_json(bench: Bench, argv: list[Any], args: dict[str, Any], label: str,
             env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a runner program with `args` (plus a result file) and return what it wrote."""
    with tempfile.TemporaryDirectory(dir=scratch()) as tmp:
        args = {**args, "result": str(Path(tmp) / "result.json")}
        bench.run([*argv, json.dumps(args)], label=label, cwd=ROOT, env=env or python_env())
        return json.loads(Path(args["result"]).read_text())


def peer_run(bench: Bench, python: Path, args: dict[str, Any]) -> dict[str, Any]:
    return run_json(bench, [python, "-c", PEER_RUNNER], args,
                    f"bench/dedup.py PEER_RUNNER ({args['mode']}): imagededup PHash")


def ours_hashing(bench: Bench, images: pd.DataFrame, workers: int) -> dict[str, Any]:
    """The stage's hashing step on the benchmark files, cold cache: seconds, name -> hex.

    Run in a fresh process and timed there around the call, like the peer: the process pool
    then starts from a light `__main__` (as under the `curate` command), not from this script.
    """
    with tempfile.TemporaryDirectory(dir=scratch()) as tmp:
        table = Path(tmp) / "images.csv"
        images.to_csv(table, index=False)
        out = run_json(bench, [sys.executable, "-c", OURS_RUNNER],
                       {"root": str(ROOT), "store": str(IMAGE_CACHE),
                        "cache": str(Path(tmp) / "c"), "table": str(table), "workers": workers},
                       "bench/dedup.py OURS_RUNNER: DedupRun.hash_images on a cold cache")
    if out["errors"]:
        raise RuntimeError(f"hashing failed: {out['errors'][:3]}")
    return out


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


def compared(comparison: Comparison, ours: str = "ours", peer: str = "imagededup"
             ) -> dict[str, Any]:
    """The harness's summary with the speed-up (peer time / ours) lifted to the top."""
    table = comparison.to_dict(ours=ours)
    out: dict[str, Any] = {"comparison": table}
    if peer in comparison.sides:
        out["speedup"] = table["speedup_other_time_over_ours"][peer]["median"]
    return out


# ------------------------------------------------------------------ the measurements


def hashing_bench(bench: Bench, images: pd.DataFrame, workers: int, repeat: int,
                  peer: Path | None) -> dict[str, Any]:
    """Ours and imagededup in alternating turns on the same files."""
    mp = float((images.width * images.height).mean() / 1e6)
    for path in IMAGE_CACHE.rglob("*.jpg"):  # both tools then read from the page cache
        path.read_bytes()
    found: dict[str, dict[str, str]] = {}

    def ours() -> dict[str, Any]:
        out = ours_hashing(bench, images, workers)
        found["ours"] = out["hashes"]
        return {"seconds": out["seconds"]}

    def imagededup() -> dict[str, Any]:
        assert peer is not None
        out = peer_run(bench, peer, {"mode": "encode", "dir": str(IMAGE_CACHE),
                                     "workers": workers if workers > 1 else 0})  # 0: no pool
        found["peer"] = out["hashes"]
        return {"seconds": out["seconds"]}

    bench.log(f"hashing {len(images)} JPEGs ({mp:.2f} MP), {workers} worker(s)")
    sides = {"ours": ours, **({"imagededup": imagededup} if peer else {})}
    comparison = bench.compare(sides, repeat)
    ours_s = comparison.seconds("ours")
    hashing: dict[str, Any] = {
        "images": len(images), "mean_megapixels": round(mp, 3), "workers": workers,
        "ours_seconds": median(ours_s),
        "ours_images_per_s": round(len(images) / median(ours_s), 1),
    }
    if peer:
        peer_s = comparison.seconds("imagededup")
        common = sorted(set(found["ours"]) & set(found["peer"]))
        dist = [(from_hex(found["ours"][k]) ^ from_hex(found["peer"][k])).bit_count()
                for k in common]
        hashing.update({
            "peer_seconds": median(peer_s),
            "peer_images_per_s": round(len(images) / median(peer_s), 1),
            "goal_speedup": 3.0,
            "peer_hashed": len(found["peer"]),
            "hash_distance_ours_vs_peer": {"median": float(np.median(dist)),
                                           "mean": round(float(np.mean(dist)), 2),
                                           "p95": float(np.percentile(dist, 95))},
        })
    return {**hashing, **compared(comparison)}


def search_bench(bench: Bench, args: argparse.Namespace, n: int,
                 peer: Path | None) -> dict[str, Any]:
    """Ours (compile included) and imagededup's default search on `n` synthetic hashes, in
    alternating turns once the load is low; the pair sets compared."""
    h = synthetic_hashes(n)
    quiet = bench.wait_for_quiet(args.max_load, args.max_wait, f"search at {n:,} hashes")
    pairs: dict[str, set[tuple[int, int]]] = {}
    with tempfile.TemporaryDirectory(dir=scratch()) as tmp:
        np.save(Path(tmp) / "hashes.npy", h)
        (Path(tmp) / "hashes.json").write_text(
            json.dumps({str(k): f"{int(v):016x}" for k, v in enumerate(h)}))
        numba = iter(range(10**6))

        def ours() -> dict[str, Any]:
            cache = Path(tmp) / f"numba-{next(numba)}"  # empty: the kernels compile again
            out = run_json(bench, [sys.executable, "-c", SEARCH_RUNNER],
                           {"hashes": str(Path(tmp) / "hashes.npy"), "t": THRESHOLD},
                           "bench/dedup.py SEARCH_RUNNER: hamming_pairs twice, empty numba "
                           "cache", env=python_env({"NUMBA_CACHE_DIR": str(cache)}))
            pairs["ours"] = {(int(i), int(j)) for i, j in out["pairs"]}
            return {"seconds": out["first_s"], "compiled_s": out["second_s"],
                    "chunks": out["chunks"]}

        def imagededup() -> dict[str, Any]:
            assert peer is not None
            bench.log(f"search: imagededup find_duplicates at {n:,} hashes (brute_force_cython)")
            out = peer_run(bench, peer, {"mode": "search", "hashes": str(Path(tmp) / "hashes.json"),
                                         "t": THRESHOLD, "method": "brute_force_cython",
                                         "workers": args.workers})
            pairs["peer"] = {(int(i), int(j)) for i, j in out["pairs"]}
            return {"seconds": out["seconds"]}

        sides = {"ours": ours, **({"imagededup": imagededup} if peer else {})}
        comparison = bench.compare(sides, args.search_repeat)
    first = comparison.seconds("ours")
    compiled = [e["compiled_s"] for e in comparison.extras("ours")]
    search: dict[str, Any] = {
        "n": n, "threshold": THRESHOLD, "planted_near_pairs": max(1, n // 100),
        "low_load": quiet, "max_load": args.max_load,
        "ours_first_call_s": median(first), "ours_seconds": median(compiled),
        "ours_compile_s": round(median(first) - median(compiled), 4),
        "ours_pairs": len(pairs["ours"]),
        "ours_chunks": comparison.extras("ours")[-1]["chunks"],
    }
    if peer:
        peer_s = comparison.seconds("imagededup")
        search.update({
            "peer_method": "brute_force_cython", "peer_seconds": median(peer_s),
            "peer_pairs": len(pairs["peer"]),
            "speedup_compiled": round(median(p / c for p, c in zip(peer_s, compiled,
                                                                   strict=True)), 1),
            "goal_speedup": 10.0,
            "identical_pair_sets": pairs["peer"] == pairs["ours"],
        })
    out = {**search, **compared(comparison)}
    if "speedup" in out:
        out["speedup"] = round(out["speedup"], 1)
    return out


def million(bench: Bench) -> dict[str, Any]:
    bench.log("search: 1M hashes, ours alone, in a fresh process")
    done = bench.run([sys.executable, "-c", MILLION_RUNNER, "1000000"], cwd=ROOT,
                     label="bench/dedup.py MILLION_RUNNER: hamming_pairs on 1M hashes")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out.update({"seconds": round(out["seconds"], 2), "peak_rss_mib": round(out["peak_rss_mib"], 1),
                "goal": "under 300 s and 4096 MiB"})
    return out


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeat", type=int, default=3, help="rounds of the hashing comparison")
    ap.add_argument("--search-n", type=int, default=100_000)
    ap.add_argument("--search-repeat", type=int, default=1,
                    help="rounds of the search comparison (the peer takes ~1 h at 100k)")
    ap.add_argument("--max-load", type=float, default=(os.cpu_count() or 2) / 2,
                    help="wait for this 1-minute load average before the search")
    ap.add_argument("--max-wait", type=float, default=1800, help="seconds to wait for it")
    ap.add_argument("--no-million", action="store_true", help="skip 1M hashes (ours alone)")
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--skip-hashing", action="store_true")
    ap.add_argument("--quick", action="store_true",
                    help="200 images, 5,000 hashes, one round each (a smoke run)")
    args = ap.parse_args(argv)
    if args.quick:
        args.images, args.repeat, args.search_n, args.search_repeat = 200, 1, 5000, 1
        args.no_million = True
    partial = args.quick or args.skip_peer or args.skip_hashing or args.no_million
    bench = Bench("dedup", packages=("numba",))
    scratch()
    result: dict[str, Any] = {"workers": args.workers, "repeat": args.repeat,
                              "search_repeat": args.search_repeat}
    peer = None if args.skip_peer else bench.peer(PEER)
    if not args.skip_hashing:
        images = ensure_images(bench, args.images, args.workers)
        for workers in dict.fromkeys((args.workers, 1)):
            key = "hashing" if workers == args.workers else "hashing_1_worker"
            result[key] = hashing_bench(bench, images, workers, args.repeat, peer)
    if args.search_n > 0:
        key = "search_100k" if args.search_n == 100_000 else f"search_{args.search_n}"
        result[key] = search_bench(bench, args, args.search_n, peer)
    if not args.no_million:
        result["search_1m"] = million(bench)
    bench.publish(result, quick=partial)


if __name__ == "__main__":
    main()
