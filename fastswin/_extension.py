"""Loads the compiled extension fastswin._C, if it was built.

Importing it registers the C++ ops (torch.ops.fastswin.*). Without it the
package still works on its reference and Triton backends.
"""
import torch

try:
    from fastswin import _C  # noqa: F401
except ImportError as error:  # not built, or built against another torch
    HAS_C = False
    LOAD_ERROR = f"{type(error).__name__}: {error}"
else:
    HAS_C = True
    LOAD_ERROR = None


def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether fastswin::<op> has a compiled kernel for `dispatch_key` ("CPU", "CUDA")."""
    return HAS_C and torch._C._dispatch_has_kernel_for_dispatch_key(f"fastswin::{op}", dispatch_key)


def missing_reason() -> str:
    return f"the compiled extension fastswin._C is not available ({LOAD_ERROR})"
