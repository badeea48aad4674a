"""What every figure shares: the Agg pyplot, JSON-able numbers, and writing ``NAME.png`` + ``NAME.json``.

Both files are written atomically (a temporary file renamed into place), the PNG first and
the JSON last, so a figure whose JSON exists is complete.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from genlab.io import atomic_write, atomic_write_text


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def jsonable(x, digits: int = 6):
    """``x`` with numpy/torch arrays as lists and floats to ``digits`` significant digits (NaN/inf as None)."""
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        x = x.tolist()
    if isinstance(x, dict):
        return {str(k): jsonable(v, digits) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v, digits) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        v = float(x)
        return float(f"{v:.{digits}g}") if math.isfinite(v) else None
    return x


def save(fig, numbers: dict, out_dir: str | Path, name: str) -> dict:
    """Write ``fig`` to ``out_dir/name.png`` and ``numbers`` to ``out_dir/name.json``; close ``fig``.

    Returns the JSON-able numbers with ``png`` and ``json`` (the paths written) added.
    """
    plt = pyplot()
    out_dir = Path(out_dir)
    png, js = out_dir / f"{name}.png", out_dir / f"{name}.json"
    try:
        atomic_write(png, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
    result = {"figure": name, **jsonable(numbers), "png": str(png), "json": str(js)}
    atomic_write_text(js, json.dumps(result, indent=1) + "\n")
    return result
