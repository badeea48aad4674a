"""Super-resolution: a DDPM conditioned on a low-resolution image (SR3, Saharia et al. 2021;
the cascaded diffusion of Ho et al. 2021).

A model trained with ``--super-res f`` (``DiffusionConfig.super_resolution = f``) learns
p(x | low_res) for images x of H x W. The low-resolution image is x averaged over f x f
blocks (area downsampling) and rounded back to the data's grey levels, so a uint8 low-res
image from disk and the conditioning seen in training are the same thing. The network
sees it upsampled back to H x W with **bilinear** interpolation (``align_corners=False``)
and concatenated to x_t as extra input channels (``UNet(cond_channels=C)``, passed as the
``low_res=`` keyword). Any sampler works: they all pass ``cond`` on to the denoiser.

No noise conditioning augmentation (Ho et al. 2021, Sec. 4.2): the model is trained on
clean low-res images, which is what :func:`upscale` gives it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genlab.data.transforms import to_model
from genlab.errors import ConfigError

UPSAMPLE_MODE = "bilinear"  # how the low-res conditioning is brought to the target size


def check_factor(shape, factor: int, data_name: str = "the data") -> None:
    """Refuse a factor that does not divide the image size (or data that are not images)."""
    if factor == 0:
        return
    if len(shape) != 3:
        raise ConfigError(f"{{diffusion.super_resolution}} needs images, and {data_name} is not an image dataset; drop {{diffusion.super_resolution}}.")
    if factor < 2 or shape[1] % factor or shape[2] % factor:
        raise ConfigError(f"{{diffusion.super_resolution}} {factor} must be at least 2 and divide the image size {shape[1]}x{shape[2]}; "
                          f"choose a divisor such as 2.")


def downsample(images: torch.Tensor, factor: int) -> torch.Tensor:
    """uint8 ``[B, C, H, W]`` -> uint8 ``[B, C, H/f, W/f]``: the mean of each f x f block, rounded.

    Grey levels are unchanged (values stay in 0..levels-1), so no ``levels`` is needed.
    """
    low = F.avg_pool2d(images.to(torch.float64), factor)
    return torch.round(low).to(torch.uint8)


def condition(low_res: torch.Tensor, factor: int, levels: int) -> torch.Tensor:
    """uint8 low-res ``[B, C, h, w]`` -> the network's conditioning ``[B, C, h f, w f]`` in [-1, 1].

    Model space (:func:`genlab.data.transforms.to_model`), then bilinear upsampling by ``factor``.
    """
    x = to_model(low_res, levels)
    return F.interpolate(x, scale_factor=factor, mode=UPSAMPLE_MODE, align_corners=False)


def low_res_shape(family) -> tuple[int, int, int]:
    """(C, H/f, W/f): the size of the images a super-resolution family upscales."""
    C, H, W = family.shape
    f = family.super_resolution
    return (C, H // f, W // f)


@torch.no_grad()
def upscale(family, low_res: torch.Tensor, seed: int = 0, sampler: str = "ancestral", steps: int | None = None,
            eta: float = 0.0, batch_size: int = 256, progress: bool = False, spacing: str = "uniform") -> torch.Tensor:
    """Super-resolve uint8 ``low_res`` ``[N, C, H/f, W/f]`` with a family trained with ``--super-res f``.

    Runs any sampler of :func:`genlab.diffusion.sampling.sample` with the conditioning
    ``low_res=condition(low_res)``; output i depends only on (seed, i) and low-res image i.
    Returns uint8 ``[N, C, H, W]`` (values 0..levels-1).
    """
    f = getattr(family, "super_resolution", 0)
    if not f:
        raise ConfigError("this model is not a super-resolution model (it was trained without {{diffusion.super_resolution}}); "
                          "train one with genlab train {{diffusion.super_resolution}} 2.")
    want = low_res_shape(family)
    if low_res.dim() != 4 or tuple(low_res.shape[1:]) != want:
        raise ConfigError(f"low-resolution images must have shape [N, {want[0]}, {want[1]}, {want[2]}], not "
                          f"{list(low_res.shape)}; downsample by {f} first.")
    return family.sample(len(low_res), seed=seed, sampler=sampler, steps=steps, eta=eta, batch_size=batch_size,
                         progress=progress, spacing=spacing, low_res=condition(low_res, f, family.levels))


def bicubic(low_res: torch.Tensor, factor: int, levels: int) -> torch.Tensor:
    """The baseline: Pillow's BICUBIC resize of uint8 low-res ``[N, C, h, w]`` by ``factor``.

    Resized per channel on the grey-level values (mode "F", no trip through 0..255), then
    rounded and clipped to 0..levels-1. Returns uint8 ``[N, C, h f, w f]``.
    """
    import numpy as np
    from PIL import Image

    N, C, h, w = low_res.shape
    out = np.empty((N, C, h * factor, w * factor), dtype=np.float32)
    arr = low_res.numpy().astype(np.float32)
    for i in range(N):
        for c in range(C):
            img = Image.fromarray(arr[i, c]).resize((w * factor, h * factor), Image.BICUBIC)  # type: ignore[attr-defined]  # float32: mode "F"; Pillow sets BICUBIC by setattr (Image.Resampling needs >= 9.1, we allow 9.0)
            out[i, c] = np.asarray(img)
    return torch.from_numpy(np.clip(np.round(out), 0, levels - 1).astype(np.uint8))


def set_preview(family, images: torch.Tensor) -> None:
    """Give an SR family low-res versions of some training images to upscale in its progress grids."""
    family.preview_count = min(family.preview_count, len(images))
    family.preview_low_res = downsample(images[: family.preview_count], family.super_resolution)
