"""Run directories: what ``genlab train`` writes and ``genlab sample`` / ``eval`` / ``report`` read.

:class:`RunDir` is the one owner of a run directory's layout::

    RUN/config.json                          everything needed to rebuild the model (a RunConfig)
    RUN/checkpoints/step_0000800.safetensors model, EMA, optimiser state, step, RNG state
    RUN/samples/step_0000800.png             progress grids
    RUN/metrics.jsonl                        training logs and evaluations, one JSON record a line

An exported folder (``genlab export``, :mod:`genlab.export`) has the same ``config.json`` and, instead
of checkpoints, ``model.safetensors`` with one set of weights; :meth:`RunDir.load` reads either.

Records carry a schema version (:data:`SCHEMA`); :func:`upgrade_record` is the one place that
turns an older record into the current form, so readers never guess at old field names.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from genlab.config import RunConfig, from_dict
from genlab.errors import ConfigError, GenlabError, RunError
from genlab.io import atomic_write_text, refused_writes
from genlab.training.checkpoint import checkpoint_files, checkpoint_name, load_checkpoint, load_into

# Version 1: the records of issues 2-6, where a bits/dim-only evaluation (and the evaluation at the end
# of training) named its image count, split and time "n", "split", "seconds", and "weights" could be
# missing. Version 2 always has "bpd_n", "bpd_split", "bpd_seconds" beside "bpd" and "weights".
SCHEMA = 2

MODEL_FILE = "model.safetensors"  # an exported folder's weights
MODEL_FORMAT = "genlab-model-1"


def upgrade_record(record: dict) -> dict:
    """``record`` (of any schema version) in the current schema: a new dict, the original untouched."""
    r = dict(record)
    version = int(r.get("schema", 1))
    if version > SCHEMA:
        raise RunError(f"a metrics record has schema {version}, newer than this genlab's {SCHEMA}; upgrade genlab.")
    if version < 2 and r.get("event") == "eval":
        if "bpd" in r and "bpd_n" not in r:
            r["bpd_n"], r["bpd_split"] = r.get("n"), r.get("split")
            if "seconds" in r:
                r["bpd_seconds"] = r["seconds"]
        r.setdefault("weights", "ema")
    r["schema"] = SCHEMA
    return r


class RunDir:
    """A run directory: its paths, its config, its checkpoints and its metrics records."""

    CONFIG = "config.json"
    CHECKPOINTS = "checkpoints"
    SAMPLES = "samples"
    METRICS = "metrics.jsonl"
    LOCK = ".lock"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # ----- layout ------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def samples_dir(self) -> Path:
        return self.path / self.SAMPLES

    @property
    def metrics_path(self) -> Path:
        return self.path / self.METRICS

    def checkpoint_path(self, step: int) -> Path:
        return self.checkpoints_dir / checkpoint_name(step)

    def grid_path(self, tag: str) -> Path:
        return self.samples_dir / f"{tag}.png"

    @property
    def model_path(self) -> Path:
        """An exported folder's weights (``genlab export``)."""
        return self.path / MODEL_FILE

    def exists(self) -> bool:
        """Whether a run (or an exported folder) lives here: it has a config.json."""
        return self.config_path.is_file()

    def is_export(self) -> bool:
        """Whether this is an inference-only folder written by ``genlab export`` (weights, no checkpoints)."""
        return self.model_path.is_file() and not self.checkpoints_dir.is_dir()

    # ----- config ------------------------------------------------------------------------------
    def read_config(self) -> RunConfig:
        path = self.config_path
        if not self.path.is_dir():
            raise RunError(f"{self.path} is not a directory; pass a run directory written by genlab train.")
        if not path.is_file():
            raise RunError(f"{self.path} is not a genlab run (no config.json); pass a run directory written by genlab train.")
        try:
            cfg = from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunError(f"{path} is not valid JSON ({e}); restore it from the checkpoint's metadata or retrain.") from None
        except GenlabError as e:
            raise RunError(f"{path} is not a valid genlab config: {e.template}") from None
        if not cfg.data.shape:
            raise RunError(f"{path} does not record the data shape; it was not written by genlab train.")
        return cfg

    def write_config(self, cfg: RunConfig) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.config_path, cfg.to_json() + "\n")

    # ----- checkpoints -------------------------------------------------------------------------
    def checkpoints(self) -> list[tuple[int, Path]]:
        """(step, path) of every checkpoint, oldest first."""
        return checkpoint_files(self.checkpoints_dir)

    def latest_checkpoint(self) -> Path:
        if self.is_export():
            return self.model_path
        found = self.checkpoints()
        if not found:
            raise RunError(f"{self.path} has no checkpoints/step_*.safetensors; train it first (genlab train --out {self.path}).")
        return found[-1][1]

    def load(self, weights: str = "ema", checkpoint: str | Path | None = None, device: str | torch.device = "cpu"):
        """(config, family in eval mode with the chosen weights on ``device``, checkpoint path, step).

        ``weights`` is ``"ema"`` (what sampling and evaluation use) or ``"model"``.
        """
        if weights not in ("ema", "model"):
            raise ValueError(f"weights must be 'ema' or 'model', not {weights!r}")
        cfg = self.read_config()
        check_model_size(cfg, "load")
        family = build_family(cfg)
        if self.is_export() and checkpoint is None:
            tensors, meta = _load_exported(self.model_path)
            if meta.get("weights", "ema") != weights:
                raise RunError(f"{self.path} is an exported folder holding only its {meta.get('weights', 'ema')} weights; "
                               f"use those (weights={meta.get('weights', 'ema')!r}) or the run directory it was exported from.")
            load_into(family, tensors, "", self.model_path)
            return cfg, family.to(device).eval().requires_grad_(False), self.model_path, int(meta.get("step", 0))
        path = Path(checkpoint) if checkpoint else self.latest_checkpoint()
        tensors, meta = load_checkpoint(path, prefix=f"{weights}.")
        load_into(family, tensors, f"{weights}.", path)
        return cfg, family.to(device).eval().requires_grad_(False), path, int(meta.get("step", 0))

    # ----- metrics -----------------------------------------------------------------------------
    def append_metrics(self, record: dict) -> dict:
        """Append one record to metrics.jsonl in the current schema; returns it as written."""
        written = upgrade_record(record)
        with refused_writes(self.metrics_path):
            self.path.mkdir(parents=True, exist_ok=True)
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(written) + "\n")
        return written

    def records(self) -> list[dict]:
        """Every record of metrics.jsonl, upgraded to the current schema (none if there is no file yet)."""
        path = self.metrics_path
        if not path.is_file():
            return []
        out = []
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.append(upgrade_record(json.loads(line)))
            except json.JSONDecodeError:
                raise RunError(f"{path} line {i} is not JSON; remove that line or restore the file.") from None
        return out

    def evaluations(self) -> list[dict]:
        return [r for r in self.records() if r.get("event") == "eval"]

    # ----- one writer at a time ----------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, enabled: bool = True):
        """Hold ``.lock`` in the run directory (an advisory ``flock``) while training writes to it.

        A second process asking for it gets a RunError at once, naming the holder's pid; the lock
        goes with the process, so a killed run leaves nothing to clean (an unlocked ``.lock`` is
        harmless), and a directory this call created is removed again if nothing was written to it. Where ``fcntl`` does not
        exist (Windows), or with ``enabled`` false (the other processes of a launch), it is a no-op.
        """
        try:
            import fcntl
        except ImportError:
            fcntl = None  # type: ignore[assignment]
        if not enabled or fcntl is None:
            yield
            return
        created = [d for d in (self.path, *self.path.parents) if not d.exists()]  # leaf first
        lock_path = self.path / self.LOCK
        with refused_writes(self.path):  # a training run's first write: a read-only or full disk is said before any data is read
            self.path.mkdir(parents=True, exist_ok=True)
            f = open(lock_path, "a+")  # closed by the with below
        with f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "unknown"
                raise RunError(f"{self.path} is being written by another genlab process (pid {holder}); wait for it to "
                               f"finish or stop it, or choose another --out.") from None
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
            try:
                yield
            finally:
                lock_path.unlink(missing_ok=True)  # still held: no other process can be inside
                fcntl.flock(f, fcntl.LOCK_UN)
                for d in created:  # a run that failed before writing anything leaves no directory
                    if any(d.iterdir()):
                        break
                    d.rmdir()

    # ----- what a stopped process leaves -------------------------------------------------------
    def clean_partial_writes(self) -> list[Path]:
        """Remove the temporary files of writes a killed process never finished (``.NAME.*.tmp``); returns them."""
        found = [p for d in (self.path, self.checkpoints_dir, self.samples_dir) if d.is_dir()
                 for p in d.glob(".*.tmp") if p.is_file()]
        for p in found:
            p.unlink(missing_ok=True)
        return found

    def rewind_log(self, step: int) -> int:
        """Drop the training-log rows of metrics.jsonl after ``step`` (a resume from there writes them again).

        Evaluations are kept (they measured a checkpoint that exists or existed), and so is everything
        up to ``step``; a last line cut short by a kill is dropped. Returns how many lines went.
        """
        path = self.metrics_path
        if not path.is_file():
            return 0
        lines = path.read_text().splitlines()
        kept = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                if i == len(lines) - 1:  # the line a kill cut short
                    continue
                raise RunError(f"{path} line {i + 1} is not JSON; remove that line or restore the file.") from None
            if r.get("event") == "eval" or r.get("step", 0) <= step:
                kept.append(line)
        dropped = len([x for x in lines if x.strip()]) - len(kept)
        if dropped:
            atomic_write_text(path, "".join(x + "\n" for x in kept))
        return dropped


def _load_exported(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of an exported folder's ``model.safetensors`` (safetensors: no code runs)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise RunError(f"{path} cannot be read ({e}); export the run again (genlab export RUN DIR).") from None
    if meta.get("format") != MODEL_FORMAT:
        raise RunError(f"{path} is not a genlab export (format {meta.get('format')!r}); pass a folder written by genlab export.")
    return tensors, meta


# ----- functions of a run directory (the names earlier genlab code and users know) ------------


def append_metrics(run_dir: str | Path, record: dict) -> None:
    """Append one JSON line to ``RUN/metrics.jsonl`` (training logs and evaluations alike)."""
    RunDir(run_dir).append_metrics(record)


def read_run_config(run_dir: str | Path) -> RunConfig:
    return RunDir(run_dir).read_config()


def family_class(name: str) -> Any:
    """The class of family ``name`` (:func:`genlab.family.family_class`), imported on demand."""
    from genlab.family import family_class as lookup

    try:
        return lookup(name)
    except GenlabError as e:
        raise RunError(e.template.replace("unknown model family", "unknown model family in config.json")) from None


# bytes of memory per parameter: to load (fp32 weights) and to train (weights, EMA, gradient, two AdamW moments)
BYTES_PER_PARAMETER = {"load": 4, "train": 20}


def memory_bytes() -> int | None:
    """This machine's physical memory in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_model_size(cfg: RunConfig, purpose: str = "load") -> int | None:
    """Refuse, in one sentence, a config whose model would not fit in this machine's memory, before it is built.

    The family is built on the ``meta`` device (shapes only, no memory) to count its parameters; an
    edited config.json with widths of 100000 is said here instead of the process being killed while
    allocating. Returns the parameter count (None when the family cannot be built on ``meta``).
    """
    try:
        with torch.device("meta"):
            family = build_family(cfg)
    except GenlabError:
        raise
    except Exception:  # noqa: BLE001 - a family that computes while it is built: measured when it is built for real
        return None
    n = sum(p.numel() for p in family.parameters())
    need, have = n * BYTES_PER_PARAMETER[purpose], memory_bytes()
    if have and need > have:
        m = cfg.model
        raise ConfigError(f"this config describes a {cfg.family} model of {n:.3g} parameters, which needs about "
                          f"{need / 2**30:,.0f} GiB to {purpose} in fp32, more than this machine's {have / 2**30:.0f} GiB; "
                          f"check its sizes ({{model.channels}} is {','.join(map(str, m.channels))}) in config.json or start a new run.")
    return n


def build_family(cfg: RunConfig) -> torch.nn.Module:
    """The family ``cfg.family`` with fresh weights, built from the config alone."""
    return family_class(cfg.family).from_config(cfg)


def load_run(run_dir: str | Path, weights: str = "ema", checkpoint: str | Path | None = None,
             device: str | torch.device = "cpu"):
    """:meth:`RunDir.load`: (config, family in eval mode, checkpoint path, step)."""
    return RunDir(run_dir).load(weights, checkpoint, device)


def compile_network(net: torch.nn.Module) -> None:
    """Compile ``net``'s forward pass with ``torch.compile`` (inductor), in place, for sampling.

    Only ``forward`` is compiled, so hooks on the module (genlab's count of network
    evaluations) still run. Shapes are static: each batch shape compiles once (30-60 s for
    the MNIST U-Net on 2 CPU cores; inductor's on-disk cache makes the next time a few
    seconds), then every evaluation runs the fused kernels (``benchmarks/sample_latency.py
    --compile``). Dynamic shapes were 2x slower here. The values agree with eager execution
    to within bf16/fp32 rounding.

    Inductor's freezing is on (for this compile only): called without gradients, as every
    sampler calls it, the weights become constants of the compiled graph, so oneDNN's
    convolutions get their weights prepacked once (and in bf16 once, not cast per call) and
    fused with what follows them. Weights are read at the first call of each shape:
    compile after loading them, never before training them.
    """
    net.forward = torch.compile(net.forward, dynamic=False, options={"freezing": True})  # type: ignore[method-assign]


def load_classifier(run_dir: str | Path, model_cfg: RunConfig, weights: str = "ema", device: str | torch.device = "cpu"):
    """The EMA classifier of a ``genlab train classifier`` run, checked against the model it will guide.

    Returns (config, :class:`NoisyClassifier` in eval mode). The classifier must have been
    trained on the same data and the same noise schedule (T and beta schedule) as the model:
    it is called with the model's x_t and timestep index.
    """
    cfg = read_run_config(run_dir)
    if cfg.family != "classifier":
        raise ConfigError(f"{run_dir} is a {cfg.family} run, not a classifier; pass a run written by genlab train classifier.")
    md, cd = model_cfg.diffusion, cfg.diffusion
    if cfg.data.name != model_cfg.data.name or tuple(cfg.data.shape) != tuple(model_cfg.data.shape):
        raise ConfigError(f"the classifier {run_dir} was trained on {cfg.data.name} but the model on {model_cfg.data.name}; "
                          f"train a classifier with {{data.name}} {model_cfg.data.name}.")
    if (cd.timesteps, cd.schedule) != (md.timesteps, md.schedule):
        raise ConfigError(f"the classifier {run_dir} was trained on the {cd.schedule} schedule with T={cd.timesteps} but the model "
                          f"uses {md.schedule} with T={md.timesteps}; train it with {{diffusion.timesteps}} {md.timesteps} {{diffusion.schedule}} {md.schedule}.")
    _, family, _, _ = load_run(run_dir, weights=weights, device=device)
    return cfg, family
