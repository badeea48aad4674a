"""How training draws the timestep t of each example: uniformly, or by importance.

A sampler gives ``(t, weights)`` for a batch: ``t`` ``[B]`` in 0..T-1 and ``weights``
``[B]`` = 1 / (T p_t), so that E_{t ~ p}[w_t L_t] = (1/T) sum_t L_t = E_{t ~ U}[L_t]: the
weighted loss is an unbiased estimate of the uniform one, whatever p.

Both are ``nn.Module``s so their state lives in buffers: a DDPM that owns one saves it in
its checkpoints with the network, and ``--resume`` continues the loss history.
"""

from __future__ import annotations

import torch
from torch import nn

from genlab.errors import ConfigError

TIMESTEP_SAMPLERS = ("uniform", "loss-second-moment")


class UniformSampler(nn.Module):
    """t ~ U{0..T-1}, weights 1 (DDPM Algorithm 1). No state."""

    def __init__(self, num_timesteps: int):
        super().__init__()
        self.num_timesteps = num_timesteps

    def probabilities(self) -> torch.Tensor:
        """p_t, float64 ``[T]``."""
        return torch.full((self.num_timesteps,), 1.0 / self.num_timesteps, dtype=torch.float64)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(t ``[B]`` long, weights ``[B]`` float32) on the CPU."""
        # the same draw as before samplers existed, so uniform runs reproduce bit for bit
        t = torch.randint(0, self.num_timesteps, (batch_size,), generator=generator)
        return t, torch.ones(batch_size)

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Nothing to learn from the losses."""


class LossSecondMomentSampler(UniformSampler):
    """Importance sampling of t with p_t proportional to sqrt(E[L_t^2]) (Nichol & Dhariwal 2021, eq. (17)).

    As improved-diffusion's ``LossSecondMomentResampler``: the last ``history`` losses of
    every t are kept; until every t has ``history`` of them, t is uniform; after that
    p_t = (1 - uniform_prob) sqrt(mean of L_t^2) / sum_s sqrt(mean of L_s^2) + uniform_prob / T.
    Feed it the *unweighted* per-example losses with :meth:`update`.

    State (buffers, saved in checkpoints): ``loss_history`` float64 ``[T, history]``, oldest
    first, and ``loss_counts`` long ``[T]``. Under several processes DDP copies buffers from
    rank 0 at each forward, so the history follows rank 0's losses (improved-diffusion
    gathers them from all ranks first).
    """

    loss_history: torch.Tensor
    loss_counts: torch.Tensor

    def __init__(self, num_timesteps: int, history: int = 10, uniform_prob: float = 0.001):
        super().__init__(num_timesteps)
        self.history = history
        self.uniform_prob = uniform_prob
        self.register_buffer("loss_history", torch.zeros(num_timesteps, history, dtype=torch.float64))
        self.register_buffer("loss_counts", torch.zeros(num_timesteps, dtype=torch.long))

    def warmed_up(self) -> bool:
        return bool((self.loss_counts == self.history).all())

    def probabilities(self) -> torch.Tensor:
        if not self.warmed_up():
            return super().probabilities()
        w = self.loss_history.detach().cpu().pow(2).mean(-1).sqrt()
        w = w / w.sum()
        return w * (1.0 - self.uniform_prob) + self.uniform_prob / self.num_timesteps

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.warmed_up():
            return super().sample(batch_size, generator)
        p = self.probabilities()
        t = torch.multinomial(p, batch_size, replacement=True, generator=generator)
        return t, (1.0 / (self.num_timesteps * p[t])).float()

    @torch.no_grad()
    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Append each example's loss to its t's history, dropping the oldest once full."""
        history = self.loss_history.cpu().clone()
        counts = self.loss_counts.cpu().clone()
        for ti, loss in zip(t.tolist(), losses.detach().double().cpu().tolist(), strict=False):
            if counts[ti] == self.history:
                history[ti, :-1] = history[ti, 1:].clone()
                history[ti, -1] = loss
            else:
                history[ti, counts[ti]] = loss
                counts[ti] += 1
        self.loss_history.copy_(history)
        self.loss_counts.copy_(counts)


def make_timestep_sampler(name: str, num_timesteps: int) -> UniformSampler:
    """The sampler called ``name`` (:data:`TIMESTEP_SAMPLERS`)."""
    if name == "uniform":
        return UniformSampler(num_timesteps)
    if name == "loss-second-moment":
        return LossSecondMomentSampler(num_timesteps)
    raise ConfigError(f"unknown timestep sampler {name!r}; choose one of {', '.join(TIMESTEP_SAMPLERS)}.")
