"""Image and mask arguments of ``genlab inpaint`` and ``genlab upscale``: --image FILE or test:INDEX, --mask."""

from __future__ import annotations

from pathlib import Path

from genlab.errors import ConfigError


def read_picture(path: Path, channels: int, what: str):
    """uint8 [C, H, W] pixels (0..255) of an image file, as grey (C = 1) or RGB (C = 3)."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist; pass a PNG or JPEG file.")
    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("L" if channels == 1 else "RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise ConfigError(f"{what} {path} is not an image Pillow can read ({e}); pass a PNG or JPEG file.") from None
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def image_arg(spec: str, cfg, sizes: list, hint: str):
    """(uint8 [1, C, h, w] in 0..levels-1, "test" if it came from the test split else None) for --image.

    ``sizes``: the (h, w) an image file may have; ``hint``: the size to suggest when it has another.
    """
    import torch

    from genlab.evaluate import load_split

    if spec.startswith("test:"):
        try:
            index = int(spec[5:])
        except ValueError:
            raise ConfigError(f"--image {spec} needs an integer index, as in test:0.") from None
        ds = load_split(cfg, "test")
        if not 0 <= index < len(ds):
            raise ConfigError(f"--image {spec} is out of range: the {cfg.data.name} test split has {len(ds)} images (0..{len(ds) - 1}).")
        return ds.images[index : index + 1], "test"
    C = cfg.data.shape[0]
    pixels = read_picture(Path(spec), C, "image")
    h, w = pixels.shape[1:]
    if (h, w) not in sizes:
        raise ConfigError(f"image {spec} is {w}x{h} pixels but {cfg.data.name} runs take {hint}; resize it to {hint}.")
    k = cfg.data.levels - 1
    return torch.round(pixels.float() * k / 255).to(torch.uint8)[None], None


def mask_arg(spec: str, H: int, W: int, seed: int):
    """float [1, 1, H, W], 1 = known, from a named mask or a mask image (white >= 128 = known)."""
    from genlab.diffusion.inpaint import MASKS, named_mask

    if spec in MASKS:
        return named_mask(spec, H, W, seed)
    if not Path(spec).is_file():
        raise ConfigError(f"mask {spec} is neither an image file nor a named mask; pass a PNG (white = known pixel) "
                          f"or one of {', '.join(MASKS)}.")
    pixels = read_picture(Path(spec), 1, "mask")
    if tuple(pixels.shape[1:]) != (H, W):
        raise ConfigError(f"mask {spec} is {pixels.shape[2]}x{pixels.shape[1]} pixels but the image is {W}x{H}; "
                          f"pass a {W}x{H} mask (white = known) or one of {', '.join(MASKS)}.")
    return (pixels >= 128).float()[None]
