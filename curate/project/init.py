"""`curate init`: a working project for a user's own photos, before anyone has tagged one.

It writes params.yaml (the code's defaults, the user's sources, no tags, one catch-all
distribution `all`) and dvc.yaml (those sources as the ingest stage's deps), so that the first
`dvc repro` ends with a dataset and a model. Git and DVC repositories are made, and local sources
put under DVC, only when asked (flags, or a question on a terminal).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from core import atomic, models
from core.config import ConfigError
from core.errors import ParamsError
from curate.config import load_params
from curate.ingest.local import is_archive
from curate.project.render import (
    DEFAULT_ALIGN,
    ProjectSpec,
    relative_or_absolute,
    render_params,
    render_pipeline,
)
from curate.split.config import DistributionConfig

URL_LIST_SUFFIXES = (".txt", ".csv", ".tsv", ".parquet")
GITIGNORE = """\
/data/
/reports/
/.cache/
/models/pretrained/
"""
TAGS_README = """\
Label Studio exports live here: `curate tags pull --use` writes export.json and points
params.yaml's tags.snapshot at it, so `dvc repro` builds on the annotators' tags.
"""


class InitError(ParamsError, RuntimeError):
    """`curate init` cannot go on; the message says what to change. Nothing was written."""


@dataclass(frozen=True)
class InitOptions:
    sources: tuple[Path, ...]
    project: Path = Path(".")
    categories: tuple[str, ...] = ()
    keypoints: tuple[str, ...] = ()
    resolution: int = 512
    train: str = "quick"
    force: bool = False
    git: bool = False  # git init + dvc init when the folder is not a repository yet
    dvc_add: bool = False  # `dvc add` the sources that are inside the project


def source_entry(path: Path, project: Path) -> dict[str, str]:
    """params.yaml's entry for a path: folder, archive or URL list, decided by what it is."""
    if not path.exists():
        raise InitError(f"source {path} does not exist: give a folder of images, a zip/tar "
                        "archive or a URL list (txt, csv, tsv, parquet)")
    if path.is_dir():
        kind = "folder"
    elif is_archive(path):
        kind = "archive"
    elif path.name.lower().endswith(URL_LIST_SUFFIXES):
        kind = "urls"
    else:
        raise InitError(f"source {path}: not a folder, an archive (.zip, .tar[.gz|.bz2|.xz]) "
                        "or a URL list (.txt, .csv, .tsv, .parquet)")
    return {"kind": kind, "path": relative_or_absolute(path, project)}


def spec_for(options: InitOptions) -> ProjectSpec:
    project = options.project
    if not options.sources:
        raise InitError("no sources: pass --source FOLDER (or an archive, or a URL list); "
                        "repeat it for several")
    align = ("keypoints", *DEFAULT_ALIGN[1:]) if options.keypoints else DEFAULT_ALIGN[1:]
    if options.keypoints and len(options.keypoints) != 2:
        raise InitError(f"--keypoints: got {len(options.keypoints)} names, expected two (the "
                        "points alignment sends to fixed places, e.g. heel,toe)")
    spec = ProjectSpec(
        sources=tuple(source_entry(Path(s), project) for s in options.sources),
        categories=options.categories, keypoints=options.keypoints,
        distributions=(DistributionConfig("all", catch_all=True, align=align),),
        resolution=options.resolution, train=options.train)
    provisioned = models.default_models_dir()
    inside = (project / "models" / "pretrained").resolve()
    if provisioned.exists() and provisioned.resolve() != inside:
        spec = replace(spec, models=provisioned.resolve().as_posix())
    return spec


def init_project(options: InitOptions, run: Callable[..., None], say: Callable[[str], None]
                 ) -> None:
    """Write the project's files, then the repositories the options ask for."""
    project = options.project
    project.mkdir(parents=True, exist_ok=True)
    spec = spec_for(options)
    targets = [project / "params.yaml", project / "dvc.yaml"]
    existing = [t for t in targets if t.exists()]
    if existing and not options.force:
        raise InitError(f"{', '.join(str(t) for t in existing)} already exist(s): pass --force "
                        "to replace them (your edits there are lost), or init another folder")
    params_text = render_params(spec)
    staged = project / ".params.yaml.init"
    staged.write_text(params_text, encoding="utf-8")
    try:
        params = load_params(staged)
    except ConfigError as exc:
        raise InitError(f"the options give invalid params: {exc}") from None
    finally:
        staged.unlink()
    atomic.write_text(project / "params.yaml", params_text)
    atomic.write_text(project / "dvc.yaml", render_pipeline(params, project))
    (project / "tags").mkdir(exist_ok=True)
    if not (project / "tags" / "README.md").exists():
        atomic.write_text(project / "tags" / "README.md", TAGS_README)
    if not (project / ".gitignore").exists():
        atomic.write_text(project / ".gitignore", GITIGNORE)
    say(f"wrote {project / 'params.yaml'} and {project / 'dvc.yaml'} "
        f"({len(spec.sources)} source(s), no tags yet, one distribution: all)")
    if options.git:
        if not (project / ".git").exists():
            run(["git", "init", "-q"], project)
        if not (project / ".dvc").exists():
            run([sys.executable, "-m", "dvc", "init", "-q"], project)
        say("initialised git and dvc")
    if options.dvc_add:
        for source in params.ingest.sources:
            path = (source.path if source.path.is_absolute() else project / source.path).resolve()
            if not path.is_relative_to(project.resolve()):
                say(f"{source.path} is outside the project, so DVC cannot version it: "
                    f"`dvc import-url {source.path} photos` versions a copy (then point "
                    "ingest.sources at photos and run `curate pipeline`), or keep it where it "
                    "is (it is a dependency either way, on this machine only)")
                continue
            inside = path.relative_to(project.resolve())
            if inside.parts[:1] == ("data",):  # GITIGNORE: DVC refuses a git-ignored .dvc file
                say(f"{source.path} is under data/, which git ignores, so its .dvc file could "
                    "not be committed: move it out of data/ (e.g. to photos/) and init again")
                continue
            run([sys.executable, "-m", "dvc", "add", "-q", str(inside)], project)
            say(f"dvc add {source.path}: versioned (commit {source.path}.dvc with git)")


def next_steps(project: Path, git: bool) -> list[str]:
    here = "" if project.resolve() == Path.cwd().resolve() else f"cd {project} && "
    steps = []
    if not git and not (project / ".dvc").exists():
        steps.append(f"{here}git init && dvc init   (dvc repro needs both)")
    steps += [
        (f"{here}dvc repro   -> a dataset per distribution (data/datasets/all.zip) and a "
         "model (models/all/)"),
        ("look at reports/duplicates.html, reports/outliers.html, reports/mattes.html and "
         "reports/split.html (the proposed groups)"),
        "name the groups you want as datasets: curate split --name cluster_0=NAME, then dvc repro",
        ("or tag: start Label Studio (python -m curate.tags.localserver --document-root .), "
         "set tags.categories, curate tags push, then curate tags pull --use and dvc repro"),
        "after editing ingest.sources or tags.snapshot by hand: curate pipeline",
    ]
    return steps


def run_checked(cmd: list[str], cwd: Path) -> None:
    """Run a setup command (git, dvc); its failure stops init with the command's words."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise InitError(f"`{' '.join(cmd)}` failed in {cwd}: "
                        f"{(proc.stderr or proc.stdout).strip()}")
