"""Latent diffusion with text conditioning (Rombach et al. 2022): the notes' Stable Diffusion, trained here.

One run, two stages (``genlab train ldm``), as Stable Diffusion's autoencoder comes before its
diffusion model:

1. **Autoencoder** (the first ``latent.ae_steps`` steps; default a third of them): a
   KL-regularised autoencoder E, D with a spatial latent (28x28 -> 4x7x7), trained on
   reconstruction + kl_weight * KL(q(z|x) || N(0, I)) (:mod:`genlab.latent.autoencoder`).
2. **Diffusion on the latents**: the autoencoder frozen, its latents z ~ q(z|x) scaled to unit
   variance by ``latent_scale`` (1 / std of the encoder means on the first diffusion batch,
   Stable Diffusion's 0.18215, kept as a buffer in every checkpoint), and the same
   GaussianDiffusion, L_simple and samplers as pixel space, with a U-Net conditioned on the
   caption: cross-attention from its features to the text tokens (with their padding mask) at
   the attention resolutions, and the pooled text vector (the EOS token's) added to the time
   embedding. The text transformer trains jointly with the U-Net (``latent.text_encoder`` joint) or
   is the frozen text tower of a ``genlab train clip`` run (clip, as Stable Diffusion conditions on a
   frozen CLIP; the run's text settings are copied into config.json). A caption is replaced by
   the empty one ([BOS, EOS]) with probability ``latent.caption_drop``, so the same network
   is also the unconditional model of classifier-free guidance:
   eps~ = (1 + w) eps(z_t, c) - w eps(z_t, empty) (Ho & Salimans 2021).

Samples: z_T ~ N(0, I) from the generator of (seed, i), any diffusion sampler, z_0 / scale
through the decoder, rounded to the data's levels.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
from torch import nn

from genlab.config import RunConfig
from genlab.data.transforms import from_model, to_model
from genlab.diffusion.process import Denoiser, GaussianDiffusion
from genlab.diffusion.sampling import SAMPLERS
from genlab.diffusion.sampling import sample as run_sampler
from genlab.errors import ConfigError
from genlab.family import batched_draw, register_family, step_images
from genlab.latent.autoencoder import KLAutoencoder
from genlab.latent.likelihood import decoder_sigma, latent_bound
from genlab.nets.text import TextTransformer
from genlab.nets.unet import UNet
from genlab.rng import per_sample_generators, randn


def text_guidance(net, w: float, null: dict[str, torch.Tensor]):
    """Classifier-free guidance over text: (1 + w) net(x, t, c) - w net(x, t, empty) in one batch of 2B.

    ``null`` holds the empty caption's ``context`` [1, L, D], ``context_mask`` [1, L] and ``pooled`` [1, D].
    """

    def guided(x, t, context, context_mask, pooled):
        B = x.shape[0]
        both = net(torch.cat([x, x]), torch.cat([t, t]),
                   context=torch.cat([context, null["context"].expand(B, -1, -1)]),
                   context_mask=torch.cat([context_mask, null["context_mask"].expand(B, -1)]),
                   pooled=torch.cat([pooled, null["pooled"].expand(B, -1)]))
        cond, uncond = both.chunk(2)
        return (1 + w) * cond - w * uncond

    return guided


@register_family("ldm")
class LDM(nn.Module):
    """The autoencoder, the text transformer and the latent U-Net of one latent diffusion run."""

    config_section = "latent"
    sampler_names = tuple(SAMPLERS)
    sample_options = frozenset({"sampler", "steps", "eta", "spacing", "prompts", "guidance", "callback"})
    custom_step = True  # an autoencoder stage, then a diffusion stage, each with its own optimiser
    uses_labels = True  # the Trainer passes each image's caption tokens
    uses_text = True
    preview_count = 64
    presets = {"*": {"model": {"channels": (64, 128), "num_res_blocks": 1, "dropout": 0.0, "attn_resolutions": (7, 4, 3, 2)},
                     "train": {"batch_size": 128, "lr": 5e-4, "warmup": 100, "steps": 6000, "grid_steps": 50}}}

    def __init__(self, ae: KLAutoencoder, unet: UNet, text: TextTransformer, diffusion: GaussianDiffusion,
                 shape: tuple[int, ...], levels: int, ae_steps: int, kl_weight: float, caption_drop: float,
                 class_names: tuple[str, ...], frozen_text: bool = False):
        super().__init__()
        self.frozen_text = frozen_text
        self.ae, self.unet, self.text, self.diffusion = ae, unet, text, diffusion
        self.shape, self.class_names = tuple(shape), class_names
        self.levels, self.ae_steps, self.kl_weight, self.caption_drop = levels, ae_steps, kl_weight, caption_drop
        self.latent_scale: torch.Tensor
        self.register_buffer("latent_scale", torch.zeros(()))  # 0 until the diffusion stage measures it

    @property
    def net(self) -> nn.Module:
        return self.unet

    @property
    def num_classes(self) -> int:
        """Classes of the captions: sample i without a prompt asks for class i % num_classes ("a 3")."""
        return len(self.class_names)

    @classmethod
    def from_config(cls, cfg: RunConfig) -> LDM:
        from genlab.data.captions import CLASS_NAMES, MAX_TOKENS, caption_tokenizer, require_captions

        shape, m, lc, t, d = tuple(cfg.data.shape), cfg.model, cfg.latent, cfg.text, cfg.diffusion
        require_captions(cfg, "latent diffusion")
        C, H, W = shape
        ae = KLAutoencoder(C, H, channels=lc.ae_channels, z_channels=lc.z_channels, norm_groups=m.norm_groups)
        z, h, _ = ae.latent_shape
        unet = UNet(h, z, channels=m.channels, num_res_blocks=m.num_res_blocks, attn_resolutions=m.attn_resolutions,
                    dropout=m.dropout, norm_groups=m.norm_groups, head_dim=m.head_dim, context_dim=t.width,
                    pooled_dim=t.width)
        text = TextTransformer(len(caption_tokenizer().vocab), MAX_TOKENS, t.width, t.layers, t.heads)
        ae_steps = lc.ae_steps or max(1, cfg.train.steps // 3)
        names = CLASS_NAMES[cfg.data.name.removesuffix("-captions")]
        return cls(ae, unet, text, GaussianDiffusion.from_schedule(d.schedule, d.timesteps), shape, cfg.data.levels,
                   ae_steps, lc.kl_weight, lc.caption_drop, names, frozen_text=lc.text_encoder == "clip")

    @classmethod
    def prepare_config(cls, cfg: RunConfig) -> RunConfig:
        """With a frozen CLIP text tower: that run's text settings (so config.json rebuilds the same tower)."""
        import dataclasses

        if cfg.latent.text_encoder != "clip":
            return cfg
        clip_cfg = _clip_config(cfg)
        return dataclasses.replace(cfg, text=clip_cfg.text)

    def initialize(self, cfg: RunConfig) -> None:
        """A fresh run with a frozen CLIP text tower starts from that run's EMA text weights."""
        if not self.frozen_text:
            return
        from genlab.run import RunDir

        _, clip, _, _ = RunDir(str(cfg.latent.clip_run)).load()
        self.text.load_state_dict(clip.text_encoder.state_dict())

    @classmethod
    def describe(cls, cfg: RunConfig) -> str:
        text = "frozen CLIP text" if cfg.latent.text_encoder == "clip" else "joint text"
        return f"ldm {cfg.latent.z_channels}-channel latent, {text}"

    # ----- training --------------------------------------------------------------------------
    def optimizer_groups(self) -> dict[str, dict]:
        return {"ae": {"params": list(self.ae.parameters())},
                "diffusion": {"params": [*self.unet.parameters(), *self.text.parameters()]}}

    def encode_text(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """The U-Net's conditioning for token ids [B, L]: token features, their mask, the pooled vector."""
        ids = ids.to(self.latent_scale.device)
        mask = ids != 0
        context, pooled = self.text(ids, mask)
        return {"context": context, "context_mask": mask, "pooled": pooled}

    def train_step(self, batch: torch.Tensor, generator: torch.Generator, labels: torch.Tensor | None, step: int,
                   update) -> dict[str, torch.Tensor]:
        """Step ``step`` (from 0): an autoencoder update while ``step < ae_steps``, else a diffusion update."""
        if labels is None or labels.ndim != 2:
            raise ConfigError("latent diffusion trains on (image, caption) pairs; pass each image's caption tokens.")
        x = to_model(batch, self.levels).to(self.latent_scale.device)
        noise = torch.randn(self.latent_noise_shape(len(x)), generator=generator).to(x.device)
        if step < self.ae_steps:
            terms = self.ae.loss(x, noise, self.kl_weight)
            update("ae", terms["loss"].mean())
            return {k: v.detach() for k, v in terms.items()}
        self.ae.requires_grad_(False)  # frozen from here on (and its EMA copy then is the autoencoder itself)
        with torch.no_grad():
            mean, logvar = self.ae.encode(x)
            if float(self.latent_scale) == 0:
                self.latent_scale.fill_(1 / mean.float().std().clamp_min(1e-8))
            z0 = self.ae.sample_latent(mean, logvar, noise) * self.latent_scale
        B = len(x)
        t = torch.randint(0, self.diffusion.num_timesteps, (B,), generator=generator).to(x.device)
        eps = torch.randn(z0.shape, generator=generator).to(x.device)
        drop = (torch.rand(B, generator=generator) < self.caption_drop).to(x.device)
        ids = torch.where(drop[:, None], self.empty_tokens(B).to(labels.device), labels.to(x.device))
        if self.frozen_text:
            self.text.requires_grad_(False)
            with torch.no_grad():
                cond = self.encode_text(ids)
        else:
            cond = self.encode_text(ids)
        pred = self.unet(self.diffusion.q_sample(z0.to(x.dtype), t, eps.to(x.dtype)), t, **cond)
        mse = (pred.float() - eps).pow(2).flatten(1).mean(1)
        update("diffusion", mse.mean())
        return {"loss": mse.detach(), "mse": mse.detach()}

    def latent_noise_shape(self, B: int) -> tuple[int, ...]:
        return (B, *self.ae.latent_shape)

    def forward(self, batch: torch.Tensor, generator: torch.Generator, labels: torch.Tensor | None = None) -> dict:
        raise ConfigError("latent diffusion trains by its own steps (train_step); use genlab train ldm.")

    @staticmethod
    def empty_tokens(n: int) -> torch.Tensor:
        """The empty caption's ids [BOS, EOS, PAD...] in ``n`` rows (a view of one)."""
        return _empty_caption().expand(n, -1)

    # ----- sampling --------------------------------------------------------------------------
    def prompt_tokens(self, n: int, prompts: list[str] | tuple[str, ...] | None) -> torch.Tensor:
        """Token ids [n, L]: one prompt for all, one per sample, or (None) the class prompts in turn."""
        from genlab.data.captions import MAX_TOKENS, caption_tokenizer, class_prompt

        if prompts is None:
            prompts = [class_prompt(self.class_names[i % len(self.class_names)]) for i in range(n)]
        elif len(prompts) == 1:
            prompts = list(prompts) * n
        elif len(prompts) != n:
            raise ConfigError(f"{n} samples need one prompt or {n}, not {len(prompts)}.")
        return caption_tokenizer().encode(list(prompts), MAX_TOKENS)[0]

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, batch_size: int = 256, progress: bool = False, sampler: str = "ddim",
               steps: int | None = None, eta: float = 0.0, spacing: str = "uniform",
               prompts: list[str] | tuple[str, ...] | None = None, guidance: float | None = None,
               callback=None) -> torch.Tensor:
        """``n`` uint8 images for ``prompts`` (see :meth:`prompt_tokens`), guided with weight ``guidance``;
        ``callback`` sees each step's latents decoded (:data:`genlab.family.SAMPLE_OPTIONS`).

        Sample i depends only on (seed, i) and its prompt: z_T comes from its own generator.
        """
        ids = self.prompt_tokens(n, prompts)
        device = self.latent_scale.device
        scale = float(self.latent_scale) or 1.0  # an autoencoder-stage checkpoint: latents unscaled
        net: Any = self.unet
        if guidance:
            net = text_guidance(self.unet, float(guidance), self.encode_text(self.empty_tokens(1)))
        denoiser = Denoiser(net, "eps")

        def draw(start: int, b: int) -> torch.Tensor:
            gens = per_sample_generators(seed, start, b)
            z_T = randn(self.latent_noise_shape(b), gens, device)
            cond = self.encode_text(ids[start:start + b])
            decode = lambda z: from_model(self.ae.decode(z / scale).float().clamp(-1, 1), self.levels)
            z0 = run_sampler(denoiser, self.diffusion, z_T, sampler=sampler, steps=steps, eta=eta, generator=gens,
                             clip_denoised=False, progress=progress, spacing=spacing,
                             callback=step_images(callback, start, decode), **cond)
            return from_model(self.ae.decode(z0 / scale).float().clamp(-1, 1), self.levels)

        return batched_draw(n, batch_size, draw, shape=self.shape, dtype=torch.uint8)

    # ----- likelihood ------------------------------------------------------------------------
    def decoder_sigma(self, images: torch.Tensor, seed: int = 0) -> float:
        """The decoder's maximum-likelihood Gaussian scale on uint8 ``images`` (:mod:`genlab.latent.likelihood`)."""
        return decoder_sigma(self, images, seed=seed)

    def latent_bound(self, images: torch.Tensor, sigma: float, **options) -> dict:
        """Latent bound + decoder on uint8 ``images`` (:func:`genlab.latent.likelihood.latent_bound`)."""
        return latent_bound(self, images, sigma, **options)

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """decode(mean of encode(x)) of uint8 images, as uint8 (the autoencoder stage's reconstructions)."""
        x = to_model(images, self.levels).to(self.latent_scale.device)
        mean, _ = self.ae.encode(x)
        return from_model(self.ae.decode(mean).float().clamp(-1, 1), self.levels).cpu()


def _clip_config(cfg: RunConfig) -> RunConfig:
    """The config of the CLIP run ``latent.clip_run``, checked against this run's data."""
    from genlab.run import RunDir

    clip_cfg = RunDir(str(cfg.latent.clip_run)).read_config()
    if clip_cfg.family != "clip":
        raise ConfigError(f"{cfg.latent.clip_run} is a {clip_cfg.family} run, not a CLIP run; pass a run of genlab train clip "
                          f"to {{latent.clip_run}}.")
    if clip_cfg.data.name != cfg.data.name:
        raise ConfigError(f"the CLIP run {cfg.latent.clip_run} was trained on {clip_cfg.data.name} but this run is on "
                          f"{cfg.data.name}; train a CLIP on {cfg.data.name} first.")
    return clip_cfg


@lru_cache(maxsize=1)
def _empty_caption() -> torch.Tensor:
    """[1, MAX_TOKENS] ids of the empty caption, tokenized once."""
    from genlab.data.captions import MAX_TOKENS, caption_tokenizer

    return caption_tokenizer().encode([""], MAX_TOKENS)[0]
