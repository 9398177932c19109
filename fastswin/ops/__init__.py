"""fastswin's ops: functional API over the compiled, Triton and reference backends.

window_process.py: window partition / reverse of 2D and video maps (the C++ / CUDA ops of csrc/);
attention/: window attention, Swin-V1 and V2, on windows or on the image layout.
"""
from fastswin.ops.attention.functions import (cosine_window_attention, plain_map, shifted_window_attention,
                                              shifted_window_attention_backend, window_attention)
from fastswin.ops.window_process import window_partition, window_partition_3d, window_reverse, window_reverse_3d

__all__ = ["cosine_window_attention", "plain_map", "shifted_window_attention", "shifted_window_attention_backend",
           "window_attention", "window_partition", "window_partition_3d", "window_reverse", "window_reverse_3d"]
