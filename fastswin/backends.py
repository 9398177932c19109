"""Backend choice, shared by every op.

A backend is named by the `backend=` argument of an op, else by the
environment variable FASTSWIN_BACKEND, else "auto". Each op lists its
candidate backends in order, each with a check that returns None when the
backend can run on the given inputs, or the reason it cannot. In auto mode the
first that can run is taken silently (the reasons go to the debug log of the
"fastswin" logger); a forced backend that cannot run raises BackendError with
its reason.
"""
import logging
import os
from typing import Callable, Optional, Sequence, Tuple

import torch

BACKENDS = ("auto", "reference", "cpu", "cuda", "triton")
ENV_VAR = "FASTSWIN_BACKEND"

logger = logging.getLogger("fastswin")

# A check returns None if the backend can run, else why it cannot.
Check = Callable[[], Optional[str]]

# Set by fastswin.stand_in_driver.install(): forced Triton calls on CPU and meta tensors
# run Triton's launch path against a driver that launches nothing (host-time measurements).
STAND_IN_DRIVER = False


class BackendError(RuntimeError):
    """A forced backend cannot run the given inputs."""


def requested_backend(backend: Optional[str]) -> str:
    """The backend asked for: the argument, else $FASTSWIN_BACKEND, else "auto"."""
    name = (backend or os.environ.get(ENV_VAR) or "auto").lower()
    if name not in BACKENDS:
        source = "backend=" if backend else ENV_VAR
        raise ValueError(f"fastswin: unknown backend {name!r} (from {source}); choose one of {BACKENDS}")
    return name


def select_backend(op: str, backend: Optional[str], candidates: Sequence[Tuple[str, Check]]) -> str:
    """Name of the backend that runs `op`: the forced one, or the first candidate that can run."""
    name = requested_backend(backend)
    checks = dict(candidates)
    if name != "auto":
        if name not in checks:
            raise BackendError(f"fastswin.{op}: no {name!r} backend; this op has {tuple(checks)}")
        reason = checks[name]()
        if reason is not None:
            raise BackendError(f"fastswin.{op}: backend {name!r} cannot run: {reason}")
        return name
    for candidate, check in candidates:
        reason = check()
        if reason is None:
            _debug("fastswin.%s: backend %r", op, candidate)
            return candidate
        _debug("fastswin.%s: skipping backend %r: %s", op, candidate, reason)
    raise BackendError(f"fastswin.{op}: no backend can run these inputs")


def _debug(*args) -> None:
    # Dynamo cannot trace logging calls: the choice is logged by eager calls only.
    if not torch.compiler.is_compiling():
        logger.debug(*args)


def triton_reason(device, forced: bool, dtype: Optional[torch.dtype] = None) -> Optional[str]:
    """Why Triton kernels cannot run on `device` (for inputs of `dtype`), or None.

    CUDA tensors need a working Triton. CPU tensors run only in the Triton
    interpreter (TRITON_INTERPRET=1), and only when the Triton backend is
    forced: it is how CI tests the kernels, never a fast path. The interpreter
    computes bf16 wrongly, so it refuses bf16. Under a stand-in driver
    (STAND_IN_DRIVER) forced calls on CPU and meta tensors launch nothing, for host time.
    """
    try:
        import triton  # noqa: F401
    except ImportError:
        return "triton is not installed"
    if device.type == "cuda" or (device.type in ("cpu", "meta") and forced and STAND_IN_DRIVER):
        return None
    if device.type == "cpu" and forced and os.environ.get("TRITON_INTERPRET") == "1":
        if dtype == torch.bfloat16:
            return "the Triton interpreter computes bf16 wrongly; bf16 runs on CUDA tensors only"
        return None
    return (f"Triton kernels need CUDA tensors, got {device.type} "
            "(CPU tensors run in the Triton interpreter: TRITON_INTERPRET=1 and backend='triton')")
