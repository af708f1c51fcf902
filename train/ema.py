"""Exponential moving average of the generator's weights (the model people sample from).

The decay is set by a half-life counted in images, as in StyleGAN (`ema_kimg`): after
`half_life_kimg` thousand images, old weights weigh half. Early in training the half-life is
capped at `rampup` x images seen, so the average does not drag the random initial weights
along for thousands of steps. Counting in images (not steps) keeps the average the same when
the batch size or the number of devices changes.
"""

from __future__ import annotations

import torch

from train.config import EMAConfig


def ema_beta(cfg: EMAConfig, step_images: int, images_seen: int) -> float:
    """Weight kept by the average after a step of `step_images` images."""
    half_life = cfg.half_life_kimg * 1000.0
    if cfg.rampup is not None:
        half_life = min(half_life, images_seen * cfg.rampup)
    return 0.5 ** (step_images / max(half_life, 1e-8))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, beta: float) -> None:
    """ema = beta * ema + (1 - beta) * model for parameters; buffers are copied."""
    for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
        p_ema.copy_(p.detach().lerp(p_ema, beta))
    for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
        b_ema.copy_(b)
