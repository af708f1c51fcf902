"""Image embeddings shared by the stages that compare images by content.

dedup (near-duplicates by cosine similarity), quality (kNN outlier score) and split
(category classifier) all need the same vectors: MobileNetV2 ImageNet features from the
offline weights (`curate models provision`), globally average-pooled to 1280-d and
L2-normalised, so a dot product is a cosine similarity. Computing them is by far the most
expensive per-image work on a CPU, so this module owns both the computation and a per-image
cache, and `embed` only computes the images it has never seen:

    vectors = embed(params, [(image_id, path), ...])   # (n, 1280) float32, one row per item

An item may name a region, `(key, path, (x0, y0, x1, y1))` in fractions of the image: the
vector of that crop, cached under `key` (dedup embeds the photo inside a screenshot or a
letterbox this way).

The cache is a compact binary one, not JSON: one float16 blob per (model key, image id) in
SQLite (`<paths.cache>/embeddings.sqlite`, 2.5 KB per image, WAL mode, written only by the
coordinating process). The model key covers the model file's md5, the input size and the
preprocessing version, so changing any of them recomputes instead of mixing vectors.

Images are decoded through `core.imageio` (reduced-scale JPEG decode, EXIF transpose,
transparency on the configured background) and resized (squashed) to a square, which keeps
all of the image, crops included, in view. Work is batched (`embeddings.batch_size` images per
task) and mapped over the project's Executor; each worker process loads the model once and
runs torch with `embeddings.threads_per_worker` threads, so N workers do not oversubscribe
the cores. With one worker the model runs in-process on all cores.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.cache import SqliteCache, op_key, select_keys
from core.device import Device, check, torch_device
from core.imagemap import Failure, attempt, cached_map
from core.parallel import engine_is_local

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from curate.config import EmbeddingsConfig, Params

#: Bump when preprocessing or pooling changes what a vector means.
PREPROCESS_VERSION = 1
DIM = {"mobilenet_v2": 1280}
_MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics the weights were trained with
_STD = (0.229, 0.224, 0.225)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS vectors (
    op TEXT NOT NULL,
    image_id TEXT NOT NULL,
    vec BLOB NOT NULL,
    PRIMARY KEY (op, image_id)
) WITHOUT ROWID
"""

Item = tuple[str, Path]
Region = tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of width and height
RegionItem = tuple[str, Path, Region]


# --------------------------------------------------------------------------- cache


class EmbeddingCache(SqliteCache):
    """float16 vectors in SQLite, keyed by (model key, image id), read and written in batches."""

    schema = _SCHEMA

    def get_many(self, op: str, image_ids: Iterable[str]) -> dict[str, np.ndarray]:
        """Cached vectors (float16) for those of `image_ids` that have one."""
        rows = select_keys(self._db, "SELECT image_id, vec FROM vectors", op, image_ids,
                           key_column="image_id")
        return {k: np.frombuffer(v, dtype="<f2") for k, v in rows}

    def put_many(self, op: str, items: Iterable[tuple[str, np.ndarray]]) -> None:
        """Store vectors (converted to little-endian float16) in one transaction."""
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO vectors (op, image_id, vec) VALUES (?, ?, ?)",
                ((op, k, np.asarray(v, dtype="<f2").tobytes()) for k, v in items),
            )

    def count(self, op: str) -> int:
        row = self._db.execute("SELECT COUNT(*) FROM vectors WHERE op = ?", [op]).fetchone()
        return int(row[0])



def cache_path(params: Params) -> Path:
    return Path(params.paths.cache) / "embeddings.sqlite"


# --------------------------------------------------------------------------- worker side


@dataclass(frozen=True)
class _Embedder:
    """What a worker needs to embed a batch: the model, its input and where to run it."""

    model: str
    weights: str
    image_size: int
    background: tuple[int, int, int]
    workers: int  # the pool's size: each worker takes its share of the cores
    threads_per_worker: int  # 0: the cores divided among the workers
    device: Device = "cpu"  # as params ask: resolved in the worker, which may have a GPU

    def threads(self) -> int:
        """All cores inline (no pool), else the configured or fair share per worker."""
        cores = os.cpu_count() or 1
        if multiprocessing.parent_process() is None:
            return cores
        return self.threads_per_worker or max(1, cores // self.workers)


_MODELS: dict[tuple[str, str, int, str], Any] = {}


def load_model(model: str, weights: str, threads: int, device: str = "cpu") -> torch.nn.Module:
    """The feature extractor on `device` ('cpu' or 'cuda'), loaded once per process (weights
    from the provisioned file), with torch set to `threads` threads on every call.

    The network is kept in channels-last memory layout: its depthwise convolutions run about
    1.8x faster that way on a CPU (measured single-threaded at batch 32), with features equal
    to the default layout's to within 2e-7 (float16 vectors equal but for the last bit of a
    few values).

    Set on every call, not once: the thread count decides how convolutions split their sums,
    so features differ in the last float16 bit between counts, and other libraries reset it
    behind our back (importing rembg loads pymatting's numba OpenMP layer, which sets OpenMP's
    count to the core count). Without this, a matte worker that had run U^2-Net computed other
    features than one that had not, and a killed matte run, rerun, gave other masks.
    """
    import torch
    from torchvision.models import mobilenet_v2

    if torch.get_num_threads() != max(1, threads):
        torch.set_num_threads(max(1, threads))
    key = (model, weights, threads, device)
    if key not in _MODELS:
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already set once in this process: harmless
            pass
        net = mobilenet_v2(weights=None)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
        _MODELS.clear()
        _MODELS[key] = net.features.eval().to(device, memory_format=torch.channels_last)
    return _MODELS[key]


def preprocess(path: Path | bytes, image_size: int, background: tuple[int, int, int],
               region: Region | None = None) -> np.ndarray:
    """Decode (crop to `region`) and squash to `image_size`², normalised CHW float32
    (ImageNet statistics)."""
    from PIL import Image

    from core.imageio import decode

    shrink = min(region[2] - region[0], region[3] - region[1]) if region else 1.0
    img = decode(path, background=background, min_side=int(image_size / max(shrink, 0.05)))
    if region is not None:
        w, h = img.size
        img = img.crop((round(region[0] * w), round(region[1] * h),
                        max(round(region[0] * w) + 1, round(region[2] * w)),
                        max(round(region[1] * h) + 1, round(region[3] * h))))
    img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(_MEAN, np.float32)) / np.asarray(_STD, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def embed_batch(items: tuple[Item | RegionItem, ...], embedder: _Embedder
                ) -> list[np.ndarray | Failure]:
    """One float16 vector per item, in order; an image that cannot be decoded gets its
    `Failure` instead."""
    import torch

    device = torch_device(embedder.device, "embeddings")
    net = load_model(embedder.model, embedder.weights, embedder.threads(), device)
    out: list[np.ndarray | Failure] = [
        attempt(preprocess, Path(item[1]), embedder.image_size, embedder.background,
                item[2] if len(item) > 2 else None)  # type: ignore[misc]
        for item in items]
    decoded = [k for k, value in enumerate(out) if not isinstance(value, Failure)]
    if decoded:
        with torch.inference_mode():
            batch = torch.from_numpy(np.stack([out[k] for k in decoded])).to(
                device, memory_format=torch.channels_last)
            feats = torch.nn.functional.normalize(net(batch).mean(dim=(2, 3)), dim=1)
        vectors = feats.cpu().numpy().astype(np.float16)
        for row, k in enumerate(decoded):
            out[k] = vectors[row]
    return out


# --------------------------------------------------------------------------- coordinator


def model_key(cfg: EmbeddingsConfig, weights_md5: str) -> str:
    """Cache key of the vectors `cfg` produces (model file, input size, preprocessing)."""
    return op_key(f"embed.{cfg.model}", PREPROCESS_VERSION,
                  {"md5": weights_md5, "size": cfg.image_size})


def vectors_key(params: Params) -> str:
    """Cache key of the vectors `params` makes (`model_key` of its model's weights)."""
    from core import models

    spec = next(s for s in models.MODELS if s.name == params.embeddings.model)
    return model_key(params.embeddings, spec.md5)


@dataclass
class EmbedResult:
    """Vectors in item order (float32, NaN rows where an image failed) and what it cost."""

    vectors: np.ndarray
    errors: dict[str, str] = field(default_factory=dict)
    computed: int = 0
    cached: int = 0


def embed_detailed(params: Params, items: Sequence[Item | RegionItem], *,
                   workers: int | None = None, description: str = "embed images"
                   ) -> EmbedResult:
    """Embeddings of `items` ((image_id, path) pairs, or (key, path, region) for a crop),
    computing only the uncached ones.

    Raises `core.models.ModelMissingError` (which names the provisioning command) when
    the weights are absent, and only when something actually has to be computed.
    """
    from core import models

    cfg = params.embeddings
    op = vectors_key(params)
    n_workers = workers or params.n_workers
    bg = params.background
    embedder: list[_Embedder] = []

    def ready(_: tuple[Any, ...]) -> _Embedder:
        """The embedder, made when the first batch must be computed: only then must the
        weights exist and the device be usable."""
        if not embedder:
            weights = models.require(cfg.model, models.models_dir(params.paths.models))
            if engine_is_local():
                check(cfg.device, "embeddings")
            embedder.append(_Embedder(cfg.model, str(weights), cfg.image_size,
                                      (bg[0], bg[1], bg[2]), n_workers,
                                      cfg.threads_per_worker, cfg.device))
        return embedder[0]

    unique = list({item[0]: item for item in items}.values())
    result = EmbedResult(np.full((len(items), DIM[cfg.model]), np.nan, dtype=np.float32))
    found: dict[str, np.ndarray] = {}
    with EmbeddingCache(cache_path(params)) as cache:
        for outcome in cached_map(op, unique, embed_batch, cache, key=itemgetter(0),
                                  workers=n_workers, batch=cfg.batch_size, batched=True,
                                  context=ready, gpu=cfg.device == "cuda",
                                  description=description):
            if outcome.ok:
                found[outcome.item[0]] = outcome.value
                result.cached += outcome.cached
                result.computed += not outcome.cached
            else:
                result.errors[outcome.item[0]] = outcome.failure.describe()
    for row, item in enumerate(items):
        vec = found.get(item[0])
        if vec is not None:
            result.vectors[row] = vec
    return result


def embed(params: Params, items: Sequence[Item], *, workers: int | None = None) -> np.ndarray:
    """(n, dim) float32 L2-normalised embeddings of `items`; NaN rows for undecodable images."""
    return embed_detailed(params, items, workers=workers).vectors


def manifest_items(params: Params, manifest: pd.DataFrame) -> list[Item]:
    """(image_id, absolute store path) for every row of a manifest, in row order."""
    root = Path(params.paths.store)
    return [(i, root / p) for i, p in zip(manifest["image_id"], manifest["store_path"])]


def embed_images(params: Params, image_ids: Sequence[str], store_paths: Sequence[str],
                 include: Sequence[bool] | np.ndarray | None = None, *,
                 workers: int | None = None) -> np.ndarray:
    """Embeddings for manifest columns (image ids, store-relative paths), row-aligned.

    Rows where `include` is False are not computed and come back as NaN.
    """
    root = Path(params.paths.store)
    rows = [k for k in range(len(image_ids)) if include is None or bool(include[k])]
    out = np.full((len(image_ids), DIM[params.embeddings.model]), np.nan, dtype=np.float32)
    if rows:
        items = [(image_ids[k], root / store_paths[k]) for k in rows]
        out[rows] = embed(params, items, workers=workers)
    return out
