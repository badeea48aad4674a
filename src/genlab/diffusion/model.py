"""The DDPM family: a network, the Gaussian process, and what the Trainer needs from it.

A family owns its objective and its sampling and is handed its network (DESIGN.md,
"Interfaces"): ``losses(batch)`` returns per-example terms, ``sample(n, seed)``
returns uint8 images, ``bits_per_dim(images)`` the variational bound.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from genlab.config import RunConfig
from genlab.data.transforms import from_model, to_model
from genlab.diffusion import superres
from genlab.diffusion.process import Denoiser, GaussianDiffusion, nats_to_bpd
from genlab.diffusion.samplers import per_sample_generators, randn
from genlab.diffusion.samplers import sample as run_sampler
from genlab.errors import ConfigError
from genlab.nets import TimeMLP, UNet
from genlab.progress import progress_bar


def build_net(cfg: RunConfig, shape: tuple[int, int, int], num_classes: int | None = None) -> nn.Module:
    """The denoising network described by ``cfg`` for data of ``shape`` (C, H, W)."""
    m = cfg.model
    if cfg.data.name == "toy2d":
        return TimeMLP(dim=shape[0], hidden=m.hidden, depth=m.depth, num_classes=num_classes)
    C, H, W = shape
    if H != W:
        raise ValueError(f"the U-Net needs square images, not {H}x{W}")
    return UNet(
        image_size=H, in_channels=C, channels=m.channels, num_res_blocks=m.num_res_blocks,
        attn_resolutions=m.attn_resolutions, dropout=m.dropout, num_classes=num_classes,
        norm_groups=m.norm_groups, head_dim=m.head_dim,
        cond_channels=C if cfg.diffusion.super_resolution else 0,  # SR: the upsampled low-res image
    )


class DDPM(nn.Module):
    """Denoising diffusion probabilistic model (Ho et al. 2020) over data with ``levels`` grey levels.

    ``levels`` = 0 means continuous data (toy2d): no quantisation, no discretised decoder.
    ``super_resolution`` = f > 0 makes it p(x | low_res), a super-resolution model conditioned on
    x downsampled by f (see :mod:`genlab.diffusion.superres`).
    """

    def __init__(self, net: nn.Module, diffusion: GaussianDiffusion, parameterization: str, loss: str,
                 shape: tuple[int, ...], levels: int, super_resolution: int = 0):
        super().__init__()
        self.net = net
        self.diffusion = diffusion
        self.parameterization = parameterization
        self.loss_type = loss
        self.shape = tuple(shape)
        self.levels = levels
        self.preview_count = 64 if levels else 2000  # samples in a progress grid (images) or scatter plot (points)
        self.super_resolution = super_resolution
        self.preview_low_res = None  # SR: uint8 low-res images that sample() upscales when given none

    @classmethod
    def from_config(cls, cfg: RunConfig) -> "DDPM":
        """Build from a resolved config whose ``data.shape`` and ``data.levels`` are filled in."""
        d = cfg.diffusion
        shape = tuple(cfg.data.shape)
        if cfg.data.levels == 0 and d.loss == "vlb":
            raise ConfigError(f"--loss vlb needs images with discrete levels, and {cfg.data.name} is continuous; use --loss simple.")
        superres.check_factor(shape, d.super_resolution, cfg.data.name)
        return cls(build_net(cfg, shape), GaussianDiffusion.from_schedule(d.schedule, d.timesteps, d.variance),
                   d.parameterization, d.loss, shape, cfg.data.levels, d.super_resolution)

    @property
    def denoiser(self) -> Denoiser:
        return Denoiser(self.net, self.parameterization)

    def to_model(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 images (or float points) -> model space [-1, 1]."""
        return batch.float() if self.levels == 0 else to_model(batch, self.levels)

    def condition(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """The conditioning a model derives from its own uint8 data: ``low_res`` for an SR model."""
        if not self.super_resolution:
            return {}
        f = self.super_resolution
        return {"low_res": superres.condition(superres.downsample(batch, f), f, self.levels)}

    def forward(self, batch: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """What the Trainer calls (so a DDP wrapper sees the forward pass): :meth:`losses`."""
        return self.losses(batch, generator)

    def losses(self, batch: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Per-example training terms for a batch of data; t ~ U{0..T-1}, eps ~ N(0, I)."""
        x0 = self.to_model(batch)
        B = x0.shape[0]
        t = torch.randint(0, self.diffusion.num_timesteps, (B,), generator=generator).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        return self.diffusion.training_losses(self.denoiser, x0, t, noise, loss=self.loss_type, levels=self.levels or 256,
                                              **self.condition(batch))

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, sampler: str = "ancestral", steps: int | None = None, eta: float = 0.0,
               batch_size: int = 256, progress: bool = False, raw: bool = False, **cond) -> torch.Tensor:
        """``n`` samples as uint8 (values 0..levels-1), or floats in model space if ``raw``.

        Sample i depends only on (seed, i): the result does not change with ``batch_size``.
        ``cond``: per-sample conditioning tensors ``[n, ...]`` for the denoiser (``low_res=`` for
        an SR model: see :func:`genlab.diffusion.superres.upscale`).
        """
        device = next(self.net.parameters()).device
        if self.super_resolution and "low_res" not in cond:
            if self.preview_low_res is None or len(self.preview_low_res) < n:
                raise ConfigError("this is a super-resolution model, which samples given low-resolution images; "
                                  "use genlab upscale RUN --image FILE.")
            cond["low_res"] = superres.condition(self.preview_low_res[:n], self.super_resolution, self.levels)
        out = []
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            gens = per_sample_generators(seed, start, b)
            x_T = randn((b, *self.shape), gens, device)
            c = {k: v[start : start + b].to(device) for k, v in cond.items()}
            x0 = run_sampler(self.denoiser, self.diffusion, x_T, sampler=sampler, steps=steps, eta=eta,
                             generator=gens, clip_denoised=self.levels > 0, progress=progress, **c)
            out.append(x0.float().cpu())
        x = torch.cat(out)
        return x if (raw or self.levels == 0) else from_model(x, self.levels)

    @torch.no_grad()
    def bits_per_dim(self, images: torch.Tensor, seed: int = 0, batch_size: int = 64, max_batch: int = 512,
                     t_samples: int | None = None, progress: bool = False) -> dict[str, float]:
        """The variational bound on ``images`` (uint8), averaged, in bits/dim, with its parts.

        Every one of the T terms is computed unless ``t_samples`` asks for the stratified
        estimate (see :meth:`GaussianDiffusion.variational_bound`). Returns ``bpd``,
        ``prior_bpd`` (L_T), ``diffusion_bpd`` (the sum of the L_{t-1} terms, t = 2..T in the
        paper's indexing), ``decoder_bpd`` (L_0), ``bpd_se`` (standard error of the mean
        over images), ``n`` and ``t_samples`` (None: exact sum over t).
        """
        if self.levels == 0:
            raise ValueError("bits/dim needs discrete data")
        device = next(self.net.parameters()).device
        gen = torch.Generator().manual_seed(seed)
        D = math.prod(self.shape)
        per_image = self.diffusion.bound_evaluations(t_samples)
        exact = per_image == self.diffusion.num_timesteps
        parts: dict[str, list[torch.Tensor]] = {"prior": [], "diffusion": [], "decoder": [], "total": []}
        bar = None
        if progress:
            bar = progress_bar(total=images.shape[0] * per_image, desc="bits/dim", unit="eval", unit_scale=True)
        for start in range(0, images.shape[0], batch_size):
            x0 = self.to_model(images[start : start + batch_size]).to(device)
            cond = {k: v.to(device) for k, v in self.condition(images[start : start + batch_size]).items()}
            out = self.diffusion.variational_bound(self.denoiser, x0, self.levels, generator=gen, max_batch=max_batch,
                                                   t_samples=t_samples, progress=bar.update if bar else None, **cond)
            for k in parts:
                parts[k].append(nats_to_bpd(out[k], D))
        if bar:
            bar.close()
        per = {k: torch.cat(v) for k, v in parts.items()}
        n = images.shape[0]
        se = per["total"].std().item() / math.sqrt(n) if n > 1 else float("nan")
        return {"bpd": per["total"].mean().item(), "prior_bpd": per["prior"].mean().item(),
                "diffusion_bpd": per["diffusion"].mean().item(), "decoder_bpd": per["decoder"].mean().item(),
                "bpd_se": se, "n": n, "t_samples": None if exact else t_samples}
