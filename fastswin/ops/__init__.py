"""fastswin's ops: functional API over the compiled, Triton and reference backends."""
from fastswin.ops.shifted_window_attention import shifted_window_attention
from fastswin.ops.window_attention import cosine_window_attention, window_attention
from fastswin.ops.window_process import window_partition, window_reverse

__all__ = ["cosine_window_attention", "shifted_window_attention", "window_attention", "window_partition",
           "window_reverse"]
