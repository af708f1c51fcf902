"""The training objectives and their optimisers, behind one small interface.

A training iteration is `n_critic` discriminator steps (each on a fresh global batch of
reals, each optionally followed by a lazy regularisation step), one generator step and,
every `g_reg_interval` iterations, a lazy generator regularisation step. The trainer owns
batching, accumulation, gradient sync and mixed precision; an objective only says, for one
micro-batch, what the loss is. Losses are means over the micro-batch; forward passes run under
the trainer's autocast, and gradient penalties are computed in fp32 outside it (second-order
gradients in bf16 are too coarse).

- DCGAN: binary cross-entropy, non-saturating generator loss; targets drawn per sample from
  configurable real and fake ranges (soft and noisy labels, above 1.0 if asked), random
  flips, optionally inverted (real = 0) (Salimans et al. 2016; Radford et al. 2016; ganhacks).
- WGAN-GP: Wasserstein critic loss with the gradient penalty on random interpolates
  (Gulrajani et al. 2017), optional weight clipping with RMSProp (Arjovsky et al. 2017) and
  drift term.
- StyleGAN2: non-saturating logistic loss, R1 penalty on reals every `r1_interval` steps and
  path length regularisation every `pl_interval` generator steps, with Adam's
  hyper-parameters adjusted for the lazy schedules (Karras et al. 2020).
- BigGAN: hinge loss, orthogonal regularisation of G (Brock et al. 2019).

Class-conditional runs: fakes get classes drawn per sample from the dataset's class
frequencies (from the step's random stream, so the draw does not depend on the device count),
and D sees every image with its class.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from train.config import (
    BigGANConfig,
    DCGANConfig,
    StyleGAN2Config,
    TrainConfig,
    WGANGPConfig,
)
from train.models.base import Discriminator, Generator, one_hot
from train.models.biggan import orthogonal_penalty
from train.rng import BatchRandom

Stats = dict[str, torch.Tensor]


Reals = tuple[torch.Tensor, torch.Tensor | None]  # images and their classes (one-hot) or None


@dataclass
class StepInputs:
    """What an objective may use for one micro-batch."""

    G: Generator
    D: Discriminator
    rand: BatchRandom
    augment: Callable[[torch.Tensor, BatchRandom], torch.Tensor] | None
    autocast: Callable[[], contextlib.AbstractContextManager[Any]]
    class_cdf: torch.Tensor | None = None  # cumulative class frequencies; None: unconditional

    def fake_classes(self) -> torch.Tensor | None:
        """One-hot classes for this micro-batch's fakes, drawn from the class frequencies."""
        if self.class_cdf is None:
            return None
        index = torch.searchsorted(self.class_cdf, self.rand.rand(), right=True)
        return one_hot(index.clamp(max=self.class_cdf.shape[0] - 1), self.class_cdf.shape[0])

    def fakes(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Generated images for this micro-batch's rows (latents from the step's stream) and
        the classes they were asked for."""
        z = self.rand.randn(self.G.z_dim)
        c = self.fake_classes()
        with self.autocast():
            return self.G(z, self.rand, c=c), c

    def logits(self, images: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        """D's fp32 logits for (augmented) images of classes c."""
        if self.augment is not None:
            images = self.augment(images, self.rand)
        with self.autocast():
            return self.D(images, c).float()

    def d_pass(self, reals: Reals) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(real logits, fake logits, fakes) of a discriminator step: fresh fakes made
        without a graph (G is not trained here), both judged with their classes."""
        images, c_real = reals
        with torch.no_grad():
            fakes, c_fake = self.fakes()
        return self.logits(images, c_real), self.logits(fakes, c_fake), fakes


def _no_autocast(step: StepInputs) -> contextlib.AbstractContextManager[Any]:
    """Penalties run with autocast off (fp32 gradients of gradients)."""
    return torch.autocast(device_type=step.rand.device.type, enabled=False)


def _input_gradient(step: StepInputs, images: torch.Tensor,
                    c: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, d logits.sum() / d images) with a graph for a second backward pass."""
    images = images.detach().float().requires_grad_(True)
    x = step.augment(images, step.rand) if step.augment is not None else images
    logits = step.D(x, c).float()
    (grad,) = torch.autograd.grad(logits.sum(), images, create_graph=True)
    return logits, grad


class Objective:
    """Base: one generator loss, one discriminator loss, an optional lazy regulariser."""

    n_critic: int = 1
    reg_interval: int = 0     # 0: no lazy D regularisation phase
    g_reg_interval: int = 0   # 0: no lazy G regularisation phase

    def d_loss(self, step: StepInputs, reals: Reals) -> tuple[torch.Tensor, Stats]:
        raise NotImplementedError  # pragma: no cover

    def g_loss(self, step: StepInputs) -> tuple[torch.Tensor, Stats]:
        raise NotImplementedError  # pragma: no cover

    def d_reg(self, step: StepInputs, reals: Reals) -> tuple[torch.Tensor, Stats]:
        raise NotImplementedError  # pragma: no cover

    def g_reg(self, step: StepInputs) -> tuple[torch.Tensor, Stats]:
        raise NotImplementedError  # pragma: no cover

    def after_g_reg(self, reduce_sum: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Hook after each G regularisation step, with a sum over ranks (running means)."""

    def state_dict(self) -> dict[str, Any]:
        """What the objective keeps between steps (saved in checkpoints)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of `state_dict`."""

    def optimizers(self, G: Generator,
                   D: Discriminator) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        raise NotImplementedError  # pragma: no cover

    def after_d_step(self, D: Discriminator) -> None:
        """Hook after each discriminator update (weight clipping)."""


def _d_stats(real_logits: torch.Tensor, fake_logits: torch.Tensor, loss: torch.Tensor,
             real_sign: float = 1.0) -> Stats:
    """The statistics every D step logs; `real_sign` -1 when D calls reals negative (ADA's
    overfitting heuristic counts how often D is sure a real is real)."""
    return {"loss/D": loss.detach(), "D/real": real_logits.detach().mean(),
            "D/fake": fake_logits.detach().mean(),
            "ada/sign": (real_sign * real_logits.detach()).sign().mean()}


def _adam(params: Any, lr: float, betas: tuple[float, ...], eps: float = 1e-8,
          ratio: float = 1.0) -> torch.optim.Optimizer:
    """Adam with StyleGAN's lazy-regularisation adjustment: lr * ratio, betas ** ratio."""
    b1, b2 = betas
    return torch.optim.Adam(params, lr=lr * ratio, betas=(b1**ratio, b2**ratio), eps=eps)


def _lazy_ratio(interval: int) -> float:
    """Share of the optimiser's steps that are main steps when every `interval`-th main step
    is followed by a regularisation step (1 without one)."""
    return interval / (interval + 1) if interval else 1.0


class DCGANObjective(Objective):
    def __init__(self, cfg: DCGANConfig) -> None:
        self.cfg = cfg
        self.real_sign = -1.0 if cfg.inverted_labels else 1.0

    def _targets(self, step: StepInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample BCE targets for reals and fakes: drawn from the configured ranges,
        swapped with probability `label_flip`, inverted when asked."""
        cfg = self.cfg
        noise_real, noise_fake, flip = step.rand.rand(), step.rand.rand(), step.rand.rand()
        real = cfg.real_label[0] + (cfg.real_label[1] - cfg.real_label[0]) * noise_real
        fake = cfg.fake_label[0] + (cfg.fake_label[1] - cfg.fake_label[0]) * noise_fake
        swap = flip < cfg.label_flip
        real_t, fake_t = torch.where(swap, fake, real), torch.where(swap, real, fake)
        if cfg.inverted_labels:
            return 1.0 - real_t, 1.0 - fake_t
        return real_t, fake_t

    def d_loss(self, step: StepInputs, reals: Reals) -> tuple[torch.Tensor, Stats]:
        real_t, fake_t = self._targets(step)
        real_logits, fake_logits, _ = step.d_pass(reals)
        loss = (F.binary_cross_entropy_with_logits(real_logits, real_t)
                + F.binary_cross_entropy_with_logits(fake_logits, fake_t))
        return loss, _d_stats(real_logits, fake_logits, loss, self.real_sign)

    def g_loss(self, step: StepInputs) -> tuple[torch.Tensor, Stats]:
        logits = step.logits(*step.fakes())
        target = torch.zeros_like(logits) if self.cfg.inverted_labels else torch.ones_like(logits)
        loss = F.binary_cross_entropy_with_logits(logits, target)
        return loss, {"loss/G": loss.detach()}

    def optimizers(self, G: Generator,
                   D: Discriminator) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        return (_adam(G.parameters(), self.cfg.lr_g, self.cfg.betas),
                _adam(D.parameters(), self.cfg.lr_d, self.cfg.betas))


class WGANGPObjective(Objective):
    def __init__(self, cfg: WGANGPConfig) -> None:
        self.cfg = cfg
        self.n_critic = cfg.n_critic

    def _penalty(self, step: StepInputs, reals: torch.Tensor, fakes: torch.Tensor,
                 c: torch.Tensor | None) -> torch.Tensor:
        """Gradient penalty on interpolates; each keeps its real's class (a conditional
        critic is penalised along the real/fake line of one class)."""
        eps = step.rand.rand(1, 1, 1)
        with _no_autocast(step):
            mixed = eps * reals.float() + (1 - eps) * fakes.float()
            _, grad = _input_gradient(step, mixed, c)
            norm = grad.flatten(1).norm(dim=1)
            return (norm - 1).square().mean()

    def d_loss(self, step: StepInputs, reals: Reals) -> tuple[torch.Tensor, Stats]:
        real_logits, fake_logits, fakes = step.d_pass(reals)
        loss = fake_logits.mean() - real_logits.mean()
        stats = _d_stats(real_logits, fake_logits, loss)
        if self.cfg.drift:
            loss = loss + self.cfg.drift * real_logits.square().mean()
        if self.cfg.gp_lambda:
            gp = self._penalty(step, reals[0], fakes, reals[1])
            stats["loss/GP"] = gp.detach()
            loss = loss + self.cfg.gp_lambda * gp
        return loss, stats

    def g_loss(self, step: StepInputs) -> tuple[torch.Tensor, Stats]:
        loss = -step.logits(*step.fakes()).mean()
        return loss, {"loss/G": loss.detach()}

    def optimizers(self, G: Generator,
                   D: Discriminator) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        if self.cfg.optimizer == "rmsprop":  # the original WGAN: momentum destabilises clipping
            return (torch.optim.RMSprop(G.parameters(), lr=self.cfg.lr),
                    torch.optim.RMSprop(D.parameters(), lr=self.cfg.lr))
        return (_adam(G.parameters(), self.cfg.lr, self.cfg.betas),
                _adam(D.parameters(), self.cfg.lr, self.cfg.betas))

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
        self.g_reg_interval = cfg.pl_interval if cfg.pl_weight > 0 else 0
        self.pl_mean = torch.zeros((), dtype=torch.float64)
        self._pl_sum: torch.Tensor | None = None  # this step's path lengths: sum and count

    def d_loss(self, step: StepInputs, reals: Reals) -> tuple[torch.Tensor, Stats]:
        real_logits, fake_logits, _ = step.d_pass(reals)
        loss = F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()
        return loss, _d_stats(real_logits, fake_logits, loss)

    def d_reg(self, step: StepInputs, reals: Reals) -> tuple[torch.Tensor, Stats]:
        images, c_real = reals
        with _no_autocast(step):
            logits, grad = _input_gradient(step, images, c_real)
            r1 = grad.square().flatten(1).sum(dim=1).mean()
            # `+ 0 * logits` keeps D's output bias in the graph, so its gradient is defined.
            loss = (self.gamma / 2) * r1 * self.reg_interval + 0.0 * logits.mean()
        return loss, {"loss/R1": r1.detach()}

    def g_loss(self, step: StepInputs) -> tuple[torch.Tensor, Stats]:
        loss = F.softplus(-step.logits(*step.fakes())).mean()
        return loss, {"loss/G": loss.detach()}

    def g_reg(self, step: StepInputs) -> tuple[torch.Tensor, Stats]:
        """Path length regularisation: the Jacobian of the image with respect to w, projected
        on a random image-space direction, should have the same length everywhere (its
        running mean). Computed on the whole micro-batch (StyleGAN2 halves it, a speed
        choice), in fp32; the running mean is updated after the step from every rank's
        lengths (`after_g_reg`), so the penalty does not depend on the device count."""
        G = step.G
        z = step.rand.randn(G.z_dim)
        c = step.fake_classes()
        with _no_autocast(step):
            ws = G.styles(z, step.rand, c, track=False)  # type: ignore[attr-defined]
            images = G.synthesis(ws, step.rand)  # type: ignore[attr-defined]
            side = images.shape[-1]
            direction = step.rand.randn(3, side, side) / side
            (grad,) = torch.autograd.grad((images * direction).sum(), ws, create_graph=True)
            lengths = grad.square().sum(dim=2).mean(dim=1).sqrt()
            penalty = (lengths - self.pl_mean.to(lengths)).square().mean()
            # `+ 0 * images` keeps every layer in the graph (the last toRGB bias has no
            # second-order term), so each parameter gets a gradient, zero or not.
            loss = penalty * self.cfg.pl_weight * self.g_reg_interval + 0.0 * images.mean()
        part = torch.stack([lengths.detach().double().sum(),
                            torch.tensor(float(lengths.shape[0]), dtype=torch.float64,
                                         device=lengths.device)])
        self._pl_sum = part if self._pl_sum is None else self._pl_sum + part
        return loss, {"loss/PL": penalty.detach(), "pl/mean": self.pl_mean.float()}

    def after_g_reg(self, reduce_sum: Callable[[torch.Tensor], torch.Tensor]) -> None:
        if self._pl_sum is None:
            return
        total = reduce_sum(self._pl_sum).cpu()
        self._pl_sum = None
        if total[1] > 0:
            self.pl_mean = self.pl_mean.lerp(total[0] / total[1], self.cfg.pl_decay)

    def state_dict(self) -> dict[str, Any]:
        return {"pl_mean": self.pl_mean.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pl_mean = state["pl_mean"].to(torch.float64).cpu()

    def optimizers(self, G: Generator,
                   D: Discriminator) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        betas = self.cfg.betas
        return (_adam(G.parameters(), self.cfg.lr, betas, ratio=_lazy_ratio(self.g_reg_interval)),
                _adam(D.parameters(), self.cfg.lr, betas, ratio=_lazy_ratio(self.reg_interval)))


class BigGANObjective(Objective):
    """Hinge loss (Lim and Ye 2017, as BigGAN) and orthogonal regularisation of G."""

    def __init__(self, cfg: BigGANConfig) -> None:
        self.cfg = cfg
        self.n_critic = cfg.n_critic

    def d_loss(self, step: StepInputs, reals: Reals) -> tuple[torch.Tensor, Stats]:
        real_logits, fake_logits, _ = step.d_pass(reals)
        loss = F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
        return loss, _d_stats(real_logits, fake_logits, loss)

    def g_loss(self, step: StepInputs) -> tuple[torch.Tensor, Stats]:
        loss = -step.logits(*step.fakes()).mean()
        stats: Stats = {"loss/G": loss.detach()}
        if self.cfg.ortho:
            ortho = orthogonal_penalty(step.G)
            stats["loss/ortho"] = ortho.detach()
            loss = loss + self.cfg.ortho * ortho
        return loss, stats

    def optimizers(self, G: Generator,
                   D: Discriminator) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        # eps 1e-6: BigGAN-PyTorch's Adam epsilon (the paper does not give one)
        return (_adam(G.parameters(), self.cfg.lr_g, self.cfg.betas, eps=1e-6),
                _adam(D.parameters(), self.cfg.lr_d, self.cfg.betas, eps=1e-6))


def make_objective(cfg: TrainConfig, resolution: int) -> Objective:
    """The objective of `cfg.model` with its hyper-parameters."""
    if cfg.model == "dcgan":
        return DCGANObjective(cfg.dcgan)
    if cfg.model == "wgan_gp":
        return WGANGPObjective(cfg.wgan_gp)
    if cfg.model == "biggan":
        return BigGANObjective(cfg.biggan)
    return StyleGAN2Objective(cfg.stylegan2, resolution, cfg.batch)
