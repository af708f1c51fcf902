"""The three training objectives and their optimisers, behind one small interface.

A training iteration is `n_critic` discriminator steps (each on a fresh global batch of
reals, each optionally followed by a lazy regularisation step) and one generator step. The
trainer owns batching, accumulation, gradient sync and mixed precision; an objective only
says, for one micro-batch, what the loss is. Losses are means over the micro-batch; forward
passes run under the trainer's autocast, and gradient penalties are computed in fp32 outside
it (second-order gradients in bf16 are too coarse).

- DCGAN: binary cross-entropy, non-saturating generator loss; one-sided label smoothing,
  uniform label noise and random label flips (Salimans et al. 2016; Radford et al. 2016).
- WGAN-GP: Wasserstein critic loss with the gradient penalty on random interpolates
  (Gulrajani et al. 2017), optional weight clipping (Arjovsky et al. 2017) and drift term.
- StyleGAN2: non-saturating logistic loss, R1 penalty on reals every `r1_interval` steps with
  Adam's hyper-parameters adjusted for the lazy schedule (Karras et al. 2020).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from train.config import DCGANConfig, StyleGAN2Config, TrainConfig, WGANGPConfig
from train.models.base import Discriminator, Generator
from train.rng import BatchRandom

Stats = dict[str, torch.Tensor]


@dataclass
class StepInputs:
    """What an objective may use for one micro-batch."""

    G: Generator
    D: Discriminator
    rand: BatchRandom
    augment: Callable[[torch.Tensor, BatchRandom], torch.Tensor] | None
    autocast: Callable[[], contextlib.AbstractContextManager[Any]]

    def fakes(self) -> torch.Tensor:
        """Generated images for this micro-batch's rows (latents from the step's stream)."""
        z = self.rand.randn(self.G.z_dim)
        with self.autocast():
            return self.G(z, self.rand)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """D's fp32 logits for (augmented) images."""
        if self.augment is not None:
            images = self.augment(images, self.rand)
        with self.autocast():
            return self.D(images).float()


def _no_autocast(step: StepInputs) -> contextlib.AbstractContextManager[Any]:
    """Penalties run with autocast off (fp32 gradients of gradients)."""
    return torch.autocast(device_type=step.rand.device.type, enabled=False)


def _input_gradient(step: StepInputs, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, d logits.sum() / d images) with a graph for a second backward pass."""
    images = images.detach().float().requires_grad_(True)
    x = step.augment(images, step.rand) if step.augment is not None else images
    logits = step.D(x).float()
    (grad,) = torch.autograd.grad(logits.sum(), images, create_graph=True)
    return logits, grad


class Objective:
    """Base: one generator loss, one discriminator loss, an optional lazy regulariser."""

    n_critic: int = 1
    reg_interval: int = 0   # 0: no lazy regularisation phase

    def d_loss(self, step: StepInputs, reals: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        raise NotImplementedError  # pragma: no cover

    def g_loss(self, step: StepInputs) -> tuple[torch.Tensor, Stats]:
        raise NotImplementedError  # pragma: no cover

    def d_reg(self, step: StepInputs, reals: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        raise NotImplementedError  # pragma: no cover

    def optimizers(self, G: Generator,
                   D: Discriminator) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        raise NotImplementedError  # pragma: no cover

    def after_d_step(self, D: Discriminator) -> None:
        """Hook after each discriminator update (weight clipping)."""


class DCGANObjective(Objective):
    def __init__(self, cfg: DCGANConfig) -> None:
        self.cfg = cfg

    def _targets(self, step: StepInputs, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample BCE targets for reals and fakes, with smoothing, noise and flips."""
        cfg = self.cfg
        noise_real, noise_fake, flip = step.rand.rand(), step.rand.rand(), step.rand.rand()
        real = (1.0 - cfg.label_smoothing) - cfg.label_noise * noise_real
        fake = cfg.label_noise * noise_fake
        swap = flip < cfg.label_flip
        return torch.where(swap, fake, real), torch.where(swap, real, fake)

    def d_loss(self, step: StepInputs, reals: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        with torch.no_grad():
            fakes = step.fakes()
        real_t, fake_t = self._targets(step, reals.shape[0])
        real_logits = step.logits(reals)
        fake_logits = step.logits(fakes)
        loss = (F.binary_cross_entropy_with_logits(real_logits, real_t)
                + F.binary_cross_entropy_with_logits(fake_logits, fake_t))
        return loss, {"loss/D": loss.detach(), "D/real": real_logits.detach().mean(),
                      "D/fake": fake_logits.detach().mean(),
                      "ada/sign": real_logits.detach().sign().mean()}

    def g_loss(self, step: StepInputs) -> tuple[torch.Tensor, Stats]:
        logits = step.logits(step.fakes())
        loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        return loss, {"loss/G": loss.detach()}

    def optimizers(self, G: Generator,
                   D: Discriminator) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        betas = tuple(self.cfg.betas)
        return (torch.optim.Adam(G.parameters(), lr=self.cfg.lr_g, betas=betas),  # type: ignore[arg-type]
                torch.optim.Adam(D.parameters(), lr=self.cfg.lr_d, betas=betas))  # type: ignore[arg-type]


class WGANGPObjective(Objective):
    def __init__(self, cfg: WGANGPConfig) -> None:
        self.cfg = cfg
        self.n_critic = cfg.n_critic

    def _penalty(self, step: StepInputs, reals: torch.Tensor,
                 fakes: torch.Tensor) -> torch.Tensor:
        eps = step.rand.rand(1, 1, 1)
        with _no_autocast(step):
            mixed = eps * reals.float() + (1 - eps) * fakes.float()
            _, grad = _input_gradient(step, mixed)
            norm = grad.flatten(1).norm(dim=1)
            return (norm - 1).square().mean()

    def d_loss(self, step: StepInputs, reals: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        with torch.no_grad():
            fakes = step.fakes()
        real_logits = step.logits(reals)
        fake_logits = step.logits(fakes)
        loss = fake_logits.mean() - real_logits.mean()
        stats: Stats = {"loss/D": loss.detach(), "D/real": real_logits.detach().mean(),
                        "D/fake": fake_logits.detach().mean(),
                        "ada/sign": real_logits.detach().sign().mean()}
        if self.cfg.drift:
            loss = loss + self.cfg.drift * real_logits.square().mean()
        if self.cfg.gp_lambda:
            gp = self._penalty(step, reals, fakes)
            stats["loss/GP"] = gp.detach()
            loss = loss + self.cfg.gp_lambda * gp
        return loss, stats

    def g_loss(self, step: StepInputs) -> tuple[torch.Tensor, Stats]:
        loss = -step.logits(step.fakes()).mean()
        return loss, {"loss/G": loss.detach()}

    def optimizers(self, G: Generator,
                   D: Discriminator) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        betas = tuple(self.cfg.betas)
        return (torch.optim.Adam(G.parameters(), lr=self.cfg.lr, betas=betas),  # type: ignore[arg-type]
                torch.optim.Adam(D.parameters(), lr=self.cfg.lr, betas=betas))  # type: ignore[arg-type]

    def after_d_step(self, D: Discriminator) -> None:
        if self.cfg.clip is not None:
            with torch.no_grad():
                for p in D.parameters():
                    p.clamp_(-self.cfg.clip, self.cfg.clip)


class StyleGAN2Objective(Objective):
    def __init__(self, cfg: StyleGAN2Config, resolution: int, batch: int) -> None:
        self.cfg = cfg
        self.gamma = cfg.gamma(resolution, batch)
        self.reg_interval = cfg.r1_interval if self.gamma > 0 else 0

    def d_loss(self, step: StepInputs, reals: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        with torch.no_grad():
            fakes = step.fakes()
        real_logits = step.logits(reals)
        fake_logits = step.logits(fakes)
        loss = F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()
        return loss, {"loss/D": loss.detach(), "D/real": real_logits.detach().mean(),
                      "D/fake": fake_logits.detach().mean(),
                      "ada/sign": real_logits.detach().sign().mean()}

    def d_reg(self, step: StepInputs, reals: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        with _no_autocast(step):
            logits, grad = _input_gradient(step, reals)
            r1 = grad.square().flatten(1).sum(dim=1).mean()
            # `+ 0 * logits` keeps D's output bias in the graph, so its gradient is defined.
            loss = (self.gamma / 2) * r1 * self.reg_interval + 0.0 * logits.mean()
        return loss, {"loss/R1": r1.detach()}

    def g_loss(self, step: StepInputs) -> tuple[torch.Tensor, Stats]:
        loss = F.softplus(-step.logits(step.fakes())).mean()
        return loss, {"loss/G": loss.detach()}

    def optimizers(self, G: Generator,
                   D: Discriminator) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        b1, b2 = self.cfg.betas
        opt_g = torch.optim.Adam(G.parameters(), lr=self.cfg.lr, betas=(b1, b2), eps=1e-8)
        ratio = self.reg_interval / (self.reg_interval + 1) if self.reg_interval else 1.0
        opt_d = torch.optim.Adam(D.parameters(), lr=self.cfg.lr * ratio,
                                 betas=(b1**ratio, b2**ratio), eps=1e-8)
        return opt_g, opt_d


def make_objective(cfg: TrainConfig, resolution: int) -> Objective:
    """The objective of `cfg.model` with its hyper-parameters."""
    if cfg.model == "dcgan":
        return DCGANObjective(cfg.dcgan)
    if cfg.model == "wgan_gp":
        return WGANGPObjective(cfg.wgan_gp)
    return StyleGAN2Objective(cfg.stylegan2, resolution, cfg.batch)
