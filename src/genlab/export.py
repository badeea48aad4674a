"""``genlab export RUN DIR``: an inference-only folder in the diffusers spirit, with a model card.

The folder holds three files and nothing that runs code when loaded::

    DIR/config.json        the run's RunConfig (the same file as RUN/config.json: it rebuilds the model)
    DIR/model.safetensors  the EMA weights alone (no optimiser, no training weights, no RNG state)
    DIR/README.md          a model card: YAML front matter (library, family, dataset, parameters,
                           training steps and time) and the figures measured on the run, with their protocol

``genlab sample DIR``, ``genlab serve DIR`` and ``genlab.RunDir(DIR).load()`` read it as they read a
run directory (:meth:`genlab.run.RunDir.load`). The folder is written beside ``DIR`` and renamed into
place, so a failed export leaves nothing half-written.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from genlab.errors import ConfigError, RunError
from genlab.io import current_umask
from genlab.run import MODEL_FILE, MODEL_FORMAT, RunDir

CARD = "README.md"


def export_run(run_dir: str | Path, out_dir: str | Path, weights: str = "ema") -> dict:
    """Write the inference folder ``out_dir`` of the run ``run_dir``; returns what was written.

    ``weights``: ``"ema"`` (what genlab samples with) or ``"model"``. ``out_dir`` must not exist yet
    (or be an empty folder). Returns ``{"dir", "step", "parameters", "bytes", "figures"}``.
    """
    from safetensors.torch import save_file

    from genlab import __version__

    run = RunDir(run_dir)
    if run.is_export():
        raise ConfigError(f"{run.path} is already an exported folder; export the run directory it came from.")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} already exists and is not an empty folder; choose a new folder to export into.")
    cfg, family, ckpt, step = run.load(weights=weights)  # the weights load into the model the config describes
    state = {k: v.detach().cpu().contiguous() for k, v in family.state_dict().items()}  # what was loaded, strictly
    parameters = sum(p.numel() for p in family.parameters())
    records = run.records()
    meta = {"format": MODEL_FORMAT, "family": cfg.family, "step": str(step), "weights": weights,
            "genlab_version": __version__, "source_checkpoint": ckpt.name}
    card, figures = model_card(run, cfg, family, step, weights, parameters, records)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        (staging / RunDir.CONFIG).write_text(cfg.to_json() + "\n")
        save_file(state, str(staging / MODEL_FILE), metadata=meta)
        (staging / CARD).write_text(card)
        for f in staging.iterdir():  # as any other file here (safetensors writes 0600, mkdtemp makes 0700)
            os.chmod(f, 0o666 & ~current_umask())
        os.chmod(staging, 0o777 & ~current_umask())
        if out.is_dir():
            out.rmdir()  # the empty folder it replaces
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    size = sum(p.stat().st_size for p in out.iterdir())
    return {"dir": out, "step": step, "parameters": parameters, "bytes": size, "figures": figures}


def _yaml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return f"{v:g}" if isinstance(v, float) else str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_yaml_value(x) for x in v) + "]"
    text = str(v)
    return text if text.replace("-", "").replace("_", "").replace(".", "").isalnum() else '"' + text.replace('"', '\\"') + '"'


def front_matter(fields: dict) -> str:
    """The YAML front matter of a model card (flat keys, scalars and lists: no YAML library needed to read it back)."""
    return "---\n" + "".join(f"{k}: {_yaml_value(v)}\n" for k, v in fields.items()) + "---\n"


_PRECISION = {"no": "fp32", "bf16": "bf16", "fp16": "fp16"}
_TAGS = {"ddpm": ["diffusion", "unconditional-image-generation"], "ldm": ["latent-diffusion", "text-to-image"],
         "vae": ["vae"], "ae": ["autoencoder"], "gan": ["gan"], "cyclegan": ["gan", "image-to-image"],
         "rbm": ["energy-based", "rbm"], "dbn": ["energy-based", "dbn"], "clip": ["contrastive", "zero-shot-classification"],
         "classifier": ["noise-conditional-classifier"]}


def model_card(run: RunDir, cfg, family, step: int, weights: str, parameters: int, records: list[dict]) -> tuple[str, int]:
    """(the model card's Markdown, how many measured rows it states)."""
    from genlab.viz.report import collect_rows, markdown_table, protocol_notes, training_seconds

    seconds = training_seconds(records)
    train_rows = [r for r in records if "event" not in r and "images_per_s" in r]
    datasets = [cfg.data.name] + ([cfg.cyclegan.data_b] if cfg.family == "cyclegan" else [])
    fields = {"library_name": "genlab", "tags": ["genlab", cfg.family, *_TAGS.get(cfg.family, [])], "datasets": datasets,
              "family": cfg.family, "description": family.describe(cfg), "parameters": parameters,
              "training_steps": step, "training_time_s": round(seconds, 1) if seconds is not None else "unknown",
              "precision": _PRECISION.get(cfg.train.mixed_precision, cfg.train.mixed_precision), "weights": weights, "image_shape": list(cfg.data.shape),
              "levels": cfg.data.levels, "exported": time.strftime("%Y-%m-%d")}
    try:
        rows = collect_rows([run.path])
    except RunError:  # no evaluation yet, or a family that draws nothing: the card says so
        rows = []
    measured = [r for r in rows if r.get("fid") is not None or r.get("bpd") is not None or r.get("prompt_all") is not None]
    extra = [r for r in records if r.get("event") == "eval" and not any(k in r for k in ("fid", "bpd", "prompt_all"))]
    rate = sum(r["images_per_s"] for r in train_rows) / len(train_rows) if train_rows else None
    lines = [front_matter(fields), f"# {family.describe(cfg)} on {cfg.data.name}\n",
             f"A genlab {cfg.family} model ({parameters / 1e6:.2f}M parameters) trained for {step} steps"
             + (f" ({seconds / 60:.1f} min at {rate:.0f} images/s, {fields['precision']})" if seconds and rate else "")
             + f" on {', '.join(datasets)} at {'x'.join(map(str, cfg.data.shape))}; these are its {weights.upper()} weights "
               "alone (no optimiser state), in safetensors.\n",
             "## Use\n",
             *(["```bash\ngenlab sample path/to/this/folder --n 16 --out samples.png\n```\n"] if family.sampler_names else []),
             "```python\nimport genlab\ncfg, model, _, step = genlab.RunDir('path/to/this/folder').load()  # EMA weights, eval mode\n```\n",
             "## Measured\n"]
    if measured:
        lines += [markdown_table(measured), "\nProtocol: " + protocol_notes(measured)]
    for r in extra:  # figures outside the trilemma table (a classifier's accuracy, CLIP's zero-shot, a translation)
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()
                 if k not in ("event", "schema") and not isinstance(v, (dict, list))}
        lines.append("- " + ", ".join(f"{k} {v}" for k, v in shown.items()) + "\n")
    if not measured and not extra:
        lines.append(f"Nothing was measured on this run before export (genlab eval {run.path} measures it).\n")
    lines.append("\nFigures come from the run's metrics.jsonl as genlab eval wrote them; FIDs are under genlab's own "
                 "feature network named in the protocol (no Inception weights), comparable only with other genlab "
                 "figures of that network version.\n")
    return "\n".join(lines), len(measured) + len(extra)
