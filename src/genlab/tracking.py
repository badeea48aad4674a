"""Experiment tracking through Accelerate's trackers: what ``metrics.jsonl`` logs, plus the sample grids.

``genlab train --log-with tensorboard`` writes TensorBoard event files under ``RUN/logs/genlab/``
(``tensorboard --logdir RUN/logs``); ``--log-with wandb`` logs to Weights & Biases, offline unless
``WANDB_MODE`` says otherwise (``wandb sync RUN/wandb/offline-run-*`` uploads it later). metrics.jsonl
stays the record genlab itself reads; a tracker receives a copy of each record, its numbers as scalars
named ``EVENT/FIELD`` (``train/loss``, ``eval/fid``, ``monitor/recall``), at the record's step.

Nothing here imports a tracking package before it is asked for, and :func:`require` says in one
sentence which package to install when it is missing.
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import Any

TRACKERS = ("none", "tensorboard", "wandb")
PROJECT = "genlab"  # Accelerate's project name: TensorBoard's subfolder of RUN/logs, wandb's project
LOG_DIR = "logs"  # under the run directory

_PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}
# fields of a record that are not measurements
_NOT_SCALARS = {"step", "schema", "seed", "n", "bpd_n", "steps", "nfe_per_step", "batch_size"}


def require(name: str) -> None:
    """A ConfigError if the package of tracker ``name`` is not installed (said before any data is read).

    Whether ``name`` is a tracker at all is the config's check (:func:`genlab.config.validate`).
    """
    from genlab.errors import ConfigError

    if name not in _PACKAGES:
        return
    module, package = _PACKAGES[name]
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{{train.log_with}} {name} needs the {package} package, which is not installed; "
                          f"pip install 'genlab[track]' (or {package}), or use {{train.log_with}} none.")


def accelerator_options(name: str, run_dir: str | Path) -> dict[str, Any]:
    """The ``Accelerator(...)`` keyword arguments of tracker ``name`` logging into ``run_dir``."""
    if name == "none":
        return {}
    from accelerate.utils import ProjectConfiguration

    if name == "wandb":
        os.environ.setdefault("WANDB_MODE", "offline")  # nothing leaves the machine unless asked
        os.environ.setdefault("WANDB_DIR", str(run_dir))
    return {"log_with": name,
            "project_config": ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(Path(run_dir) / LOG_DIR))}


def init_options(name: str, step: int) -> dict[str, dict]:
    """``init_trackers(init_kwargs=...)``: a resumed TensorBoard run drops the events past its checkpoint's ``step``
    (the steps it trains again), as metrics.jsonl drops their rows (``RunDir.rewind_log``)."""
    return {"tensorboard": {"purge_step": step + 1}} if name == "tensorboard" and step > 0 else {}


def hyperparameters(config: dict) -> dict[str, bool | int | float | str]:
    """A RunConfig's dict flattened to ``section.field`` -> a value every tracker takes (tuples and None as text)."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in hyperparameters(value).items()})
        elif isinstance(value, (bool, int, float, str)):
            out[key] = value
        else:
            out[key] = "none" if value is None else ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return out


def scalars(record: dict) -> dict[str, float]:
    """The measurements of a metrics.jsonl record as ``EVENT/FIELD`` -> float (a training-log row's event is ``train``)."""
    event = record.get("event", "train")
    return {f"{event}/{k}": float(v) for k, v in record.items()
            if k not in _NOT_SCALARS and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def log_record(accelerator, record: dict) -> None:
    """Send ``record`` (as :func:`scalars`) to the accelerator's trackers, at its step."""
    values = scalars(record)
    if accelerator.trackers and values:
        accelerator.log(values, step=int(record.get("step", 0)))


def log_image(accelerator, name: str, path: str | Path, step: int) -> None:
    """The PNG at ``path`` (a sample grid) to every tracker, as image ``name`` at ``step``."""
    if not accelerator.trackers:
        return
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        array = np.asarray(im.convert("RGB"))  # H x W x 3 uint8
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({name: array[None]}, step=step, dataformats="NHWC")
        elif tracker.name == "wandb":
            tracker.log_images({name: [array]}, step=step)
