"""CLIP at a small scale: a contrastive image-text model trained here on captioned digits (``genlab train clip``).

Radford et al. 2021: an image tower f and a text tower g map a batch of B (image, caption)
pairs to unit vectors u_i = f(x_i)/|f(x_i)|, v_j = g(c_j)/|g(c_j)|; the logits are
s_ij = exp(tau) u_i . v_j with a learned temperature tau (initialised at log(1/0.07), s
clipped at 100), and the symmetric InfoNCE loss averages the cross-entropy of the right
caption among the batch's captions for each image and of the right image for each caption:

    loss_i = ( -log softmax_j(s_ij)[i] - log softmax_j(s_ji)[i] ) / 2        (their Fig. 3)

Zero-shot classification embeds a prompt per class ("a 3", "an ankle boot") and picks the
nearest; retrieval ranks the test captions for each image and the images for each caption.
The text tower's per-token features are what latent diffusion will condition on.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genlab.config import RunConfig
from genlab.data.transforms import to_model
from genlab.errors import ConfigError
from genlab.family import register_family
from genlab.nets.text import ImageEncoder, TextTransformer

MAX_SCALE = 100.0  # CLIP clips exp(tau) at 100 so the logits cannot blow up


def info_nce(u: torch.Tensor, v: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE per pair ``[B]`` (nats) of unit image embeddings ``u`` and text embeddings ``v`` ``[B, E]``."""
    logits = logit_scale.exp().clamp(max=MAX_SCALE) * (u @ v.T)  # [B, B]: image i against caption j
    target = torch.arange(len(u), device=u.device)
    return (F.cross_entropy(logits, target, reduction="none") + F.cross_entropy(logits.T, target, reduction="none")) / 2


def recall_at(similarity: torch.Tensor, same: torch.Tensor, k: int) -> float:
    """Fraction of rows whose top-``k`` columns of ``similarity`` [N, M] include one that ``same`` [N, M] marks right."""
    top = similarity.topk(min(k, similarity.shape[1]), dim=1).indices
    return same.gather(1, top).any(1).float().mean().item()


@register_family("clip")
class CLIP(nn.Module):
    """The two towers and the temperature; trained on (image, caption token) pairs by :func:`info_nce`."""

    config_section = "text"
    uses_labels = True  # the Trainer passes each image's caption tokens as its labels
    uses_text = True  # ... taken from the captioned dataset's tokens
    preview_count = 0  # it draws no images
    presets = {"*": {"train": {"batch_size": 256, "warmup": 100, "steps": 2000}}}

    def __init__(self, image_encoder: ImageEncoder, text_encoder: TextTransformer, embed_dim: int, levels: int):
        super().__init__()
        self.image_encoder, self.text_encoder, self.levels = image_encoder, text_encoder, levels
        self.text_proj = nn.Linear(text_encoder.width, embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    @property
    def net(self) -> nn.Module:
        return self.image_encoder

    @classmethod
    def from_config(cls, cfg: RunConfig) -> CLIP:
        from genlab.data.captions import MAX_TOKENS, caption_tokenizer, require_captions

        shape, t = tuple(cfg.data.shape), cfg.text
        require_captions(cfg, "CLIP")

        image = ImageEncoder(shape[0], t.embed_dim, channels=cfg.model.channels, norm_groups=cfg.model.norm_groups)
        text = TextTransformer(len(caption_tokenizer().vocab), MAX_TOKENS, t.width, t.layers, t.heads)
        return cls(image, text, t.embed_dim, cfg.data.levels)

    @classmethod
    def describe(cls, cfg: RunConfig) -> str:
        return f"clip {cfg.text.layers}x{cfg.text.width}"

    # ----- the towers ------------------------------------------------------------------------
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Unit embeddings ``[B, E]`` of uint8 images."""
        x = to_model(images, self.levels).to(self.logit_scale.device)
        return F.normalize(self.image_encoder(x).float(), dim=-1)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """Unit embeddings ``[B, E]`` of token ids ``[B, L]`` (PAD = 0 marks the padding)."""
        ids = ids.to(self.logit_scale.device)
        _, pooled = self.text_encoder(ids, ids != 0)
        return F.normalize(self.text_proj(pooled).float(), dim=-1)

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        from genlab.data.captions import MAX_TOKENS, caption_tokenizer

        ids, _ = caption_tokenizer().encode(prompts, MAX_TOKENS)
        return self.encode_text(ids)

    # ----- training --------------------------------------------------------------------------
    def forward(self, batch: torch.Tensor, generator: torch.Generator, labels: torch.Tensor | None = None) -> dict:
        """Per-pair symmetric InfoNCE ``loss`` and ``accuracy`` (the image's own caption ranks first in the batch)."""
        if labels is None or labels.ndim != 2:
            raise ConfigError("CLIP trains on (image, caption) pairs; pass each image's caption tokens as its labels.")
        u, v = self.encode_image(batch), self.encode_text(labels)
        loss = info_nce(u, v, self.logit_scale)
        right = (u @ v.T).argmax(1) == torch.arange(len(u), device=u.device)
        return {"loss": loss, "accuracy": right.float()}

    def sample(self, n: int, seed: int = 0, batch_size: int = 256, progress: bool = False) -> torch.Tensor:
        """CLIP draws no images (``sampler_names`` is empty): refused."""
        raise ConfigError("a CLIP run does not draw images; it scores them (genlab eval) and conditions latent diffusion.")

    # ----- measuring -------------------------------------------------------------------------
    @torch.no_grad()
    def test_metrics(self, test: Any, limit: int | None = None, seed: int = 0, batch_size: int = 500) -> dict:
        """Zero-shot accuracy from class prompts alone, and caption retrieval recall@1/5, on ``test``.

        Zero-shot: each image's nearest of the prompts "a 0" .. "a 9" (``class_prompt``), on the first
        ``limit`` images (all by default). Retrieval on the first min(limit, 1000) pairs: for each image
        its top-k captions (right if one of them is word for word its own caption: many images share
        "a 7"), and for each caption its top-k images (right if one of them has that caption).
        """
        from genlab.data.captions import class_prompt

        n = min(limit or len(test.images), len(test.images))
        images = test.images[:n]
        u = torch.cat([self.encode_image(images[i:i + batch_size]) for i in range(0, n, batch_size)])
        prompts = self.encode_prompts([class_prompt(c) for c in test.info.class_names])
        zero_shot = ((u @ prompts.T).argmax(1).cpu() == test.labels[:n]).float().mean().item()
        m = min(n, 1000)
        tokens = test.tokens[:m]
        v = torch.cat([self.encode_text(tokens[i:i + batch_size]) for i in range(0, m, batch_size)])
        sim = (u[:m] @ v.T).cpu()
        captions = test.captions[:m]
        index = {c: i for i, c in enumerate(dict.fromkeys(captions))}
        ids = torch.tensor([index[c] for c in captions])
        same = ids[:, None] == ids[None, :]  # [m, m]: pair i's caption is word for word pair j's
        return {"zero_shot_accuracy": zero_shot, "n": n, "retrieval_n": m,
                "image_to_text_r1": recall_at(sim, same, 1), "image_to_text_r5": recall_at(sim, same, 5),
                "text_to_image_r1": recall_at(sim.T, same, 1), "text_to_image_r5": recall_at(sim.T, same, 5),
                "temperature": 1 / self.logit_scale.exp().clamp(max=MAX_SCALE).item()}

    @staticmethod
    def how_to_use(run: str) -> str:
        return f"embed images and prompts with: genlab.RunDir({run!r}).load()[1].encode_image / encode_prompts"

    @staticmethod
    def describe_test_metrics(r: dict) -> str:
        return (f"test zero-shot accuracy {r['zero_shot_accuracy']:.4f} from class prompts alone ({r['n']} images); "
                f"retrieval recall@1/5 image->text {r['image_to_text_r1']:.3f}/{r['image_to_text_r5']:.3f}, text->image "
                f"{r['text_to_image_r1']:.3f}/{r['text_to_image_r5']:.3f} ({r['retrieval_n']} pairs)")
