"""Inpainting with an unconditional DDPM: RePaint (Lugmayr et al. 2022).

Keep the known pixels, generate the rest, for any mask, without retraining. At every
reverse step the known region is drawn from the forward process and the unknown region
from the model (RePaint, Algorithm 1 and eq. (8)):

    x_{t-1}^known   ~ q(x_{t-1} | x_0)                 (DDPM eq. (4); x_0 itself at the last step)
    x_{t-1}^unknown ~ p_theta(x_{t-1} | x_t)           (DDPM Algorithm 2)
    x_{t-1}         = m * x_{t-1}^known + (1 - m) * x_{t-1}^unknown

and, so the two regions agree, the chain is *resampled*: now and then x_{t-1} is diffused
back to x_{t-1+j} with fresh noise (q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I),
RePaint eq. (9)) and denoised again. :func:`repaint_schedule` is RePaint's jump schedule.

Mask convention: ``mask`` is **1 where the pixel is known** (kept from ``x_known``) and 0
where it is generated, shape broadcastable to the images: ``[B or 1, 1 or C, H, W]``.

Notation (paper -> code): r, the resamplings -> ``resample``; j, the jump length ->
``jump_length``; m -> ``mask``; x_0 -> ``x_known``. Timesteps run 0..T-1 as in
:mod:`genlab.diffusion.process`: code index t is the paper's x_{t+1}, and -1 stands for x_0.

Cost: :func:`repaint_network_calls` = T + (r - 1) j ceil((T - j) / j) network calls per image,
about r T. RePaint's defaults are T = 250 (a 1000-step model respaced), r = 10, j = 10: 2410
calls. Cheaper settings: ``resample=1`` (no resampling: the plain replacement method, T calls;
the seams show), or r = 5 with 100 respaced steps (460 calls) for a quick look.
"""

from __future__ import annotations

import itertools

import torch

from genlab.diffusion.grids import full_grid, spaced_grid
from genlab.diffusion.process import Denoiser, GaussianDiffusion, _extract
from genlab.errors import ConfigError
from genlab.progress import progress_bar
from genlab.rng import GeneratorLike, per_sample_generators, randn

RESAMPLE = 10  # RePaint's r (U in Algorithm 1): times each jump point is resampled
JUMP_LENGTH = 10  # RePaint's j: steps diffused back per resampling
STEPS = 250  # RePaint's number of (respaced) timesteps


def repaint_schedule(num_steps: int, jump_length: int = JUMP_LENGTH, resample: int = RESAMPLE) -> list[int]:
    """RePaint's sequence of states, from ``num_steps - 1`` (pure noise) down to -1 (x_0).

    Consecutive entries (t_last, t_cur) are a reverse step when t_cur = t_last - 1 (one network
    call) and a forward jump of one step when t_cur = t_last + 1. At every jump point
    t = 0, j, 2j, ... < T - j the chain goes back up ``jump_length`` steps ``resample - 1`` times
    (the official ``get_schedule_jump`` with ``n_sample = 1``).
    """
    if num_steps < 1 or jump_length < 1 or resample < 1:
        raise ConfigError(f"RePaint needs steps, --jump and --resample of at least 1, not {num_steps}, {jump_length}, {resample}.")
    jumps = {j: resample - 1 for j in range(0, num_steps - jump_length, jump_length)}
    t, ts = num_steps, []
    while t >= 1:
        t -= 1
        ts.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(jump_length):
                t += 1
                ts.append(t)
    ts.append(-1)
    return ts


def repaint_network_calls(num_steps: int, jump_length: int = JUMP_LENGTH, resample: int = RESAMPLE) -> int:
    """Network calls per image of :func:`inpaint`: T + (r - 1) j ceil((T - j) / j)."""
    jump_points = len(range(0, num_steps - jump_length, jump_length))
    return num_steps + (resample - 1) * jump_length * jump_points


def check_mask(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``mask`` as x's dtype and device, or a ConfigError if it cannot broadcast to ``x`` [B, C, H, W]."""
    B, C, H, W = x.shape
    if (mask.dim() != 4 or mask.shape[0] not in (1, B) or mask.shape[1] not in (1, C)
            or tuple(mask.shape[2:]) != (H, W)):
        raise ConfigError(f"the mask has shape {list(mask.shape)} but the images {list(x.shape)}; pass a mask of "
                          f"shape [{B} or 1, {C} or 1, {H}, {W}] (1 = known pixel).")
    return mask.to(device=x.device, dtype=x.dtype)


@torch.no_grad()
def inpaint(
    denoiser: Denoiser, diffusion: GaussianDiffusion, x_known: torch.Tensor, mask: torch.Tensor,
    generator: GeneratorLike = None, steps: int | None = None, jump_length: int = JUMP_LENGTH,
    resample: int = RESAMPLE, clip_denoised: bool = True, progress: bool = False, **cond,
) -> torch.Tensor:
    """RePaint (Lugmayr et al. 2022, Algorithm 1 with the jump schedule of Sec. 4.2).

    Args:
        x_known: ``[B, C, H, W]`` images in model space; only the pixels where ``mask`` is 1 are read.
        mask: 1 = known pixel, 0 = generate; broadcastable ``[B or 1, 1 or C, H, W]``.
        generator: one generator, or a list with one per image (see :func:`genlab.rng.randn`).
        steps: respace ``diffusion`` to this many timesteps (None: all of them; RePaint uses 250).
        jump_length, resample: RePaint's j and r (both 10 in the paper; ``resample=1`` turns
            resampling off). See :func:`repaint_network_calls` for the cost.
        cond: forwarded to the denoiser (e.g. class labels).
    Returns x_0 ``[B, C, H, W]``, equal to ``x_known`` where ``mask`` is 1.
    """
    T = diffusion.num_timesteps
    grid = full_grid(diffusion) if steps is None or steps == T else spaced_grid(diffusion, steps)
    proc = grid.diffusion
    mask = check_mask(mask, x_known)
    times = repaint_schedule(proc.num_timesteps, jump_length, resample)
    B = x_known.shape[0]
    x = randn(x_known.shape, generator, x_known.device, x_known.dtype)  # x_{T-1}, the paper's x_T
    pairs = list(itertools.pairwise(times))
    for t_last, t_cur in (progress_bar(pairs, desc="repaint", leave=False) if progress else pairs):
        t = torch.full((B,), t_last, dtype=torch.long, device=x.device)
        if t_cur < t_last:  # reverse step x_{t} -> x_{t-1}
            out = proc.p_mean_variance(denoiser, x, t, clip_denoised=clip_denoised, **cond)
            if t_cur >= 0:
                # RePaint eq. (8): known part from q(x_{t-1} | x_0), unknown part from p_theta
                known = proc.q_sample(x_known, t - 1, randn(x.shape, generator, x.device, x.dtype))
                unknown = out["mean"] + torch.exp(0.5 * out["log_variance"]) * randn(x.shape, generator, x.device, x.dtype)
            else:  # the last step: x_0 is known exactly, and p_theta adds no noise
                known, unknown = x_known, out["mean"]
            x = mask * known + (1 - mask) * unknown
        else:  # resampling: x_{t+1} ~ q(x_{t+1} | x_t) = N(sqrt(1 - beta) x_t, beta I), RePaint eq. (9)
            beta = _extract(proc.betas, t + 1, x)
            x = (1 - beta).sqrt() * x + beta.sqrt() * randn(x.shape, generator, x.device, x.dtype)
    return x


def _family_check(family) -> None:
    if getattr(family, "levels", 0) == 0:
        raise ConfigError("inpainting needs an image model; this run was trained on continuous points.")
    if getattr(family, "super_resolution", 0):
        raise ConfigError("this is a super-resolution model, which needs a low-resolution image and cannot inpaint; "
                          "inpaint with an ordinary run, or use genlab upscale.")


@torch.no_grad()
def inpaint_images(
    family, images: torch.Tensor, mask: torch.Tensor, seed: int = 0, n: int = 1, steps: int | None = None,
    jump_length: int = JUMP_LENGTH, resample: int = RESAMPLE, batch_size: int = 256, progress: bool = False,
) -> torch.Tensor:
    """Inpaint uint8 ``images`` ``[B, C, H, W]`` (values 0..levels-1) with a DDPM family.

    ``mask``: 1 = known, ``[B or 1, 1 or C, H, W]``. Each image gets ``n`` completions; the
    result is uint8 ``[B * n, C, H, W]``, image-major (row b n + k is completion k of image b).
    Row i depends only on (seed, i) and its image, whatever ``batch_size``.
    """
    from genlab.data.transforms import from_model, to_model

    _family_check(family)
    if images.dim() != 4 or tuple(images.shape[1:]) != tuple(family.shape):
        raise ConfigError(f"the images have shape {list(images.shape)} but the model makes {list(family.shape)}; "
                          f"pass images of that size.")
    if n < 1:
        raise ConfigError(f"the number of completions per image must be at least 1, not {n}.")
    device = next(family.net.parameters()).device
    x_known = to_model(images, family.levels).repeat_interleave(n, dim=0)
    mask = check_mask(mask.float(), images.float())
    mask = mask.expand(images.shape[0], *mask.shape[1:]).repeat_interleave(n, dim=0)
    out = []
    for start in range(0, len(x_known), batch_size):
        b = min(batch_size, len(x_known) - start)
        x0 = inpaint(family.denoiser, family.diffusion, x_known[start : start + b].to(device),
                     mask[start : start + b].to(device), per_sample_generators(seed, start, b), steps=steps,
                     jump_length=jump_length, resample=resample, clip_denoised=True, progress=progress)
        out.append(x0.float().cpu())
    return from_model(torch.cat(out), family.levels)


MASKS = ("left", "right", "top", "bottom", "center", "half", "random")


def named_mask(name: str, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A ready-made mask ``[1, 1, H, W]`` (1 = known); the name says which region is *generated*.

    left / right / top / bottom: that half of the image; center: the central square of half
    the side; half: every second row (RePaint's "alternating lines", half of the pixels);
    random: each pixel with probability 1/2 (drawn from ``seed``).
    """
    H, W = height, width
    unknown = torch.zeros(H, W, dtype=torch.bool)
    if name == "left":
        unknown[:, : W // 2] = True
    elif name == "right":
        unknown[:, W // 2 :] = True
    elif name == "top":
        unknown[: H // 2] = True
    elif name == "bottom":
        unknown[H // 2 :] = True
    elif name == "center":
        unknown[H // 4 : H // 4 + H // 2, W // 4 : W // 4 + W // 2] = True
    elif name == "half":
        unknown[1::2] = True
    elif name == "random":
        unknown = torch.rand(H, W, generator=torch.Generator().manual_seed(seed)) < 0.5
    else:
        raise ConfigError(f"unknown mask {name!r}; pass a mask image (white = known) or one of {', '.join(MASKS)}.")
    return (~unknown).float()[None, None]
