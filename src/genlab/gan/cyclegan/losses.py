"""CycleGAN's objective (Zhu et al. 2017, section 3) and its history buffer of generated images.

Notation: G: X -> Y and F: Y -> X the two maps, D_X and D_Y their discriminators (logits ``l``
per patch), x ~ p(X) and y ~ p(Y) unpaired. The full objective (eq. 3) is

    L(G, F, D_X, D_Y) = L_GAN(G, D_Y) + L_GAN(F, D_X) + lambda L_cyc(G, F)

with the cycle-consistency loss (eq. 2)

    L_cyc = E_x ||F(G(x)) - x||_1 + E_y ||G(F(y)) - y||_1

(means over pixels, as the paper's code takes them) and, optionally (section 5.2), the identity
loss lambda_id (E_y ||G(y) - y||_1 + E_x ||F(x) - x||_1). The adversarial loss is

``lsgan``  least squares (Mao et al. 2017; the paper's section 4 choice):
           D: ((l(y) - 1)^2 + l(G(x))^2) / 2 (halved, "to slow down the rate at which D learns");
           G: (l(G(x)) - 1)^2
``ns``     genlab's non-saturating GAN loss on logits (genlab.gan.model, the same formulas):
           D: softplus(-l(y)) + softplus(l(G(x))) = -log D(y) - log(1 - D(G(x)));
           G: softplus(-l(G(x))) = -log D(G(x))

every term a mean over the batch and the patches. D trains on fakes from the history buffer
(:class:`ImagePool`, Shrivastava et al. 2017), not only on the newest ones.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

ADVERSARIAL_LOSSES = ("lsgan", "ns")


def discriminator_loss(loss: str, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """D's loss on its logits for real images and for (pooled) translations, a scalar."""
    real, fake = real_logits.float(), fake_logits.float()
    if loss == "lsgan":
        return ((real - 1).pow(2).mean() + fake.pow(2).mean()) / 2
    if loss == "ns":
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    raise ValueError(f"unknown adversarial loss {loss!r}; choose one of {', '.join(ADVERSARIAL_LOSSES)}")


def generator_loss(loss: str, fake_logits: torch.Tensor) -> torch.Tensor:
    """The translator's adversarial loss on D's logits for its translations, a scalar."""
    fake = fake_logits.float()
    if loss == "lsgan":
        return (fake - 1).pow(2).mean()
    if loss == "ns":
        return F.softplus(-fake).mean()
    raise ValueError(f"unknown adversarial loss {loss!r}; choose one of {', '.join(ADVERSARIAL_LOSSES)}")


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference, in float32."""
    return (a.float() - b.float()).abs().mean()


def cycle_loss(G: Callable, F_: Callable, x: torch.Tensor, y: torch.Tensor, fake_b: torch.Tensor | None = None,
               fake_a: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(||F(G(x)) - x||_1, ||G(F(y)) - y||_1), each a mean over the pixels (eq. 2 before lambda).

    ``fake_b`` = G(x) and ``fake_a`` = F(y) when already computed (the graph then runs through them).
    """
    fake_b = G(x) if fake_b is None else fake_b
    fake_a = F_(y) if fake_a is None else fake_a
    return l1(F_(fake_b), x), l1(G(fake_a), y)


def identity_loss(G: Callable, F_: Callable, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """||G(y) - y||_1 + ||F(x) - x||_1 (section 5.2: a map handed an image of its own target domain keeps it)."""
    return l1(G(y), y) + l1(F_(x), x)


class ImagePool(nn.Module):
    """The history buffer of generated images (Shrivastava et al. 2017, section 2.3; CycleGAN section 4).

    ``query(images, generator)`` returns a batch for the discriminator, image by image: while the
    buffer holds fewer than ``size`` images, the new image is stored and returned; once full, with
    probability 1/2 the new image is returned, and otherwise a stored image chosen uniformly at
    random is returned and replaced by the new one (the paper's code, ``ImagePool.query``). Its
    images and fill count are buffers, so a checkpoint holds them and a resumed run queries the
    same buffer; its randomness (one uniform and one index per image, drawn for every image so the
    stream does not depend on the fill) comes from the generator passed in. ``size`` 0 returns the
    images unchanged and draws nothing.
    """

    images: torch.Tensor  # [size, *shape] float32, the stored translations (buffer)
    count: torch.Tensor  # () int64, how many slots are filled (buffer)

    def __init__(self, size: int, shape: tuple[int, ...]):
        super().__init__()
        self.size = int(size)
        self.register_buffer("images", torch.zeros(self.size, *shape))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def query(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """[B, ...] detached fakes -> [B, ...] float32 images for D (see the class docstring)."""
        if self.size == 0:
            return images.detach().float()
        B = images.shape[0]
        coin = torch.rand(B, generator=generator)
        slot = torch.randint(self.size, (B,), generator=generator)
        out = images.detach().float().clone()
        count = int(self.count)
        for i in range(B):
            if count < self.size:
                self.images[count] = out[i]
                count += 1
            elif coin[i] < 0.5:
                j = int(slot[i])
                old = self.images[j].clone()
                self.images[j] = out[i]
                out[i] = old
        self.count.fill_(count)
        return out
