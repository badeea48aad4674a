"""Exponential moving average of a model's parameters: what we sample and evaluate with."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """A frozen copy of ``model`` whose parameters follow theta_ema <- lerp(theta_ema, theta, 1 - beta).

    beta = min(decay, (1 + n) / (10 + n)) after n updates, so early averages are not
    dominated by the random initialisation (the warm-up of Tensorflow's EMA, used by
    DDPM's code). Buffers are copied, not averaged, and so are parameters that do not train
    (``requires_grad`` False, e.g. latent diffusion's autoencoder once its stage is over): the
    average of a frozen stage is the stage itself.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def beta(self, num_updates: int) -> float:
        return min(self.decay, (1 + num_updates) / (10 + num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module, num_updates: int) -> None:
        weight = 1.0 - self.beta(num_updates)
        ema_params = dict(self.model.named_parameters())
        for name, p in model.named_parameters():
            if p.requires_grad:
                ema_params[name].lerp_(p.detach(), weight)
            else:
                ema_params[name].copy_(p.detach())
        ema_buffers = dict(self.model.named_buffers())
        for name, b in model.named_buffers():
            ema_buffers[name].copy_(b)
