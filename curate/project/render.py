"""Render params.yaml and dvc.yaml from the templates beside this module."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml

from curate.config import Params
from curate.project.codedeps import code_deps
from curate.split.config import DistributionConfig

TEMPLATES = Path(__file__).parent / "templates"
#: The folder holding the `curate` and `train` packages' sources (a checkout of this project).
CODE_ROOT = Path(__file__).resolve().parents[2]
#: The alignment fallback order a distribution gets by default (the config's).
DEFAULT_ALIGN = DistributionConfig("all").align


def _flow(value: Any) -> str:
    """A value as one line of YAML flow style (`[a, b]`, `data/x`, `"a b: c"`)."""
    text = yaml.safe_dump([value], default_flow_style=True, width=10_000).strip()
    return text[1:-1]


_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), trim_blocks=True,
                          lstrip_blocks=True, keep_trailing_newline=True,
                          undefined=jinja2.StrictUndefined)
_ENV.filters["flow"] = _flow


@dataclass(frozen=True)
class ProjectSpec:
    """What `curate init` asks for; everything else in params.yaml is the code's default."""

    sources: tuple[dict[str, str], ...]
    categories: tuple[str, ...] = ()
    keypoints: tuple[str, ...] = ()
    snapshot: str | None = None
    export: str = "tags/export.json"
    distributions: tuple[DistributionConfig, ...] = field(
        default_factory=lambda: (DistributionConfig("all", catch_all=True,
                                              align=("box", "mask", "center")),))
    resolution: int = 512
    train: str = "quick"  # quick (a CPU-sized first model) | full (real-run values)
    models: str = "models/pretrained"
    keypoint_targets: tuple[tuple[float, float], ...] = ((0.5, 0.8), (0.5, 0.2))
    colour_style: str = "disabled"  # quality.checks.colour_style mode (absolute: at z 3.0)
    demo: bool = False  # a `demo` section: the pipeline generates its own raw inputs


#: This repository's demo: `make demo` runs the pipeline these values describe.
DEMO = ProjectSpec(
    sources=({"kind": "folder", "path": "data/demo/raw"},),
    categories=("soles", "pov"), keypoints=("heel", "toe"),
    snapshot="data/demo/labelstudio_export.json", export="data/tags/export.json",
    distributions=(DistributionConfig("soles", ("soles",)), DistributionConfig("pov", ("pov",))),
    demo=True,
)

#: The second demo subject (`curate demo-data --subject figures`): cartoon superhero figures,
#: full or upper body, aligned on the eyes (MTCNN first, the annotators' eye points next), the
#: colour-style check on (realistic colours are outliers in drawn art). Written by
#: `bench/out_of_sample.py` into its project; nothing here is tuned on the figures' results.
#: Each distribution frames its figure whole in 85% of the side, from the drawing's
#: proportions in head heights: hair top 0.72 above the eye line, feet 6.75 and waist 2.7
#: below it, eyes 0.34 apart (a full figure spans 7.5 heads, an upper one 3.4).
FIGURES_FULL_EYES = ((0.481, 0.157), (0.519, 0.157))
FIGURES_UPPER_EYES = ((0.458, 0.254), (0.542, 0.254))
FIGURES = ProjectSpec(
    sources=({"kind": "folder", "path": "data/demo/raw"},),
    categories=("full", "upper"), keypoints=("eye_left", "eye_right"),
    snapshot="data/demo/labelstudio_export.json", export="data/tags/export.json",
    distributions=tuple(
        DistributionConfig(name, (name,), align=("face", "keypoints", "mask", "center"),
                           keypoint_targets=eyes, face_targets=eyes)
        for name, eyes in (("full", FIGURES_FULL_EYES), ("upper", FIGURES_UPPER_EYES))),
    keypoint_targets=FIGURES_UPPER_EYES, colour_style="absolute",
)


def render_params(spec: ProjectSpec) -> str:
    values = asdict(spec)
    values["distributions"] = [asdict(d) for d in spec.distributions]
    values["keypoint_targets"] = [list(t) for t in spec.keypoint_targets]
    return _ENV.get_template("params.yaml.j2").render(**values)


def _dep(path: Path, project: Path) -> str:
    """A dependency path as dvc.yaml should name it: relative inside the project."""
    absolute = path if path.is_absolute() else project / path
    try:
        return absolute.resolve().relative_to(project.resolve()).as_posix()
    except ValueError:
        return absolute.resolve().as_posix()


def code_prefix(project: Path) -> str | None:
    """How dvc.yaml reaches this project's source files from `project`, or None when the
    package is installed elsewhere (then stages do not depend on code files)."""
    try:
        rel = CODE_ROOT.relative_to(project.resolve())
    except ValueError:
        return None
    return "" if rel == Path(".") else rel.as_posix() + "/"


def render_pipeline(params: Params, project: Path) -> str:
    """dvc.yaml for `params`: its sources and tags snapshot as the deps DVC watches."""
    project = Path(project)
    sources = [_dep(s.path, project) for s in params.ingest.sources]
    snapshot = [_dep(params.tags.snapshot, project)] if params.tags.snapshot else []
    code = code_prefix(project)
    deps = {stage: [] for stage in STAGE_ENTRIES} if code is None else stage_code_deps()
    store = _dep(params.paths.store, project)
    return _ENV.get_template("dvc.yaml.j2").render(
        ingest_deps=list(dict.fromkeys(sources)), tags_deps=snapshot, code=code,
        code_deps=deps, demo=params.demo is not None,
        store=None if Path(store).is_absolute() else store)


#: The module each stage's command runs, and the command-line module that calls it.
STAGE_ENTRIES = {"ingest": ("curate.stages.ingest", "curate/cli.py"),
                 "dedup": ("curate.stages.dedup", "curate/cli.py"),
                 "tags": ("curate.stages.tags", "curate/cli.py"),
                 "quality": ("curate.stages.quality", "curate/cli.py"),
                 "matte": ("curate.stages.matte", "curate/cli.py"),
                 "split": ("curate.stages.split", "curate/cli.py"),
                 "prepare": ("curate.stages.prepare", "curate/cli.py"),
                 "train": ("train.stage", "train/cli.py")}


def stage_code_deps() -> dict[str, list[str]]:
    """Per stage, the source files and folders its command runs (found from the imports,
    see `curate.project.codedeps`), relative to the project's code root."""
    return {stage: code_deps(CODE_ROOT, module, cli)
            for stage, (module, cli) in STAGE_ENTRIES.items()}


def pipeline_deps(dvc_yaml: Path) -> dict[str, set[str]]:
    """stage name -> the dependency paths dvc.yaml lists (for the out-of-date warning)."""
    try:
        stages = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")).get("stages", {})
    except (OSError, yaml.YAMLError, AttributeError):
        return {}
    return {name: {str(d) for d in (stage or {}).get("deps", []) or []}
            for name, stage in stages.items() if isinstance(stage, dict)}


def unwatched(stage: str, wanted: list[Path], project: Path = Path(".")) -> list[str]:
    """The paths of `wanted` that `project`/dvc.yaml's `stage` does not list as dependencies:
    DVC would not notice when they change. Nothing when there is no dvc.yaml (a run by hand)."""
    dvc_yaml = Path(project) / "dvc.yaml"
    if not dvc_yaml.exists():
        return []
    listed = pipeline_deps(dvc_yaml).get(stage, set())
    return [p for p in (_dep(w, Path(project)) for w in wanted) if p not in listed]


def unwatched_warning(stage: str, wanted: list[Path], project: Path) -> str | None:
    """One line for the user when `project`'s dvc.yaml is behind its params.yaml, else None."""
    missing = unwatched(stage, wanted, project)
    if not missing:
        return None
    return (f"dvc.yaml's {stage} stage does not list {', '.join(missing)} as a dependency, so "
            "`dvc repro` will not notice when it changes: run `curate pipeline`")


def relative_or_absolute(path: Path, base: Path) -> str:
    """`path` relative to `base` when inside it, else absolute (for params.yaml)."""
    return _dep(Path(os.path.abspath(path)), base)
