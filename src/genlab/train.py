"""``genlab.train(cfg, run_dir)``: train a family into a run directory and evaluate it, from Python.

The library call behind ``genlab train``: load the data, fill the data's shape into the
config (so the run describes itself), build the family, run the one Trainer loop, then the
evaluation at the end of training (the test bits/dim of a family with a likelihood, the
accuracy of a noise-conditional classifier, FID/KID/precision/recall of 1000 samples for a
family that samples in one pass). Every step is logged to ``RUN/metrics.jsonl``::

    import genlab
    cfg = genlab.config.resolve("digits", cli_overrides={"train": {"steps": 200}})
    summary = genlab.train(cfg, "runs/digits-200")
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from genlab import tracking
from genlab.config import RunConfig, resolve
from genlab.errors import ConfigError, GenlabError, render
from genlab.evaluate import (
    QUALITY_AFTER_TRAINING,
    SamplingSpec,
    describe_bpd,
    draw_samples,
    is_diffusion,
    load_split,
    measure_bpd,
    measure_quality,
)
from genlab.progress import fmt_seconds
from genlab.run import RunDir, build_family, check_model_size

# what a resumed run may change: its training settings (e.g. the step count) and where its data lives
RESUMABLE: dict[str, set[str] | None] = {"train": None, "data": {"root"}, "cyclegan": {"data_b_root"}}


def examples(ds) -> torch.Tensor:
    """A dataset's examples: images [N, C, H, W] uint8, or points [N, D] float."""
    return ds.points if hasattr(ds, "points") else ds.images


def describe_data(cfg: RunConfig, ds) -> RunConfig:
    """The config with the dataset's shape, levels and classes filled in (so the run describes itself)."""
    info = ds.info
    shape = tuple(examples(ds).shape[1:])
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, shape=shape, levels=info.levels, num_classes=info.num_classes))


def resume_config(run_dir: str | Path, file_overrides: dict | None = None, overrides: dict | None = None) -> RunConfig:
    """The saved config of ``run_dir`` with the changes a resumed run may make (:data:`RESUMABLE`).

    Raises ConfigError for a change of data, model or process (start a new run instead).
    """
    saved = RunDir(run_dir).read_config().to_dict()
    file_overrides, overrides = file_overrides or {}, overrides or {}

    given = {s: {**file_overrides.get(s, {}), **overrides.get(s, {})} for s in {*file_overrides, *overrides}}
    typed = resolve(saved["data"]["name"], saved, given, family=saved["family"]).to_dict() if given else saved
    for section, values in given.items():
        allowed = RESUMABLE.get(section, set())
        # the unchanged training command, repeated with --resume, gives the saved values back
        bad = [k for k in values if allowed is not None and k not in allowed
               and json.dumps(typed.get(section, {}).get(k), default=str) != json.dumps(saved.get(section, {}).get(k), default=str)]
        if bad:
            raise ConfigError(f"{{{{{section}.{bad[0]}}}}} cannot change when resuming; start a new run with another --out instead.")
    changes = {s: {**file_overrides.get(s, {}), **overrides.get(s, {})} for s in RESUMABLE}
    return resolve(saved["data"]["name"], saved, {s: v for s, v in changes.items() if v}, family=saved["family"])


def prepare(cfg: RunConfig, fresh: bool = True):
    """(config with the data described, the training split, the family with fresh weights from ``train.seed``).

    A family may fill in settings that come from elsewhere (``prepare_config(cfg)``, e.g. the text tower
    of a CLIP run, so config.json records them) and, on a fresh start only (``fresh``), take weights from
    elsewhere (``initialize(cfg)``); a resumed run gets everything from its checkpoint.
    """
    from genlab.family import family_class

    train_ds = load_split(cfg, "train")
    cfg = describe_data(cfg, train_ds)
    cls = family_class(cfg.family)
    if hasattr(cls, "prepare_config"):
        cfg = cls.prepare_config(cfg)
    check_model_size(cfg, "train")
    with torch.random.fork_rng():
        torch.manual_seed(cfg.train.seed)
        family = build_family(cfg)
    initialize = getattr(family, "initialize", None)
    if fresh and callable(initialize):
        initialize(cfg)
    return cfg, train_ds, family


_PRECISION_NAME = {"no": "fp32", "bf16": "bf16", "fp16": "fp16"}


def _precision(cfg: RunConfig) -> tuple[RunConfig, str]:
    """(``cfg`` with ``auto`` precision made concrete for the training device, so config.json records it; why)."""
    from genlab import precision

    device = "cuda" if torch.cuda.is_available() else "cpu"  # where Accelerate trains
    if cfg.train.mixed_precision not in precision.CHOICES:  # fp16: Accelerate's, GPU only
        return cfg, "as asked"
    chosen, why = precision.choose(cfg.train.mixed_precision, device)
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, mixed_precision=chosen)), why


def train(cfg: RunConfig, run_dir: str | Path, resume: bool = False, progress: bool = True,
          say: Callable[[str], None] | None = None, evaluate: bool = True) -> dict:
    """Train ``cfg`` into ``run_dir`` (``resume``: from its latest checkpoint) and evaluate it.

    Returns the Trainer's summary (``steps``, ``seconds``, ``checkpoint``, ``grid``) with the
    records of the evaluation after training under ``evaluations``. ``say`` prints progress lines
    (default: print them, settings named as ``section.field``; only the first of several processes speaks).
    """
    say = say or (lambda text: print(render(text)))
    run = RunDir(run_dir)
    if run.path.exists() and not run.path.is_dir():
        raise ConfigError(f"the run directory {run.path} is an existing file; give a new or existing directory instead.")
    with run.lock(enabled=_first_process()):  # a second genlab train on this directory refuses, never interleaves
        return _train(cfg, run, resume, progress, say, evaluate)


def _first_process() -> bool:
    """Whether this is the first (or only) process of a launch: the one that holds the run's lock."""
    import os

    return int(os.environ.get("RANK", "0")) == 0


def _train(cfg: RunConfig, run: RunDir, resume: bool, progress: bool, say: Callable[[str], None], evaluate: bool) -> dict:
    from genlab.training.trainer import Trainer, count_parameters
    from genlab.viz import save_samples

    if not resume and run.exists():
        raise ConfigError(f"{run.path} already holds a run; pass --resume to continue it or choose another --out.")
    tracking.require(cfg.train.log_with)  # a missing tracking package is said before the data is read
    if cfg.data.shape:  # a resumed run's recorded config: an absurd edit is said before the data is read
        check_model_size(cfg, "train")
    found = run.checkpoints() if resume else []
    ckpt = found[-1][1] if found else None
    t0 = time.perf_counter()
    cfg, train_ds, family = prepare(cfg, fresh=ckpt is None)
    cfg, why_precision = _precision(cfg)
    if cfg.diffusion.super_resolution:  # its progress grids upscale training images
        from genlab.diffusion.superres import set_preview

        set_preview(family, examples(train_ds))
    levels = cfg.data.levels
    reference = None if levels else examples(train_ds)[:2000]
    monitor, monitor_every = _coverage_monitor(family, cfg, train_ds) if family.coverage_monitor else (None, 0)
    trainer = Trainer(family, cfg, run.path, examples(train_ds),
                      save_samples=(lambda x, path: save_samples(x, path, levels, reference)) if family.sampler_names else None,
                      progress=progress, labels=_labels(family, train_ds),
                      monitor=monitor, monitor_every=monitor_every)
    say = say if trainer.is_main else (lambda *a, **k: None)  # one process speaks for all
    if trainer.is_main:  # what a killed process left: half-written files, log rows a resume writes again
        run.clean_partial_writes()
    if ckpt:
        trainer.load(ckpt)
        say(f"genlab: resuming {run.path} from step {trainer.step} ({ckpt.name})")
    elif resume:
        say(f"genlab: {run.path} has no checkpoint yet (it stopped before its first); starting it from step 0 "
            f"with its recorded config")
    if resume and trainer.is_main:
        run.rewind_log(trainer.step)
    own, size = tuple(examples(train_ds).shape[1:]), "x".join(map(str, cfg.data.shape))
    what = f"{len(train_ds)} images {'x'.join(map(str, own))}, {train_ds.info.levels} levels" if levels else f"{len(train_ds)} points"
    if levels and (own != tuple(cfg.data.shape) or train_ds.info.levels != levels):  # a CycleGAN's common space
        what += f", modelled at {size} with {levels} levels"
    n = trainer.accelerator.num_processes
    batch = f"{cfg.train.batch_size}" + (f" ({cfg.train.batch_size // n} in each of {n} processes)" if n > 1 else "")
    say(f"genlab: training {cfg.family} on {cfg.data.name} ({what}), {count_parameters(family) / 1e6:.2f}M parameters, "
        f"{cfg.train.steps} steps at batch {batch}, precision {_PRECISION_NAME[cfg.train.mixed_precision]} ({why_precision})")
    say(f"genlab: run directory {run.path}")
    try:
        summary = trainer.fit()
        if not trainer.is_main:
            return {**summary, "evaluations": []}  # the first process alone reports and evaluates
        if summary["stopped"]:
            say(f"genlab: stopped by {summary['stopped']} at step {summary['steps']} of {cfg.train.steps} after "
                f"{fmt_seconds(summary['seconds'])}; checkpoint {summary['checkpoint']}; continue with: "
                f"genlab train --resume --out {run.path}")
            return {**summary, "evaluations": []}
        say(f"genlab: trained to step {summary['steps']} in {fmt_seconds(summary['seconds'])}; "
            f"checkpoint {summary['checkpoint']}")
        if summary["grid"]:
            say(f"genlab: samples {summary['grid']}")
        records = evaluate_after_training(trainer.ema.model, cfg, run, summary["steps"], progress, say) if evaluate else []
        for record in records:
            trainer.track(record)
        say(f"genlab: done in {fmt_seconds(time.perf_counter() - t0)}; {_next_step(family, cfg, run)}")
        return {**summary, "evaluations": records}
    finally:
        trainer.end_tracking()
        leave_process_group()


def _labels(family, ds) -> torch.Tensor | None:
    """What the Trainer hands the family with each batch: class labels, caption tokens, or nothing."""
    if not family.uses_labels:
        return None
    if family.uses_text:
        if not hasattr(ds, "tokens"):
            raise ConfigError(f"the {family.name} family trains on captioned images, and {ds.info.name} has no captions; "
                              f"use a captioned dataset such as mnist-captions.")
        return ds.tokens
    return ds.labels


def _next_step(family, cfg: RunConfig, run: RunDir) -> str:
    if not family.sampler_names:
        return family.how_to_use(str(run.path))
    if cfg.diffusion.super_resolution:
        return f"sample more with: genlab upscale {run.path} --image test:0"
    return f"sample more with: genlab sample {run.path}"


def evaluate_after_training(family, cfg: RunConfig, run: RunDir, step: int, progress: bool = True,
                            say: Callable[[str], None] = print) -> list[dict]:
    """The evaluation that ends training (EMA weights), logged to metrics.jsonl and said; its records.

    A classifier: its test accuracy. A family with a likelihood: the test bits/dim (``train.eval_bpd``,
    ``train.eval_limit`` images, a diffusion bound with ``train.eval_t_samples``). A family that samples
    in one pass (``quality_after_training``): FID/KID/precision/recall of 1000 samples, when the data
    has a shipped feature network. A failure to load the test split is said, not raised: training
    itself succeeded.
    """
    records: list[dict] = []
    tc = cfg.train
    wants_test = (not family.sampler_names) or (tc.eval_bpd and family.has_likelihood and cfg.data.levels > 0)
    test = None
    if wants_test:
        try:
            test = load_split(cfg, "test")
        except GenlabError as e:
            say(f"genlab: no test {'accuracy' if not family.sampler_names else 'bits/dim'}: {e.template}")
    if test is not None and not family.sampler_names:  # a family that draws no samples measures itself
        result = family.test_metrics(test, limit=tc.eval_limit, seed=tc.seed)
        records.append({"event": "eval", "step": step, "split": "test", "weights": "ema", **result})
        say(f"genlab: {family.describe_test_metrics(result)}")
    elif test is not None:
        images = test.images[: tc.eval_limit] if tc.eval_limit else test.images
        options: dict[str, Any] = {"t_samples": tc.eval_t_samples} if is_diffusion(family) else {}
        result = measure_bpd(family, cfg, images, progress, **options)
        records.append({"event": "eval", "step": step, "split": "test", "weights": "ema", **result})
        if "prior_bpd" in result:  # a diffusion bound: its three parts
            how = "" if result["t_samples"] is None else \
                f" +- {result['bpd_se']:.4f} (stratified estimate, {result['t_samples']} timesteps per image)"
            say(f"genlab: test bits/dim {result['bpd']:.4f}{how} (L_T {result['prior_bpd']:.4f} + sum L_t-1 "
                f"{result['diffusion_bpd']:.4f} + L_0 {result['decoder_bpd']:.4f}; {result['n']} images, EMA) "
                f"in {fmt_seconds(result['seconds'])}")
        else:
            say(f"genlab: test {describe_bpd(result)} ({result['n']} images, EMA) in {fmt_seconds(result['seconds'])}")
    records = [run.append_metrics(r) for r in records]
    if family.quality_after_training:
        record = _quality_after_training(family, cfg, run, step, progress, say)
        if record:
            records.append(record)
    return records


def _quality_after_training(family, cfg: RunConfig, run: RunDir, step: int, progress: bool, say) -> dict | None:
    """FID, KID and precision/recall of 1000 EMA samples against the training split, logged as ``genlab eval``
    would: such a family samples in one pass (or one Gibbs chain), so this costs seconds, and every family
    then has its row in ``genlab report`` (skipped for data without a feature network)."""
    from genlab.metrics.features import NETWORK_FOR, load_feature_network

    if cfg.data.name not in NETWORK_FOR or not cfg.data.levels:
        return None
    spec = SamplingSpec(n=QUALITY_AFTER_TRAINING, seed=cfg.train.seed, default_sampler="ddim")
    x, protocol = draw_samples(family, cfg, spec, step, progress)
    labels = torch.arange(len(x)) % family.num_classes if getattr(family, "num_classes", 0) else None
    q = measure_quality(x, cfg, ("fid", "kid", "pr"), labels=labels, fnet=load_feature_network(cfg.data.name),
                        seed=cfg.train.seed, progress=progress)
    record = {"event": "eval", "metric": "fid,kid,pr", **q, **protocol, "data": cfg.data.name, "weights": "ema",
              "step": step, "mixed_precision": cfg.train.mixed_precision}
    record = run.append_metrics(record)
    say(f"genlab: FID {record['fid']:.3f}, KID {record['kid']:.5f}, precision {record['precision']:.3f}, recall "
        f"{record['recall']:.3f} ({record['n']} EMA samples against the {cfg.data.name} training split; "
        f"{record['seconds_per_sample'] * 1e3:.2f} ms per sample)")
    return record


def _coverage_monitor(family, cfg: RunConfig, train_ds):
    """The mode-collapse monitor (recall and class coverage of 1000 samples) of a family that declares it, every
    ``family.monitor_every`` steps (0: at each sample grid), if the data has a shipped feature network."""
    from genlab.metrics.features import NETWORK_FOR, load_feature_network

    if cfg.data.name not in NETWORK_FOR:
        return None, 0
    from genlab.gan.monitor import coverage_monitor
    from genlab.metrics.evaluate import reference_features

    fnet = load_feature_network(cfg.data.name)
    real: list = []  # computed at the first measurement, not before training starts

    def monitor(family, step):
        if not real:
            real.append(reference_features(fnet, train_ds.images, train_ds.labels, cfg.data.name, "train")[0])
        return coverage_monitor(family, fnet, real[0], n=1000, seed=cfg.train.seed)

    return monitor, family.monitor_every


def leave_process_group() -> None:
    """Close this process's part of the process group (several processes): a process that exits
    with gloo's threads still running is aborted by the C++ runtime ("terminate called without
    an active exception", signal 6)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
