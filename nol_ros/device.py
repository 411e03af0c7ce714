"""The compute device (cpu / cuda) a job runs on, and giving memory back after one.

Small and free of torch at import: nodes resolve their device when they start, and torch
(~2 s to import) loads only here, when it is asked."""

from __future__ import annotations

import ctypes
import gc
import sys

from nol_ros.errors import ConfigError


def resolve_device(device: str | None) -> str:
    """``device`` (cpu, cuda, cuda:N; "" / None = cuda when present) as torch will use it:
    cuda falls back to cpu when torch sees no GPU (the caller may log that)."""
    import torch  # lazy: torch (~2 s) to import, loaded only when this runs

    d = (device or "").strip()
    if not d:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if d.startswith("cuda") and not torch.cuda.is_available():
        return "cpu"
    try:
        torch.device(d)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"device '{d}' unknown ({e}); use cpu or cuda") from e
    return d


def release_memory() -> None:
    """Give freed memory back: Python garbage, torch's CUDA cache (when torch is loaded at all),
    glibc's heap (malloc_trim: without it a process keeps the peak RSS of a render job)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
