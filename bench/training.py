"""Benchmark the train stage on CPU: training throughput per model, and the data loader alone.

Run from the repository root with the project's virtualenv:

    .venv/bin/python bench/training.py [--threads 1] [--batch 16] [--quick]

It prints one JSON line on stdout (progress goes to stderr) and writes the same object,
indented, to `bench/results/train.json` (--quick: to bench/results/tmp/).

What is measured, and why
-------------------------
* **Training** (`models`): for each model at 64 px, `Trainer.iteration()` (discriminator
  step(s), lazy R1 when due, generator step, EMA, ADA bookkeeping; data loading with one
  worker process included) on a toy dataset, timed after warm-up iterations. Networks are the
  defaults of params.yaml's `train` section (the published architectures: DCGAN 64 feature
  maps, StyleGAN2 channel_base 16384 / channel_max 512), plus a CPU-sized StyleGAN2
  (`stylegan2_small`, channel_base 2048 / channel_max 128) like the one the demo trains. ADA
  runs at a fixed p = 0.2 so the augmentation cost is included. Figures: images/s (real
  images shown to D per second) and s/kimg (seconds per 1000 of them), StyleGAN's unit.
* **Data loader** (`loader`): the DataLoader the trainer uses (uint8 batches of 32 from a
  StyleGAN-format zip: PNG decode through core.imageio, one image per `__getitem__`) with
  0, 1 and 2 worker processes, at 64, 256 and 512 px, on photo-like images (random crops of
  scikit-image's bundled sample photos; smooth synthetic images decode unrealistically fast).
* **Ratios**: loader speed over training consumption measured here (the loader must never be
  the bottleneck), and over StyleGAN2-ADA's published single-V100 consumption (README table,
  256 px ~ 21.6 s/kimg, 512 px ~ 72.5 s/kimg: 46 and 14 images/s), which is the number a GPU
  run must feed (goal: >= 5x).

No GPU was lent to the session that wrote this, so there are no GPU training figures here;
when one is available, run `train fit` at 256/512 and read perf/s_per_kimg from dvclive.
CPU threads: default 1 because this machine's 2 cores are shared with other work, where 2
OpenMP threads each waiting on the other are ~100x slower, not 2x faster (measured); pass
`--threads 2` on an idle machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.harness import Bench
from train.config import train_config_from_mapping
from train.data import open_dataset
from train.dist import init_distributed
from train.loop import RunPaths, Trainer
from train.synthetic import make_blob_dataset, write_dataset_zip

#: StyleGAN2-ADA, 1 x V100, s/kimg from its README's expected-training-time table (fast end).
SG2ADA_V100_S_PER_KIMG = {256: 21.6, 512: 72.5}
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "retina", "hubble_deep_field",
          "immunohistochemistry")
MODELS: dict[str, dict[str, Any]] = {
    "dcgan": {"model": "dcgan"},
    "wgan_gp": {"model": "wgan_gp"},
    "stylegan2": {"model": "stylegan2"},
    "stylegan2_small": {"model": "stylegan2",
                        "stylegan2": {"channel_base": 2048, "channel_max": 128}},
}
#: (warm-up, timed) iterations per model; StyleGAN2 at full width takes ~45 s per iteration.
ITERATIONS = {"dcgan": (2, 6), "wgan_gp": (1, 3), "stylegan2": (1, 2), "stylegan2_small": (2, 4)}
BENCH: Bench  # this run's (main() makes it)


def photo_dataset(path: Path, n: int, resolution: int, seed: int = 0) -> Path:
    """`n` random square crops of scikit-image's sample photos, resized to `resolution`."""
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = []
    for name in PHOTOS:
        img = np.asarray(getattr(skimage.data, name)())
        if img.ndim == 2:
            img = np.stack([img] * 3, -1)
        photos.append(Image.fromarray(img[..., :3]))
    images = []
    for i in range(n):
        photo = photos[i % len(photos)]
        side = int(rng.integers(min(photo.size) // 3, min(photo.size) + 1))
        x = int(rng.integers(0, photo.width - side + 1))
        y = int(rng.integers(0, photo.height - side + 1))
        crop = photo.crop((x, y, x + side, y + side)).resize((resolution, resolution),
                                                             Image.Resampling.LANCZOS)
        images.append(np.asarray(crop))
    return write_dataset_zip(path, images)


def bench_model(name: str, data: Path, batch: int, work: Path) -> dict[str, Any]:
    warm, timed = ITERATIONS[name]
    cfg = train_config_from_mapping({**MODELS[name], "batch": batch, "loader_workers": 1,
                                     "ada": {"target": None, "p_init": 0.2}})
    env = init_distributed("cpu")
    trainer = Trainer(cfg, open_dataset(data), RunPaths(work / name), env, lambda _m: None,
                      metrics=False)
    trainer.start_loader()
    for _ in range(warm):
        trainer.iteration()
    start = time.perf_counter()
    for _ in range(timed):
        trainer.iteration()
    seconds = time.perf_counter() - start
    images = timed * batch * trainer.objective.n_critic
    result = {
        "img_per_s": round(images / seconds, 2),
        "s_per_kimg": round(seconds / images * 1000, 1),
        "s_per_iteration": round(seconds / timed, 3),
        "timed_iterations": timed,
        "params_G_M": round(sum(p.numel() for p in trainer.G.parameters()) / 1e6, 2),
        "params_D_M": round(sum(p.numel() for p in trainer.D.parameters()) / 1e6, 2),
        "config": MODELS[name],
    }
    BENCH.log(f"{name}: {result['img_per_s']} img/s, {result['s_per_kimg']} s/kimg")
    return result


def bench_loader(data: Path, workers: int, batches: int, batch: int = 32) -> float:
    ds = open_dataset(data)
    sampler = torch.utils.data.RandomSampler(ds, replacement=True, num_samples=batches * batch,
                                             generator=torch.Generator().manual_seed(0))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, sampler=sampler,
                                         num_workers=workers,
                                         prefetch_factor=4 if workers else None)
    it = iter(loader)
    next(it)  # worker start-up excluded
    start = time.perf_counter()
    n = sum(b.shape[0] for b in it)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16, help="global batch for training")
    parser.add_argument("--quick", action="store_true",
                        help="skip full-width StyleGAN2 and the 512 px loader (a smoke run)")
    args = parser.parse_args()
    global BENCH
    BENCH = Bench("train", packages=("torch",))
    BENCH.record("in-process: train.loop.Trainer.iteration per model; torch DataLoader over "
                 "train.data.open_dataset")
    torch.set_num_threads(args.threads)
    cache = REPO / ".cache" / "bench"
    cache.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "machine": {"threads": args.threads, "gpu": None},
        "batch": args.batch,
        "note": "CPU only: no GPU was lent to this session; GPU figures are out of scope here.",
    }
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        work = Path(tmp)
        toy64 = make_blob_dataset(work / "toy64.zip", 256, 64)
        models = [m for m in MODELS if not (args.quick and m == "stylegan2")]
        result["models"] = {m: bench_model(m, toy64, args.batch, work) for m in models}
        loader: dict[str, dict[str, float]] = {}
        for res, n, batches in ((64, 512, 12), (256, 256, 6), (512, 128, 3)):
            if args.quick and res == 512:
                continue
            data = photo_dataset(work / f"photos{res}.zip", n, res)
            loader[str(res)] = {f"workers_{w}": round(bench_loader(data, w, batches), 1)
                                for w in (0, 1, 2)}
            BENCH.log(f"loader {res} px: {loader[str(res)]} img/s")
        result["loader_img_per_s"] = loader
    best = {res: max(v.values()) for res, v in loader.items()}
    fastest_training = max(m["img_per_s"] for m in result["models"].values())
    ratios: dict[str, float] = {
        "loader64_over_fastest_cpu_training": round(best["64"] / fastest_training, 1)}
    for res, s_per_kimg in SG2ADA_V100_S_PER_KIMG.items():
        if str(res) in best:
            ratios[f"loader{res}_over_sg2ada_v100_consumption"] = round(
                best[str(res)] / (1000 / s_per_kimg), 1)
    result["ratios"] = ratios
    result["reference_sg2ada_v100_s_per_kimg"] = SG2ADA_V100_S_PER_KIMG
    BENCH.publish(result, quick=args.quick)


if __name__ == "__main__":
    main()
