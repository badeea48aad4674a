"""The U-Net of the lecture notes (Ho et al. 2020, Appendix B; improved-diffusion's layout).

ResNet blocks with GroupNorm and SiLU, a sinusoidal time embedding fed to every block
as a scale and shift of its second normalisation, self-attention at chosen
resolutions, skip connections from the down path to the up path, dropout, an
optional class embedding added to the time embedding, and optional text conditioning
(latent diffusion, Rombach et al. 2022, Sec. 3.3): cross-attention to context tokens after
every self-attention block, and a pooled text vector added to the time embedding.

Shapes: ``x`` is ``[B, C, H, W]``; ``t`` is ``[B]`` (integer or float timesteps);
``y`` (optional) is ``[B]`` class labels, where ``num_classes`` means "no label";
``low_res`` (when ``cond_channels`` > 0) is ``[B, cond_channels, H, W]``, a conditioning image at
the input's size (super-resolution: the upsampled low-resolution image), concatenated to ``x``;
``context`` (when ``context_dim`` is set) is ``[B, L, context_dim]`` token features with
``context_mask`` ``[B, L]`` bool, True on real tokens; ``pooled`` (when ``pooled_dim`` is set)
is ``[B, pooled_dim]``.

Any H = W works: the down path halves with ceil (7 -> 4 -> 2, what the stride-2 conv with
padding 1 gives) and each upsampling resizes to the size of the skip it meets.
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

    Two forms of the same function. While gradients are recorded (training) and up to
    ``explicit_max_tokens`` positions, the attention is written out as two batched matmuls
    and a softmax in the channels-first layout the convolutions use (no transposes): at
    14x14 under bf16 autocast it trains a (32, 64, 64) U-Net about 1.25x faster than
    ``F.scaled_dot_product_attention``, whose CPU backward in bf16 is slow
    (``benchmarks/train_throughput.py``). Without gradients (sampling), and beyond that
    many positions, q, k and v are laid out ``[B, heads, HW, d]`` contiguous and go to
    SDPA's flash kernel, which never holds the [HW, HW] matrix; its CPU kernel needs the
    last dimension contiguous and otherwise falls back to the explicit math. At 14x14, 64
    images in fp32, flash is 2.2x the explicit form (20 against 44 ms) and the U-Net's
    evaluation 1.15x (both timed in one process, alternating the forms; the whole evaluation
    against diffusers' in ``benchmarks/sample_latency.py``). The two agree to float rounding.
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
        qkv = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W)
        if torch.is_grad_enabled() and H * W <= self.explicit_max_tokens:
            q, k, v = qkv.unbind(1)  # [B, heads, d, HW]
            scale = (C // self.heads) ** -0.25  # on q and k both, as improved-diffusion: smaller logits in low precision
            weights = torch.softmax(torch.matmul((q * scale).transpose(-1, -2), k * scale), dim=-1)  # [B, heads, HW, HW]
            h = torch.matmul(v, weights.transpose(-1, -2))  # [B, heads, d, HW]
        else:
            q, k, v = qkv.transpose(-1, -2).contiguous().unbind(1)  # [B, heads, HW, d], last dimension contiguous
            h = F.scaled_dot_product_attention(q, k, v).transpose(-1, -2)
        return x + self.proj(h.reshape(B, C, H, W))


class CrossAttentionBlock(nn.Module):
    """Multi-head cross-attention from the H*W positions to context tokens, with a residual connection.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d)) V (Vaswani et al. 2017, eq. 1), with
    Q = W_q norm(x) from the features and K = W_k c, V = W_v c from the context tokens c
    (LDM, Rombach et al. 2022, Sec. 3.3). Padded keys (``context_mask`` False) get logit -inf,
    so they receive exactly zero weight; a row with no real token at all attends to nothing
    (the attention reads out zero there, and only W_o's bias is added). The output projection
    W_o starts at zero, so a fresh block is the identity. Shapes: ``x`` ``[B, C, H, W]``,
    ``context`` ``[B, L, context_dim]``, ``context_mask`` ``[B, L]`` bool or None (all tokens real).
    """

    def __init__(self, channels: int, context_dim: int, head_dim: int, groups: int):
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm = group_norm(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Linear(context_dim, channels)
        self.v = nn.Linear(context_dim, channels)
        self.proj = zero_module(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, C, H, W = x.shape
        L, d = context.shape[1], C // self.heads
        q = self.q(self.norm(x)).reshape(B, self.heads, d, H * W)  # [B, heads, d, HW]
        k = self.k(context).transpose(1, 2).reshape(B, self.heads, d, L)  # [B, heads, d, L]
        v = self.v(context).transpose(1, 2).reshape(B, self.heads, d, L)
        scale = d ** -0.25  # on q and k both (= 1/sqrt(d) on the logits), as in AttentionBlock
        logits = torch.matmul((q * scale).transpose(-1, -2), k * scale)  # [B, heads, HW, L]
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # softmax in at least float32
        if context_mask is not None:
            # rows with no real token keep every logit (finite, so no NaN) and are zeroed after the softmax
            any_real = context_mask.any(dim=1, keepdim=True)  # [B, 1]
            keep = context_mask | ~any_real
            logits = logits.masked_fill(~keep[:, None, None, :], float("-inf"))
            weights = torch.softmax(logits, dim=-1) * any_real[:, None, None, :]
        else:
            weights = torch.softmax(logits, dim=-1)
        h = torch.matmul(v, weights.to(v.dtype).transpose(-1, -2))  # [B, heads, d, HW]
        return x + self.proj(h.reshape(B, C, H, W))


class Downsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour resize to ``size`` (the skip it will be concatenated with; default 2x), then a conv.

    For an even skip, nearest to (2h, 2w) picks the same pixels as ``scale_factor=2``.
    """

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x, size: tuple[int, int] | None = None):
        size = size or (2 * x.shape[-2], 2 * x.shape[-1])
        return self.conv(F.interpolate(x, size=tuple(size), mode="nearest"))


class UNet(nn.Module):
    """An eps/x0/v-predicting U-Net.

    Args:
        image_size: H = W of the input (7, 8, 28, 32 ...); each level halves it, rounding up
            (28 -> 14 -> 7 -> 4).
        in_channels / out_channels: 1 or 3 image channels (out defaults to in).
        channels: width of each resolution level, e.g. (32, 64, 64) for 28 -> 14 -> 7.
        num_res_blocks: ResBlocks per level on the way down (one more on the way up).
        attn_resolutions: resolutions (in pixels, sizes on the halving path) that get a
            self-attention block (and, with ``context_dim``, a cross-attention block after it).
        num_classes: if set, a label embedding (with one extra "null" label used for
            unconditional passes) is added to the time embedding.
        cond_channels: channels of a conditioning image concatenated to the input
            (SR3, Saharia et al. 2021; cascaded diffusion, Ho et al. 2021); 0: none.
        context_dim: if set, every self-attention block (at ``attn_resolutions`` and in the
            middle) is followed by a :class:`CrossAttentionBlock` to ``context`` tokens of this
            width (LDM, Rombach et al. 2022, Sec. 3.3); ``forward`` then needs ``context``.
        pooled_dim: if set, a linear map of a pooled text vector ``pooled`` ``[B, pooled_dim]``
            is added to the time embedding, as the class embedding is; it starts at zero.
        Without ``context_dim`` and ``pooled_dim`` no new module exists and no random number is
        drawn for them: the network, its initialisation and its state_dict are what they were.
    """

    def __init__(
        self, image_size: int, in_channels: int = 1, channels=(32, 64), num_res_blocks: int = 2,
        attn_resolutions=(), dropout: float = 0.0, out_channels: int | None = None, num_classes: int | None = None,
        norm_groups: int = 32, head_dim: int = 32, cond_channels: int = 0,
        context_dim: int | None = None, pooled_dim: int | None = None,
    ):
        super().__init__()
        channels = tuple(channels)
        levels = len(channels)
        sizes = [image_size]  # H at each level: the stride-2 conv with padding 1 gives ceil(H / 2)
        for _ in range(levels - 1):
            sizes.append((sizes[-1] + 1) // 2)
        self.image_size, self.in_channels = image_size, in_channels
        self.num_classes = num_classes
        self.cond_channels = cond_channels
        self.context_dim, self.pooled_dim = context_dim, pooled_dim
        ch0 = channels[0]
        emb_dim = 4 * ch0
        self.time_embed = nn.Sequential(nn.Linear(ch0, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_embed = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        # zero at first, as every new branch here; None (no parameters, no random draws) when not asked for
        self.pooled_embed = zero_module(nn.Linear(pooled_dim, emb_dim)) if pooled_dim else None
        self.input = nn.Conv2d(in_channels + cond_channels, ch0, 3, padding=1)

        def res(i, o):
            return ResBlock(i, o, emb_dim, dropout, norm_groups)

        def attn(c, r=None):
            """Self-attention (and cross-attention after it) at resolution r; r None: the middle."""
            if r is not None and r not in attn_resolutions:
                return []
            cross = [CrossAttentionBlock(c, context_dim, head_dim, norm_groups)] if context_dim else []
            return [AttentionBlock(c, head_dim, norm_groups), *cross]

        self.down = nn.ModuleList()
        skip_ch = [ch0]
        ch = ch0
        for level, width in enumerate(channels):
            for _ in range(num_res_blocks):
                self.down.append(nn.ModuleList([res(ch, width), *attn(width, sizes[level])]))
                ch = width
                skip_ch.append(ch)
            if level < levels - 1:
                self.down.append(nn.ModuleList([Downsample(ch)]))
                skip_ch.append(ch)
        self.mid = nn.ModuleList([res(ch, ch), *attn(ch), res(ch, ch)])
        self.up = nn.ModuleList()
        for level, width in reversed(list(enumerate(channels))):
            for i in range(num_res_blocks + 1):
                block = [res(ch + skip_ch.pop(), width), *attn(width, sizes[level])]
                ch = width
                if level > 0 and i == num_res_blocks:
                    block.append(Upsample(ch))
                self.up.append(nn.ModuleList(block))
        self.out = nn.Sequential(group_norm(ch, norm_groups), nn.SiLU(), zero_module(nn.Conv2d(ch, out_channels or in_channels, 3, padding=1)))

    def forward(self, x, t, y=None, low_res=None, context=None, context_mask=None, pooled=None):
        self._check_text(x, context, context_mask, pooled)
        if self.cond_channels:
            if low_res is None:
                raise ValueError("this U-Net is conditioned on an image: pass low_res=[B, cond_channels, H, W]")
            x = torch.cat([x, low_res.to(x.dtype)], dim=1)
        emb = self.time_embed(timestep_embedding(t, self.time_embed[0].in_features))
        if self.label_embed is not None:
            if y is None:
                y = torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
            emb = emb + self.label_embed(y)
        if self.pooled_embed is not None:
            emb = emb + self.pooled_embed(pooled)
        h = self.input(x)
        skips = [h]
        for block in self.down:
            h = _run(block, h, emb, context, context_mask)
            skips.append(h)
        h = _run(self.mid, h, emb, context, context_mask)
        for block in self.up:
            h = torch.cat([h, skips.pop()], dim=1)
            # an Upsample ends the block: it resizes to the skip the next block concatenates
            h = _run(block, h, emb, context, context_mask, size=tuple(skips[-1].shape[-2:]) if skips else None)
        return self.out(h)

    def _check_text(self, x, context, context_mask, pooled):
        """One clear error for text inputs that do not match how the U-Net was built."""
        B = x.shape[0]
        if self.context_dim:
            if context is None:
                raise ValueError(f"this U-Net cross-attends to text: pass context=[B, L, {self.context_dim}] "
                                 "(and context_mask=[B, L] bool, True on real tokens)")
            if context.ndim != 3 or context.shape[0] != B or context.shape[2] != self.context_dim:
                raise ValueError(f"context must be [B={B}, L, {self.context_dim}], not {list(context.shape)}")
            if context_mask is not None and (context_mask.dtype != torch.bool or tuple(context_mask.shape) != tuple(context.shape[:2])):
                raise ValueError(f"context_mask must be a bool tensor [B, L] = {list(context.shape[:2])} (True on real tokens), "
                                 f"not {context_mask.dtype} {list(context_mask.shape)}")
        elif context is not None or context_mask is not None:
            raise ValueError("this U-Net has no cross-attention (context_dim is None): context and context_mask must be None")
        if self.pooled_dim:
            if pooled is None:
                raise ValueError(f"this U-Net is conditioned on a pooled text vector: pass pooled=[B, {self.pooled_dim}]")
            if tuple(pooled.shape) != (B, self.pooled_dim):
                raise ValueError(f"pooled must be [B={B}, {self.pooled_dim}], not {list(pooled.shape)}")
        elif pooled is not None:
            raise ValueError("this U-Net takes no pooled text vector (pooled_dim is None): pooled must be None")


def _run(layers, h, emb, context=None, context_mask=None, size=None):
    """Apply a list of layers in order; ResBlocks also take the embedding, CrossAttentionBlocks the
    context, and an Upsample the size to resize to."""
    for layer in layers:
        if isinstance(layer, ResBlock):
            h = layer(h, emb)
        elif isinstance(layer, CrossAttentionBlock):
            h = layer(h, context, context_mask)
        elif isinstance(layer, Upsample):
            h = layer(h, size)
        else:
            h = layer(h)
    return h
