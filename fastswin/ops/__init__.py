"""fastswin's ops: functional API over the compiled, Triton and reference backends."""
from fastswin.ops.window_process import window_partition, window_reverse

__all__ = ["window_partition", "window_reverse"]
