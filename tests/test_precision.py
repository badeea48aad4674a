"""The default precision follows the hardware: bf16 only where it is native (issue 19)."""
import dataclasses
import json

import pytest

from genlab import precision
from genlab.config import resolve
from genlab.train import _precision, train


@pytest.fixture
def cpu(monkeypatch):
    """Pretend this CPU has the given instruction-set flags."""
    def set_flags(*flags):
        monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    return set_flags


def test_auto_is_bf16_only_where_the_cpu_has_it(cpu):
    cpu("avx2", "avx512f", "avx512_bf16")
    assert precision.choose("auto")[0] == "bf16"
    assert "AVX512-BF16" in precision.choose("auto")[1]
    cpu("avx2", "amx_bf16", "amx_tile")
    assert precision.choose("auto")[0] == "bf16"
    cpu("avx2", "fma", "avx512f")  # AVX-512 without its BF16 extension emulates bf16 too
    chosen, why = precision.choose("auto")
    assert chosen == "no" and "no native bf16" in why
    cpu()  # unreadable: not assumed
    assert precision.choose("auto")[0] == "no"


def test_an_explicit_choice_is_kept_and_the_cost_said(cpu):
    cpu("avx2")
    assert precision.choose("no") == ("no", "as asked")
    chosen, why = precision.choose("bf16")
    assert chosen == "bf16" and "slower than fp32" in why
    with pytest.raises(ValueError, match="precision must be one of auto, no, bf16"):
        precision.choose("fp64")


def test_sampling_a_bf16_run_falls_back_to_fp32_only_without_native_bf16(cpu):
    cpu("avx2")
    assert precision.for_sampling("bf16")[0] == "no"
    assert precision.for_sampling("no")[0] == "no"
    cpu("avx512_bf16")
    assert precision.for_sampling("bf16") == ("bf16", "the run's training precision")


def test_the_cpu_flags_of_this_machine_are_read():
    flags = precision.cpu_flags()
    assert isinstance(flags, frozenset)  # empty off Linux; on Linux the flags line of /proc/cpuinfo
    if flags:
        assert "fpu" in flags or "sse2" in flags or "fp" in flags or "neon" in flags or len(flags) > 5


def test_training_records_the_chosen_precision_and_says_why(cpu, tmp_path):
    cpu("avx2")  # fp32 trains here; a bf16 run on a CPU that emulates it would be the slow case this avoids
    cfg = resolve("digits")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=2, batch_size=8, sample_every=0, eval_bpd=False))
    assert cfg.train.mixed_precision == "auto"
    lines = []
    train(cfg, tmp_path / "run", progress=False, say=lines.append, evaluate=False)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["mixed_precision"] == "no"
    assert "precision fp32 (auto: this CPU has no native bf16" in next(line for line in lines if "precision" in line)
    cpu("avx512_bf16")
    chosen, why = _precision(cfg)
    assert chosen.train.mixed_precision == "bf16" and why == "auto: this CPU has AVX512-BF16"
    assert _precision(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, mixed_precision="no")))[0].train.mixed_precision == "no"
