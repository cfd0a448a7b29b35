# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""bf16 only where the hardware computes it: one rule for every bf16 choice (the teacher's `clip_precision`, the
Trainer's `--bf16`).

A CPU multiplies bf16 natively only with AMX or AVX-512 BF16; elsewhere (AVX2, AVX-512 without BF16) PyTorch emulates
it, and bf16 autocast is several times *slower* than fp32 (a MiniLM-sized linear: 8.2x on an AVX2 EPYC). A GPU does
from Ampere on. So `"auto"` takes bf16 where it is native, and an explicit bf16 request on other hardware falls back to
fp32 with one warning, unless the environment variable `CLIPCAP_FORCE_BF16=1` says to emulate it anyway (for tests of
the bf16 path on such a machine, say).
"""

from __future__ import annotations

import logging
import os
import platform
from functools import cache

import torch

logger = logging.getLogger(__name__)

FORCE_BF16_ENV = "CLIPCAP_FORCE_BF16"
PRECISIONS = ("auto", "fp32", "bf16")


# oneDNN's ISA names (its ONEDNN_MAX_CPU_ISA) from which on it computes bf16 natively (AVX-512 BF16, AMX).
ONEDNN_BF16_ISAS = (
    "AVX512_CORE_BF16",
    "AVX512_CORE_FP16",
    "AVX512_CORE_AMX",
    "AVX512_CORE_AMX_FP16",
    "AVX10_1_512",
    "AVX10_1_512_AMX",
    "AVX10_1_512_AMX_FP16",
    "AVX10_2_512",
    "AVX10_2_512_AMX_2",
    "ALL",
    "DEFAULT",
)


def bf16_code_path_limits() -> list[str]:
    """What keeps PyTorch off the CPU's bf16 instructions even where it has them: `ATEN_CPU_CAPABILITY` below AVX-512
    (ATen's kernels) and `ONEDNN_MAX_CPU_ISA` below AVX512_CORE_BF16 (oneDNN's matmuls and convolutions), as set to
    run the AVX2 code path on a newer CPU."""
    limits = []
    capability = torch.backends.cpu.get_cpu_capability()
    if not capability.startswith("AVX512"):
        limits.append(f"torch runs its {capability} kernels")
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    if isa not in ONEDNN_BF16_ISAS:
        limits.append(f"ONEDNN_MAX_CPU_ISA={isa}")
    return limits


def cpu_bf16_features() -> list[str]:
    """The native bf16 instructions this CPU has and PyTorch may use (`bf16_code_path_limits`): `"AMX"`,
    `"AVX-512 BF16"`, or none."""
    features = []
    if getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)():
        features.append("AMX")
    if getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)():
        features.append("AVX-512 BF16")
    return [] if bf16_code_path_limits() else features


@cache
def cpu_model() -> str:
    """The CPU's model name (`/proc/cpuinfo`'s "model name" on Linux), or what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return " ".join(line.partition(":")[2].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def describe_cpu() -> str:
    """The CPU a timing comes from, as every figure names it: model, cores, PyTorch's capability, native bf16.

    E.g. `"Intel(R) Xeon(R) Processor, 2 cores, torch AVX512, native bf16: AMX, AVX-512 BF16"`."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    limits = bf16_code_path_limits()
    native = ", ".join(cpu_bf16_features()) or f"none (emulated{': ' + ', '.join(limits) if limits else ''})"
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    onednn = f", oneDNN up to {isa.upper()}" if isa else ""
    return (
        f"{cpu_model()}, {cores} cores, torch {torch.backends.cpu.get_cpu_capability()}{onednn}, native bf16: {native}"
    )


def describe_device(device: str | torch.device) -> str:
    """`describe_cpu()` for a CPU, the GPU's name for a GPU: what a timing on `device` names."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (GPU)"
    return describe_cpu() if device.type == "cpu" else device.type


def native_bf16(device: str | torch.device = "cpu") -> tuple[bool, str]:
    """Whether `device` computes bf16 natively, and why (for the log line that says which precision was taken)."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return True, f"the GPU ({name}) has bf16"
        return False, f"the GPU ({name}) has no native bf16 (Ampere or newer has)"
    if device.type == "cpu":
        features = cpu_bf16_features()
        capability = torch.backends.cpu.get_cpu_capability()
        if features:
            return True, f"the CPU ({cpu_model()}) has {' and '.join(features)}"
        if limits := bf16_code_path_limits():
            return False, f"bf16 is emulated on this code path ({', '.join(limits)}) and slower than fp32"
        return False, (
            f"the CPU ({cpu_model()}, torch {capability}) has neither AMX nor AVX-512 BF16, so bf16 is emulated there "
            "and slower than fp32"
        )
    return True, f"bf16 on {device.type} is taken as asked (not checked here)"


_logged: set[str] = set()


def resolve_bf16(requested: str | bool, device: str | torch.device, what: str) -> bool:
    """Whether `what` (e.g. "the teacher's text tower") runs in bf16 on `device`, logged once with the reason.

    `requested`: `"auto"` (bf16 where it is native), `"bf16"`/`True` (bf16 where it is native; elsewhere fp32 with a
    warning, or bf16 anyway with `CLIPCAP_FORCE_BF16=1`), `"fp32"`/`False`.
    """
    if requested not in (*PRECISIONS, True, False):
        raise ValueError(f"precision {requested!r} for {what}: choose one of {', '.join(PRECISIONS)}")
    if requested == "auto" and torch.device(device).type not in ("cpu", "cuda"):
        return False  # auto picks bf16 only where it knows
    if requested in ("fp32", False):
        _log_once(what, logging.INFO, f"precision: {what} in fp32 (asked for)")
        return False
    native, reason = native_bf16(device)
    if native:
        _log_once(what, logging.INFO, f"precision: {what} in bf16 ({requested!r}: {reason})")
        return True
    if requested == "auto":
        _log_once(what, logging.INFO, f"precision: {what} in fp32 (auto: {reason})")
        return False
    if os.environ.get(FORCE_BF16_ENV, "").lower() in ("1", "true", "yes"):
        _log_once(what, logging.WARNING, f"precision: {what} in emulated bf16 ({FORCE_BF16_ENV} is set, but {reason})")
        return True
    _log_once(
        what,
        logging.WARNING,
        f"precision: {what} in fp32, not the bf16 asked for: {reason}. To run it in bf16 anyway, set "
        f"{FORCE_BF16_ENV}=1.",
    )
    return False


def _log_once(what: str, level: int, message: str) -> None:
    key = f"{what}\0{message}"
    if key not in _logged:
        _logged.add(key)
        logger.log(level, message)
