"""Randomness as a parameter (STYLE.md, "Take" 12): no global RNG in library code.

``generator`` is either one ``torch.Generator`` for the whole batch or a list with one
generator per sample; with a list, each sample depends only on its own generator, so the
same seeds give the same samples whatever the batch size (:func:`per_sample_generators`
makes such a list from one seed, as EDM gives each image its own seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np
import torch

GeneratorLike = torch.Generator | Sequence[torch.Generator] | None


def per_sample_generators(seed: int, start: int, count: int) -> list[torch.Generator]:
    """One CPU generator per sample index ``start .. start+count-1`` for ``seed``.

    Sample i's stream depends only on (seed, i) (EDM gives each image its own seed).
    """
    gens = []
    for i in range(start, start + count):
        state = np.random.SeedSequence([seed, i]).generate_state(1, dtype=np.uint64)[0]
        gens.append(torch.Generator().manual_seed(int(state) & ((1 << 63) - 1)))
    return gens


def randn(shape, generator: GeneratorLike, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise of ``shape`` ([B, ...]); with a list, row b comes from generator b."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
        rows = [torch.randn(tuple(shape[1:]), generator=g, dtype=dtype) for g in generator]
        return torch.stack(rows).to(device)
    # not a list or tuple: one generator or None (a GeneratorLike sequence is a list or tuple)
    gen = cast("torch.Generator | None", generator)
    return torch.randn(tuple(shape), generator=gen, dtype=dtype).to(device)
