"""`curate prepare --combined`: several distributions in one class-labelled StyleGAN zip.

One small project (two distributions, aligned differently) is prepared once per module: the two
single datasets, then the combined one, through the same code the CLI calls; the CLI itself runs
the refusals and a rerun.
"""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from core.manifest import write_table
from core.store import Store, content_id
from curate.cli import app
from curate.config import load_params
from curate.stages import prepare as prepare_stage
from curate.stages.prepare import PrepareOptions, run_prepare, run_prepare_combined

pytestmark = pytest.mark.integration

#: Class index = the order given, not params.yaml's order (soles comes first there).
CLASSES = ["pov", "soles"]


def _picture(seed: int, width: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (96, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def _split_rows(store: Store) -> pd.DataFrame:
    """Four soles (one an outlier upstream), three pov, one image no distribution took."""
    plan = [("soles", "ok")] * 3 + [("soles", "outlier"), ("pov", "ok"), ("pov", "ok"),
                                    ("pov", "ok"), (None, "ok")]
    rows = []
    for k, (dist, status) in enumerate(plan):
        data = _picture(k, 100 + 4 * k)
        image_id = content_id(data)
        store.put(data, image_id, "png")
        rows.append({"image_id": image_id, "source": "folder", "source_uri": f"f/{k}.png",
                     "width": 100 + 4 * k, "height": 96,
                     "store_path": store.relpath(image_id, "png"), "status": status,
                     "reason": "blurry" if status != "ok" else None, "distribution": dist})
    return pd.DataFrame(rows)


def _project(root: Path) -> Path:
    """params.yaml and a split manifest at the paths `curate prepare` reads by default."""
    params_file = root / "params.yaml"
    params_file.write_text(yaml.safe_dump({
        "workers": 1,
        "paths": {"store": str(root / "store"), "cache": str(root / "cache")},
        "split": {"distributions": [{"name": "soles", "categories": ["soles"]},
                                    {"name": "pov", "categories": ["pov"],
                                     "align": ["center"]}]},
        "prepare": {"resolution": 32, "source": "original", "augment": {"mirror": True}}}))
    store = Store(root / "store")
    write_table(_split_rows(store), root / "data/split/manifest.parquet", sort_by=["image_id"])
    return params_file


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """pov's and soles' datasets, then `both` (pov = class 0), prepared once for the module."""
    root = tmp_path_factory.mktemp("combined")
    params_file = _project(root)
    params = load_params(params_file)
    data = root / "data"
    options = PrepareOptions(split_manifest=data / "split/manifest.parquet",
                             tags=data / "tags/merged.parquet", matte_dir=data / "matte",
                             datasets_dir=data / "datasets", out_dir=data / "prepare", workers=1)
    singles = {name: run_prepare(params, name, options) for name in CLASSES}
    combined = run_prepare_combined(params, "both", CLASSES, options)
    return SimpleNamespace(root=root, params_file=params_file, params=params, options=options,
                           singles=singles, combined=combined,
                           split=pd.read_parquet(options.split_manifest))


def _pngs(zip_path: Path, names: list[str]) -> list[bytes]:
    with zipfile.ZipFile(zip_path) as zf:
        return [zf.read(n) for n in names]


def _manifest(options: PrepareOptions, name: str) -> pd.DataFrame:
    table = pd.read_parquet(options.out_dir / name / "manifest.parquet")
    return table[table.status == "ok"].sort_values("archive_name")


def test_labels_are_each_images_distribution(project: SimpleNamespace) -> None:
    zip_path = project.options.datasets_dir / "both.zip"
    with zipfile.ZipFile(zip_path) as zf:
        labels = json.loads(zf.read("dataset.json"))["labels"]
        images = sorted(n for n in zf.namelist() if n.endswith(".png"))
    table = _manifest(project.options, "both")
    distribution = project.split.set_index("image_id").distribution
    assert list(table.class_name) == list(distribution[table.image_id])
    assert list(table.class_index) == [CLASSES.index(c) for c in table.class_name]
    assert labels == [[n, CLASSES.index(distribution[i])]
                      for n, i in zip(table.archive_name, table.image_id)]
    assert [n for n, _ in labels] == images and len(images) == 2 * 6  # mirrored, outlier out
    assert [c for _, c in labels] == [0] * 6 + [1] * 6  # class by class, deterministic

    from train.data import inspect_zip  # the class-conditional trainer's reader

    info = inspect_zip(zip_path)
    assert info.labels.dtype == np.int64 and info.labels.tolist() == [c for _, c in labels]


def test_classes_are_prepared_as_single_datasets_from_the_cache(
        project: SimpleNamespace) -> None:
    assert project.combined.cached == 6  # every source image: nothing prepared again
    table = _manifest(project.options, "both")
    for index, name in enumerate(CLASSES):
        single = _manifest(project.options, name)
        ours = table[table.class_index == index]
        assert list(ours.image_id) == list(single.image_id)
        assert (_pngs(project.options.datasets_dir / "both.zip", list(ours.archive_name))
                == _pngs(project.options.datasets_dir / f"{name}.zip",
                         list(single.archive_name)))


def test_card_names_the_classes(project: SimpleNamespace) -> None:
    card = json.loads((project.options.datasets_dir / "both.json").read_text())
    assert [(c["index"], c["name"], c["images"], c["source_images"])
            for c in card["classes"]] == [(0, "pov", 6, 3), (1, "soles", 6, 3)]
    assert card["images"] == 12 and card["removed_upstream"] == {"blurry": 1}
    singles = [json.loads((project.options.datasets_dir / f"{n}.json").read_text())
               for n in CLASSES]
    assert [c["settings_hash"] for c in card["classes"]] == [
        s["settings_hash"] for s in singles]  # pov is aligned differently: its own settings
    markdown = (project.options.datasets_dir / "both.md").read_text()
    assert "| 0 | pov | 6 | 3 |" in markdown and "| 1 | soles | 6 | 3 |" in markdown
    assert "class-labelled" in markdown
    assert (project.options.datasets_dir / "both_grid.png").exists()


def test_rerun_gives_the_same_bytes(project: SimpleNamespace, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    zip_path = project.options.datasets_dir / "both.zip"
    before = zip_path.read_bytes()
    monkeypatch.chdir(project.root)
    result = CliRunner().invoke(app, ["prepare", "--params", str(project.params_file),
                                      "--combined", "both", "--dist", "pov", "--dist", "soles"])
    assert result.exit_code == 0, result.output
    assert zip_path.read_bytes() == before
    # from an empty cache (a run killed before it cached anything): prepared again, same bytes
    fresh = dataclasses.replace(project.params, paths=dataclasses.replace(
        project.params.paths, cache=tmp_path / "cache"))
    options = dataclasses.replace(project.options, datasets_dir=tmp_path / "datasets",
                                  out_dir=tmp_path / "prepare")
    assert run_prepare_combined(fresh, "both", CLASSES, options).cached == 0
    assert (tmp_path / "datasets" / "both.zip").read_bytes() == before


@pytest.mark.parametrize(("args", "message"), [
    (["--combined", "both", "--dist", "pov"], "at least two distributions"),
    (["--combined", "both", "--dist", "pov", "--dist", "nope"], "unknown distribution 'nope'"),
    (["--combined", "soles", "--dist", "pov", "--dist", "soles"], "is a distribution's name"),
    (["--combined", "both", "--dist", "pov", "--dist", "pov"], "pov given more than once"),
    (["--combined", "a/b", "--dist", "pov", "--dist", "soles"], "letters, digits"),
    (["--dist", "pov", "--dist", "soles"], "add --combined NAME"),
])
def test_refusals_exit_2_with_the_reason(project: SimpleNamespace, args: list[str],
                                         message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project.root)
    result = CliRunner().invoke(app, ["prepare", "--params", str(project.params_file), *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_differing_resolutions_are_refused(project: SimpleNamespace,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # prepare.resolution is one key today; the check guards a per-distribution override
    real = prepare_stage.settings_for
    monkeypatch.setattr(prepare_stage, "settings_for", lambda p, d: dataclasses.replace(
        real(p, d), resolution=64 if d.name == "soles" else 32))
    monkeypatch.chdir(project.root)
    result = CliRunner().invoke(app, ["prepare", "--params", str(project.params_file),
                                      "--combined", "both", "--dist", "pov", "--dist", "soles"])
    assert result.exit_code == 2
    assert "resolutions differ (pov 32px, soles 64px)" in " ".join(result.output.split())


def test_an_image_in_two_distributions_is_named(project: SimpleNamespace, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    split = project.split
    twice = split[split.distribution == "pov"].iloc[[0]].assign(distribution="soles")
    write_table(pd.concat([split, twice]), tmp_path / "data/split/manifest.parquet",
                sort_by=["image_id"])
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["prepare", "--params", str(project.params_file),
                                      "--combined", "both", "--dist", "pov", "--dist", "soles"])
    assert result.exit_code == 2
    output = " ".join(result.output.split())
    assert f"image {twice.image_id.iloc[0]} is assigned to pov and soles" in output
