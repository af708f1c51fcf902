"""The per-image work of StyleGAN's dataset_tool.py as a plain Pillow loop (bench/prepare.py).

Open, centre crop, Lanczos resize, PNG encode, into a stored zip, as dataset_tool does it; one
process, or a pool of them. Run as its own light program, so a pool's workers import nothing
but this module, Pillow and numpy:

    python -m bench.pillow_loop JOB.json    # {"paths": [...], "dest": ..., "processes": N,
                                            #  "level": PNG compress level, "resolution": 512}

prints {"seconds": ..., "zip_bytes": ...}, the seconds timed around the loop (pool start
included, interpreter start and imports excluded).
"""

from __future__ import annotations

import io
import json
import multiprocessing
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def pillow_image(job: tuple[str, int, int]) -> bytes:
    """One image: open, centre crop, Lanczos resize, PNG encode (optimize off, as dataset_tool)."""
    path, level, resolution = job
    with Image.open(path) as img:
        arr = np.asarray(img.convert("RGB"))
    side = min(arr.shape[:2])
    top, left = (arr.shape[0] - side) // 2, (arr.shape[1] - side) // 2
    img = Image.fromarray(arr[top:top + side, left:left + side], "RGB")
    img = img.resize((resolution, resolution), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="png", compress_level=level, optimize=False)
    return buf.getvalue()


def pillow_loop(paths: list[str], dest: Path, processes: int, level: int,
                resolution: int) -> float:
    """Every image into a stored zip, as dataset_tool writes one; seconds."""
    jobs = [(p, level, resolution) for p in paths]
    started = time.perf_counter()
    pool = None
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_STORED) as zf:
        if processes > 1:  # the same start method as the project's pools
            pool = multiprocessing.get_context("forkserver").Pool(processes)
            results = pool.imap(pillow_image, jobs, chunksize=8)
        else:
            results = map(pillow_image, jobs)
        for k, png in enumerate(results):
            zf.writestr(f"{k // 1000:05d}/img{k:08d}.png", png)
        zf.writestr("dataset.json", json.dumps({"labels": None}))
    if pool is not None:
        pool.close()
        pool.join()
    return time.perf_counter() - started


if __name__ == "__main__":
    job = json.loads(Path(sys.argv[1]).read_text())
    dest = Path(job["dest"])
    seconds = pillow_loop(job["paths"], dest, job["processes"], job["level"], job["resolution"])
    print(json.dumps({"seconds": seconds, "zip_bytes": dest.stat().st_size}))
