"""RBMs and deep belief nets as genlab families: trained by the Trainer, sampled and measured by the CLI.

Images with K grey levels are binarised stochastically: pixel value u becomes 1 with
probability u / (K - 1). Training draws a fresh binarisation for every batch (the
"dynamically binarised" MNIST), evaluation one fixed binarisation from its seed, so the
test log-likelihood is over binary images, in the tradition of Salakhutdinov & Murray
(2008). It is not comparable with the bits/dim of the families that model all K levels,
and the report says so.

Contrastive divergence as a loss: for an RBM, d log p(v)/d theta = -dF(v)/d theta +
E_model[dF/d theta], so the gradient of ``F(v_data) - F(v_neg)`` with the negative
samples ``v_neg`` held fixed is minus the CD estimate of the log-likelihood gradient
(Hinton 2002; Tieleman 2008 for persistent chains). The optimiser descends it like any
loss; the Trainer keeps the loop, EMA, checkpoints and logging.

Randomness: every Bernoulli draw of training comes from the Trainer's generator
(checkpointed), so a resumed run continues exactly; sampling gives chain i its own
generator seeded by (seed, i), so the samples do not depend on the batch size.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import ClassVar, cast

import torch
from torch import nn

from genlab.config import RunConfig
from genlab.energy.rbm import RBM
from genlab.errors import ConfigError
from genlab.family import batched_draw, register_family
from genlab.progress import progress_bar
from genlab.rng import per_sample_generators

_CHUNK = 25  # Gibbs steps whose uniforms a sampling chain draws at once


def binarize_levels(images: torch.Tensor, levels: int, generator: torch.Generator) -> torch.Tensor:
    """uint8 images [B, ...] with K levels -> float {0, 1} [B, D]: 1 with probability u / (K - 1)."""
    return draw(images.reshape(len(images), -1).float() / (levels - 1), generator)


def draw(p: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Bernoulli(p) as float {0, 1}, the uniforms from the CPU ``generator`` (checkpointed by the Trainer)."""
    return (torch.rand(p.shape, generator=generator).to(p.device) < p).float()


@torch.no_grad()
def init_visible_bias(rbm: RBM, v: torch.Tensor) -> None:
    """Set b to the log-odds of each visible unit in the binary data ``v`` (Hinton's practical guide, 8.1)."""
    p = v.mean(0).clamp(1e-3, 1 - 1e-3)
    rbm.b.copy_(torch.log(p / (1 - p)))


def to_images(p_v: torch.Tensor, shape: tuple[int, ...], levels: int) -> torch.Tensor:
    """Visible probabilities [B, D] -> uint8 images [B, *shape] with K levels (the mean image)."""
    return torch.round(p_v.float().clamp(0, 1) * (levels - 1)).to(torch.uint8).reshape(len(p_v), *shape).cpu()


class GibbsRBM(RBM):
    """An RBM whose call is one block Gibbs step v -> h -> v with given uniforms (what sampling counts)."""

    def forward(self, v: torch.Tensor, u_h: torch.Tensor, u_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = (u_h < self.p_h(v)).to(v.dtype)
        p_v = self.p_v(h)
        return (u_v < p_v).to(v.dtype), p_v


def gibbs_chains(rbm: GibbsRBM, n: int, steps: int, seed: int = 0, start: int = 0, progress: bool = False,
                 v0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps`` Gibbs steps of chains ``start .. start+n-1`` from the base rates sigmoid(b) (or ``v0``).

    Returns the last binary states v [n, V] and p(v | h) [n, V] of the last step.
    """
    V, H = rbm.visible, rbm.hidden
    device = rbm.W.device
    gens = per_sample_generators(seed, start, n)
    if v0 is None:
        u0 = torch.stack([torch.rand(V, generator=g) for g in gens]).to(device)
        v = (u0 < torch.sigmoid(rbm.b)).float()
    else:
        v = v0
    p_v = v
    bar = progress_bar(total=steps, desc="Gibbs", leave=False) if progress else None
    for first in range(0, steps, _CHUNK):
        s = min(_CHUNK, steps - first)
        u = torch.stack([torch.rand(s, H + V, generator=g) for g in gens]).to(device)  # [n, s, H + V]
        for k in range(s):
            v, p_v = rbm(v, u[:, k, :H], u[:, k, H:])
        if bar:
            bar.update(s)
    if bar:
        bar.close()
    return v, p_v


@register_family("rbm")
class RBMFamily(nn.Module):
    """A Bernoulli-Bernoulli RBM on binarised images, trained by CD-k or persistent CD.

    Args:
        shape: image shape (C, H, W); V = C H W visible units.
        levels: grey levels K of the data (binarised as described in the module docstring).
        hidden: hidden units H.
        cd_k: Gibbs steps of each negative phase.
        persistent: keep the negative chains across updates (PCD) instead of restarting them at the data (CD).
        chains: number of persistent chains (the batch size).
        gibbs_steps: Gibbs steps of a sampling chain.
        ais_betas, ais_chains: the annealed importance sampling schedule that estimates log Z.
    """

    config_section = "energy"
    has_likelihood = True  # bits_per_dim: log Z by AIS, on binarised images
    sampler_names = ("gibbs",)
    sample_options = frozenset({"steps"})  # the length of the Gibbs chains
    quality_after_training = True
    # the CD gradient is not a loss gradient, so no clipping; fp32 keeps the free energies and AIS exact enough
    presets: ClassVar[dict] = {"*": {"train": {"lr": 1e-3, "warmup": 0, "grad_clip": 0.0, "mixed_precision": "no", "batch_size": 100}}}

    net: GibbsRBM
    initialised: torch.Tensor  # buffers, registered in __init__
    chains: torch.Tensor

    def __init__(self, shape: tuple[int, ...], levels: int, hidden: int = 500, cd_k: int = 1, persistent: bool = False,
                 chains: int = 100, gibbs_steps: int = 1000, ais_betas: int = 10000, ais_chains: int = 100):
        super().__init__()
        self.shape, self.levels = tuple(shape), levels
        V = math.prod(self.shape)
        self.net = GibbsRBM(V, hidden)
        self.cd_k, self.persistent = cd_k, persistent
        self.gibbs_steps, self.ais_betas, self.ais_chains = gibbs_steps, ais_betas, ais_chains
        self.preview_count = 64
        self.uses_labels = False
        # set from the first batch: the visible biases start at the data's log-odds (Hinton's practical guide, 8.1)
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        self.register_buffer("chains", torch.zeros(chains if persistent else 0, V))

    @classmethod
    def from_config(cls, cfg: RunConfig) -> RBMFamily:
        _check_images(cfg)
        e = cfg.energy
        return cls(tuple(cfg.data.shape), cfg.data.levels, e.hidden_units[0], e.cd_k, e.persistent,
                   cfg.train.batch_size, e.gibbs_steps, e.ais_betas, e.ais_chains)

    @classmethod
    def describe(cls, cfg: RunConfig) -> str:
        """'rbm cd-K' or 'rbm pcd-K'."""
        return f"rbm {'pcd' if cfg.energy.persistent else 'cd'}-{cfg.energy.cd_k}"

    @property
    def rbm(self) -> GibbsRBM:
        return self.net

    @property
    def default_steps(self) -> int:
        """The Gibbs steps of a sampling chain when ``sample`` is given no ``steps``."""
        return self.gibbs_steps

    def forward(self, batch: torch.Tensor, generator: torch.Generator, labels=None) -> dict[str, torch.Tensor]:
        """Per-example ``loss`` = F(v) - F(v_neg) (its gradient is minus the CD-k / PCD estimate) and the
        reconstruction error |v - p(v | h(v))|^2 / V, the usual monitor of RBM training."""
        v = binarize_levels(batch, self.levels, generator)
        if not self.initialised:
            init_visible_bias(self.rbm, v)
            self.initialised.fill_(True)
        return cd_loss(self.rbm, v, self.cd_k, generator, self.chains if self.persistent else None)

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, batch_size: int = 256, progress: bool = False, labels=None,
               steps: int | None = None) -> torch.Tensor:
        """``n`` images from Gibbs chains of ``steps`` (default ``gibbs_steps``) steps started at the base rates.

        Returns p(v | h) of the last step as uint8 images with K levels (the mean image, as RBM samples
        are shown since Hinton's papers); chain i depends only on (seed, i).
        """

        def draw(start: int, b: int) -> torch.Tensor:
            _, p_v = gibbs_chains(self.rbm, b, steps or self.gibbs_steps, seed, start, progress)
            return to_images(p_v, self.shape, self.levels)

        # gibbs_chains' own bar counts the Gibbs steps of each batch: that is the progress shown
        return batched_draw(n, batch_size, draw, shape=self.shape, dtype=torch.uint8)

    @torch.no_grad()
    def bits_per_dim(self, images: torch.Tensor, seed: int = 0, batch_size: int | None = None,
                     progress: bool = False) -> dict:
        """Test log-likelihood of ``images`` binarised with ``seed``, log Z by AIS: see :func:`rbm_likelihood`."""
        return rbm_likelihood(self.rbm, images, self.levels, seed, self.ais_chains, self.ais_betas, progress)


def cd_loss(rbm: RBM, v: torch.Tensor, k: int, generator: torch.Generator,
            chains: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The CD-k (or, given persistent ``chains`` [B, V], updated in place, PCD-k) surrogate loss of ``rbm`` on binary ``v``."""
    with torch.no_grad():
        if chains is not None and chains.numel():
            start = chains
            if not chains.any():  # the first update starts the persistent chains at the data
                start = v
        else:
            start = v
        v_neg = start.float()
        for _ in range(k):
            v_neg = draw(rbm.p_v(draw(rbm.p_h(v_neg), generator)), generator)
        if chains is not None and chains.numel():
            chains.copy_(v_neg)
        recon = ((v - rbm.p_v(rbm.p_h(v))) ** 2).mean(-1)
    f_data, f_neg = rbm.free_energy(v.float()), rbm.free_energy(v_neg)
    return {"loss": f_data - f_neg, "free_energy": f_data.detach(), "recon_error": recon}


def rbm_likelihood(rbm: RBM, images: torch.Tensor, levels: int, seed: int, ais_chains: int, ais_betas: int,
                   progress: bool = False) -> dict:
    """log p(v) = -F(v) - log Z on ``images`` binarised with ``seed``, log Z by AIS from the data-free base rates.

    The AIS base model has independent visible units with the RBM's own visible biases (a
    good start when they hold the data's log-odds). Returns ``bpd`` (-log p / (D ln 2), on
    the binary images), ``bpd_se`` (over images; the AIS error of log Z is ``log_z_se``),
    ``nll_nats`` (the classic figure: -log p(v) in nats per image), ``log_z``, ``n`` and
    ``binarised`` = True.
    """
    gen = torch.Generator().manual_seed(seed)
    v = binarize_levels(images, levels, gen).to(rbm.W.device)
    rbm64 = RBM(rbm.visible, rbm.hidden).double().to(rbm.W.device)
    rbm64.load_state_dict({k: t.double() for k, t in rbm.state_dict().items()})
    log_z, log_z_se = rbm64.log_z_ais(chains=ais_chains, betas=ais_betas, base_b=rbm64.b.detach().clone(),
                                      generator=gen, progress=progress)
    nll = rbm64.free_energy(v.double()) + log_z  # [n] nats
    D = v.shape[1]
    bpd = nll / (D * math.log(2.0))
    n = len(v)
    return {"bpd": bpd.mean().item(), "bpd_se": (bpd.std().item() / math.sqrt(n)) if n > 1 else float("nan"),
            "nll_nats": nll.mean().item(), "log_z": log_z, "log_z_se": log_z_se, "ais_chains": ais_chains,
            "ais_betas": ais_betas, "n": n, "binarised": True}


@register_family("dbn")
class DBNFamily(nn.Module):
    """A deep belief net (Hinton, Osindero & Teh 2006) trained greedily, one RBM per layer.

    Layer l (an RBM over the hidden units of layer l - 1) is trained by CD-k during the
    l-th of ``len(hidden)`` equal shares of ``total_steps``; its input is a sample of the
    hidden units of the frozen layers below. Samples: Gibbs chains in the top RBM, then
    one top-down pass through p(v | h) of the lower layers (the directed part of the net).
    The likelihood of a DBN has no tractable form here (only a variational bound), so it
    reports none.
    """

    config_section = "energy"
    sampler_names = ("gibbs",)
    sample_options = frozenset({"steps"})  # the length of the Gibbs chains in the top RBM
    quality_after_training = True
    presets: ClassVar[dict] = RBMFamily.presets

    layers: nn.ModuleList  # of GibbsRBM, bottom first; nn.ModuleList is not generic, hence the casts below
    updates: torch.Tensor  # buffers, registered in __init__
    initialised: torch.Tensor

    def __init__(self, shape: tuple[int, ...], levels: int, hidden: tuple[int, ...] = (500, 500), cd_k: int = 1,
                 total_steps: int = 1000, gibbs_steps: int = 1000):
        super().__init__()
        self.shape, self.levels = tuple(shape), levels
        sizes = (math.prod(self.shape), *hidden)
        self.layers = nn.ModuleList(GibbsRBM(a, b) for a, b in itertools.pairwise(sizes))
        self.cd_k, self.total_steps, self.gibbs_steps = cd_k, total_steps, gibbs_steps
        self.preview_count = 64
        self.uses_labels = False
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("initialised", torch.zeros(len(self.layers), dtype=torch.bool))

    @classmethod
    def from_config(cls, cfg: RunConfig) -> DBNFamily:
        _check_images(cfg)
        e = cfg.energy
        if e.persistent:
            raise ConfigError("a deep belief net is trained greedily by CD-k here; drop {{energy.persistent}}.")
        hidden = e.hidden_units if len(e.hidden_units) > 1 else (e.hidden_units[0], e.hidden_units[0])
        return cls(tuple(cfg.data.shape), cfg.data.levels, hidden, e.cd_k, cfg.train.steps, e.gibbs_steps)

    @classmethod
    def describe(cls, cfg: RunConfig) -> str:
        """'dbn H1-H2-...', the --rbm-hidden sizes as given."""
        return "dbn " + "-".join(str(h) for h in cfg.energy.hidden_units)

    @property
    def net(self) -> GibbsRBM:
        """The top RBM: a sample costs ``gibbs_steps`` of its Gibbs steps (and one pass down)."""
        return cast(GibbsRBM, self.layers[-1])

    @property
    def default_steps(self) -> int:
        """The Gibbs steps of a sampling chain in the top RBM when ``sample`` is given no ``steps``."""
        return self.gibbs_steps

    def layer_at(self, update: int) -> int:
        """The layer trained at update ``update`` (0-based)."""
        return min(len(self.layers) - 1, update * len(self.layers) // max(1, self.total_steps))

    def forward(self, batch: torch.Tensor, generator: torch.Generator, labels=None) -> dict[str, torch.Tensor]:
        layer = self.layer_at(int(self.updates))
        with torch.no_grad():
            v = binarize_levels(batch, self.levels, generator)
            for rbm in cast("Sequence[GibbsRBM]", self.layers[:layer]):  # a sample of the frozen layers' hidden units is the next one's data
                v = draw(rbm.p_h(v), generator)
            if self.training:
                self.updates += 1
        rbm = cast(GibbsRBM, self.layers[layer])
        if not self.initialised[layer]:
            init_visible_bias(rbm, v)
            self.initialised[layer] = True
        terms = cd_loss(rbm, v, self.cd_k, generator)
        terms["layer"] = torch.full_like(terms["loss"], float(layer))
        return terms

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, batch_size: int = 256, progress: bool = False, labels=None,
               steps: int | None = None) -> torch.Tensor:
        """Gibbs chains in the top RBM, then p(v | h) down to the pixels: uint8 mean images."""

        def draw(start: int, b: int) -> torch.Tensor:
            _, p = gibbs_chains(cast(GibbsRBM, self.layers[-1]), b, steps or self.gibbs_steps, seed, start, progress)
            gens = per_sample_generators(seed + 1, start, b)
            for rbm in reversed(cast("Sequence[GibbsRBM]", self.layers[:-1])):
                u = torch.stack([torch.rand(p.shape[1], generator=g) for g in gens]).to(p.device)
                h = (u < p).float()
                p = rbm.p_v(h)
            return to_images(p, self.shape, self.levels)

        return batched_draw(n, batch_size, draw, shape=self.shape, dtype=torch.uint8)


def _check_images(cfg: RunConfig) -> None:
    if not cfg.data.levels or len(cfg.data.shape) != 3:
        raise ConfigError(f"the {cfg.family} family models binarised images, and {cfg.data.name} is not images; "
                          f"use {{data.name}} digits, mnist or fashion-mnist.")
