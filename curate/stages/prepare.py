"""Prepare stage: one distribution's images -> an aligned, augmented, versioned StyleGAN dataset.

Reads data/split/manifest.parquet (live images of distribution NAME), the merged tags
(keypoints, crop boxes) and the matte outputs (composites on the background colour, masks), and
writes:

- data/datasets/NAME.zip: StyleGAN2-ADA / StyleGAN3 / EDM2 format (see `core.datasetzip`);
- data/datasets/NAME.json and NAME.md: the dataset card (counts per source, per alignment method,
  why images are not in it, the parameters' hash) and NAME_grid.png, a sample grid;
- data/prepare/NAME/manifest.parquet: one row per dataset image (archive name, parent image,
  transform, alignment method and angle, upscale factor), plus one per excluded image.

Per-image outputs are cached as PNG files keyed by (image id, hash of every setting that changes
pixels), so adding 1% of images prepares 1% and re-zips; changing a setting re-prepares all.

A combined dataset (`run_prepare_combined`, `curate prepare --combined NAME --dist A --dist B`)
is several distributions, each prepared as above, in one zip whose dataset.json labels every
image with its class index (A = 0, B = 1, ...) for class-conditional training; its manifest adds
`class_index` and `class_name`, its card lists the classes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd

from core import atomic
from core.cache import ResultCache, op_key
from core.config import ConfigError
from core.console import StageSummary, console
from core.datasetzip import archive_name, write_dataset_zip
from core.device import check
from core.errors import ParamsError
from core.imagemap import cached_map
from core.manifest import read_table, write_table
from core.parallel import engine_is_local
from core.stage import StageResult, Status
from core.store import Store
from curate.config import Params
from curate.prepare import card as dataset_card
from curate.prepare.framing import calibrate_framing
from curate.prepare.grid import sample_grid
from curate.prepare.keypoint_angle import calibrate_keypoint_angle
from curate.prepare.mask_direction import calibrate_mask_direction
from curate.prepare.task import Settings, Task
from curate.prepare.worker import Prepared, prepare
from curate.split.config import DistributionConfig

#: Bump when the code changes what an image's crop looks like (cached crops are then redone).
#: 2: mask alignment keeps the mask's largest part and takes the frame exit as the bottom.
VERSION = 2
#: Under paths.cache: one folder of PNG crops per settings hash.
PREPARED_SUBDIR = "prepare"


@dataclass(frozen=True)
class PrepareOptions:
    split_manifest: Path = Path("data/split/manifest.parquet")
    tags: Path = Path("data/tags/merged.parquet")
    matte_dir: Path = Path("data/matte")
    datasets_dir: Path = Path("data/datasets")
    out_dir: Path = Path("data/prepare")
    workers: int | None = None


class PrepareError(ParamsError, RuntimeError):
    """A problem the user must fix (unknown distribution, nothing to export)."""


def _pair(points: tuple[tuple[float, ...], ...]) -> tuple[tuple[float, float],
                                                          tuple[float, float]]:
    return (points[0][0], points[0][1]), (points[1][0], points[1][1])


def settings_for(params: Params, dist: DistributionConfig) -> Settings:
    """The prepare settings of one distribution: its align order and framing targets (its
    own, else the prepare section's)."""
    p = params.prepare
    names = p.keypoints.names or ("", "")  # no names: no image has keypoints to align on
    faces = {} if dist.face_targets is None else {"face_targets": _pair(dist.face_targets)}
    return Settings(
        resolution=p.resolution, align=dist.align, keypoint_names=(names[0], names[1]),
        keypoint_targets=_pair(dist.keypoint_targets or p.keypoints.targets), **faces,
        box_margin=p.box_margin, mask_margin=p.mask_margin, pad=p.pad,
        background=tuple(params.background), max_upscale=p.max_upscale,
        png_compression=p.png_compression, augment=p.augment, device=p.face_device)


def _settings_hash(settings: Settings, source: str) -> str:
    # The device changes how fast, not what: a GPU run reuses the CPU run's crops.
    kept = {k: v for k, v in dataclasses.asdict(settings).items() if k != "device"}
    blob = json.dumps({"settings": kept, "source": source,
                       "version": VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _finite(*values: object) -> bool:
    return all(v is not None and not pd.isna(v) for v in values)


def build_tasks(rows: pd.DataFrame, tags: pd.DataFrame | None, params: Params,
                settings: Settings, matte_dir: Path) -> list[Task]:
    """One task per live image: which pixels to read and what geometry the tags give."""
    store = Store(params.paths.store)
    by_id = tags.set_index("image_id") if tags is not None and len(tags) else None
    k0, k1 = settings.keypoint_names
    tasks = []
    for row in rows.itertuples(index=False):
        keypoints = box = spread = None
        annotators = 1
        if by_id is not None and row.image_id in by_id.index:
            t = by_id.loc[row.image_id]
            cols = [f"kp_{k0}_x", f"kp_{k0}_y", f"kp_{k1}_x", f"kp_{k1}_y"]
            if all(c in t.index for c in cols) and _finite(*(t[c] for c in cols)):
                keypoints = ((float(t[cols[0]]), float(t[cols[1]])),
                             (float(t[cols[2]]), float(t[cols[3]])))
                # Tags merged before these columns existed: one annotator, spread unknown.
                annotators = max(1, int(t.get("kp_annotators", 1)))
                spread = float(t["kp_spread"]) if _finite(t.get("kp_spread")) else None
            if _finite(t.get("bbox_x"), t.get("bbox_y"), t.get("bbox_w"), t.get("bbox_h")):
                rot = t.get("bbox_rotation")
                box = (float(t["bbox_x"]), float(t["bbox_y"]), float(t["bbox_w"]),
                       float(t["bbox_h"]), float(rot) if _finite(rot) else 0.0)
        matte = getattr(row, "matte_path", None)
        mask = getattr(row, "mask_path", None)
        use_matte = params.prepare.source == "matte" and _finite(matte)
        image = matte_dir / str(matte) if use_matte else store.root / row.store_path
        tasks.append(Task(row.image_id, image, int(row.width), int(row.height), keypoints, box,
                          matte_dir / str(mask) if _finite(mask) else None,
                          keypoint_annotators=annotators, keypoint_spread=spread))
    return tasks


def _file_stamp(path: Path | None) -> list[int] | None:
    """Size and modification time of a file (None when there is none)."""
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def crop_key(task: Task) -> str:
    """The cache key of one image's crops: its id and a digest of what they are made from (its
    tag geometry, and the size and modification time of its image and mask files), so that a
    moved keypoint or a matte made again prepares that image again. The annotators' spread is
    left out: it reaches a crop only through the settings (see `curate.prepare.keypoint_angle`).
    """
    inputs = {**dataclasses.asdict(task), "keypoint_spread": None,
              "files": [_file_stamp(task.image), _file_stamp(task.mask)]}
    blob = json.dumps(inputs, sort_keys=True, default=str)
    return f"{task.image_id}:{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def prepared_op(settings_hash: str) -> str:
    """The cache op of the per-image metadata of the PNGs under
    <paths.cache>/prepare/<settings_hash>/ (what `curate gc` keeps for a current dataset)."""
    return op_key("prepare.image", VERSION, {"settings": settings_hash})


class PreparedPngs:
    """Prepared PNGs on disk (one folder per settings hash); their metadata is cached per
    image by `cached_map`.

    PNGs are not fsync'd (see `atomic.write_bytes`): the metadata records each one's size and a
    PNG whose size does not match is made again.
    """

    def __init__(self, root: Path, settings_hash: str) -> None:
        self.root = root / settings_hash
        self.op = prepared_op(settings_hash)

    def png_path(self, image_id: str, variant: int) -> Path:
        return self.root / image_id[:2] / f"{image_id}-{variant}.png"

    def revisit(self, task: Task, meta: dict) -> Task | None:
        """None while every PNG the metadata names is on disk with its recorded size."""
        intact = all(self._intact(task.image_id, o["variant"], o["bytes"])
                     for o in meta["outputs"])
        return None if intact else task

    def _intact(self, image_id: str, variant: int, size: int) -> bool:
        try:
            return self.png_path(image_id, variant).stat().st_size == size
        except FileNotFoundError:
            return False

    def write(self, _task: Task, done: Prepared) -> dict:
        """Write the PNGs, then return the metadata that points at them (cached after)."""
        for out in done.outputs:
            atomic.write_bytes(self.png_path(done.image_id, out.variant), out.png,
                               durable=False)
        return {"method": done.method, "angle_deg": done.angle_deg, "upscale": done.upscale,
                "skipped": done.skipped,
                "outputs": [{"variant": o.variant, "transform": o.description,
                             "bytes": len(o.png)} for o in done.outputs]}


def _prepare_all(tasks: list[Task], settings: Settings, outputs: PreparedPngs,
                 cache: ResultCache, workers: int, summary: StageSummary
                 ) -> tuple[dict[str, dict], dict[str, str]]:
    known: dict[str, dict] = {}
    errors: dict[str, str] = {}
    face = "face" in settings.align
    if face and engine_is_local():
        check(settings.device, "prepare face detection")
    for outcome in cached_map(outputs.op, tasks, partial(prepare, s=settings), cache,
                              key=crop_key, workers=workers,
                              revisit=outputs.revisit, record=outputs.write,
                              gpu=face and settings.device == "cuda",
                              description="prepare: align, crop, resize"):
        summary.cached += outcome.cached
        if outcome.ok:
            known[outcome.item.image_id] = outcome.value
        else:
            errors[outcome.item.image_id] = outcome.failure.describe()
    return known, errors


def _rows(rows: pd.DataFrame, meta: dict[str, dict], errors: dict[str, str]) -> pd.DataFrame:
    """One row per dataset image and one per image left out, in image id order (archive names
    are given by `_numbered`, once the rows of every class are in one table)."""
    records = []
    for image_id in sorted(rows.image_id):
        if image_id in errors or meta[image_id]["skipped"]:
            records.append({"image_id": image_id, "archive_name": None, "variant": None,
                            "transform": None, "status": Status.EXCLUDED.value,
                            "reason": "prepare_failed" if image_id in errors else "upscale",
                            "message": errors.get(image_id) or meta[image_id]["skipped"],
                            "method": meta.get(image_id, {}).get("method"),
                            "angle_deg": meta.get(image_id, {}).get("angle_deg"),
                            "upscale": meta.get(image_id, {}).get("upscale")})
            continue
        m = meta[image_id]
        for out in m["outputs"]:
            records.append({"image_id": image_id, "archive_name": None,
                            "variant": out["variant"], "transform": out["transform"],
                            "status": Status.OK.value, "reason": None, "message": None,
                            "method": m["method"], "angle_deg": m["angle_deg"],
                            "upscale": m["upscale"]})
    return pd.DataFrame(records).astype({"variant": "Int64", "archive_name": "object"})


def _numbered(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with archive names given to its dataset images in row order (the zip's order)."""
    ok = table.status == Status.OK
    table = table.copy()
    table.loc[ok, "archive_name"] = [archive_name(i) for i in range(int(ok.sum()))]
    return table


def why_empty(name: str, manifest: pd.DataFrame, split_manifest: Path) -> str:
    """What to do when distribution `name` got no live image from the split."""
    live = manifest[manifest.status == Status.OK]
    counts = Counter(live["distribution"].dropna()) if "distribution" in live else Counter()
    proposals = Counter(live["proposal"].dropna()) if "proposal" in live else Counter()
    if proposals and not counts:
        groups = " and ".join(f"{p} ({n})" for p, n in sorted(proposals.items()))
        return (f"no distribution has images yet: the split proposed {groups}; name them "
                f"(`curate split --name cluster_0={name}`, see reports/split.html), tag some "
                "images (`curate tags push`), or add a distribution with catch_all: true to "
                "split.distributions in params.yaml")
    others = ", ".join(f"{d} ({n})" for d, n in sorted(counts.items())) or "none"
    return (f"no live images assigned to {name!r} in {split_manifest} (the split gave: "
            f"{others}): tag images of its categories, name a proposed group for it "
            f"(`curate split --name cluster_N={name}`), or remove it from split.distributions")


@dataclass(frozen=True)
class _Prepared:
    """One distribution's images prepared (PNGs in the cache), before anything is exported."""

    name: str
    rows: pd.DataFrame  # its live rows of the split manifest
    table: pd.DataFrame  # its per-image manifest rows, not yet numbered
    settings: Settings
    settings_hash: str
    outputs: PreparedPngs
    cleaned: set[str]  # images whose matte lost clutter (counted with prepare.source: matte)


def _distributions(params: Params, names: list[str]) -> list[DistributionConfig]:
    dists = {d.name: d for d in params.split.distributions}
    for name in names:
        if name not in dists:
            raise PrepareError(f"unknown distribution {name!r}; params.yaml "
                               f"split.distributions has {', '.join(dists)}")
    return [dists[n] for n in names]


def calibrate(params: Params, tasks: list[Task], settings: Settings) -> Settings:
    """One distribution's `settings` completed from its own tagged images: the keypoints'
    angle weighed against the mask's axis, which end of a mask is up, and the framing of box
    and mask crops matched to the keypoint crops (last: it frames like the refined crops)."""
    if params.prepare.keypoint_angle_from_mask:
        settings = calibrate_keypoint_angle(tasks, settings)
    settings = calibrate_mask_direction(tasks, settings)
    if params.prepare.match_keypoint_framing:
        settings = calibrate_framing(tasks, settings)
    return settings


def _prepare_distribution(params: Params, dist: DistributionConfig, manifest: pd.DataFrame,
                          tags: pd.DataFrame | None, options: PrepareOptions,
                          cache: ResultCache, summary: StageSummary) -> _Prepared:
    """Prepare one distribution's live images with its own settings (framing calibrated on
    its own images), so that its PNGs are the cache entries `--dist` makes and reuses."""
    rows = manifest[(manifest.status == Status.OK) & (manifest.distribution == dist.name)]
    if rows.empty:
        raise PrepareError(why_empty(dist.name, manifest, options.split_manifest))
    settings = settings_for(params, dist)
    tasks = build_tasks(rows, tags, params, settings, options.matte_dir)
    settings = calibrate(params, tasks, settings)
    settings_hash = _settings_hash(settings, params.prepare.source)
    outputs = PreparedPngs(params.paths.cache / PREPARED_SUBDIR, settings_hash)
    meta, errors = _prepare_all(tasks, settings, outputs, cache,
                                options.workers or params.n_workers, summary)
    # Counted only when the dataset is made of the composites (prepare.source: matte).
    cleaned = dataset_card.matte_cleaned(rows) if params.prepare.source == "matte" else set()
    return _Prepared(dist.name, rows, _rows(rows, meta, errors), settings, settings_hash,
                     outputs, cleaned)


def _prepare_each(params: Params, dists: list[DistributionConfig], options: PrepareOptions,
                  summary: StageSummary) -> tuple[list[_Prepared], pd.DataFrame]:
    """Every distribution of `dists` prepared, and the split manifest they came from."""
    manifest = read_table(options.split_manifest)
    _check_disjoint(manifest, [d.name for d in dists])
    tags = read_table(options.tags) if options.tags.exists() else None
    with ResultCache(params.paths.cache / "results.sqlite") as cache:
        parts = [_prepare_distribution(params, d, manifest, tags, options, cache, summary)
                 for d in dists]
    return parts, manifest


def _check_disjoint(manifest: pd.DataFrame, names: list[str]) -> None:
    """Refuse an image that two of `names` both hold: it would get two labels (the split gives
    one distribution an image, so this means a hand-edited or broken manifest)."""
    live = manifest[(manifest.status == Status.OK) & manifest.distribution.isin(names)]
    held = live.groupby("image_id").distribution.agg(lambda d: sorted(set(d)))
    twice = held[held.map(len) > 1]
    if not twice.empty:
        raise PrepareError(f"image {twice.index[0]} is assigned to "
                           f"{' and '.join(twice.iloc[0])} in the split manifest "
                           f"({len(twice)} such images); an image belongs to one "
                           "distribution: rerun `curate split`")


def _check_combination(params: Params, name: str, members: list[str]
                       ) -> list[DistributionConfig]:
    """The distributions a combined dataset `name` is made of, or why it cannot be made."""
    if len(members) < 2:
        raise PrepareError(f"--combined {name} needs at least two distributions "
                           f"(--dist A --dist B), got {len(members)}")
    repeated = sorted({m for m in members if members.count(m) > 1})
    if repeated:
        raise PrepareError(f"--combined {name}: {', '.join(repeated)} given more than once "
                           "(each distribution is one class)")
    try:
        DistributionConfig(name).validate("--combined")
    except ConfigError as exc:
        raise PrepareError(str(exc)) from None
    dists = _distributions(params, members)
    if name in {d.name for d in params.split.distributions}:
        raise PrepareError(f"--combined {name}: {name!r} is a distribution's name; its "
                           f"dataset would overwrite data/datasets/{name}.zip: choose another")
    resolutions = {d.name: settings_for(params, d).resolution for d in dists}
    if len(set(resolutions.values())) > 1:
        given = ", ".join(f"{n} {r}px" for n, r in resolutions.items())
        raise PrepareError(f"--combined {name}: the distributions' resolutions differ "
                           f"({given}); one dataset holds images of one size")
    return dists


def _labelled_table(parts: list[_Prepared]) -> pd.DataFrame:
    """Every part's rows, part by part (class index = position), numbered in that order."""
    return _numbered(pd.concat(
        [p.table.assign(class_index=k, class_name=p.name) for k, p in enumerate(parts)],
        ignore_index=True))


def _grid_png(live: pd.DataFrame, parts: list[_Prepared], card: dict, cleaned: set[str],
              size: int) -> bytes:
    """The sample grid: one tile per source image, every class in equal share (a combined
    dataset's first class alone would fill it), clutter-cleaned mattes marked."""
    plain = live[live.variant == 0]
    per_class = -(-size // plain.class_index.nunique())
    tiles = plain.groupby("class_index", sort=True).head(per_class).head(size)
    return sample_grid(
        [parts[k].outputs.png_path(i, 0).read_bytes()
         for k, i in zip(tiles.class_index, tiles.image_id)],
        marked=[i in cleaned for i in tiles.image_id],
        caption=dataset_card.cleaned_text(card) + " (orange corner)" if cleaned else "")


def _export(name: str, parts: list[_Prepared], manifest: pd.DataFrame, params: Params,
            options: PrepareOptions, summary: StageSummary, labelled: bool) -> dict:
    """Write the zip, manifest, card and grid of dataset `name` made of `parts`; the zip
    carries class labels (the index of each image's part) when `labelled`."""
    table = _labelled_table(parts)
    classes = ["class_index", "class_name"]
    write_table(table if labelled else table.drop(columns=classes),
                options.out_dir / name / "manifest.parquet", sort_by=["image_id", "variant"])
    for k, part in enumerate(parts):
        _refuse_empty(part.name, table[table.class_index == k], options.out_dir / name)
    live = table[table.status == Status.OK]
    zip_path = options.datasets_dir / f"{name}.zip"
    result = write_dataset_zip(
        zip_path, (parts[k].outputs.png_path(i, v).read_bytes()
                   for k, i, v in zip(live.class_index, live.image_id, live.variant)),
        labels=live.class_index.tolist() if labelled else None)
    cards = [dataset_card.distribution_card(p.name, p.rows, manifest, p.table, p.settings_hash,
                                            params, result.resolution, zip_path.name, p.settings,
                                            p.cleaned) for p in parts]
    card = dataset_card.combined_card(name, zip_path.name, cards) if labelled else cards[0]
    cleaned = set().union(*(p.cleaned for p in parts))
    atomic.write_bytes(options.datasets_dir / f"{name}_grid.png",
                       _grid_png(live, parts, card, cleaned, params.prepare.grid))
    atomic.write_text(options.datasets_dir / f"{name}.json", json.dumps(card, indent=2) + "\n")
    atomic.write_text(options.datasets_dir / f"{name}.md", dataset_card.card_markdown(card) + "\n")
    for row in table.itertuples():
        summary.count("exported" if row.status == Status.OK else "excluded",
                      None if row.status == Status.OK else row.reason)
    summary.save(options.out_dir / name / "summary.json")
    summary.print()
    console.print(f"prepare {name}: {result.count} images {result.resolution}x"
                  f"{result.resolution} -> {zip_path}: {dataset_card.contents_text(card)}")
    return card


def _refuse_empty(name: str, table: pd.DataFrame, out_dir: Path) -> None:
    """Stop when prepare left out every image of distribution `name` (no dataset, or an empty
    class), saying where the per-image reasons are."""
    if (table.status == Status.OK).any():
        return
    why = ", ".join(f"{k}: {v}" for k, v in Counter(table.reason).items())
    raise PrepareError(f"every image of {name!r} was left out ({why}); see "
                       f"{out_dir / 'manifest.parquet'} (for upscale: lower "
                       "prepare.resolution or raise prepare.max_upscale)")


def run_prepare(params: Params, name: str, options: PrepareOptions = PrepareOptions()
                ) -> StageResult:
    """Prepare and export the dataset of distribution ``name``.

    ``computed``: images aligned and cropped now (the rest came from the cache). ``details``:
    ``card``, the dataset card also written as ``<name>.json``.
    """
    return _run(params, name, _distributions(params, [name]), options, labelled=False)


def run_prepare_combined(params: Params, name: str, members: list[str],
                         options: PrepareOptions = PrepareOptions()) -> StageResult:
    """Export distributions ``members`` as one class-labelled dataset ``name``.

    Class k is ``members[k]``: its images are prepared exactly as ``run_prepare`` prepares
    them (its own alignment and framing), so after the single datasets this is mostly cache
    hits and a re-zip. For class-conditional training (BigGAN-style, StyleGAN's ``--cond``).
    """
    return _run(params, name, _check_combination(params, name, members), options,
                labelled=True)


def _run(params: Params, name: str, dists: list[DistributionConfig], options: PrepareOptions,
         labelled: bool) -> StageResult:
    summary = StageSummary(f"prepare {name}")
    parts, manifest = _prepare_each(params, dists, options, summary)
    card = _export(name, parts, manifest, params, options, summary, labelled)
    data = options.datasets_dir
    return StageResult(
        summary, {"zip": data / f"{name}.zip", "card": data / f"{name}.json",
                  "card_markdown": data / f"{name}.md", "grid": data / f"{name}_grid.png",
                  "manifest": options.out_dir / name / "manifest.parquet",
                  "summary": options.out_dir / name / "summary.json"},
        computed=sum(len(p.rows) for p in parts) - summary.cached, details={"card": card})
