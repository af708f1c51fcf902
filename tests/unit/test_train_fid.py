"""FID/KID: the formulas against a plain numpy/scipy reference and closed forms on synthetic
Gaussians; the converted Inception weights against NVIDIA's original graph (when provisioned)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from core.models import ModelMissingError, require
from train.fid import (
    InceptionFeatures,
    feature_stats,
    fid_from_features,
    frechet_distance,
    kid_from_features,
)


def _reference_fid(x: np.ndarray, y: np.ndarray) -> float:
    """The textbook formula with scipy's matrix square root."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def _reference_mmd(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written out with explicit loops."""
    m, d = len(x), x.shape[1]

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return (a @ b / d + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return float(xx + yy - 2 * xy)


def test_fid_matches_numpy_reference_and_closed_form() -> None:
    rng = np.random.default_rng(0)
    d, n = 16, 20000
    x = rng.normal(0.0, 1.0, (n, d))
    y = rng.normal(0.5, 2.0, (n, d))
    assert fid_from_features(x, y) == pytest.approx(_reference_fid(x, y), rel=1e-6)
    # N(0, I) vs N(0.5, 4 I): |mu|^2 + d (1 - 2)^2 = 16 * 0.25 + 16 = 20
    assert fid_from_features(x, y) == pytest.approx(20.0, rel=0.02)
    # Correlated covariances, exact statistics: the closed form holds to round-off.
    a = rng.normal(size=(d, d))
    s1, s2 = a @ a.T + np.eye(d), np.diag(rng.uniform(0.5, 2, d))
    mu = rng.normal(size=d)
    ref = float(mu @ mu + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real))
    assert frechet_distance(mu, s1, np.zeros(d), s2) == pytest.approx(ref, rel=1e-8)
    assert frechet_distance(*feature_stats(x), *feature_stats(x)) == pytest.approx(0, abs=1e-8)


def test_kid_matches_reference_and_is_unbiased() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(0, 1, (30, 8)), rng.normal(0.3, 1, (30, 8))
    mean, std = kid_from_features(x, y, subsets=1, subset_size=30)
    assert mean == pytest.approx(_reference_mmd(x, y), rel=1e-9) and std == 0.0
    # Same distribution: the unbiased estimate averages to ~0 (it can be negative).
    a, b = rng.normal(size=(2000, 8)), rng.normal(size=(2000, 8))
    same, same_std = kid_from_features(a, b, subsets=50, subset_size=200)
    assert abs(same) < 3 * same_std / np.sqrt(50) + 1e-3
    assert kid_from_features(x, y + 2.0, subsets=5, subset_size=30)[0] > mean > 0


def _provisioned() -> bool:
    try:
        require("inception_fid")
        return True
    except ModelMissingError:
        return False


@pytest.mark.skipif(not _provisioned(), reason="Inception weights not provisioned: "
                    "`curate models provision` (make test does it)")
def test_converted_inception_matches_the_original_graph() -> None:
    torch.set_num_threads(1)
    feats = InceptionFeatures("cpu")  # converts on first use, verifying against the original
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8,
                      generator=torch.Generator().manual_seed(3))
    f = feats(iter([x]))
    assert f.shape == (2, 2048) and np.isfinite(f).all() and (f >= 0).all()  # post-ReLU pool
    assert not np.allclose(f[0], f[1])


@pytest.mark.skipif(not _provisioned(), reason="Inception weights not provisioned: "
                    "`curate models provision` (make test does it)")
def test_a_modified_inception_file_is_never_loaded(tmp_path) -> None:
    """The provisioned file is checked by sha256 before use; a changed converted copy is made
    again from it; a changed original stops with the command that provisions it."""
    import shutil

    from core.models import MODELS, ModelMissingError, default_models_dir
    from train.fid import MODEL_NAME, inception_weights

    spec = next(s for s in MODELS if s.name == MODEL_NAME)
    source = spec.path(tmp_path)
    source.parent.mkdir(parents=True)
    shutil.copy2(spec.path(default_models_dir()), source)
    converted = inception_weights(tmp_path)
    original = torch.load(converted, map_location="cpu", weights_only=True)
    size = converted.stat().st_size
    with open(converted, "r+b") as fh:  # same size, one byte of the weights changed
        fh.seek(size // 2)
        byte = fh.read(1)
        fh.seek(size // 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    tampered = converted.read_bytes()
    again = inception_weights(tmp_path)
    assert again.read_bytes() != tampered  # made again from the verified original
    remade = torch.load(again, map_location="cpu", weights_only=True)
    assert remade.keys() == original.keys()
    assert all(torch.equal(remade[k].nan_to_num(), original[k].nan_to_num()) for k in original)
    with open(source, "r+b") as fh:
        fh.seek(1000)
        fh.write(b"\x00" * 16)
    with pytest.raises(ModelMissingError, match="sha256 .*curate models provision"):
        inception_weights(tmp_path)
