"""The CycleGAN family (Zhu et al. 2017): unpaired translation between domain A (``--data``) and B (``--data-b``).

Notation (the paper's, with X = A and Y = B): ``net`` = G: A -> B (what a sample evaluates),
``inverse`` = F: B -> A, ``disc_a`` = D_A (real A against F(y)), ``disc_b`` = D_B (real B
against G(x)); ``pool_a`` and ``pool_b`` the history buffers of F's and G's translations. The
losses are in :mod:`genlab.gan.cyclegan.losses`, the common space (B's size and channels) in
:mod:`genlab.gan.cyclegan.domains`.

One Trainer step (the paper's code, ``CycleGANModel.optimize_parameters``): translate both ways,
update G and F together on L_GAN(G, D_B) + L_GAN(F, D_A) + lambda L_cyc (+ the identity loss),
with the discriminators frozen; then update D_A and D_B together on real images against
translations drawn from the history buffers. Two Adam optimisers, ``"g"`` and ``"d"``, at 2e-4
with betas (0.5, 0.999); the paper's linear decay over its second 100 epochs is not done here
(the Trainer's rate is constant after warm-up).

The Trainer batches domain A; the family loads domain B itself (its training split, on first
use, never into a checkpoint) and takes the rows ``batch_indices(len(B), batch, seed + 1, step)``
at step ``step``, so resume is exact. The buffers' images and fill counts are buffers of the
module (in every checkpoint); their coin flips come from the Trainer's noise generator.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import nn

from genlab.config import RunConfig
from genlab.data import load_dataset
from genlab.data.transforms import from_model
from genlab.errors import ConfigError
from genlab.family import batched_draw, register_family
from genlab.gan.cyclegan.domains import check_domain_b, model_floats, to_common
from genlab.gan.cyclegan.losses import ImagePool, cycle_loss, discriminator_loss, generator_loss, identity_loss
from genlab.gan.cyclegan.nets import build_nets
from genlab.training.trainer import batch_indices

DIRECTIONS = ("a2b", "b2a")


def load_examples(name: str, split: str, root: str | None, options: dict | None = None) -> torch.Tensor:
    """The uint8 images (or float points) of one dataset split."""
    ds = load_dataset(name, split, root=root, **(options or {}))
    return ds.points if hasattr(ds, "points") else ds.images


def root_b(cfg: RunConfig) -> str | None:
    """Where domain B's files are: ``cyclegan.data_b_root`` (--data-b-dir), else ``data.root`` (--data-dir).

    One --data-dir serves both when only one domain has files (``--data digits --data-b mnist
    --data-dir MNIST``: the 8x8 digits come with scikit-learn)."""
    return cfg.cyclegan.data_b_root or cfg.data.root


def b_options(cfg: RunConfig) -> dict:
    """Domain B's dataset options: its classes (--data-b-classes)."""
    return {"classes": cfg.cyclegan.data_b_classes} if cfg.cyclegan.data_b_classes else {}


@register_family("cyclegan")
class CycleGAN(nn.Module):
    """Two translators and two PatchGAN discriminators over a common space ``shape`` (B's (C, H, W), or (D,) for points).

    ``levels`` are domain B's grey levels (0: points) and ``source_shape``/``source_levels``
    domain A's own, before resizing. ``sources`` says where each domain's data is:
    ``{"a": (name, root, options), "b": (...)}``; :meth:`attach` hands examples in directly
    instead (a test's toy distributions).
    """

    config_section = "cyclegan"
    sampler_names = ("translation",)  # a sample is G(x) for a test image x of domain A
    custom_step = True
    presets: ClassVar[dict] = {"*": {"train": {"lr": 2e-4, "warmup": 0, "grad_clip": 0.0}}}

    def __init__(self, G: nn.Module, F: nn.Module, D_A: nn.Module, D_B: nn.Module, shape: tuple[int, ...], levels: int,
                 source_shape: tuple[int, ...] | None = None, source_levels: int | None = None, loss: str = "lsgan",
                 cycle_weight: float = 10.0, identity_weight: float = 0.0, pool_size: int = 50, lr: float = 2e-4,
                 betas: tuple[float, float] = (0.5, 0.999), batch_size: int = 1, seed: int = 0,
                 sources: dict[str, tuple[str, str | None, dict]] | None = None):
        super().__init__()
        if loss not in ("lsgan", "ns"):
            raise ConfigError(f"unknown {{cyclegan.loss}} {loss!r}; choose lsgan or ns.")
        self.net, self.inverse, self.disc_a, self.disc_b = G, F, D_A, D_B
        self.shape, self.levels = tuple(shape), levels
        self.source_shape = tuple(source_shape or shape)
        self.source_levels = levels if source_levels is None else source_levels
        self.loss_type, self.cycle_weight, self.identity_weight = loss, cycle_weight, identity_weight
        self.pool_a, self.pool_b = ImagePool(pool_size, self.shape), ImagePool(pool_size, self.shape)
        self.lr, self.betas = lr, tuple(betas)
        self.batch_size, self.seed = batch_size, seed
        self.sources = dict(sources or {})
        self._examples: dict[tuple[str, str], torch.Tensor] = {}  # (domain, split) -> examples, loaded on first use
        self.uses_labels = False
        self.preview_count = 64 if levels else 2000

    # ----- building ---------------------------------------------------------------------
    @classmethod
    def prepare_config(cls, cfg: RunConfig) -> RunConfig:
        """``cfg`` (its data described from domain A) with the common space: data.shape and data.levels
        become domain B's, A's own go to cyclegan.source_shape and source_levels."""
        c = cfg.cyclegan
        ds = load_dataset(c.data_b, "train", root=root_b(cfg), **b_options(cfg))
        images = check_domain_b(c.data_b, ds, cfg.train.batch_size)
        data = dataclasses.replace(cfg.data, shape=tuple(images.shape[1:]), levels=ds.info.levels)
        section = dataclasses.replace(c, source_shape=tuple(cfg.data.shape), source_levels=cfg.data.levels)
        return dataclasses.replace(cfg, data=data, cyclegan=section)

    @classmethod
    def from_config(cls, cfg: RunConfig) -> CycleGAN:
        """Build from a config whose data.shape is the common space (filled by :meth:`prepare_config`;
        a config without cyclegan.source_shape has domain A in that space already)."""
        c, m, d = cfg.cyclegan, cfg.model, cfg.data
        shape = tuple(d.shape)
        if not shape:
            raise ConfigError("the config does not record the data shape; fill cfg.data.shape from the dataset.")
        G, F, D_A, D_B = build_nets(shape, m.channels, c.res_blocks, m.hidden, m.depth)
        sources = {"a": (d.name, d.root, d.loader_options()), "b": (c.data_b, root_b(cfg), b_options(cfg))}
        return cls(G, F, D_A, D_B, shape, d.levels, c.source_shape or shape, c.source_levels or d.levels,
                   loss=c.loss, cycle_weight=c.cycle_weight, identity_weight=c.identity_weight, pool_size=c.pool_size,
                   lr=cfg.train.lr, betas=(0.5, 0.999), batch_size=cfg.train.batch_size, seed=cfg.train.seed,
                   sources=sources)

    @classmethod
    def describe(cls, cfg: RunConfig) -> str:
        """'cyclegan LOSS A->B', with the lambdas where they differ from the paper's."""
        c = cfg.cyclegan
        extra = (f" lambda={c.cycle_weight:g}" if c.cycle_weight != 10 else "") + \
                (f" identity={c.identity_weight:g}" if c.identity_weight else "")
        return f"cyclegan {c.loss} {cfg.data.name}->{c.data_b}{extra}"

    def optimizer_groups(self) -> dict[str, dict]:
        """``"g"``: G and F together; ``"d"``: D_A and D_B together (the paper's code: one Adam each)."""
        return {"g": {"params": [*self.net.parameters(), *self.inverse.parameters()], "lr": self.lr, "betas": self.betas},
                "d": {"params": [*self.disc_a.parameters(), *self.disc_b.parameters()], "lr": self.lr, "betas": self.betas}}

    # ----- the data of both domains --------------------------------------------------------
    def attach(self, domain: str, split: str, examples: torch.Tensor) -> None:
        """Use ``examples`` (uint8 images or float points) as ``split`` of ``domain`` instead of loading them."""
        self._examples[(domain, split)] = examples

    def examples(self, domain: str, split: str) -> torch.Tensor:
        """The examples of ``split`` of ``domain`` ("a" or "b"), loaded from ``sources`` on first use."""
        key = (domain, split)
        if key not in self._examples:
            if domain not in self.sources:
                raise ConfigError(f"this cyclegan knows no data for domain {domain.upper()}; attach its examples.")
            name, root, options = self.sources[domain]
            x = load_examples(name, split, root, options)
            if domain == "b" and tuple(x.shape[1:]) != self.shape:
                raise ConfigError(f"domain B ({name}) holds {'x'.join(map(str, x.shape[1:]))} examples but this run was "
                                  f"trained on {'x'.join(map(str, self.shape))}; point {{cyclegan.data_b_root}} at its data.")
            self._examples[key] = x
        return self._examples[key]

    def domain_batch(self, step: int, device) -> torch.Tensor:
        """Domain B's batch of ``step`` in model space: rows batch_indices(len(B), batch, seed + 1, step)."""
        B = self.examples("b", "train")
        if len(B) < self.batch_size:
            raise ConfigError(f"{{train.batch_size}} {self.batch_size} is larger than domain B ({len(B)} examples); "
                              f"pass a smaller {{train.batch_size}}.")
        idx = batch_indices(len(B), self.batch_size, self.seed + 1, step)
        return model_floats(B[idx], self.levels).to(device)

    def source_to_model(self, examples: torch.Tensor, levels: int | None = None) -> torch.Tensor:
        """Domain A's examples (uint8 at ``levels``, default A's) -> model floats in the common space."""
        levels = self.source_levels if levels is None else levels
        return to_common(model_floats(examples, levels), self.shape)

    # ----- the objective ---------------------------------------------------------------
    def generator_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """G's and F's losses on real x (A) and y (B) in model space, with their translations."""
        fake_b, fake_a = self.net(x), self.inverse(y)
        adv_b = generator_loss(self.loss_type, self.disc_b(fake_b))
        adv_a = generator_loss(self.loss_type, self.disc_a(fake_a))
        cyc_a, cyc_b = cycle_loss(self.net, self.inverse, x, y, fake_b=fake_b, fake_a=fake_a)
        terms = {"g_adv": adv_a + adv_b, "cycle_a": cyc_a, "cycle_b": cyc_b}
        g_loss = terms["g_adv"] + self.cycle_weight * (cyc_a + cyc_b)
        if self.identity_weight:
            terms["identity"] = identity_loss(self.net, self.inverse, x, y)
            g_loss = g_loss + self.identity_weight * self.cycle_weight * terms["identity"]
        terms["g_loss"] = g_loss
        return {**terms, "fake_a": fake_a, "fake_b": fake_b}

    def discriminator_terms(self, x, y, fake_a, fake_b) -> dict[str, torch.Tensor]:
        """D_A's and D_B's losses: real images against the (pooled, detached) translations."""
        d_a = discriminator_loss(self.loss_type, self.disc_a(x), self.disc_a(fake_a.detach()))
        d_b = discriminator_loss(self.loss_type, self.disc_b(y), self.disc_b(fake_b.detach()))
        return {"d_a": d_a, "d_b": d_b, "d_loss": d_a + d_b}

    def train_step(self, batch: torch.Tensor, generator: torch.Generator, labels: torch.Tensor | None, step: int,
                   update) -> dict[str, torch.Tensor]:
        """G and F's update, then D_A and D_B's on translations from the history buffers (module docstring).

        Logged: ``loss`` (= ``g_loss``, lambda and identity included), ``g_adv``, ``cycle_a`` and
        ``cycle_b`` (the L1 cycle errors in model space), ``identity`` (if weighted), ``d_a``, ``d_b``.
        """
        x = self.source_to_model(batch)
        y = self.domain_batch(step, x.device)
        discs = (self.disc_a, self.disc_b)
        for d in discs:
            d.requires_grad_(False)  # the G step's backward need not reach them
        try:
            terms = self.generator_terms(x, y)
        finally:
            for d in discs:
                d.requires_grad_(True)
        update("g", terms["g_loss"])
        fake_a = self.pool_a.query(terms.pop("fake_a"), generator).to(x.device)
        fake_b = self.pool_b.query(terms.pop("fake_b"), generator).to(x.device)
        d_terms = self.discriminator_terms(x, y, fake_a, fake_b)
        update("d", d_terms["d_loss"])
        out = {k: v.detach() for k, v in {**terms, **d_terms}.items()}
        return {"loss": out["g_loss"], **out}

    def forward(self, batch: torch.Tensor, generator: torch.Generator, labels: torch.Tensor | None = None,
                step: int = 0) -> dict:
        """Every loss on A's ``batch`` and B's batch of ``step``, with no update and the buffers untouched."""
        x = self.source_to_model(batch)
        y = self.domain_batch(step, x.device)
        terms = self.generator_terms(x, y)
        d_terms = self.discriminator_terms(x, y, terms.pop("fake_a"), terms.pop("fake_b"))
        return {"loss": terms["g_loss"], **terms, **d_terms}

    # ----- translating and sampling ---------------------------------------------------------
    def _ends(self, direction: str) -> tuple[nn.Module, nn.Module, int, int, int]:
        """(map, its inverse, the input's native channels, the input's levels, the output's levels)."""
        if direction == "a2b":
            return self.net, self.inverse, self.source_shape[0], self.source_levels, self.levels
        if direction == "b2a":
            return self.inverse, self.net, self.shape[0], self.levels, self.source_levels
        raise ConfigError(f"unknown translation direction {direction!r}; choose a2b or b2a.")

    def input_domain(self, direction: str = "a2b") -> dict[str, int | str]:
        """What :meth:`translate` takes in ``direction``: {"channels", "levels", "name"} of the input domain."""
        _, _, channels, levels, _ = self._ends(direction)
        return {"channels": channels, "levels": levels, "name": self.sources.get("a" if direction == "a2b" else "b", ("?",))[0]}

    def _quantise(self, x: torch.Tensor, levels: int) -> torch.Tensor:
        return x if levels == 0 else from_model(x, levels)

    @torch.no_grad()
    def round_trip(self, examples: torch.Tensor, direction: str = "a2b", levels: int | None = None,
                   batch_size: int = 256, raw: bool = False) -> dict[str, torch.Tensor]:
        """{"inputs", "translations", "reconstructions"} of ``examples`` of the input domain.

        a2b: x, G(x), F(G(x)); b2a: y, F(y), G(F(y)). ``examples``: uint8 images at ``levels``
        (default: the input domain's) with that domain's channels, any size (resized to the
        common one), or float points. The inputs come back in the common space at ``levels``,
        the translations at the output domain's levels, the reconstructions at ``levels``
        (``raw``: all three as model floats in [-1, 1]). Deterministic: no randomness is drawn.
        """
        fwd, back, channels, in_levels, out_levels = self._ends(direction)
        levels = in_levels if levels is None else levels
        if len(self.shape) == 3 and (examples.dim() != 4 or examples.shape[1] != channels):
            raise ConfigError(f"{'A' if direction == 'a2b' else 'B'} images have {channels} channel(s), and these have "
                              f"shape {tuple(examples.shape[1:])}; pass [N, {channels}, H, W] images of that domain.")
        device = self.pool_a.images.device  # a buffer every CycleGAN has, parameters or not
        parts: dict[str, list[torch.Tensor]] = {"inputs": [], "translations": [], "reconstructions": []}
        for start in range(0, len(examples), batch_size):
            x = to_common(model_floats(examples[start:start + batch_size], levels), self.shape).to(device)
            t = fwd(x).float()
            parts["inputs"].append(x.cpu())
            parts["translations"].append(t.cpu())
            parts["reconstructions"].append(back(t).float().cpu())
        out = {k: torch.cat(v) if v else torch.zeros(0, *self.shape) for k, v in parts.items()}
        if raw:
            return out
        return {"inputs": self._quantise(out["inputs"], levels), "translations": self._quantise(out["translations"], out_levels),
                "reconstructions": self._quantise(out["reconstructions"], levels)}

    def translate(self, examples: torch.Tensor, direction: str = "a2b", levels: int | None = None,
                  batch_size: int = 256) -> torch.Tensor:
        """G(x) ("a2b") or F(y) ("b2a") of uint8 images of the input domain: uint8 at the output domain's levels."""
        return self.round_trip(examples, direction, levels, batch_size)["translations"]

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, batch_size: int = 256, progress: bool = False) -> torch.Tensor:
        """G(x_i) for the test images x_i of domain A, i = 0..n-1 (cycling when n exceeds the split).

        uint8 images of ``shape`` at B's levels. G is a deterministic map, so ``seed`` changes
        nothing; sample i depends on i alone, whatever ``batch_size``.
        """
        images = self.examples("a", "test") if n else torch.zeros(0, *self.source_shape)
        device = self.pool_a.images.device  # a buffer every CycleGAN has, parameters or not

        def draw(start: int, b: int) -> torch.Tensor:
            idx = torch.arange(start, start + b) % len(images)
            return self.net(self.source_to_model(images[idx]).to(device)).float()

        return self._quantise(batched_draw(n, batch_size, draw, progress=progress, shape=self.shape), self.levels)

