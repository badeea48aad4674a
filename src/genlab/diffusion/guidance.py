"""Guidance: wrappers that take a :class:`Denoiser` and return a guided :class:`Denoiser`.

Guidance is composition, not a fork of the process (STYLE.md, "Take" 3): the samplers
never know about it. The label to aim for travels through the samplers' ``**cond`` as
``y`` ([B] integer classes), like every other conditioning input.

* :func:`classifier_free_guidance` (alias :func:`cfg`), Ho & Salimans 2021: one
  class-conditional network trained with label dropout predicts both eps(x_t, y) and
  eps(x_t, null), combined as eps~ = (1 + w) eps(x_t, y) - w eps(x_t, null).
* :func:`classifier_guidance`, Dhariwal & Nichol 2021: the gradient of a noise-conditional
  classifier log p_phi(y | x_t, t) shifts eps: eps^ = eps - sqrt(1 - alpha_bar_t) s grad.
* :class:`NoisyClassifier`: the family that trains that classifier on x_t ~ q(x_t | x_0).

Notation (paper -> code): w -> ``w`` (guidance weight), s -> ``scale`` (classifier
scale), bar(alpha)_t -> ``alpha_bar``, the null label "no class" -> ``null_label``
(genlab's nets use ``num_classes``).
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from genlab.config import RunConfig
from genlab.data.transforms import to_model
from genlab.diffusion.process import Denoiser, GaussianDiffusion, _extract
from genlab.errors import ConfigError
from genlab.family import register_family


def _repeat_cond(cond: dict, times: int) -> dict:
    """Every tensor in ``cond`` stacked ``times`` times along the batch; other values as they are."""
    return {k: torch.cat([v] * times) if torch.is_tensor(v) else v for k, v in cond.items()}


def classifier_free_guidance(denoiser: Denoiser, w: float, null_label: int | None = None) -> Denoiser:
    """Classifier-free guidance of a class-conditional denoiser with weight ``w``.

    Ho & Salimans 2021, eq. (6): eps~(x_t, y) = (1 + w) eps(x_t, y) - w eps(x_t, null).
    So ``w = 0`` is the plain conditional model, ``w = -1`` the unconditional one, and
    ``w > 0`` pushes samples towards their class (the issue's w in {0, 1, 2, 4}). In the
    notes' form eps_uncond + g (eps_cond - eps_uncond), the scale is g = 1 + w.

    The combination is applied in the network's own output space (eps, x0 or v): each is
    an affine function of eps at fixed (x_t, t) (x0 = (x_t - sqrt(1 - ab) eps) / sqrt(ab),
    v = (eps - sqrt(1 - ab) x_t) / sqrt(ab)) and the weights 1 + w and -w sum to one, so
    guiding x0 or v is exactly guiding eps. A network with learned variances returns 2C
    channels (the prediction, then the variance interpolation); only the first C are
    guided, and the variance half is the conditional pass's.

    Both passes run in ONE network call on a doubled batch: [x_t; x_t] with labels
    [y; null]. ``null_label`` defaults to the net's ``num_classes`` (genlab's nets use
    that index for "no label"). The returned denoiser needs ``y`` [B].
    """
    if null_label is None:
        null_label = getattr(denoiser.net, "num_classes", None)
        if not null_label:
            raise ConfigError("classifier-free guidance needs a class-conditional model; train one with {{model.class_conditional}}.")

    def net(xt: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, **cond) -> torch.Tensor:
        if y is None:
            raise ConfigError("classifier-free guidance needs the classes to sample (y).")
        B, C = xt.shape[0], xt.shape[1]
        out = denoiser(torch.cat([xt, xt]), torch.cat([t, t]),
                       y=torch.cat([y, torch.full_like(y, null_label)]), **_repeat_cond(cond, 2))
        out_cond, out_uncond = out[:B], out[B:]
        guided = (1 + w) * out_cond[:, :C] - w * out_uncond[:, :C]  # Ho & Salimans eq. (6)
        if out.shape[1] == 2 * C:  # learned variances: keep the conditional variance output
            return torch.cat([guided, out_cond[:, C:]], dim=1)
        return guided

    return Denoiser(net, denoiser.parameterization)


cfg = classifier_free_guidance  # the name used in the issue and STYLE.md


def classifier_guidance(denoiser: Denoiser, diffusion: GaussianDiffusion, classifier, scale: float = 1.0) -> Denoiser:
    """Classifier guidance (Dhariwal & Nichol 2021, Algorithm 2 and eq. (14)) with scale s.

    With g = grad_{x_t} log p_phi(y | x_t, t) from a noise-conditional ``classifier``
    (a callable (x_t, t) -> logits [B, K], trained on the same schedule), the guided
    prediction is

        eps^(x_t) = eps_theta(x_t) - sqrt(1 - alpha_bar_t) s g,

    i.e. the score of p(x_t) p_phi(y | x_t)^s. With s = 1 and an exact classifier this is
    exactly the conditional denoiser of p(x | y) (tests/test_guidance.py checks it on a
    two-Gaussian mixture). The shift is applied in the network's own output space: at fixed
    x_t, delta x0 = -sqrt(1 - ab) / sqrt(ab) delta eps and delta v = delta eps / sqrt(ab);
    with learned variances (2C output channels) only the first C are shifted.

    ``t`` reaching a denoiser is the index into the ORIGINAL schedule (see
    :class:`Denoiser`), even when a sampler runs a respaced process; ``diffusion`` must be
    that original process, whose ``alpha_bar`` is indexed here, and the classifier is
    called with the same original index. The returned denoiser needs ``y`` [B] and
    forwards all of ``**cond`` (``y`` included) to ``denoiser``: an unconditional net must
    accept and ignore ``y`` (genlab's nets do), a class-conditional one uses it as well.
    """
    alpha_bar = diffusion.alpha_bar
    p = denoiser.parameterization

    def net(xt: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, **cond) -> torch.Tensor:
        if y is None:
            raise ConfigError("classifier guidance needs the classes to sample (y).")
        out = denoiser(xt, t, y=y, **cond)
        if scale == 0:
            return out
        with torch.enable_grad():  # samplers run under no_grad; the gradient is w.r.t. x_t only
            x_in = xt.detach().requires_grad_(True)
            logits = classifier(x_in, t)
            log_probs = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
            selected = log_probs[torch.arange(xt.shape[0], device=xt.device), y].sum()
            grad = torch.autograd.grad(selected, x_in)[0]  # grad log p(y | x_t, t), [B, *D]
        ab = _extract(alpha_bar, t, xt)
        delta_eps = -(1 - ab).sqrt() * scale * grad.to(xt.dtype)  # Dhariwal & Nichol Alg. 2
        delta = {"eps": delta_eps, "x0": -(1 - ab).sqrt() / ab.sqrt() * delta_eps, "v": delta_eps / ab.sqrt()}[p]
        C = xt.shape[1]
        if out.shape[1] == 2 * C:  # learned variances: shift the prediction, keep the variance output
            return torch.cat([out[:, :C] + delta.to(out.dtype), out[:, C:]], dim=1)
        return out + delta.to(out.dtype)

    return Denoiser(net, p)


@register_family("classifier")
class NoisyClassifier(nn.Module):
    """The family that trains a noise-conditional classifier p_phi(y | x_t, t) for classifier guidance.

    Training: x0 from the data, t ~ U{0..T-1}, x_t ~ q(x_t | x_0) of the given process
    (DDPM eq. (4)), cross-entropy of the true label (Dhariwal & Nichol 2021, Sec. 4). The
    losses dict has ``loss`` (cross-entropy, nats) and ``accuracy`` (0/1 per example), so
    ``metrics.jsonl`` logs both. ``net`` is a callable (x_t, t) -> logits, which is what
    :func:`classifier_guidance` takes.
    """

    config_section = "diffusion"  # trained on x_t of the --timesteps/--schedule process it will guide
    sampler_names = ()  # it draws no images; genlab sample MODEL_RUN --classifier RUN guides a model with it
    uses_labels = True  # the Trainer passes the data's labels to forward
    preview_count = 0  # no progress grids

    def __init__(self, net: nn.Module, diffusion: GaussianDiffusion, levels: int):
        super().__init__()
        self.net = net
        self.diffusion = diffusion
        self.levels = levels

    @property
    def num_classes(self) -> int:
        return cast(int, self.net.num_classes)  # the net's int attribute (EncoderClassifier.num_classes)

    @classmethod
    def from_config(cls, cfg: RunConfig) -> NoisyClassifier:
        from genlab.nets import EncoderClassifier

        shape, m, d = tuple(cfg.data.shape), cfg.model, cfg.diffusion
        if len(shape) != 3 or cfg.data.levels == 0:
            raise ConfigError(f"the noise-conditional classifier needs image data, and {cfg.data.name} is not; choose an image dataset.")
        if cfg.data.num_classes < 2:
            raise ConfigError(f"a classifier needs at least two classes, and {cfg.data.name} has {cfg.data.num_classes}; choose labelled data.")
        C, H, W = shape
        if H != W:
            raise ConfigError(f"the classifier needs square images, not {H}x{W}.")
        net = EncoderClassifier(H, C, cfg.data.num_classes, channels=m.channels, num_res_blocks=m.num_res_blocks,
                                attn_resolutions=m.attn_resolutions, dropout=m.dropout, norm_groups=m.norm_groups,
                                head_dim=m.head_dim)
        return cls(net, GaussianDiffusion.from_schedule(d.schedule, d.timesteps), cfg.data.levels)

    @classmethod
    def describe(cls, cfg: RunConfig) -> str:
        return "classifier"

    def forward(self, batch: torch.Tensor, generator: torch.Generator,
                labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return self.losses(batch, generator, labels)

    def sample(self, n: int, seed: int = 0, batch_size: int = 256, progress: bool = False) -> torch.Tensor:
        """A classifier draws no images (``sampler_names`` is empty): refused."""
        raise ConfigError("a noise-conditional classifier does not draw images; use its run with "
                          "genlab sample MODEL_RUN --classifier RUN.")

    def losses(self, batch: torch.Tensor, generator: torch.Generator,
               labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-example cross-entropy (nats) and 0/1 accuracy on x_t at t ~ U{0..T-1}."""
        if labels is None:
            raise ConfigError("the classifier trains on labelled data; pass the labels of the batch.")
        x0 = to_model(batch, self.levels)
        B = x0.shape[0]
        t = torch.randint(0, self.diffusion.num_timesteps, (B,), generator=generator).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        xt = self.diffusion.q_sample(x0, t, noise)
        logits = self.net(xt, t).float()
        labels = labels.to(logits.device)
        return {"loss": F.cross_entropy(logits, labels, reduction="none"),
                "accuracy": (logits.argmax(-1) == labels).float()}

    def test_metrics(self, test, limit: int | None = None, seed: int = 0) -> dict:
        """:meth:`accuracy` on the first ``limit`` images of the dataset ``test`` (all by default)."""
        n = limit or len(test.images)
        return self.accuracy(test.images[:n], test.labels[:n], seed=seed)

    @staticmethod
    def how_to_use(run: str) -> str:
        return f"guide a model with: genlab sample RUN --classifier {run} --guidance 1"

    def describe_test_metrics(self, r: dict) -> str:
        T = self.diffusion.num_timesteps
        return (f"test accuracy {r['accuracy']:.4f} on x_t with t ~ U{{0..{T - 1}}}, {r['accuracy_t0']:.4f} at t = 0 "
                f"({r['n']} images, EMA)")

    @torch.no_grad()
    def accuracy(self, images: torch.Tensor, labels: torch.Tensor, seed: int = 0, batch_size: int = 256) -> dict:
        """Accuracy on uint8 ``images`` at x_0-like noise (t = 0) and at t ~ U{0..T-1} (seeded)."""
        gen = torch.Generator().manual_seed(seed)
        device = next(self.net.parameters()).device
        right0 = right = 0
        for start in range(0, len(images), batch_size):
            x0 = to_model(images[start : start + batch_size], self.levels).to(device)
            y = labels[start : start + batch_size].to(device)
            B = x0.shape[0]
            t = torch.randint(0, self.diffusion.num_timesteps, (B,), generator=gen).to(device)
            xt = self.diffusion.q_sample(x0, t, torch.randn(x0.shape, generator=gen).to(device))
            right += (self.net(xt, t).argmax(-1) == y).sum().item()
            x1 = self.diffusion.q_sample(x0, torch.zeros_like(t), torch.randn(x0.shape, generator=gen).to(device))
            right0 += (self.net(x1, torch.zeros_like(t)).argmax(-1) == y).sum().item()
        n = len(images)
        return {"accuracy": right / n, "accuracy_t0": right0 / n, "n": n}
