"""The one place that imports the optional mamba-ssm / causal-conv1d CUDA kernels, and picks the Mamba path.

    path requested      mamba-ssm importable   tensors on CUDA   path used
    "reference"         any                    any               reference (pure PyTorch)
    "auto"              yes                    yes               kernels
    "auto"              otherwise                                reference
    "kernels"           yes                    yes               kernels
    "kernels"           otherwise                                KernelUnavailableError (+ install hint)

The import is tried once, lazily (importing mamba-ssm pulls in Triton, which is slow), and each distinct
decision is logged once. Asking for the kernels where they cannot run is an error, never a silent fallback.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import torch

from models.errors import KernelUnavailableError

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install -e .[cuda]"
MAMBA_PATHS = ("auto", "kernels", "reference")


@dataclass(frozen=True)
class MambaKernels:
    """Callables from mamba-ssm (required) and causal-conv1d / Triton (optional, None when missing)."""

    selective_scan_fn: Any
    causal_conv1d_fn: Any | None
    causal_conv1d_update: Any | None
    selective_state_update: Any | None


_import_error: list[str] = []


@functools.cache
def mamba_kernels() -> MambaKernels | None:
    """The kernels if `mamba_ssm` imports (with its compiled extension), else None (reason kept)."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as exc:  # ImportError, or OSError/RuntimeError from a wheel built for another torch
        _import_error.append(f"{type(exc).__name__}: {exc}")
        return None
    try:
        from causal_conv1d import causal_conv1d_fn, causal_conv1d_update
    except Exception:
        causal_conv1d_fn, causal_conv1d_update = None, None
    try:
        from mamba_ssm.ops.triton.selective_state_update import selective_state_update
    except Exception:
        selective_state_update = None
    return MambaKernels(selective_scan_fn, causal_conv1d_fn, causal_conv1d_update, selective_state_update)


def kernels_available() -> bool:
    return mamba_kernels() is not None


_logged: set[tuple[str, str, str]] = set()


def resolve_mamba_path(requested: str, device: torch.device) -> str:
    """The path ("kernels" or "reference") for tensors on `device` (module docstring); logged once."""
    if requested not in MAMBA_PATHS:
        raise ValueError(f"mamba path: expected one of {MAMBA_PATHS}, got {requested!r}")
    available = requested != "reference" and mamba_kernels() is not None
    if requested == "kernels" and not available:
        reason = _import_error[0] if _import_error else "unknown import failure"
        raise KernelUnavailableError(
            f"mamba path 'kernels' needs mamba-ssm ({reason}); install it: {INSTALL_HINT}"
        )
    if requested == "kernels" and device.type != "cuda":
        raise KernelUnavailableError(f"mamba path 'kernels' needs CUDA tensors, got tensors on {device.type}")
    chosen = "kernels" if available and device.type == "cuda" else "reference"
    key = (requested, device.type, chosen)
    if key not in _logged:
        _logged.add(key)
        log.info("Mamba path: requested %r on %s -> %s", requested, device.type, chosen)
    return chosen
