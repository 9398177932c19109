"""Triton, when installed; else stand-ins that let kernels be defined (never run), so
that fastswin imports and its reference backend works. The Triton backend's check
(fastswin.backends.triton_reason) says Triton is missing."""
from types import SimpleNamespace

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = SimpleNamespace(jit=lambda fn: fn)
    tl = SimpleNamespace(constexpr=None)

__all__ = ["triton", "tl"]
