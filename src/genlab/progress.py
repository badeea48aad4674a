"""Progress bars that stay readable in a terminal and in a log file."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(iterable=None, **kwargs) -> tqdm:
    """tqdm that redraws often on a terminal but writes a line only every 10 s to a file or pipe."""
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("mininterval", 0.1 if sys.stderr.isatty() else 10.0)
    return tqdm(iterable, **kwargs)
