"""fastswin: fused Swin Transformer kernels for PyTorch.

The fast path in five lines::

    import fastswin
    windows = fastswin.ops.window_partition(x, window_size=7, shift_size=3)  # (B*nW, 7, 7, C)
    x_back = fastswin.ops.window_reverse(windows, 7, H, W, shift_size=3)     # (B, H, W, C)

`fastswin info` tells which backends can run on this machine.
"""
__version__ = "0.1.0"

from fastswin import ops, reference  # noqa: E402
from fastswin.backends import BackendError  # noqa: E402

__all__ = ["ops", "reference", "BackendError", "__version__"]
