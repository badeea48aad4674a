"""A time-conditioned MLP denoiser for 2-D point clouds (``toy2d``)."""

from __future__ import annotations

import torch
from torch import nn

from genlab.nets.unet import timestep_embedding


class TimeMLP(nn.Module):
    """out = MLP([x, emb(t)]) with SiLU activations; ``x`` is ``[B, dim]``, ``t`` is ``[B]``."""

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, time_dim: int = 32, num_classes: int | None = None):
        super().__init__()
        self.time_dim = time_dim
        self.time_embed = nn.Sequential(nn.Linear(time_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.label_embed = nn.Embedding(num_classes + 1, hidden) if num_classes else None
        self.num_classes = num_classes
        self.input = nn.Linear(dim, hidden)
        self.layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
        self.out = nn.Linear(hidden, dim)

    def forward(self, x, t, y=None):
        emb = self.time_embed(timestep_embedding(t, self.time_dim))
        if self.label_embed is not None:
            if y is None:
                y = torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
            emb = emb + self.label_embed(y)
        h = self.input(x)
        for layer in self.layers:
            h = h + layer(torch.nn.functional.silu(h + emb))
        return self.out(torch.nn.functional.silu(h))
