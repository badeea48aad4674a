"""Checkpoints as safetensors: model, EMA, optimiser state, step and RNG state in one file.

No pickle anywhere: loading a checkpoint never runs code. Files are written to a
temporary name in the same directory and renamed, so a crash never leaves a
half-written checkpoint. The run's config travels in the file's metadata too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from genlab.errors import RunError
from genlab.io import atomic_write

FORMAT = "genlab-checkpoint-1"
_STEP_FILE = re.compile(r"^step_(\d+)\.safetensors$")


def optimizer_to_tensors(optimizer: torch.optim.Optimizer, prefix: str = "optim") -> tuple[dict[str, torch.Tensor], str]:
    """Flatten an optimiser state dict into tensors named ``PREFIX.state.*`` plus JSON for the param groups."""
    sd = optimizer.state_dict()
    tensors = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            tensors[f"{prefix}.state.{idx}.{key}"] = torch.as_tensor(value).detach().clone().contiguous()
    return tensors, json.dumps(sd["param_groups"])


def optimizer_from_tensors(tensors: dict[str, torch.Tensor], param_groups_json: str, prefix: str = "optim") -> dict:
    state: dict[int, dict[str, torch.Tensor]] = {}
    head = f"{prefix}.state."
    for name, value in tensors.items():
        if name.startswith(head):
            idx, key = name[len(head):].split(".", 1)
            state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": json.loads(param_groups_json)}


def save_checkpoint(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write ``tensors`` (made contiguous, detached, CPU) with string ``metadata``, atomically."""
    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {"format": FORMAT, **{k: str(v) for k, v in metadata.items()}}
    atomic_write(Path(path), lambda tmp: save_file(clean, tmp, metadata=meta))


def load_checkpoint(path: Path, prefix: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read tensors (all, or those starting with ``prefix``) and metadata from a checkpoint."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            keys = [k for k in f.keys() if prefix is None or k.startswith(prefix)]
            tensors = {k: f.get_tensor(k) for k in keys}
    except (SafetensorError, OSError, ValueError) as e:
        raise RunError(f"checkpoint {path} cannot be read ({e}); it is corrupt or not a genlab checkpoint: delete it to fall back to an earlier one.") from None
    if meta.get("format") != FORMAT:
        raise RunError(f"{path} is not a genlab checkpoint (format {meta.get('format')!r}); pass a run directory written by genlab train.")
    return tensors, meta


def checkpoint_name(step: int) -> str:
    """The file name of the checkpoint of ``step`` (``step_0000800.safetensors``)."""
    return f"step_{step:07d}.safetensors"


def checkpoint_files(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint file in the folder ``ckpt_dir``, oldest first (none if it is missing).

    Where that folder lies in a run directory is :class:`genlab.run.RunDir`'s business.
    """
    ckpt_dir = Path(ckpt_dir)
    found = []
    if ckpt_dir.is_dir():
        for p in ckpt_dir.iterdir():
            m = _STEP_FILE.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
    return sorted(found)


def load_into(module: torch.nn.Module, tensors: dict[str, torch.Tensor], prefix: str, source: Path) -> None:
    """Load ``prefix``-ed tensors into ``module`` strictly; a mismatch is a RunError."""
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        what = (f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}" if unexpected
                else f"shape of {wrong[0]} is {tuple(state[wrong[0]].shape)}, expected {tuple(expected[wrong[0]].shape)}")
        raise RunError(f"checkpoint {source} does not match the model its config.json describes ({what}); restore the run's original config.json or retrain.")
    module.load_state_dict(state, strict=True)
