"""The DDPM family: a network, the Gaussian process, and what the Trainer needs from it.

A family owns its objective and its sampling and is handed its network (DESIGN.md,
"Interfaces"; the contract is :class:`genlab.family.Family`): ``losses(batch)`` returns
per-example terms, ``sample(n, seed)`` returns uint8 images, ``bits_per_dim(images)`` the
variational bound.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from genlab.config import RunConfig
from genlab.data.transforms import from_model, to_model
from genlab.diffusion import superres
from genlab.diffusion.process import Denoiser, GaussianDiffusion, nats_to_bpd
from genlab.diffusion.sampling import SAMPLERS
from genlab.diffusion.sampling import sample as run_sampler
from genlab.diffusion.timesteps import make_timestep_sampler
from genlab.errors import ConfigError
from genlab.family import batched_draw, register_family, step_images
from genlab.nets import TimeMLP, UNet
from genlab.progress import progress_bar
from genlab.rng import per_sample_generators, randn


def build_net(cfg: RunConfig, shape: tuple[int, ...], num_classes: int | None = None) -> nn.Module:
    """The denoising network described by ``cfg`` for data of ``shape`` (C, H, W), or (D,) for toy2d.

    A class-conditional model (``cfg.model.class_conditional``) gets ``cfg.data.num_classes``
    labels plus the null label ``num_classes`` (the label embedding is added to the time embedding).
    """
    m = cfg.model
    learned = cfg.diffusion.variance == "learned_range"
    if num_classes is None and m.class_conditional:
        num_classes = cfg.data.num_classes
    if cfg.data.name == "toy2d":
        if learned:
            raise ConfigError("{{diffusion.variance}} learned_range needs images with discrete levels, and toy2d is continuous; use {{diffusion.variance}} fixed_small or fixed_large.")
        return TimeMLP(dim=shape[0], hidden=m.hidden, depth=m.depth, num_classes=num_classes)
    C, H, W = shape
    if H != W:
        raise ValueError(f"the U-Net needs square images, not {H}x{W}")
    return UNet(
        image_size=H, in_channels=C, channels=m.channels, num_res_blocks=m.num_res_blocks,
        attn_resolutions=m.attn_resolutions, dropout=m.dropout, num_classes=num_classes,
        norm_groups=m.norm_groups, head_dim=m.head_dim,
        out_channels=2 * C if learned else None,  # mean and variance halves (improved-diffusion's learn_sigma)
        cond_channels=C if cfg.diffusion.super_resolution else 0,  # SR: the upsampled low-res image
    )


@register_family("ddpm")
class DDPM(nn.Module):
    """Denoising diffusion probabilistic model (Ho et al. 2020) over data with ``levels`` grey levels.

    ``levels`` = 0 means continuous data (toy2d): no quantisation, no discretised decoder.
    ``vlb_weight``, ``weighting`` and ``weighting_gamma`` shape the loss (see
    :meth:`GaussianDiffusion.training_losses`); ``timestep_sampler`` names how t is drawn
    (:mod:`genlab.diffusion.timesteps`; its state is a submodule, so checkpoints carry it).
    ``num_classes`` > 0 makes it class-conditional (the net takes ``y``, with ``num_classes``
    as the null label); during training each label is replaced by the null label with
    probability ``cond_drop_prob``, so the same network learns p(x | y) and p(x), which is
    what classifier-free guidance needs (Ho & Salimans 2021, Algorithm 1).
    ``super_resolution`` = f > 0 makes it p(x | low_res), a super-resolution model conditioned on
    x downsampled by f (see :mod:`genlab.diffusion.superres`).
    """

    config_section = "diffusion"
    has_likelihood = True
    sampler_names = tuple(SAMPLERS)
    sample_options = frozenset({"sampler", "steps", "eta", "spacing", "labels", "guidance", "classifier", "callback"})
    shardable = True  # forward(..., shard=): t, eps and the label drops are drawn for the whole global batch

    def __init__(self, net: nn.Module, diffusion: GaussianDiffusion, parameterization: str, loss: str,
                 shape: tuple[int, ...], levels: int, vlb_weight: float = 0.001, weighting: str = "none",
                 weighting_gamma: float | None = None, timestep_sampler: str = "uniform", num_classes: int = 0,
                 cond_drop_prob: float = 0.0, super_resolution: int = 0):
        super().__init__()
        self.net = net
        self.diffusion = diffusion
        self.parameterization = parameterization
        self.loss_type = loss
        self.shape = tuple(shape)
        self.levels = levels
        self.vlb_weight, self.weighting, self.weighting_gamma = vlb_weight, weighting, weighting_gamma
        self.timestep_sampler = make_timestep_sampler(timestep_sampler, diffusion.num_timesteps)
        self.preview_count = 64 if levels else 2000  # samples in a progress grid (images) or scatter plot (points)
        self.num_classes = num_classes
        self.cond_drop_prob = cond_drop_prob
        self.super_resolution = super_resolution
        self.preview_low_res = None  # SR: uint8 low-res images that sample() upscales when given none

    @property
    def uses_labels(self) -> bool:
        """Whether the Trainer should pass the data's labels to :meth:`forward`."""
        return self.num_classes > 0

    @classmethod
    def from_config(cls, cfg: RunConfig) -> DDPM:
        """Build from a resolved config whose ``data.shape`` and ``data.levels`` are filled in."""
        d = cfg.diffusion
        shape = tuple(cfg.data.shape)
        if cfg.data.levels == 0 and d.loss != "simple":
            raise ConfigError(f"{{diffusion.loss}} {d.loss} needs images with discrete levels, and {cfg.data.name} is continuous; use {{diffusion.loss}} simple.")
        num_classes = 0
        if cfg.model.class_conditional:
            num_classes = cfg.data.num_classes
            if num_classes < 1:
                raise ConfigError(f"{{model.class_conditional}} needs labelled data, and {cfg.data.name} has no classes; drop {{model.class_conditional}}.")
        superres.check_factor(shape, d.super_resolution, cfg.data.name)
        return cls(build_net(cfg, shape), GaussianDiffusion.from_schedule(d.schedule, d.timesteps, d.variance),
                   d.parameterization, d.loss, shape, cfg.data.levels, vlb_weight=d.vlb_weight,
                   weighting=d.weighting, weighting_gamma=d.weighting_gamma, timestep_sampler=d.timestep_sampler,
                   num_classes=num_classes, cond_drop_prob=cfg.model.cond_drop_prob,
                   super_resolution=d.super_resolution)

    @classmethod
    def describe(cls, cfg: RunConfig) -> str:
        """'ddpm', or 'ddpm conditional' for a class-conditional model."""
        return "ddpm conditional" if cfg.model.class_conditional else "ddpm"

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

    def forward(self, batch: torch.Tensor, generator: torch.Generator, labels: torch.Tensor | None = None,
                shard: tuple[slice, int] | None = None) -> dict[str, torch.Tensor]:
        """What the Trainer calls (so a DDP wrapper sees the forward pass): :meth:`losses`."""
        return self.losses(batch, generator, labels, shard)

    def losses(self, batch: torch.Tensor, generator: torch.Generator, labels: torch.Tensor | None = None,
               shard: tuple[slice, int] | None = None) -> dict[str, torch.Tensor]:
        """Per-example training terms for a batch of data; t from the timestep sampler, eps ~ N(0, I).

        With importance sampling of t, ``"loss"`` is weighted by 1 / (T p_t) (unbiased) and, in
        training mode, the sampler's loss history is updated with the unweighted losses.
        A class-conditional model takes the batch's ``labels`` [B]; each is replaced by the null
        label with probability ``cond_drop_prob`` (drawn from ``generator``, after t and eps, so
        an unconditional model's random stream is unchanged). ``labels=None`` trains the null
        label only. An unconditional model ignores ``labels``.

        ``shard`` = (rows, B) when training in several processes: ``batch`` (and ``labels``) are
        the slice ``rows`` of a global batch of B examples. t, eps and the label drops are then
        drawn for all B rows, as one process would draw them, and only ``rows`` are kept, so N
        processes with B/N rows each see the same noise as one process with B. (With
        importance sampling each process feeds only its own rows to the loss history.)
        """
        x0 = self.to_model(batch)
        rows, B = shard or (slice(None), x0.shape[0])
        t, weights = self.timestep_sampler.sample(B, generator)
        t, weights = t[rows].to(x0.device), weights[rows].to(x0.device)
        noise = torch.randn((B, *x0.shape[1:]), generator=generator)[rows].to(x0.device)
        cond = self.condition(batch)
        if self.num_classes:
            cond["y"] = self.drop_labels(labels, B, generator, rows).to(x0.device)
        terms = self.diffusion.training_losses(self.denoiser, x0, t, noise, loss=self.loss_type, levels=self.levels or 256,
                                               weighting=self.weighting, weighting_gamma=self.weighting_gamma,
                                               vlb_weight=self.vlb_weight, **cond)
        if self.training:
            self.timestep_sampler.update(t, terms["loss"].detach())
        terms["loss"] = terms["loss"] * weights
        return terms

    def drop_labels(self, labels: torch.Tensor | None, B: int, generator: torch.Generator,
                    rows: slice = slice(None)) -> torch.Tensor:
        """Labels with each replaced by the null label ``num_classes`` with probability ``cond_drop_prob``.

        ``labels`` are the rows ``rows`` of a batch of B (all of it by default); the draws are made
        for all B rows and these rows returned.
        """
        null = torch.full((B,), self.num_classes, dtype=torch.long)[rows]
        if labels is None:
            return null
        drop = (torch.rand(B, generator=generator) < self.cond_drop_prob)[rows]
        return torch.where(drop, null, labels.detach().cpu().long())

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, sampler: str = "ancestral", steps: int | None = None, eta: float = 0.0,
               batch_size: int = 256, progress: bool = False, raw: bool = False, labels: torch.Tensor | None = None,
               guidance: float | None = None, classifier: nn.Module | None = None,
               spacing: str = "uniform", callback=None, **cond) -> torch.Tensor:
        """``n`` samples as uint8 (values 0..levels-1), or floats in model space if ``raw``.

        Sample i depends only on (seed, i) (and its label): the result does not change with
        ``batch_size``.

        Conditioning (see :mod:`genlab.diffusion.guidance`): ``labels`` [n] are the classes
        asked for; for a class-conditional model or with a ``classifier`` they default to
        cycling the classes (sample i gets class i % num_classes). ``guidance`` is the
        classifier-free guidance weight w of a class-conditional model (eps = (1 + w) eps(x, y)
        - w eps(x, null); None or 0: the plain conditional model), or, with a noise-conditional
        ``classifier`` (a net (x_t, t) -> logits trained on this schedule), the classifier
        scale s (default 1). ``cond``: per-sample conditioning tensors ``[n, ...]`` for the
        denoiser (``low_res=`` for an SR model: see :func:`genlab.diffusion.superres.upscale`).
        ``callback``: see :data:`genlab.family.SAMPLE_OPTIONS` (images data with levels only).
        """
        denoiser, labels = self.guided_denoiser(n, labels, guidance, classifier)
        device = next(self.net.parameters()).device
        if self.super_resolution and "low_res" not in cond:
            if self.preview_low_res is None or len(self.preview_low_res) < n:
                raise ConfigError("this is a super-resolution model, which samples given low-resolution images; "
                                  "use genlab upscale RUN --image FILE.")
            cond["low_res"] = superres.condition(self.preview_low_res[:n], self.super_resolution, self.levels)

        def draw(start: int, b: int) -> torch.Tensor:
            gens = per_sample_generators(seed, start, b)
            x_T = randn((b, *self.shape), gens, device)
            c = {k: v[start : start + b].to(device) for k, v in cond.items()}
            if labels is not None:
                c["y"] = labels[start : start + b].to(device)
            x0 = run_sampler(denoiser, self.diffusion, x_T, sampler=sampler, steps=steps, eta=eta,
                             generator=gens, clip_denoised=self.levels > 0, progress=progress, spacing=spacing,
                             callback=step_images(callback, start, lambda v: from_model(v.float().clamp(-1, 1), self.levels)),
                             **c)
            return x0.float()

        # the sampler's own bar counts the steps of each batch: that is the progress shown
        x = batched_draw(n, batch_size, draw, shape=self.shape)
        return x if (raw or self.levels == 0) else from_model(x, self.levels)

    def guided_denoiser(self, n: int, labels: torch.Tensor | None, guidance: float | None,
                        classifier: nn.Module | None) -> tuple[Denoiser, torch.Tensor | None]:
        """The denoiser to sample with and the labels [n] (or None), checked; see :meth:`sample`."""
        from genlab.diffusion.guidance import classifier_free_guidance, classifier_guidance

        num_classes = self.num_classes or getattr(classifier, "num_classes", 0)
        if not num_classes:
            if labels is not None or guidance is not None:
                raise ConfigError("this model is unconditional: a class or guidance needs a class-conditional model "
                                  "(train with {{model.class_conditional}}) or a classifier (--classifier RUN).")
            return self.denoiser, None
        if labels is None:
            labels = torch.arange(n) % num_classes
        labels = torch.as_tensor(labels, dtype=torch.long).cpu()
        if labels.shape != (n,):
            raise ConfigError(f"{n} samples need {n} labels, not {tuple(labels.shape)}.")
        bad = labels[(labels < 0) | (labels >= num_classes)]
        if bad.numel():
            raise ConfigError(f"class {int(bad[0])} does not exist; choose a class in 0..{num_classes - 1}.")
        if classifier is not None:
            scale = 1.0 if guidance is None else float(guidance)
            return classifier_guidance(self.denoiser, self.diffusion, classifier, scale), labels
        if guidance:  # w = 0 is the plain conditional model: skip the unconditional pass
            return classifier_free_guidance(self.denoiser, float(guidance), null_label=self.num_classes), labels
        return self.denoiser, labels

    @torch.no_grad()
    def bits_per_dim(self, images: torch.Tensor, seed: int = 0, batch_size: int = 64, max_batch: int = 512,
                     t_samples: int | None = None, progress: bool = False) -> dict[str, float | None]:
        """The variational bound on ``images`` (uint8), averaged, in bits/dim, with its parts.

        Every one of the T terms is computed unless ``t_samples`` asks for the stratified
        estimate (see :meth:`GaussianDiffusion.variational_bound`). Returns ``bpd``,
        ``prior_bpd`` (L_T), ``diffusion_bpd`` (the sum of the L_{t-1} terms, t = 2..T in the
        paper's indexing), ``decoder_bpd`` (L_0), ``bpd_se`` (standard error of the mean
        over images), ``n`` and ``t_samples`` (None: exact sum over t). A class-conditional
        model is measured with the null label, i.e. as the unconditional model p(x) it also learnt.
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
            # Any: else mypy matches the **cond tensors against variational_bound's clip_denoised: bool
            cond: dict[str, Any] = {k: v.to(device) for k, v in self.condition(images[start : start + batch_size]).items()}
            out = self.diffusion.variational_bound(self.denoiser, x0, self.levels, generator=gen, max_batch=max_batch,
                                                   t_samples=t_samples, progress=bar.update if bar else None, **cond)
            for k, part in parts.items():
                part.append(nats_to_bpd(out[k], D))
        if bar:
            bar.close()
        per = {k: torch.cat(v) for k, v in parts.items()}
        n = images.shape[0]
        se = per["total"].std().item() / math.sqrt(n) if n > 1 else float("nan")
        return {"bpd": per["total"].mean().item(), "prior_bpd": per["prior"].mean().item(),
                "diffusion_bpd": per["diffusion"].mean().item(), "decoder_bpd": per["decoder"].mean().item(),
                "bpd_se": se, "n": n, "t_samples": None if exact else t_samples}

    @torch.no_grad()
    def ode_bits_per_dim(self, images: torch.Tensor, seed: int = 0, batch_size: int = 128, rtol: float = 1e-5,
                         atol: float = 1e-5, progress: bool = False) -> dict[str, float]:
        """Bits/dim of ``images`` (uint8) by the probability-flow ODE (:mod:`genlab.diffusion.likelihood`).

        Each batch is solved as one system with RK45 at (``rtol``, ``atol``), one Rademacher probe per
        image, uniform dequantisation; noise and probes come from ``seed``. Returns ``bpd``, ``bpd_se``
        (standard error over images), ``n`` and ``nfe`` (right-hand-side evaluations per batch, averaged).
        """
        from genlab.diffusion.likelihood import ode_bits_per_dim

        if self.levels == 0:
            raise ValueError("bits/dim needs discrete data")
        device = next(self.net.parameters()).device
        gen = torch.Generator().manual_seed(seed)
        bpd, nfe = [], []
        bar = progress_bar(total=images.shape[0], desc="bits/dim (ODE)", unit="img") if progress else None
        for start in range(0, images.shape[0], batch_size):
            batch = images[start : start + batch_size]
            x0 = self.to_model(batch).to(device)
            cond = {k: v.to(device) for k, v in self.condition(batch).items()}
            out = ode_bits_per_dim(self.denoiser, self.diffusion, x0, self.levels, gen, rtol, atol, **cond)
            bpd.append(out["bpd"])
            nfe.append(out["nfe"])
            if bar:
                bar.update(x0.shape[0])
        if bar:
            bar.close()
        per = torch.cat(bpd)
        n = per.numel()
        return {"bpd": per.mean().item(), "bpd_se": per.std().item() / math.sqrt(n) if n > 1 else float("nan"),
                "n": n, "nfe": sum(nfe) / len(nfe)}
