"""Facts about this machine, read in one place: CPU flags, cores, library versions, peak memory.

Torch-free and cheap to import. Used by export (INT8 settings follow the CPU), bench and the
bench scripts (where numbers were taken), train (peak memory) and every command that takes a
thread count (`check_threads`).
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
PACKAGES = ("edgesent", "torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime", "onnxruntime-gpu",
            "openvino", "nncf", "peft", "tokenizers", "numpy", "scikit-learn", "bitsandbytes")
THREADS_PER_CORE_CAP = 1  # more intra-op threads than usable cores only adds contention


def cpu_info() -> tuple[str, set[str]]:
    """(CPU model name, ISA flags) from /proc/cpuinfo ('flags' on x86, 'Features' on ARM); empty elsewhere."""
    model, flags = "", set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and not model:
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    return model or platform.processor() or platform.machine(), flags


def cpu_flags() -> set[str]:
    return cpu_info()[1]


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated, slowly."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def check_threads(value: int | None, option: str = "--threads", *, quiet: bool = False) -> int | None:
    """Validate a user's thread count: None stays None (the engine's default); < 1 is an error; more than
    the usable cores is capped to them, with a note on stderr (threads beyond the cores only contend)."""
    from edgesent.errors import EdgesentError

    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise EdgesentError(f"{option} must be a whole number of threads, at least 1; got {value}")
    cap = usable_cores() * THREADS_PER_CORE_CAP
    if value > cap:
        if not quiet:
            print(f"note: {option} {value} capped to {cap}, the CPU cores this process may use", file=sys.stderr)
        return cap
    return value


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that shape the numbers (absent ones left out)."""
    from importlib import metadata

    out = {}
    for pkg in packages:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[pkg] = metadata.version(pkg)
    return out


def gpu_name() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        proc = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=10)
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.strip().splitlines()[0]
    return None


def machine_facts() -> dict[str, Any]:
    """Where numbers were taken: CPU, ISA flags that matter for INT8/bf16 GEMMs, cores, GPU, versions."""
    cpu, flags = cpu_info()
    return {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "isa": {f: f in flags for f in ISA_FLAGS},
        "versions": versions(),
        "gpu": gpu_name(),
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process, in MiB.

    On Linux this is VmHWM of /proc/self/status, the high-water mark of the current address space:
    `ru_maxrss` would be wrong in a forked child, because it carries over the parent's RSS at fork
    time (a bench worker forked from a driver that holds torch would report torch's memory).
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def peak_memory_mb(device: str = "cpu") -> float:
    """Peak memory of this process on `device`: CUDA's allocator peak on a GPU, else `peak_rss_mb`."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return peak_rss_mb()
