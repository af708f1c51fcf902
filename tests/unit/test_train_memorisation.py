"""The memorisation report's figures (README: "near-copy share and diversity vs real images")
on generators whose behaviour is known: one that copies its training images, one that copies
their mirrors, one that collapses to a single image, and one that draws new images from the
training distribution. The generators are test inputs implementing the Generator interface,
not stand-ins for a trained model: the report is judged on what it must find in each."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from train.config import ReportConfig
from train.data import open_dataset
from train.models.base import Generator
from train.report import memorisation_report
from train.synthetic import blob_images, write_dataset_zip

RES, N_TRAIN = 32, 48


class FixedImages(Generator):
    """A "generator" that answers latent z with one of `images`, chosen by z itself (so each
    seed's sample is fixed and different seeds pick different images)."""

    name = "fixed"

    def __init__(self, images: list[np.ndarray], flip: bool = False) -> None:
        super().__init__()
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        # a parameter, not a buffer: the report finds the device from G.parameters()
        self.images = torch.nn.Parameter(x.flip(-1) if flip else x, requires_grad=False)
        self.z_dim, self.resolution, self.init_kwargs = 8, RES, {}

    def forward(self, z, rand=None, psi=1.0, c=None):
        pick = (z.abs().sum(dim=1) * 1000).long() % self.images.shape[0]
        return self.images[pick]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("mem") / "train.zip"
    write_dataset_zip(path, blob_images(N_TRAIN, RES, seed=0))
    return open_dataset(path)


def _warnings(folder: Path) -> int:
    """How many of the page's three figures are shown as warnings."""
    return (folder / "memorisation.html").read_text().count('class="v warn"')


def _report(G: Generator, dataset, folder: Path) -> dict:
    cfg = ReportConfig(memorisation_samples=32, memorisation_reals=N_TRAIN, distance_size=16)
    stats = memorisation_report(G, dataset, cfg, folder, "test")
    assert json.loads((folder / "memorisation.json").read_text()) == stats
    return stats


def test_a_generator_that_copies_its_training_images_is_flagged(dataset, tmp_path) -> None:
    train = blob_images(N_TRAIN, RES, seed=0)
    s = _report(FixedImages(train), dataset, tmp_path)
    assert s["median_sample_nn"] == pytest.approx(0.0, abs=1e-6)
    assert s["nn_ratio"] < 0.01 and s["near_copy_share"] == 1.0
    assert s["nearest_is_mirror_share"] == 0.0
    assert s["distinct_neighbours"] > 16  # many different images copied: no collapse
    assert s["diversity_ratio"] > 0.7
    html = (tmp_path / "memorisation.html").read_text()
    assert '<td class="v warn">0.000</td>' in html  # nn_ratio shown as a warning
    assert '<td class="v warn">100.0%</td>' in html  # and the near-copy share
    assert _warnings(tmp_path) == 2


def test_a_generator_that_copies_mirrored_training_images_is_found_as_mirrors(
        dataset, tmp_path) -> None:
    s = _report(FixedImages(blob_images(N_TRAIN, RES, seed=0), flip=True), dataset, tmp_path)
    assert s["nn_ratio"] < 0.01 and s["near_copy_share"] == 1.0
    assert s["nearest_is_mirror_share"] == 1.0
    assert "mirror" in (tmp_path / "memorisation.html").read_text()


def test_a_collapsed_generator_is_flagged_by_diversity(dataset, tmp_path) -> None:
    one = blob_images(1, RES, seed=99)  # not a training image: collapse, not a copy
    s = _report(FixedImages(one), dataset, tmp_path)
    assert s["diversity_ratio"] == pytest.approx(0.0, abs=1e-6)
    assert s["distinct_neighbours"] == 1
    assert s["nn_ratio"] > 0.5  # it copies nothing
    assert _warnings(tmp_path) == 1


def test_a_generator_of_new_images_from_the_distribution_is_not_flagged(
        dataset, tmp_path) -> None:
    s = _report(FixedImages(blob_images(200, RES, seed=7)), dataset, tmp_path)
    assert 0.6 < s["nn_ratio"] < 1.6
    assert s["near_copy_share"] < 0.2
    assert 0.7 < s["diversity_ratio"] < 1.3
    assert s["distinct_neighbours"] > 10
    assert _warnings(tmp_path) == 0
