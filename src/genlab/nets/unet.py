"""The U-Net of the lecture notes (Ho et al. 2020, Appendix B; improved-diffusion's layout).

ResNet blocks with GroupNorm and SiLU, a sinusoidal time embedding fed to every block
as a scale and shift of its second normalisation, self-attention at chosen
resolutions, skip connections from the down path to the up path, dropout, and an
optional class embedding added to the time embedding.

Shapes: ``x`` is ``[B, C, H, W]``; ``t`` is ``[B]`` (integer or float timesteps);
``y`` (optional) is ``[B]`` class labels, where ``num_classes`` means "no label";
``low_res`` (when ``cond_channels`` > 0) is ``[B, cond_channels, H, W]``, a conditioning image at
the input's size (super-resolution: the upsampled low-resolution image), concatenated to ``x``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of timesteps (Vaswani et al. 2017, Sec. 3.5), ``[B] -> [B, dim]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def zero_module(m: nn.Module) -> nn.Module:
    """Zero a layer's parameters, so a residual branch starts as the identity."""
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class ResBlock(nn.Module):
    """h = conv(silu(norm(x))); h = norm(h) * (1 + scale) + shift; out = x + conv(drop(silu(h)))."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = group_norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = group_norm(out_ch, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_module(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H*W positions, with a residual connection.

    Up to ``explicit_max_tokens`` positions the attention is written out as two batched
    matmuls and a softmax in the channels-first layout the convolutions use (no
    transposes); beyond that, ``F.scaled_dot_product_attention`` (flash attention, which
    never holds the [HW, HW] matrix). Both compute the same function. The explicit form is
    the fast one on CPUs: at 14x14 under bf16 autocast it trains a (32, 64, 64) U-Net
    about 1.25x faster than SDPA, whose CPU backward in bf16 is slow
    (``benchmarks/train_throughput.py``).
    """

    explicit_max_tokens = 1024

    def __init__(self, channels: int, head_dim: int, groups: int):
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_module(nn.Conv2d(channels, channels, 1))

    def forward(self, x):
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W).unbind(1)  # [B, heads, d, HW]
        if H * W <= self.explicit_max_tokens:
            scale = (C // self.heads) ** -0.25  # on q and k both, as improved-diffusion: smaller logits in low precision
            weights = torch.softmax(torch.matmul((q * scale).transpose(-1, -2), k * scale), dim=-1)  # [B, heads, HW, HW]
            h = torch.matmul(v, weights.transpose(-1, -2))  # [B, heads, d, HW]
        else:
            h = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2)).transpose(-1, -2)
        return x + self.proj(h.reshape(B, C, H, W))


class Downsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """An eps/x0/v-predicting U-Net.

    Args:
        image_size: H = W of the input (8, 28, 32 ...); each level halves it, so it must
            be divisible by 2 ** (len(channels) - 1).
        in_channels / out_channels: 1 or 3 image channels (out defaults to in).
        channels: width of each resolution level, e.g. (32, 64, 64) for 28 -> 14 -> 7.
        num_res_blocks: ResBlocks per level on the way down (one more on the way up).
        attn_resolutions: resolutions (in pixels) that get a self-attention block.
        num_classes: if set, a label embedding (with one extra "null" label used for
            unconditional passes) is added to the time embedding.
        cond_channels: channels of a conditioning image concatenated to the input
            (SR3, Saharia et al. 2021; cascaded diffusion, Ho et al. 2021); 0: none.
    """

    def __init__(
        self, image_size: int, in_channels: int = 1, channels=(32, 64), num_res_blocks: int = 2,
        attn_resolutions=(), dropout: float = 0.0, out_channels: int | None = None, num_classes: int | None = None,
        norm_groups: int = 32, head_dim: int = 32, cond_channels: int = 0,
    ):
        super().__init__()
        channels = tuple(channels)
        levels = len(channels)
        if image_size % (2 ** (levels - 1)):
            raise ValueError(f"image size {image_size} cannot be halved {levels - 1} times; use fewer levels")
        self.image_size, self.in_channels = image_size, in_channels
        self.num_classes = num_classes
        self.cond_channels = cond_channels
        ch0 = channels[0]
        emb_dim = 4 * ch0
        self.time_embed = nn.Sequential(nn.Linear(ch0, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_embed = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.input = nn.Conv2d(in_channels + cond_channels, ch0, 3, padding=1)

        def res(i, o):
            return ResBlock(i, o, emb_dim, dropout, norm_groups)

        def attn(c, r):
            return [AttentionBlock(c, head_dim, norm_groups)] if r in attn_resolutions else []

        self.down = nn.ModuleList()
        skip_ch = [ch0]
        ch, res_px = ch0, image_size
        for level, width in enumerate(channels):
            for _ in range(num_res_blocks):
                self.down.append(nn.ModuleList([res(ch, width), *attn(width, res_px)]))
                ch = width
                skip_ch.append(ch)
            if level < levels - 1:
                self.down.append(nn.ModuleList([Downsample(ch)]))
                skip_ch.append(ch)
                res_px //= 2
        self.mid = nn.ModuleList([res(ch, ch), AttentionBlock(ch, head_dim, norm_groups), res(ch, ch)])
        self.up = nn.ModuleList()
        for level, width in reversed(list(enumerate(channels))):
            for i in range(num_res_blocks + 1):
                block = [res(ch + skip_ch.pop(), width), *attn(width, res_px)]
                ch = width
                if level > 0 and i == num_res_blocks:
                    block.append(Upsample(ch))
                    res_px *= 2
                self.up.append(nn.ModuleList(block))
        self.out = nn.Sequential(group_norm(ch, norm_groups), nn.SiLU(), zero_module(nn.Conv2d(ch, out_channels or in_channels, 3, padding=1)))

    def forward(self, x, t, y=None, low_res=None):
        if self.cond_channels:
            if low_res is None:
                raise ValueError("this U-Net is conditioned on an image: pass low_res=[B, cond_channels, H, W]")
            x = torch.cat([x, low_res.to(x.dtype)], dim=1)
        emb = self.time_embed(timestep_embedding(t, self.time_embed[0].in_features))
        if self.label_embed is not None:
            if y is None:
                y = torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
            emb = emb + self.label_embed(y)
        h = self.input(x)
        skips = [h]
        for block in self.down:
            h = _run(block, h, emb)
            skips.append(h)
        h = _run(self.mid, h, emb)
        for block in self.up:
            h = _run(block, torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)


def _run(layers, h, emb):
    """Apply a list of layers in order; ResBlocks also take the embedding."""
    for layer in layers:
        h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
    return h
