"""A noise-conditional image classifier p(y | x_t, t): the U-Net's encoder half with a pooled head.

Dhariwal & Nichol 2021 (Sec. 4, "classifier guidance") train "the downsampling trunk of
the UNet model with an attention pool at the 8x8 layer" on noisy images x_t. This is the
same trunk as :class:`genlab.nets.unet.UNet`'s down path (ResBlocks with the sinusoidal
time embedding as scale and shift, self-attention at chosen resolutions, strided-conv
downsampling) and its middle block, followed by GroupNorm, SiLU, global average pooling
and a linear layer to the class logits.

Shapes: ``x`` is ``[B, C, H, W]`` in model space [-1, 1]; ``t`` is ``[B]`` (index into the
diffusion's schedule, 0..T-1); the output is ``[B, num_classes]`` logits.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from genlab.nets.unet import AttentionBlock, Downsample, ResBlock, _run, group_norm, timestep_embedding


class EncoderClassifier(nn.Module):
    """Logits of p(y | x_t, t) from the U-Net's encoder half (arguments as for :class:`UNet`)."""

    def __init__(
        self, image_size: int, in_channels: int, num_classes: int, channels=(32, 64), num_res_blocks: int = 1,
        attn_resolutions=(), dropout: float = 0.0, norm_groups: int = 32, head_dim: int = 32,
    ):
        super().__init__()
        channels = tuple(channels)
        levels = len(channels)
        if image_size % (2 ** (levels - 1)):
            raise ValueError(f"image size {image_size} cannot be halved {levels - 1} times; use fewer levels")
        self.num_classes = num_classes
        ch0 = channels[0]
        emb_dim = 4 * ch0
        self.time_embed = nn.Sequential(nn.Linear(ch0, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.input = nn.Conv2d(in_channels, ch0, 3, padding=1)
        self.down = nn.ModuleList()
        ch, res_px = ch0, image_size
        for level, width in enumerate(channels):
            for _ in range(num_res_blocks):
                block: list[nn.Module] = [ResBlock(ch, width, emb_dim, dropout, norm_groups)]
                if res_px in attn_resolutions:
                    block.append(AttentionBlock(width, head_dim, norm_groups))
                self.down.append(nn.ModuleList(block))
                ch = width
            if level < levels - 1:
                self.down.append(nn.ModuleList([Downsample(ch)]))
                res_px //= 2
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb_dim, dropout, norm_groups),
                                  AttentionBlock(ch, head_dim, norm_groups),
                                  ResBlock(ch, ch, emb_dim, dropout, norm_groups)])
        self.norm = group_norm(ch, norm_groups)
        self.head = nn.Linear(ch, num_classes)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(t, cast(nn.Linear, self.time_embed[0]).in_features))
        h = self.input(x)
        for block in self.down:
            h = _run(block, h, emb)
        h = _run(self.mid, h, emb)
        h = torch.nn.functional.silu(self.norm(h)).mean(dim=(2, 3))  # global average pool: [B, ch]
        return self.head(h)
