"""Triton, when installed; else stand-ins that let kernels be defined (never run), so
that fastswin imports and its reference backend works. The Triton backend's check
(fastswin.backends.triton_reason) says Triton is missing."""
from types import SimpleNamespace

try:
    import triton
    import triton.language as tl
except ImportError:
    def _jit(fn=None, **options):
        """@jit and @jit(options...) leave the function as it is."""
        return fn if fn is not None else (lambda f: f)

    triton = SimpleNamespace(jit=_jit)
    tl = SimpleNamespace(constexpr=None)

__all__ = ["triton", "tl"]
