"""Loads the compiled extension fastswin._C, if it was built.

Importing it registers the C++ ops (torch.ops.fastswin.*). Without it the
package still works on its reference and Triton backends, and says so once, at
import, with the reason: the build's error (setup.py leaves it in
_C_build_error.txt) or the load error.

HAS_C: the extension loaded (its CPU kernels are always built).
HAS_CUDA_KERNELS: it was built with its CUDA sources.
LOAD_ERROR: why it did not load, or None.
"""
import logging
from pathlib import Path

import torch

BUILD_ERROR = Path(__file__).with_name("_C_build_error.txt")


def _missing_reason(error: ImportError) -> str:
    if BUILD_ERROR.exists():
        return "its build failed: " + " | ".join(BUILD_ERROR.read_text().split("\n")).strip(" |")
    return f"{type(error).__name__}: {error}"


try:
    from fastswin import _C  # noqa: F401
except ImportError as error:  # not built, or built against another torch
    HAS_C = False
    LOAD_ERROR = _missing_reason(error)
    logging.getLogger("fastswin").warning(
        "fastswin: the compiled extension fastswin._C is missing (%s); the compiled window kernels will not "
        "run, the reference and Triton backends will. Rebuild with: pip install -v --no-build-isolation .",
        LOAD_ERROR)
else:
    HAS_C = True
    LOAD_ERROR = None

HAS_CUDA_KERNELS = HAS_C and torch._C._dispatch_has_kernel_for_dispatch_key(
    "fastswin::window_partition", "CUDA")


def compiled_reason(device: torch.device) -> "str | None":
    """Why the compiled kernels cannot run on `device`, or None."""
    if not HAS_C:
        return f"the compiled extension fastswin._C is not available ({LOAD_ERROR})"
    if device.type == "cuda" and not HAS_CUDA_KERNELS:
        return "fastswin._C was built without its CUDA kernels"
    if device.type not in ("cpu", "cuda"):
        return f"no compiled kernels for {device.type} tensors"
    return None


def compiled_backend_reason(backend: str, device: torch.device) -> "str | None":
    """Why the compiled `backend` ("cpu" or "cuda") cannot run tensors on `device`, or None."""
    if device.type != backend:
        return f"the {backend} backend needs {backend} tensors, got {device.type}"
    return compiled_reason(device)
