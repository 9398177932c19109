"""The fused C++ CPU image-layout attention (csrc/window_attention_cpu*.cpp), registered
by the extension as fastswin::shifted_window_attention_cpu (+ _backward): the same
signatures as the Triton image-layout ops, whose fake implementations and autograd
it takes (custom_ops.py). The kernels run 2D and video maps as they are (no folding)."""
from typing import List, Optional, Tuple

import torch

from fastswin._extension import HAS_C
from fastswin.ops.attention.custom_ops import (image_attention_autograd, image_attention_backward_fake,
                                               image_attention_fake)


def cpu_image_attention_op(qkv: torch.Tensor, bias: Optional[torch.Tensor], logit_scale: Optional[torch.Tensor],
                           qkv_bias: Optional[torch.Tensor], num_heads: int, window_size: List[int],
                           shift_size: List[int], timm_order: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """(out, lse) of the CPU kernel, as image_attention_op's; shift_size as applied
    (0 <= shift < window)."""
    return torch.ops.fastswin.shifted_window_attention_cpu(qkv, bias, logit_scale, qkv_bias, num_heads, window_size,
                                                           shift_size, timm_order)


def _register() -> None:
    torch.library.register_fake("fastswin::shifted_window_attention_cpu")(image_attention_fake)
    torch.library.register_fake("fastswin::shifted_window_attention_cpu_backward")(image_attention_backward_fake)
    backward, setup_context = image_attention_autograd(torch.ops.fastswin.shifted_window_attention_cpu_backward)
    torch.library.register_autograd("fastswin::shifted_window_attention_cpu", backward, setup_context=setup_context)


if HAS_C:
    _register()
