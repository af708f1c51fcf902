"""Memorisation and collapse report: does the generator copy its training images, or repeat
itself?

Images are compared as downsampled pixels (`distance_size`, default 32x32, RGB in [0, 1], L2
per pixel). For each generated sample we find its nearest training image. The yardstick is
what real images do: each real image's distance to its nearest *other* training image
(leave-one-out; the dataset zip has no held-out split). A generator that memorises produces
samples much closer to a training image than real images are to each other; one that
collapses produces samples close to each other. The report gives:

- median nearest-training distance of samples vs of reals (ratio < 1: closer than reals are);
- the share of samples closer to a training image than the 5th percentile of real
  leave-one-out distances (near copies; about 5% is expected by chance);
- diversity: mean pairwise distance among samples / among as many reals (well below 1 means
  mode collapse);
- a side-by-side page (report/memorisation.html), closest pairs first, to look at.

Mirrors are compared explicitly: the training images are the zip's own (never the mirrored
copies `train.mirror` adds), and each sample is compared with every training image and with
its mirror, so a sample that copies a flipped training image is found and shown as such. A
real image's leave-one-out yardstick leaves out both itself and its mirror.

Pixel distance is crude (a shifted copy is far, a different shoe on the same background is
near) but needs no model and no network; it catches verbatim copies and collapse, the failures
small datasets produce.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import jinja2
import torch
import torch.nn.functional as F
from PIL import Image

from core.atomic import write_text
from train.config import ReportConfig
from train.data import ZipImageDataset
from train.models.base import Generator
from train.visuals import generate, latents

REPORT_SEED = 1_000_000  # sample seeds start here: away from the grid seeds

_TEMPLATE = jinja2.Environment(autoescape=True).from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Memorisation report: {{ title }}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse}td,th{padding:4px 8px;border-bottom:1px solid #ddd;text-align:left}
.v{font-weight:600}.warn{color:#b00020}.ok{color:#1b5e20}
.pairs{display:flex;flex-wrap:wrap;gap:12px}.pair{border:1px solid #ccc;padding:4px}
.pair img{width:{{ thumb }}px;height:{{ thumb }}px;image-rendering:pixelated}
.pair div{font-size:12px}
</style></head><body>
<h1>Memorisation and collapse: {{ title }}</h1>
<p>{{ n_samples }} generated samples compared with {{ n_reals }} training images and their mirrors at
{{ size }}x{{ size }} px (L2 distance per pixel, RGB in [0, 1]).
Real images' yardstick: distance of each to its nearest <em>other</em> training image.</p>
<table>
<tr><th>median nearest-training distance, samples</th><td class="v">{{ "%.4f"|format(s.median_sample_nn) }}</td></tr>
<tr><th>median nearest-other-training distance, reals</th><td class="v">{{ "%.4f"|format(s.median_real_nn) }}</td></tr>
<tr><th>ratio (below 1: samples sit closer to training images than reals do)</th>
<td class="v {{ 'warn' if s.nn_ratio < 0.5 else 'ok' }}">{{ "%.3f"|format(s.nn_ratio) }}</td></tr>
<tr><th>samples closer than the reals' 5th percentile (near copies; ~5% by chance)</th>
<td class="v {{ 'warn' if s.near_copy_share > 0.2 else 'ok' }}">{{ "%.1f"|format(100 * s.near_copy_share) }}%</td></tr>
<tr><th>diversity: mean pairwise distance samples / reals (well below 1: collapse)</th>
<td class="v {{ 'warn' if s.diversity_ratio < 0.5 else 'ok' }}">{{ "%.3f"|format(s.diversity_ratio) }}</td></tr>
<tr><th>distinct nearest training images / samples</th><td class="v">{{ s.distinct_neighbours }} / {{ n_samples }}</td></tr>
<tr><th>samples nearest to a training image's mirror</th><td class="v">{{ "%.1f"|format(100 * s.nearest_is_mirror_share) }}%</td></tr>
</table>
{% if lineage %}<h2>Trained on</h2>
<table><tr><th>kimg</th><th>dataset</th><th>images</th><th>content hash</th></tr>
{% for part in lineage %}<tr><td>{{ "%.1f"|format(part.from_kimg) }} - {{ "%.1f"|format(part.to_kimg) }}</td>
<td>{{ part.path }}</td><td>{{ part.images }}</td><td>{{ part.dataset[:12] }}</td></tr>
{% endfor %}</table>{% endif %}
<h2>Samples and their nearest training image, closest first</h2>
<div class="pairs">
{% for p in pairs %}<div class="pair"><img src="data:image/png;base64,{{ p.fake }}" alt="sample">
<img src="data:image/png;base64,{{ p.real }}" alt="nearest training image">
<div>seed {{ p.seed }} &middot; {{ p.name }}{{ " (mirrored)" if p.mirrored }} &middot; d={{ "%.4f"|format(p.distance) }}</div></div>
{% endfor %}</div></body></html>
""")


def _small(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float64 (N, 3*size*size) in [0, 1], area-downsampled.

    float64 because `torch.cdist` takes distances as sqrt(|x|^2 + |y|^2 - 2 x.y): in float32
    the sum cancels to about 1e-4 (RMS per pixel) for an exact copy, in float64 to 1e-8, and
    copies are what the report looks for."""
    x = images.double() / 255.0
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="area")
    return x.flatten(1)


def _png_b64(image: torch.Tensor) -> str:
    buf = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _mean_pairwise(x: torch.Tensor) -> float:
    d = torch.cdist(x, x)
    n = x.shape[0]
    return float(d.sum() / max(n * (n - 1), 1))


def memorisation_report(G: Generator, dataset: ZipImageDataset, cfg: ReportConfig,
                        folder: Path, title: str,
                        lineage: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Compute the figures above, write report/memorisation.{html,json}; return the figures.
    `lineage` (which dataset each kimg range trained on) is shown when the run saw more than
    one version of its dataset."""
    device = next(G.parameters()).device
    n_reals = min(cfg.memorisation_reals, dataset.info.size)
    step = dataset.info.size / n_reals
    idx = [int(i * step) for i in range(n_reals)]
    real_u8 = torch.stack([dataset.pixels(i) for i in idx])
    reals = _small(real_u8, cfg.distance_size)
    seeds = list(range(REPORT_SEED, REPORT_SEED + cfg.memorisation_samples))
    mirrors = _small(real_u8.flip(-1), cfg.distance_size)
    fake_u8 = generate(G, latents(seeds, G.z_dim, device))
    fakes = _small(fake_u8, cfg.distance_size)
    scale = 1.0 / reals.shape[1] ** 0.5  # per-pixel RMS distance: comparable across sizes

    both = torch.cat([reals, mirrors])  # row i + n_reals is the mirror of row i
    nn_fake, nn_both = (torch.cdist(fakes, both) * scale).min(dim=1)
    nn_idx, mirrored = nn_both % n_reals, nn_both >= n_reals
    d_real = torch.cdist(reals, both) * scale
    own = torch.arange(n_reals)
    d_real[own, own] = float("inf")
    d_real[own, own + n_reals] = float("inf")
    nn_real = d_real.min(dim=1).values if n_reals > 1 else torch.zeros(1)
    p5 = float(torch.quantile(nn_real, 0.05)) if n_reals > 1 else 0.0
    m = min(len(seeds), n_reals)
    real_div = _mean_pairwise(reals[:m]) * scale
    stats = {
        "samples": len(seeds),
        "reals": n_reals,
        "distance_size": cfg.distance_size,
        "median_sample_nn": float(nn_fake.median()),
        "median_real_nn": float(nn_real.median()),
        "nn_ratio": float(nn_fake.median() / max(float(nn_real.median()), 1e-12)),
        "near_copy_share": float((nn_fake < p5).float().mean()),
        "diversity_ratio": (_mean_pairwise(fakes) * scale) / max(real_div, 1e-12),
        "distinct_neighbours": int(nn_idx.unique().numel()),
        "nearest_is_mirror_share": float(mirrored.float().mean()),
    }
    order = torch.argsort(nn_fake).tolist()
    pairs = [{"fake": _png_b64(fake_u8[i]),
              "real": _png_b64(real_u8[int(nn_idx[i])].flip(-1) if mirrored[i]
                               else real_u8[int(nn_idx[i])]),
              "seed": seeds[i], "name": dataset.info.names[idx[int(nn_idx[i])]],
              "mirrored": bool(mirrored[i]), "distance": float(nn_fake[i])} for i in order]
    thumb = max(64, min(160, dataset.resolution * 2))
    html = _TEMPLATE.render(title=title, s=stats, pairs=pairs, n_samples=len(seeds),
                            n_reals=n_reals, size=cfg.distance_size, thumb=thumb,
                            lineage=lineage if lineage and len(lineage) > 1 else [])
    write_text(Path(folder) / "memorisation.html", html)
    write_text(Path(folder) / "memorisation.json", json.dumps(stats, indent=2) + "\n")
    return stats
