"""The networks: shapes at every supported size, the time embedding, conditioning, zero-init residuals."""

import math

import pytest
import torch

from genlab.nets import TimeMLP, UNet, timestep_embedding


@pytest.mark.parametrize("size,channels,widths,attn", [
    (8, 1, (16, 32), (4,)),
    (28, 1, (16, 32, 32), (14, 7)),
    (32, 3, (16, 32, 32), (16, 8)),
])
def test_unet_maps_images_to_images_of_the_same_shape(size, channels, widths, attn):
    net = UNet(image_size=size, in_channels=channels, channels=widths, num_res_blocks=1, attn_resolutions=attn, norm_groups=8)
    x = torch.randn(2, channels, size, size)
    out = net(x, torch.tensor([0, 999]))
    assert out.shape == x.shape
    # the output layer starts at zero, so an untrained net predicts eps = 0
    assert torch.all(out == 0)
    n_attn = sum(type(m).__name__ == "AttentionBlock" for m in net.modules())
    assert n_attn == 1 + 2 * len(attn) + len(attn) * 1  # middle + down (1 block) + up (2 blocks) per attended level


def test_unet_depends_on_t_and_on_the_label():
    torch.manual_seed(0)
    net = UNet(image_size=8, channels=(16, 32), num_res_blocks=1, attn_resolutions=(4,), norm_groups=8, num_classes=10)
    for p in net.parameters():  # undo the zero inits so every path reaches the output
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(3, 1, 8, 8)
    a = net(x, torch.tensor([5, 5, 5]), y=torch.tensor([1, 2, 3]))
    b = net(x, torch.tensor([500, 500, 500]), y=torch.tensor([1, 2, 3]))
    c = net(x, torch.tensor([5, 5, 5]), y=torch.tensor([4, 5, 6]))
    d = net(x, torch.tensor([5, 5, 5]))  # no label: the extra "null" class
    assert not torch.allclose(a, b) and not torch.allclose(a, c) and not torch.allclose(a, d)


def test_unet_takes_sizes_that_do_not_halve_evenly():
    """28 -> 14 -> 7 -> 4 on the way down; each upsampling returns to its skip's size (latents of 7x7)."""
    net = UNet(image_size=28, channels=(16, 32, 32, 32), norm_groups=8)
    assert net(torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long)).shape == (2, 1, 28, 28)


def test_timestep_embedding_is_the_transformer_sinusoid():
    t = torch.tensor([0.0, 1.0, 17.0])
    emb = timestep_embedding(t, 8)
    freqs = [math.exp(-math.log(10000) * i / 4) for i in range(4)]
    expected = torch.tensor([[math.cos(tt * f) for f in freqs] + [math.sin(tt * f) for f in freqs] for tt in t.tolist()])
    torch.testing.assert_close(emb, expected)


def test_time_mlp_for_points():
    net = TimeMLP(dim=2, hidden=32, depth=2, num_classes=8)
    out = net(torch.randn(5, 2), torch.arange(5), y=torch.arange(5))
    assert out.shape == (5, 2)


def _attention_by_hand(block, x):
    """Multi-head attention written position by position: softmax(q.k / sqrt(d)) v, then the projection."""
    B, C, H, W = x.shape
    d = C // block.heads
    qkv = block.qkv(block.norm(x)).reshape(B, 3, block.heads, d, H * W)
    out = torch.zeros(B, block.heads, d, H * W, dtype=x.dtype)
    for b in range(B):
        for h in range(block.heads):
            q, k, v = qkv[b, 0, h], qkv[b, 1, h], qkv[b, 2, h]  # [d, HW] each
            for i in range(H * W):
                w = torch.softmax(torch.stack([q[:, i] @ k[:, j] for j in range(H * W)]) / math.sqrt(d), 0)
                out[b, h, :, i] = v @ w
    return x + block.proj(out.reshape(B, C, H, W))


def test_attention_block_explicit_and_flash_forms_agree_with_the_definition_and_in_their_gradients():
    from genlab.nets.unet import AttentionBlock

    torch.manual_seed(0)
    block = AttentionBlock(16, head_dim=8, groups=4).double()
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 16, 3, 4, dtype=torch.float64, requires_grad=True)
    outs, grads = [], []
    for limit in (10 ** 9, 0):  # explicit matmuls, then scaled_dot_product_attention
        block.explicit_max_tokens = limit
        out = block(x)
        outs.append(out)
        grads.append(torch.autograd.grad(out.pow(2).sum(), [x, *block.parameters()]))
    with torch.no_grad():
        torch.testing.assert_close(outs[0], _attention_by_hand(block, x), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-10, atol=1e-10)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    block.explicit_max_tokens = 10 ** 9
    with torch.no_grad():  # sampling: the flash form whatever the size
        torch.testing.assert_close(block(x), outs[0], rtol=1e-10, atol=1e-10)


def test_attention_without_gradients_reaches_the_flash_kernel():
    """SDPA's CPU flash kernel takes q, k, v only with a contiguous last dimension, else it silently runs the
    math fallback (which holds the [HW, HW] matrix and was 2.7x slower at 14x14): the layout is what is checked."""
    from genlab.nets.unet import AttentionBlock

    block = AttentionBlock(64, head_dim=32, groups=8).eval()
    with torch.no_grad(), torch.profiler.profile() as prof:
        block(torch.randn(2, 64, 14, 14))
    names = {e.key for e in prof.key_averages()}
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in names, sorted(names)
