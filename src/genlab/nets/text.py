"""A small text transformer and a convolutional image encoder: the two towers of genlab's CLIP.

The text tower (Radford et al. 2021, Sec. 2.4, at a small scale): token and learned position
embeddings, pre-LayerNorm transformer blocks whose attention ignores padded tokens (the
padding mask), a final LayerNorm. It returns the feature of every token ``[B, L, width]``
(what cross-attention conditions on) and the feature at the EOS token ``[B, width]`` (CLIP's
pooled text feature). Token ids follow :mod:`genlab.data.tokenizer`: ``[BOS, words, EOS,
PAD...]``, PAD = 0, the mask True on real tokens.

The image tower keeps a coarse spatial map (4x4 cells) before its projection, so where the
ink is (the captions' "on the left") survives pooling.
"""

from __future__ import annotations

import torch
from torch import nn

from genlab.nets.unet import group_norm


class TextBlock(nn.Module):
    """x + attn(LN(x)) with padded keys masked out, then x + MLP(LN(x)) (pre-LN, as GPT-2 and CLIP)."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        # key_padding_mask: True where a key is padding (ignored by every query)
        x = x + self.attn(h, h, h, key_padding_mask=~mask, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class TextTransformer(nn.Module):
    """Token ids ``[B, L]`` and mask ``[B, L]`` -> (token features ``[B, L, width]``, pooled ``[B, width]``)."""

    def __init__(self, vocab_size: int, max_len: int, width: int = 64, layers: int = 2, heads: int = 4,
                 dropout: float = 0.0):
        super().__init__()
        if width % heads:
            raise ValueError(f"text width {width} is not a multiple of its {heads} heads")
        self.vocab_size, self.max_len, self.width = vocab_size, max_len, width
        self.token = nn.Embedding(vocab_size, width)
        self.position = nn.Parameter(torch.randn(max_len, width) * 0.01)
        self.blocks = nn.ModuleList(TextBlock(width, heads, dropout) for _ in range(layers))
        self.ln = nn.LayerNorm(width)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, L = ids.shape
        if L > self.max_len:
            raise ValueError(f"{L} tokens exceed the text tower's {self.max_len}")
        x = self.token(ids) + self.position[:L]
        for block in self.blocks:
            x = block(x, mask)
        x = self.ln(x) * mask[..., None]  # padded positions carry nothing downstream
        eos = mask.long().sum(1) - 1  # [B]: the last real token, EOS
        return x, x[torch.arange(B, device=x.device), eos]


class ImageEncoder(nn.Module):
    """uint8-derived images in [-1, 1] ``[B, C, H, W]`` -> a feature vector ``[B, out_dim]``.

    Strided 3x3 convolutions with GroupNorm and SiLU halve the resolution at each width, then an
    adaptive average pool to 4x4 cells keeps where things are before the linear projection.
    """

    def __init__(self, in_channels: int, out_dim: int, channels: tuple[int, ...] = (32, 64), norm_groups: int = 32):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels[0], 3, padding=1)]
        prev = channels[0]
        for width in channels:
            layers += [group_norm(prev, norm_groups), nn.SiLU(), nn.Conv2d(prev, width, 3, stride=2, padding=1)]
            prev = width
        layers += [group_norm(prev, norm_groups), nn.SiLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.proj = nn.Linear(prev * 16, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.body(x))
