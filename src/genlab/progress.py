"""Progress bars that stay readable in a terminal and in a log file."""

from __future__ import annotations

import math
import sys

from tqdm.auto import tqdm


def progress_bar(iterable=None, **kwargs) -> tqdm:
    """tqdm that redraws often on a terminal but writes a line only every 10 s to a file or pipe."""
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("mininterval", 0.1 if sys.stderr.isatty() else 10.0)
    return tqdm(iterable, **kwargs)

def fmt_seconds(s: float) -> str:
    """Seconds as the progress lines say them: 45s, 3m07s (rounded up)."""
    m, s = divmod(math.ceil(s), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"
