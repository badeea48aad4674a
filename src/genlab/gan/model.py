"""The GAN family: the adversarial objectives and the alternating updates the Trainer runs.

Notation (Goodfellow et al. 2014): G the generator (``net``), D the discriminator
(``disc``), z ~ N(0, I) the latent noise, D(x) = sigmoid(l(x)) with l the logit D's
network returns. The losses are written with softplus on logits, which is exact and
never takes the log of 0:

    -log D(x)        = softplus(-l(x))
    -log(1 - D(x))   = softplus(l(x))

``minimax``  D: -log D(x) - log(1 - D(G(z)));  G: log(1 - D(G(z)))  (eq. 1, saturating)
``ns``       D: the same;                      G: -log D(G(z))      (section 3, non-saturating)
``wgan-gp``  D (critic f): f(G(z)) - f(x) + lambda (||grad f(x_hat)||_2 - 1)^2,
             x_hat = eps x + (1 - eps) G(z), eps ~ U[0, 1];  G: -f(G(z))
             (Gulrajani et al. 2017, Algorithm 1)

Each Trainer step takes one minibatch and makes one D update; every k-th step
(``d_steps``) also makes one G update with fresh z (Algorithm 1 of Goodfellow et al.:
k discriminator steps per generator step). All randomness (z, eps) comes from the
generator the Trainer passes in, so a resumed run continues exactly.
"""

from __future__ import annotations

from typing import ClassVar, cast

import torch
from torch import nn
from torch.nn import functional as F

from genlab.config import RunConfig
from genlab.data.transforms import from_model, to_model
from genlab.errors import ConfigError
from genlab.family import batched_draw, register_family
from genlab.nets.dcgan import DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator
from genlab.rng import per_sample_generators, randn

LOSSES = ("ns", "minimax", "wgan-gp")


# ----- the objectives, on logits (means over the batch) ----------------------------------
def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(x) - log(1 - D(G(z))), averaged over each batch (Goodfellow et al. eq. 1, negated)."""
    return F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean()


def generator_loss(loss: str, fake_logits: torch.Tensor) -> torch.Tensor:
    """G's loss on D's logits (critic scores for wgan-gp) of its samples, averaged."""
    logits = fake_logits.float()
    if loss == "minimax":
        return -F.softplus(logits).mean()  # log(1 - D(G(z))): its gradient vanishes as D(G(z)) -> 0
    if loss == "ns":
        return F.softplus(-logits).mean()  # -log D(G(z))
    if loss == "wgan-gp":
        return -logits.mean()  # -f(G(z))
    raise ValueError(f"unknown GAN loss {loss!r}; choose one of {', '.join(LOSSES)}")


def critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """The WGAN critic loss f(G(z)) - f(x), averaged (the penalty is added separately)."""
    return fake_scores.float().mean() - real_scores.float().mean()


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor,
                     y: torch.Tensor | None = None) -> torch.Tensor:
    """(||grad_x_hat f(x_hat)||_2 - 1)^2 per example [B], x_hat = eps x + (1 - eps) x_fake.

    ``eps`` [B] are the interpolation weights. Computed in float32 with autocast off: the
    penalty is a second-order term (its backward differentiates through a gradient), and a
    bf16 gradient norm is only good to ~3 digits. The graph is kept (``create_graph``) so
    the penalty trains the critic.
    """
    eps = eps.to(real.device, torch.float32).view(-1, *([1] * (real.dim() - 1)))
    x_hat = (eps * real.float() + (1 - eps) * fake.detach().float()).requires_grad_(True)
    with torch.enable_grad(), torch.autocast(real.device.type, enabled=False):
        scores = critic(x_hat, y)
        (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1) ** 2


# ----- the networks ---------------------------------------------------------------------
def build_nets(cfg: RunConfig, shape: tuple[int, ...], num_classes: int = 0) -> tuple[nn.Module, nn.Module]:
    """(generator, discriminator) for data of ``shape``: DCGAN for images (C, H, W), MLPs for points (D,)."""
    m = cfg.model
    if len(shape) == 1:
        return (MLPGenerator(m.latent_dim, shape[0], m.hidden, m.depth, num_classes),
                MLPDiscriminator(shape[0], m.hidden, m.depth, num_classes))
    norm = "layer" if cfg.gan.loss == "wgan-gp" else "batch"
    image_shape = cast("tuple[int, int, int]", shape)  # not points (D,), so images (C, H, W)
    try:
        return (DCGANGenerator(m.latent_dim, image_shape, m.channels, num_classes),
                DCGANDiscriminator(image_shape, m.channels, num_classes, norm=norm))
    except ValueError as e:
        raise ConfigError(f"{e}; pass {{model.channels}} with fewer widths.") from None


@register_family("gan")
class GAN(nn.Module):
    """A generative adversarial network over data with ``levels`` grey levels (0: continuous points).

    ``net`` is the generator G (what sampling evaluates, once per sample) and ``disc`` the
    discriminator D (a critic for wgan-gp). ``num_classes`` > 0 makes both class-conditional
    (Mirza & Osindero 2014): the Trainer then passes each batch's labels, which D sees with
    the real images and G is asked to draw. ``lr``, ``d_lr`` and ``betas`` are the two
    Adam optimisers' settings (:meth:`optimizer_groups`); ``monitor_every`` is how often training logs the
    coverage monitor (:mod:`genlab.gan.monitor`; 0: at each sample grid).

    Sampling runs G in eval mode, with batch norm's running statistics. The Trainer's EMA copies
    buffers, so the EMA generator uses the live generator's statistics with its averaged
    weights; measured on MNIST (DCGAN, EMA 0.999, 2000 steps) that costs nothing: statistics
    recomputed for the EMA weights (BigGAN's "standing statistics") moved recall by 0.01. The
    statistics need ~25 steps to settle from their initial (0, 1), so a family sampled before
    that draws near-constant images.
    """

    config_section = "gan"
    sampler_names = ("generator",)
    sample_options = frozenset({"labels"})
    custom_step = True  # optimizer_groups() and train_step(): alternating D and G updates
    quality_after_training = True
    coverage_monitor = True  # mode collapse shows in recall and class coverage during training (every monitor_every steps)
    presets: ClassVar[dict] = {
        # DCGAN (Radford et al. 2016): Adam at 2e-4 with beta1 = 0.5, no warm-up, no clipping
        "*": {"train": {"lr": 2e-4, "warmup": 0, "grad_clip": 0.0}},
        # the small MLPs on 2-D points collapse to one or two of the 8 gaussians at 2e-4 (measured)
        "toy2d": {"train": {"lr": 1e-3}},
    }

    def __init__(self, generator: nn.Module, discriminator: nn.Module, loss: str, shape: tuple[int, ...], levels: int,
                 latent_dim: int, num_classes: int = 0, d_steps: int = 1, gp_weight: float = 10.0,
                 lr: float = 2e-4, d_lr: float | None = None, betas: tuple[float, float] = (0.5, 0.999),
                 monitor_every: int = 0):
        super().__init__()
        if loss not in LOSSES:
            raise ConfigError(f"unknown {{gan.loss}} {loss!r}; choose one of {', '.join(LOSSES)}.")
        if d_steps < 1:
            raise ValueError(f"d_steps must be at least 1, not {d_steps}")
        self.net = generator
        self.disc = discriminator
        self.loss_type = loss
        self.shape = tuple(shape)
        self.levels = levels
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        self.d_steps, self.gp_weight = d_steps, gp_weight
        self.lr, self.d_lr, self.betas = lr, d_lr or lr, tuple(betas)
        self.preview_count = 64 if levels else 2000  # samples in a progress grid (images) or scatter plot (points)
        self.monitor_every = monitor_every  # steps between coverage-monitor records (0: at each sample grid)

    @classmethod
    def from_config(cls, cfg: RunConfig) -> GAN:
        """Build from a resolved config whose ``data.shape`` and ``data.levels`` are filled in.

        Defaults that depend on the loss: k = ``--d-steps`` 1 (ns, minimax) or 5 (wgan-gp);
        Adam betas (0.5, 0.999) as in DCGAN, or (0, 0.9) as in WGAN-GP; ``--adam-beta1`` overrides beta1.
        """
        g, m = cfg.gan, cfg.model
        shape = tuple(cfg.data.shape)
        if not shape:
            raise ConfigError("the config does not record the data shape; fill cfg.data.shape from the dataset.")
        wgan = g.loss == "wgan-gp"
        num_classes = 0
        if m.class_conditional:
            num_classes = cfg.data.num_classes
            if num_classes < 1:
                raise ConfigError(f"{{model.class_conditional}} needs labelled data, and {cfg.data.name} has no classes; drop {{model.class_conditional}}.")
        beta1 = g.beta1 if g.beta1 is not None else (0.0 if wgan else 0.5)
        G, D = build_nets(cfg, shape, num_classes)
        return cls(G, D, g.loss, shape, cfg.data.levels, m.latent_dim, num_classes=num_classes,
                   d_steps=g.d_steps or (5 if wgan else 1), gp_weight=g.gp_weight, lr=cfg.train.lr, d_lr=g.d_lr,
                   betas=(beta1, 0.9 if wgan else 0.999), monitor_every=g.monitor_every)

    @classmethod
    def describe(cls, cfg: RunConfig) -> str:
        """'gan LOSS', with ' conditional' for a class-conditional GAN."""
        return f"gan {cfg.gan.loss}" + (" conditional" if cfg.model.class_conditional else "")

    @property
    def uses_labels(self) -> bool:
        """Whether the Trainer should pass the data's labels to :meth:`train_step`."""
        return self.num_classes > 0

    def optimizer_groups(self) -> dict[str, dict]:
        """One Adam per player: ``"d"`` (the discriminator, at ``d_lr``) and ``"g"`` (the generator, at ``lr``)."""
        return {"d": {"params": list(self.disc.parameters()), "lr": self.d_lr, "betas": self.betas},
                "g": {"params": list(self.net.parameters()), "lr": self.lr, "betas": self.betas}}

    def to_model(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 images (or float points) -> model space [-1, 1]."""
        return batch.float() if self.levels == 0 else to_model(batch, self.levels)

    def _labels(self, labels: torch.Tensor | None, device) -> torch.Tensor | None:
        if not self.num_classes:
            return None
        if labels is None:
            raise ConfigError("this GAN is class-conditional and trains on labelled batches; pass the data's labels.")
        return labels.to(device).long()

    def _z(self, B: int, generator: torch.Generator, device) -> torch.Tensor:
        return torch.randn(B, self.latent_dim, generator=generator).to(device)

    # ----- the two players' terms --------------------------------------------------------
    def discriminator_terms(self, x: torch.Tensor, y: torch.Tensor | None, generator: torch.Generator) -> dict:
        """D's loss on real ``x`` (model space) and on G(z) for fresh z, with what is logged about it.

        The fakes are made without a graph (detached): the D step must not reach G. Returns
        ``d_loss`` (with the penalty for wgan-gp), ``g_loss`` (G's loss on these fakes, for the
        log), and ``d_real``/``d_fake`` (mean D(x), D(G(z))) or ``wasserstein`` (f(x) - f(G(z))
        averaged, the critic's estimate of the distance) and ``gp``.
        """
        B = x.shape[0]
        z = self._z(B, generator, x.device)
        with torch.no_grad():
            fake = self.net(z, y)
        real_logits, fake_logits = self.disc(x, y), self.disc(fake, y)
        terms = {"g_loss": generator_loss(self.loss_type, fake_logits.detach())}
        if self.loss_type == "wgan-gp":
            eps = torch.rand(B, generator=generator)
            gp = gradient_penalty(self.disc, x, fake, eps, y).mean()
            terms["d_loss"] = critic_loss(real_logits, fake_logits) + self.gp_weight * gp
            terms["wasserstein"] = (real_logits.float().mean() - fake_logits.float().mean()).detach()
            terms["gp"] = gp.detach()
        else:
            terms["d_loss"] = discriminator_loss(real_logits, fake_logits)
            terms["d_real"] = torch.sigmoid(real_logits.float()).mean().detach()
            terms["d_fake"] = torch.sigmoid(fake_logits.float()).mean().detach()
        return terms

    def generator_terms(self, B: int, y: torch.Tensor | None, generator: torch.Generator, device) -> torch.Tensor:
        """G's loss on D's verdict on G(z) for ``B`` fresh z (the graph reaches G through D)."""
        return generator_loss(self.loss_type, self.disc(self.net(self._z(B, generator, device), y), y))

    def train_step(self, batch: torch.Tensor, generator: torch.Generator, labels: torch.Tensor | None, step: int,
                   update) -> dict[str, torch.Tensor]:
        """One step of Algorithm 1 (Goodfellow et al.): a D update, and a G update every ``d_steps``-th step.

        ``step`` counts from 0, so G is updated at steps k-1, 2k-1, ... (after k D updates).
        ``update(name, loss)`` back-propagates and steps the optimiser ``"d"`` or ``"g"``
        (the Trainer's, which clears every player's gradients after a step, so the G step's
        backward through D leaves nothing behind in D). The logged ``g_loss`` is the G step's
        loss, or, on steps without one, G's loss on the D step's fakes.
        """
        x = self.to_model(batch)
        y = self._labels(labels, x.device)
        terms = self.discriminator_terms(x, y, generator)
        update("d", terms["d_loss"])
        if (step + 1) % self.d_steps == 0:
            terms["g_loss"] = self.generator_terms(x.shape[0], y, generator, x.device)
            update("g", terms["g_loss"])
        terms = {k: v.detach() for k, v in terms.items()}
        return {"loss": terms["d_loss"], **terms}

    def forward(self, batch: torch.Tensor, generator: torch.Generator, labels: torch.Tensor | None = None) -> dict:
        """Both players' losses on a batch, with no update (the Trainer trains through :meth:`train_step`)."""
        x = self.to_model(batch)
        y = self._labels(labels, x.device)
        terms = self.discriminator_terms(x, y, generator)
        terms["g_loss"] = self.generator_terms(x.shape[0], y, generator, x.device)
        return {"loss": terms["d_loss"], **terms}

    # ----- sampling ---------------------------------------------------------------------
    def check_labels(self, n: int, labels: torch.Tensor | None) -> torch.Tensor | None:
        """The labels [n] to draw (default: sample i gets class i % num_classes), checked; None if unconditional."""
        if not self.num_classes:
            if labels is not None:
                raise ConfigError("this GAN is unconditional: a class needs a class-conditional model (train with {{model.class_conditional}}).")
            return None
        if labels is None:
            labels = torch.arange(n) % self.num_classes
        labels = torch.as_tensor(labels, dtype=torch.long).cpu()
        if labels.shape != (n,):
            raise ConfigError(f"{n} samples need {n} labels, not {tuple(labels.shape)}.")
        bad = labels[(labels < 0) | (labels >= self.num_classes)]
        if bad.numel():
            raise ConfigError(f"class {int(bad[0])} does not exist; choose a class in 0..{self.num_classes - 1}.")
        return labels

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, batch_size: int = 256, progress: bool = False,
               labels: torch.Tensor | None = None, raw: bool = False) -> torch.Tensor:
        """``n`` samples G(z): uint8 images (values 0..levels-1), or float points [n, D] for toy2d.

        Sample i is G(z_i) with z_i from its own generator (seed, i), and G runs in eval mode
        (batch norm with its running statistics), so sample i depends only on (seed, i) and
        its label, whatever ``batch_size``. ``raw``: the images in model space [-1, 1].
        """
        labels = self.check_labels(n, labels)
        device = next(self.net.parameters()).device
        was_training = self.net.training
        self.net.eval()  # batch statistics would make each sample depend on its batch

        def draw(start: int, b: int) -> torch.Tensor:
            z = randn((b, self.latent_dim), per_sample_generators(seed, start, b), device)
            y = None if labels is None else labels[start : start + b].to(device)
            return self.net(z, y).float()

        try:
            x = batched_draw(n, batch_size, draw, progress=progress, shape=self.shape)
        finally:
            self.net.train(was_training)
        return x if (raw or self.levels == 0) else from_model(x, self.levels)
