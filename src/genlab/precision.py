"""Which precision is fast here: bf16 autocast only where the hardware does bf16 natively.

On a CPU without native bf16 (AVX2 only, no AVX-512 BF16 or AMX) PyTorch emulates bf16 matmuls
and convolutions, and autocast runs several times *slower* than fp32 (35 against 424 training
images/s on an AVX2-only AMD EPYC). ``auto``, the default of ``train.mixed_precision``, picks bf16
where it is native and fp32 elsewhere, and says why; ``no`` and ``bf16`` are kept as overrides.
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch

CHOICES = ("auto", "no", "bf16")
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo names of the native bf16 instructions


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of this machine's CPU (Linux ``/proc/cpuinfo``; empty where unreadable)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def native_bf16(device: str | torch.device = "cpu") -> tuple[bool, str]:
    """(whether ``device`` computes bf16 natively, the reason in a few words)."""
    device = torch.device(device)
    if device.type == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return ok, "this GPU supports bf16" if ok else "this GPU has no bf16"
    flags = cpu_flags()
    have = [f for f in CPU_BF16_FLAGS if f in flags]
    if have:
        return True, f"this CPU has {' and '.join(f.upper().replace('_', '-', 1) for f in have)}"
    if not flags:
        return False, "this CPU's instruction set could not be read, so bf16 is not assumed native"
    return False, "this CPU has no native bf16 (no AVX512-BF16 or AMX-BF16), where bf16 autocast is slower than fp32"


def choose(requested: str, device: str | torch.device = "cpu") -> tuple[str, str]:
    """(the precision to use, why): ``auto`` becomes bf16 where it is native, else ``no`` (fp32)."""
    if requested not in CHOICES:
        raise ValueError(f"precision must be one of {', '.join(CHOICES)}, not {requested!r}")
    native, why = native_bf16(device)
    if requested == "auto":
        return ("bf16" if native else "no"), f"auto: {why}"
    if requested == "bf16" and not native:
        return "bf16", f"as asked, although {why}"
    return requested, "as asked"


def for_sampling(trained: str, device: str | torch.device = "cpu") -> tuple[str, str]:
    """The default precision for sampling a run trained in ``trained``: the same, unless bf16 is not native here."""
    if trained == "bf16":
        native, why = native_bf16(device)
        if not native:
            return "no", f"the run trained in bf16, but {why}"
        return "bf16", "the run's training precision"
    if trained == "auto":
        return choose("auto", device)
    return trained, "the run's training precision"
