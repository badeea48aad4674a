"""Text conditioning of the U-Net (LDM, Rombach et al. 2022, Sec. 3.3): cross-attention against the math,
the padding mask, zero-initialised branches, pooled text vectors, and inputs of any size (7x7 latents)."""

import pytest
import torch
import torch.nn.functional as F

from genlab.nets import UNet
from genlab.nets.unet import AttentionBlock, CrossAttentionBlock, Upsample


def _block(channels=16, context_dim=12, head_dim=8, seed=0):
    """A float64 block with every parameter random (the output projection no longer zero)."""
    torch.manual_seed(seed)
    block = CrossAttentionBlock(channels, context_dim, head_dim=head_dim, groups=4).double()
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return block


def _perturb(net, skip=()):
    """Undo the zero inits (every parameter random) except in the modules of the types in ``skip``."""
    skipped = {id(p) for m in net.modules() if isinstance(m, skip) for p in m.parameters()}
    with torch.no_grad():
        for p in net.parameters():
            if id(p) not in skipped:
                p.normal_(std=0.1)


def _unet(**kw):
    args = dict(image_size=8, channels=(16, 32), num_res_blocks=1, attn_resolutions=(4,), norm_groups=8, head_dim=8)
    return UNet(**{**args, **kw}).eval()


def test_one_context_token_gives_the_same_linear_map_of_it_at_every_position():
    # softmax over a single key is 1, so every query reads out v = W_v c + b_v, then W_o
    block = _block()
    x = torch.randn(2, 16, 3, 5, dtype=torch.float64)
    c = torch.randn(2, 1, 12, dtype=torch.float64)
    with torch.no_grad():
        branch = block(x, c) - x  # [B, C, H, W], before the residual
        v = c[:, 0] @ block.v.weight.T + block.v.bias  # [B, C]
        expected = v @ block.proj.weight[:, :, 0, 0].T + block.proj.bias  # [B, C]
    torch.testing.assert_close(branch, expected[:, :, None, None].expand_as(branch), rtol=1e-10, atol=1e-10)


def test_cross_attention_is_softmax_qk_over_sqrt_d_times_v_with_padded_keys_masked():
    block = _block()
    B, C, H, W, L, heads, d = 2, 16, 3, 4, 5, 2, 8
    x = torch.randn(B, C, H, W, dtype=torch.float64)
    c = torch.randn(B, L, 12, dtype=torch.float64)
    mask = torch.tensor([[True, True, True, False, False], [True, False, True, True, True]])
    with torch.no_grad():
        q = block.q(block.norm(x)).reshape(B, heads, d, H * W).transpose(-1, -2)  # [B, heads, HW, d]
        k = block.k(c).reshape(B, L, heads, d).transpose(1, 2)  # [B, heads, L, d]
        v = block.v(c).reshape(B, L, heads, d).transpose(1, 2)
        logits = q @ k.transpose(-1, -2) / d ** 0.5  # Attention(Q, K, V) = softmax(QK^T / sqrt(d)) V
        logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))
        h = (torch.softmax(logits, -1) @ v).transpose(-1, -2).reshape(B, C, H, W)
        expected = x + block.proj(h)
        torch.testing.assert_close(block(x, c, mask), expected, rtol=1e-10, atol=1e-10)
        sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        torch.testing.assert_close(h, sdpa.transpose(-1, -2).reshape(B, C, H, W), rtol=1e-10, atol=1e-10)


def test_the_mask_removes_padded_tokens_exactly_whatever_they_hold():
    torch.manual_seed(0)
    net = _unet(context_dim=12)
    _perturb(net)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 700])
    c = torch.randn(2, 2, 12)
    real = torch.ones(2, 2, dtype=torch.bool)
    padded_mask = torch.tensor([[True, True, False, False]] * 2)
    with torch.no_grad():
        ref = net(x, t, context=c, context_mask=real)
        assert torch.equal(net(x, t, context=c), ref)  # context_mask None: every token real
        outs = [net(x, t, context=torch.cat([c, junk], 1), context_mask=padded_mask)
                for junk in (torch.zeros(2, 2, 12), 1e3 * torch.randn(2, 2, 12), torch.randn(2, 2, 12))]
    for out in outs:
        assert torch.allclose(out, ref, rtol=0, atol=1e-6)
        assert torch.equal(out, outs[0])  # the junk changes nothing at all
    # and the junk does matter when it is not masked
    with torch.no_grad():
        unmasked = net(x, t, context=torch.cat([c, torch.randn(2, 2, 12)], 1))
    assert not torch.allclose(unmasked, ref, atol=1e-4)


def test_a_context_with_no_real_token_is_attended_to_not_at_all():
    block = _block()
    x = torch.randn(2, 16, 3, 3, dtype=torch.float64)
    c = torch.randn(2, 4, 12, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[False] * 4, [True, True, False, False]])
    out = block(x, c, mask)
    # the attention reads out zero, so only the projection's bias is left of the branch
    torch.testing.assert_close(out[0] - x[0], block.proj.bias[:, None, None].expand(16, 3, 3).detach(), rtol=0, atol=1e-12)
    assert not torch.allclose(out[1] - x[1], block.proj.bias[:, None, None].detach())
    (g,) = torch.autograd.grad(out.sum(), c)
    assert torch.isfinite(g).all() and torch.all(g[0] == 0)  # no NaN from a softmax over nothing


def test_fresh_cross_attention_is_the_identity_until_its_output_projection_moves():
    torch.manual_seed(0)
    net = _unet(context_dim=12)
    _perturb(net, skip=(CrossAttentionBlock,))  # everything but the cross-attention reaches the output
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 700])
    c1, c2 = torch.randn(2, 3, 12), torch.randn(2, 3, 12)
    with torch.no_grad():
        assert torch.equal(net(x, t, context=c1), net(x, t, context=c2))
        for m in net.modules():
            if isinstance(m, CrossAttentionBlock):
                m.proj.weight.normal_(std=0.1)
        assert not torch.allclose(net(x, t, context=c1), net(x, t, context=c2), atol=1e-4)


def test_every_self_attention_gets_a_cross_attention_right_after_it():
    net = _unet(context_dim=12, channels=(16, 32, 32), attn_resolutions=(8, 4))
    blocks = [list(b) for b in [*net.down, net.mid, *net.up]]
    n_self = n_cross = 0
    for layers in blocks:
        for i, layer in enumerate(layers):
            if isinstance(layer, AttentionBlock):
                n_self += 1
                assert isinstance(layers[i + 1], CrossAttentionBlock)
            n_cross += isinstance(layer, CrossAttentionBlock)
    assert n_self == n_cross == 1 + 2 * (1 + 2)  # middle + (down 1 + up 2) at each of 2 levels


def test_7x7_latents_run_with_attention_at_7_and_4_and_gradients_reach_the_context():
    torch.manual_seed(0)
    net = UNet(image_size=7, in_channels=4, channels=(32, 64, 64), num_res_blocks=1, attn_resolutions=(7, 4),
               norm_groups=8, context_dim=16)
    assert sum(isinstance(m, AttentionBlock) for m in net.modules()) == 1 + 3 * 2  # 7 -> 4 -> 2: attention at 7 and 4
    _perturb(net)
    x, c = torch.randn(2, 4, 7, 7), torch.randn(2, 5, 16, requires_grad=True)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    out = net(x, torch.tensor([1, 500]), context=c, context_mask=mask)
    assert out.shape == (2, 4, 7, 7)
    (g,) = torch.autograd.grad(out.pow(2).sum(), c)
    assert g[0].abs().sum() > 0 and g[1, :3].abs().sum() > 0
    assert torch.all(g[1, 3:] == 0)  # padded tokens get no weight, hence no gradient


@pytest.mark.parametrize("size,widths", [(7, (16, 32, 32)), (28, (16, 32, 32, 32)), (5, (16, 16, 16, 16))])
def test_any_image_size_maps_to_itself(size, widths):
    net = UNet(image_size=size, channels=widths, num_res_blocks=1, attn_resolutions=(size,), norm_groups=8)
    _perturb(net)
    with torch.no_grad():
        assert net(torch.randn(1, 1, size, size), torch.tensor([10])).shape == (1, 1, size, size)


def test_upsampling_to_twice_the_size_is_the_old_scale_factor_2():
    up = Upsample(4)
    x = torch.randn(2, 4, 5, 3)
    assert torch.equal(F.interpolate(x, size=(10, 6), mode="nearest"), F.interpolate(x, scale_factor=2.0, mode="nearest"))
    assert torch.equal(up(x), up.conv(F.interpolate(x, scale_factor=2.0, mode="nearest")))
    assert up(x, (9, 5)).shape == (2, 4, 9, 5)


def test_pooled_text_changes_the_output_once_its_linear_is_nonzero():
    torch.manual_seed(0)
    net = _unet(pooled_dim=6)
    assert torch.all(net.pooled_embed.weight == 0) and torch.all(net.pooled_embed.bias == 0)
    _perturb(net)
    for p in net.pooled_embed.parameters():  # the rest random, the pooled linear back at zero
        torch.nn.init.zeros_(p)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 700])
    p1, p2 = torch.randn(2, 6), torch.randn(2, 6)
    with torch.no_grad():
        assert torch.equal(net(x, t, pooled=p1), net(x, t, pooled=p2))
        net.pooled_embed.weight.normal_(std=0.1)
        assert not torch.allclose(net(x, t, pooled=p1), net(x, t, pooled=p2), atol=1e-4)


def test_text_inputs_that_do_not_match_the_network_raise():
    net = _unet(context_dim=12, pooled_dim=6)
    x, t, c, p = torch.randn(2, 1, 8, 8), torch.tensor([1, 2]), torch.randn(2, 3, 12), torch.randn(2, 6)
    with pytest.raises(ValueError, match="pass context"):
        net(x, t, pooled=p)
    with pytest.raises(ValueError, match="pass pooled"):
        net(x, t, context=c)
    with pytest.raises(ValueError, match="context must be"):
        net(x, t, context=torch.randn(2, 3, 7), pooled=p)
    with pytest.raises(ValueError, match="context_mask must be a bool"):
        net(x, t, context=c, context_mask=torch.ones(2, 3, dtype=torch.long), pooled=p)
    plain = _unet()
    with pytest.raises(ValueError, match="no cross-attention"):
        plain(x, t, context=c)
    with pytest.raises(ValueError, match="no pooled"):
        plain(x, t, pooled=p)


def test_without_text_options_the_network_has_no_new_modules():
    torch.manual_seed(0)
    keys = list(_unet().state_dict())
    torch.manual_seed(0)
    text_keys = list(_unet(context_dim=12, pooled_dim=6).state_dict())
    assert not any("pooled" in k for k in keys) and any("pooled" in k for k in text_keys)
    assert len(text_keys) > len(keys)
