"""The one training loop, for every family.

A family is a registered :class:`genlab.family.Family`: an ``nn.Module`` whose
``forward(batch, generator)`` returns a dict of per-example loss terms (``"loss"`` is
optimised), with ``sample(n, seed=...)`` (only called when sample grids are written) and
the capabilities it declares as class attributes, which the Trainer reads instead of
probing. Given ``labels``, the Trainer calls ``forward(batch, generator, labels=...)`` with
the batch's labels (class-conditional models, classifiers). A ``shardable`` family trains in
several processes: its ``forward`` also takes ``shard=(rows, B)``; ``batch`` is then the
slice ``rows`` of a global batch of B examples, and the family draws its randomness for all
B rows and keeps these (see below). A family whose ``sample_options`` include ``"sampler"``
draws its grids with ``--grid-sampler`` and ``--grid-steps``; a grid has ``preview_count``
samples. The Trainer owns everything else: AdamW with warm-up, gradient clipping, EMA,
mixed precision and devices (through Accelerate), checkpoints, ``metrics.jsonl``,
sample grids and the progress bar.

A ``custom_step`` family's update is not one loss (a GAN's alternating discriminator and
generator steps). It has two methods: ``optimizer_groups()`` returns ``{name: {"params":
[...], "lr": ..., "betas": (b1, b2)}}`` (one AdamW per name, each with its own peak rate, all
warmed up together), and ``train_step(batch, generator, labels, step, update)`` does one
step of the loop, calling ``update(name, loss)`` to back-propagate ``loss`` and step the
optimiser ``name`` (with clipping), as often as its algorithm says; it returns the dict
of terms to log. Such families train in one process.

Determinism: the data order of step s is a function of (seed, s) alone, and the noise
generator and torch's global RNG (dropout) are saved in every checkpoint, so
``resume`` continues exactly where the run stopped.

Several processes (``accelerate launch``, ``torchrun``, ``genlab train --processes N``):
``batch_size`` is the global batch B, and process r of N trains on rows
[r B/N, (r+1) B/N) of the batch one process would take (:func:`shard_rows`). Every
process holds the same noise generator and draws t and eps for all B rows, so each row
gets the noise it would get in one process; DDP averages the gradients of the equal
shards, which is the gradient of the mean over B. N processes therefore train the same
parameters as one (up to float rounding), and checkpoints move freely between the two.
The first process alone writes checkpoints, ``metrics.jsonl`` (the loss averaged over
all processes), sample grids and the progress bar.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import torch
from torch import nn

from genlab import tracking
from genlab.config import RunConfig
from genlab.errors import ConfigError, TrainingError
from genlab.progress import progress_bar
from genlab.run import RunDir
from genlab.training.checkpoint import (
    load_checkpoint,
    load_into,
    optimizer_from_tensors,
    optimizer_to_tensors,
    save_checkpoint,
)
from genlab.training.ema import EMA

if TYPE_CHECKING:
    from genlab.family import Family


class CustomStepFamily(Protocol):
    """What a ``custom_step`` family adds to :class:`genlab.family.Family` (module docstring)."""

    def optimizer_groups(self) -> dict[str, dict[str, Any]]: ...

    def train_step(self, batch: torch.Tensor, generator: torch.Generator, labels: torch.Tensor | None, step: int,
                   update: Callable[[str, torch.Tensor], None]) -> dict[str, torch.Tensor]: ...


def batch_indices(num_items: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """Indices of the batch for ``step``: epoch e is a permutation seeded by (seed, e); last partial batch dropped."""
    per_epoch = num_items // batch_size
    epoch, i = divmod(step, per_epoch)
    perm = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return perm[i * batch_size:(i + 1) * batch_size]


def shard_rows(batch_size: int, rank: int, num_processes: int) -> slice:
    """The rows of a global batch that process ``rank`` of ``num_processes`` trains on.

    Equal, contiguous and disjoint, in rank order, so together they are the whole batch.
    """
    if batch_size % num_processes:
        raise ConfigError(f"{{train.batch_size}} {batch_size} does not split evenly over {num_processes} processes; "
                          f"pass a {{train.batch_size}} that is a multiple of {num_processes}.")
    n = batch_size // num_processes
    return slice(rank * n, (rank + 1) * n)


def check_batch(family: nn.Module, cfg: RunConfig, num_examples: int, num_processes: int) -> None:
    """Raise a ConfigError unless the global batch fits the data and ``family`` can split it over the processes."""
    B = cfg.train.batch_size
    if B > num_examples:
        raise ConfigError(f"{{train.batch_size}} {B} is larger than the training set ({num_examples} examples); pass a smaller {{train.batch_size}}.")
    shard_rows(B, 0, num_processes)
    if num_processes > 1 and not family.shardable:
        raise ConfigError(f"the {cfg.family} family trains in one process only; drop --processes "
                          f"(and accelerate launch or torchrun).")


class Trainer:
    """Train ``family`` on ``data`` (a tensor of examples) into ``run_dir``.

    Args:
        family: the model with its objective (see module docstring).
        cfg: the run's resolved config (``cfg.train`` drives the loop).
        run_dir: where ``config.json``, ``checkpoints/``, ``samples/`` and ``metrics.jsonl`` go.
        data: training examples, uint8 images ``[N, C, H, W]`` or float points ``[N, D]``.
        save_samples: ``(samples, path)`` -> writes a grid or plot of ``family.sample`` output.
        progress: show a tqdm progress bar.
        labels: int64 labels ``[N]`` of ``data``, passed to the family with each batch (None: not passed).
        monitor: ``(ema_family, step) -> dict`` measured at each sample grid and at the end, logged as
            ``{"event": "monitor", ...}`` (e.g. a GAN's mode-collapse monitor).
        monitor_every: steps between monitor calls (0: ``sample_every``).
    """

    def __init__(self, family: nn.Module, cfg: RunConfig, run_dir: str | Path, data: torch.Tensor,
                 save_samples: Callable[[torch.Tensor, Path], object] | None = None, progress: bool = True,
                 labels: torch.Tensor | None = None, monitor: Callable[[nn.Module, int], dict] | None = None,
                 monitor_every: int = 0):
        if cfg.train.mixed_precision == "auto":  # made concrete, so config.json records what ran
            from genlab.precision import choose

            chosen = choose("auto", "cuda" if torch.cuda.is_available() else "cpu")[0]
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, mixed_precision=chosen))
        self.cfg = cfg
        self.monitor = monitor
        self.monitor_every = monitor_every or cfg.train.sample_every
        self.tc = tc = cfg.train
        self.run_dir = Path(run_dir)
        self.rundir = RunDir(run_dir)  # its layout
        self.data = data
        self.labels = labels
        if labels is not None and len(labels) != len(data):
            raise ValueError(f"{len(labels)} labels for {len(data)} examples")
        self.save_samples = save_samples
        self.progress = progress
        self.accelerator = acc = _accelerator(tc.mixed_precision, tc.log_with, self.run_dir)
        check_batch(family, cfg, len(data), acc.num_processes)
        self.rows = shard_rows(tc.batch_size, acc.process_index, acc.num_processes)
        if acc.num_processes > 1:
            # DDP compares strides literally: a 1x1 conv's [C, C, 1, 1] gradient may carry other strides
            # in its size-1 dimensions, with the same memory layout, and no cost
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        groups: dict[str, dict[str, Any]] = cast("CustomStepFamily", family).optimizer_groups() if family.custom_step else {
            "": {"params": list(family.parameters()), "lr": tc.lr}}
        self.base_lr = {name: g.get("lr", tc.lr) for name, g in groups.items()}
        optimizers = [torch.optim.AdamW(g["params"], lr=g.get("lr", tc.lr), betas=g.get("betas", (0.9, 0.999)),
                                        weight_decay=tc.weight_decay) for g in groups.values()]
        self.model, *optimizers = self.accelerator.prepare(family, *optimizers)
        self.optimizers = dict(zip(groups, optimizers, strict=True))
        self.ema = EMA(self.unwrapped, tc.ema_decay)
        # the same generator in every process: each draws the noise of the whole global batch
        self.noise_gen = torch.Generator().manual_seed(tc.seed + 1)
        # dropout draws from the global RNG (saved in checkpoints); it is not sharded like the
        # noise, so with dropout > 0 several processes match one process only in distribution
        torch.manual_seed(tc.seed + 2)
        self.step = 0
        self.tracker_open = False  # whether the tracker of --log-with is open (start_tracking)

    @property
    def unwrapped(self) -> nn.Module:
        return self.accelerator.unwrap_model(self.model)

    @property
    def is_main(self) -> bool:
        """Whether this is the process that writes (the only one in a one-process run)."""
        return self.accelerator.is_main_process

    # ----- checkpoints -------------------------------------------------------------------
    def checkpoint_path(self, step: int) -> Path:
        return self.rundir.checkpoint_path(step)

    def save(self) -> Path:
        """Write a checkpoint of this step (the unwrapped model: the same file from any number of processes)."""
        tensors = {f"model.{k}": v for k, v in self.unwrapped.state_dict().items()}
        tensors.update({f"ema.{k}": v for k, v in self.ema.model.state_dict().items()})
        meta: dict[str, Any] = {"step": self.step, "config": self.cfg.to_json()}  # save_checkpoint str()s each value
        for name, optimizer in self.optimizers.items():  # one optimiser: optim.*; several: optim_NAME.*
            optim_tensors, param_groups = optimizer_to_tensors(optimizer, _optim_prefix(name))
            tensors.update(optim_tensors)
            meta[f"{_optim_prefix(name)}_param_groups"] = param_groups
        tensors["rng.noise"] = self.noise_gen.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        path = self.checkpoint_path(self.step)
        save_checkpoint(path, tensors, meta)
        for _, old in self.rundir.checkpoints()[:-max(1, self.tc.keep_checkpoints)]:
            old.unlink(missing_ok=True)
        return path

    def load(self, path: Path) -> None:
        """Restore model, EMA, optimiser, RNG state and step from a checkpoint."""
        tensors, meta = load_checkpoint(path)
        load_into(self.unwrapped, tensors, "model.", path)
        load_into(self.ema.model, tensors, "ema.", path)
        for name, optimizer in self.optimizers.items():
            prefix = _optim_prefix(name)
            optimizer.load_state_dict(optimizer_from_tensors(tensors, meta[f"{prefix}_param_groups"], prefix))
        self.noise_gen.set_state(tensors["rng.noise"])
        torch.set_rng_state(tensors["rng.torch"])
        self.step = int(meta["step"])

    # ----- the loop ----------------------------------------------------------------------
    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The optimiser of a one-loss family."""
        return self.optimizers[""]

    def lr_at(self, step: int, peak: float | None = None) -> float:
        """Linear warm-up to the peak rate (default ``--lr``), then constant (DDPM)."""
        return (self.tc.lr if peak is None else peak) * min(1.0, (step + 1) / max(1, self.tc.warmup))

    def update(self, name: str, loss: torch.Tensor, terms: dict[str, torch.Tensor] | None = None) -> None:
        """Back-propagate ``loss`` and step the optimiser ``name`` (clipped), then clear its gradients.

        A NaN or inf loss stops training here, before it reaches the weights, with one sentence naming the step,
        the first non-finite term of ``terms`` (else the optimiser's loss) and what to try; no checkpoint is
        written, so the last one on disk is the last good one.
        """
        if not torch.isfinite(loss):
            bad = next((k for k, v in (terms or {}).items() if k != "loss" and not torch.isfinite(v.detach().float()).all()), None)
            what = f"its term {bad!r}" if bad else (f"the {name} loss" if name else "the loss")
            last = self.rundir.checkpoints()
            resume = (f"resume from the last good checkpoint {last[-1][1].name}" if last
                      else "start again (no checkpoint was written yet)")
            raise TrainingError(
                f"the loss became {loss.item()} at step {self.step + 1} ({what} first); lower {{train.lr}} (now "
                f"{self.tc.lr:g}) or use {{train.mixed_precision}} no, then {resume}."
            )
        optimizer = self.optimizers[name]
        self.accelerator.backward(loss)  # DDP averages the gradients over the processes' equal shards
        if self.tc.grad_clip > 0:
            params = [p for g in optimizer.param_groups for p in g["params"]]
            self.accelerator.clip_grad_norm_(params, self.tc.grad_clip)
        optimizer.step()
        # every optimiser's gradients: a loss reaches the other player's parameters too (a GAN's D loss through G)
        for other in self.optimizers.values():
            other.zero_grad(set_to_none=True)

    def run_monitor(self) -> None:
        if self.monitor is None or not self.is_main:
            return
        with self.accelerator.autocast():
            result = self.monitor(self.ema.model, self.step)
        if result:
            self.log({"event": "monitor", "step": self.step, **result})

    def write_samples(self, tag: str) -> Path | None:
        if self.save_samples is None or not self.is_main:
            return None
        tc = self.tc
        family = cast("Family", self.ema.model)
        sampling: dict[str, Any] = {"sampler": tc.grid_sampler, "steps": tc.grid_steps} if "sampler" in family.sample_options else {}
        with self.accelerator.autocast():  # the same precision as genlab sample
            samples = family.sample(family.preview_count, seed=tc.seed, **sampling)
        path = self.rundir.grid_path(tag)
        self.save_samples(samples, path)
        if self.tracker_open:
            tracking.log_image(self.accelerator, "samples", path, self.step)
        return path

    def log(self, record: dict) -> None:
        """Append ``record`` to metrics.jsonl, and send its numbers to the tracker of ``--log-with``."""
        if self.is_main:
            self.rundir.append_metrics(record)
        self.track(record)

    def track(self, record: dict) -> None:
        """Send a record's numbers to the tracker of ``--log-with`` only (one metrics.jsonl already holds)."""
        if self.is_main and self.tracker_open:
            tracking.log_record(self.accelerator, record)

    def start_tracking(self) -> None:
        """Open the tracker of ``--log-with`` (none: nothing), the run's settings as its hyperparameters."""
        if self.tc.log_with == "none" or self.tracker_open:
            return
        self.accelerator.init_trackers(tracking.PROJECT, config=tracking.hyperparameters(self.cfg.to_dict()),
                                       init_kwargs=tracking.init_options(self.tc.log_with, self.step))
        self.tracker_open = True

    def end_tracking(self) -> None:
        """Flush and close the tracker (the event files are complete after this)."""
        if self.tracker_open:
            self.accelerator.end_training()
            self.tracker_open = False

    def mean_over_processes(self, values: dict[str, float]) -> dict[str, float]:
        """``values`` averaged over all processes (each holds the mean over its equal shard)."""
        if self.accelerator.num_processes == 1:
            return values
        x = torch.tensor(list(values.values()), dtype=torch.float64, device=self.accelerator.device)
        return dict(zip(values, self.accelerator.reduce(x, "mean").tolist(), strict=True))

    def fit(self) -> dict:
        """Train until ``cfg.train.steps``; returns a summary (steps, seconds, checkpoint, last grid, ``stopped``).

        ``stopped`` is None, or why training ended early with a checkpoint of the step it reached:
        ``"time budget"`` (``train.max_minutes``), ``"SIGINT"`` or ``"SIGTERM"``.
        """
        with _stop_requests() as requested:
            return self._fit(requested)

    def _fit(self, requested: list[str | None]) -> dict:
        tc = self.tc
        acc = self.accelerator
        acc.wait_for_everyone()  # every process has checked the run directory before the first writes to it
        if self.is_main:
            self.rundir.write_config(self.cfg)
        self.start_tracking()
        device = acc.device
        shard = {} if acc.num_processes == 1 else {"shard": (self.rows, tc.batch_size)}
        start_step = self.step
        bar = progress_bar(total=tc.steps, initial=start_step, disable=not (self.progress and self.is_main), unit="step")
        t_start = t_log = time.perf_counter()
        window: dict[str, float] = {}
        window_n = 0
        own_step = self.unwrapped.custom_step
        self.model.train()
        t_ckpt = t_start
        stopped = None
        while self.step < tc.steps:
            idx = batch_indices(len(self.data), tc.batch_size, tc.seed, self.step)[self.rows]
            batch = self.data[idx].to(device, non_blocking=True)
            for name, optimizer in self.optimizers.items():
                for group in optimizer.param_groups:
                    group["lr"] = self.lr_at(self.step, self.base_lr[name])
            lr = self.lr_at(self.step)
            extra = {} if self.labels is None else {"labels": self.labels[idx].to(device, non_blocking=True)}
            if own_step:
                with acc.autocast():
                    terms = cast("CustomStepFamily", self.unwrapped).train_step(batch, self.noise_gen, extra.get("labels"), self.step, self.update)
            else:
                with acc.autocast():
                    terms = self.model(batch, self.noise_gen, **extra, **shard)
                self.update("", terms["loss"].float().mean(), terms)
            self.step += 1
            self.ema.update(self.unwrapped, self.step)  # in every process (the same weights); main writes it

            for k, v in terms.items():
                window[k] = window.get(k, 0.0) + v.detach().float().mean().item()
            window_n += 1
            bar.update(1)
            if self.step % tc.log_every == 0 or self.step == tc.steps:
                now = time.perf_counter()
                ips = window_n * tc.batch_size / (now - t_log)
                means = self.mean_over_processes({k: v / window_n for k, v in window.items()})
                record = {"step": self.step, **means, "lr": lr,
                          "images_per_s": ips, "time_s": now - t_start}
                self.log(record)
                bar.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{ips:.0f}")
                window, window_n, t_log = {}, 0, now
            if tc.checkpoint_every and self.step % tc.checkpoint_every == 0 and self.step < tc.steps and self.is_main:
                self.save()
            if tc.sample_every and self.step % tc.sample_every == 0 and self.step < tc.steps:
                self.write_samples(f"step_{self.step:07d}")
                t_log = time.perf_counter()  # sampling time is not training throughput
            if self.monitor_every and self.step % self.monitor_every == 0 and self.step < tc.steps:
                self.run_monitor()
                t_log = time.perf_counter()
            now = time.perf_counter()
            if tc.checkpoint_minutes and now - t_ckpt >= 60 * tc.checkpoint_minutes and self.step < tc.steps and self.is_main:
                self.save()  # by the clock too: a kill loses at most about checkpoint_minutes of work
                t_ckpt = time.perf_counter()
            budget = bool(tc.max_minutes) and now - t_start >= 60 * (tc.max_minutes or 0)
            stopped = self._agree_to_stop(requested[0] or ("time budget" if budget else None))
            if stopped and self.step < tc.steps:
                break
            stopped = None
        bar.close()
        train_seconds = time.perf_counter() - t_start
        ckpt = self.save() if self.is_main else self.checkpoint_path(self.step)
        acc.wait_for_everyone()  # no process finishes before the last checkpoint exists
        summary = {"steps": self.step, "trained_steps": self.step - start_step, "seconds": train_seconds,
                   "checkpoint": ckpt, "grid": None, "stopped": stopped}
        if stopped:  # not finished: no final grid or monitor, --resume continues from ckpt
            return summary
        summary["grid"] = self.write_samples(f"step_{self.step:07d}")
        self.run_monitor()
        return summary

    def _agree_to_stop(self, reason: str | None) -> str | None:
        """``reason`` to stop, the same in every process (any process's reason stops all of them at this step)."""
        if self.accelerator.num_processes == 1:
            return reason
        codes = {None: 0, "time budget": 1, "SIGINT": 2, "SIGTERM": 3}
        flag = torch.tensor([float(codes.get(reason, 1))], device=self.accelerator.device)
        top = int(self.accelerator.gather(flag).max().item())
        return {v: k for k, v in codes.items()}.get(top)


@contextlib.contextmanager
def _stop_requests():
    """While training: SIGINT and SIGTERM set ``requested[0]`` (the loop then checkpoints and stops) instead of
    killing the process mid-step; a second signal of the same kind acts as usual. Main thread only."""
    requested: list[str | None] = [None]
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return
    previous = {}

    def handler(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if requested[0] == name:  # asked twice: stop now
            signal.signal(signum, previous[signum])
            signal.raise_signal(signum)
        requested[0] = name

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield requested
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _accelerator(mixed_precision: str, log_with: str = "none", run_dir: Path | None = None):
    """An Accelerator with this precision, even if an earlier Trainer in this process chose another,
    logging to the tracker ``log_with`` (:mod:`genlab.tracking`) in ``run_dir``.

    Accelerate keeps one process-wide state and refuses a second precision; the process
    (distributed) part of it is kept, only the precision part is reset.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from genlab.training.launch import join_restarted_group

    join_restarted_group()  # a worker torchrun restarted: meet only this attempt's workers

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision", mixed_precision) != mixed_precision:
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=mixed_precision, cpu=not torch.cuda.is_available(),
                       **tracking.accelerator_options(log_with, run_dir or Path(".")))


def _optim_prefix(name: str) -> str:
    return "optim" if not name else f"optim_{name}"


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


