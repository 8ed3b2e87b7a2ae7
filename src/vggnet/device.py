"""Where and in which precision to compute: a leaf of the package.

``auto`` precision means bf16 where the hardware computes it natively (a CUDA GPU, or a CPU
with AVX512-BF16 or AMX, whose bf16 dot-product instructions do twice the work of fp32's per
cycle) and fp32 elsewhere (on an AVX2-only CPU bf16 is emulated and slower than fp32). The CPU's
features are read once per process; tests replace :func:`cpu_flags` to pretend to be any CPU.
"""

from __future__ import annotations

import contextlib
import os
from functools import lru_cache, partial
from pathlib import Path

import torch

from .errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16")
# CPU feature flags (as /proc/cpuinfo names them) that give native bf16 arithmetic
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def pick_device(spec: str = "auto") -> torch.device:
    """``auto``: the GPU when there is one, else the CPU; or a torch device string."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"device {spec!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {spec!r} asked for, but no CUDA GPU is available; "
                          "use --device cpu or auto")
    return device


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux: /proc/cpuinfo; elsewhere what PyTorch's dispatcher
    reports, which names AMX and AVX-512 but not AVX512-BF16). Read once per process."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    capability = torch.backends.cpu.get_cpu_capability().lower()  # e.g. "avx512_amx"
    return frozenset({"amx_bf16"} if "amx" in capability else ())


def cpu_bf16_flag() -> str | None:
    """The flag that gives this CPU native bf16 (``amx_bf16`` first), or None."""
    flags = cpu_flags()
    return next((f for f in BF16_CPU_FLAGS if f in flags), None)


def cpu_has_amx() -> bool:
    """Whether oneDNN's convolutions run on AMX's bf16 tile units: the CPU has them (Intel Xeon
    since Sapphire Rapids) and oneDNN's own switch, ``ONEDNN_MAX_CPU_ISA`` (or its older name
    ``DNNL_MAX_CPU_ISA``), does not cap it below them (e.g. ``AVX512_CORE_BF16``, which makes
    such a Xeon compute as an AVX512-BF16 CPU without AMX does)."""
    return "amx_bf16" in cpu_flags() and onednn_may_use_amx()


def onednn_isa_cap() -> str | None:
    """The instruction set oneDNN is capped at (``ONEDNN_MAX_CPU_ISA``, or its older name
    ``DNNL_MAX_CPU_ISA``), or None; read at each call, as oneDNN reads it at its first kernel."""
    return os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or None


def onednn_may_use_amx() -> bool:
    """False when oneDNN is capped at an instruction set without AMX."""
    cap = (onednn_isa_cap() or "").upper()
    return cap in ("", "ALL", "DEFAULT") or "AMX" in cap


def resolve_precision(device: torch.device | str, precision: str = "auto") -> str:
    """``fp32`` or ``bf16``: what ``precision`` means on ``device``."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_bf16_flag() else "fp32"


def describe_precision(device: torch.device | str, precision: str = "auto") -> str:
    """One line for logs and metadata: the precision and, for ``auto``, why."""
    resolved = resolve_precision(device, precision)
    if precision != "auto":
        return f"{resolved} (asked for)"
    device = torch.device(device)
    if device.type == "cuda":
        return f"{resolved} (auto: a GPU)"
    flag = cpu_bf16_flag()
    why = f"the CPU has {flag}" if flag else "the CPU has neither AVX512-BF16 nor AMX"
    return f"{resolved} (auto: {why}; --precision fp32 or bf16 to choose)"


def uses_bf16(device: torch.device, precision: str) -> bool:
    """bf16 when asked, or by default where the hardware has it (see :func:`resolve_precision`)."""
    return resolve_precision(device, precision) == "bf16"


def autocast_for(device: torch.device, precision: str):
    """A factory of autocast contexts: bf16 when asked (or auto on a GPU or a bf16 CPU), else a
    no-op. The one precision path: every forward runs under it, in fp32 as a no-op."""
    if not uses_bf16(device, precision):
        return contextlib.nullcontext
    return partial(torch.autocast, device_type=device.type, dtype=torch.bfloat16)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc's malloc.h)


@lru_cache(maxsize=1)
def reuse_freed_memory() -> bool:
    """Linux with glibc: keep freed large blocks in the process for reuse instead of handing
    each back to the kernel (malloc's mmap and trim thresholds raised to 1 GiB).

    By default glibc maps every block over 32 MiB afresh and unmaps it when freed, so each
    large activation of a CNN is page-faulted in again on every call: for VGG-16 at batch 32
    in bf16 that was a quarter of a forward pass on the CPU (1.38 s against 1.05 s with this,
    on a 2-core AMD EPYC; ``benchmarks/freed_memory.py``). The cost is that the process
    keeps its peak memory instead of returning it between calls, as tcmalloc and jemalloc do.
    It changes the whole process, so the library never calls it: vggnet's commands do, in
    their own processes (:func:`vggnet.cli.main`, serve's workers); a program that imports
    vggnet may call it. A no-op off glibc."""
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)
                    and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):
        return False
