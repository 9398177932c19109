"""The fused C++ CPU attention kernels, registered by the extension with the same
signatures as the Triton ops, whose fake implementations and autograd they take
(custom_ops.py):

- fastswin::window_attention_cpu (+ _backward), window layout
  (csrc/window_layout_attention_cpu.cpp);
- fastswin::shifted_window_attention_cpu (+ _backward), image layout
  (csrc/window_attention_cpu*.cpp); the kernels run 2D and video maps as they are
  (no folding).
"""
from typing import List, Optional, Tuple

import torch

from fastswin._extension import HAS_C
from fastswin.ops.attention.custom_ops import (image_attention_autograd, image_attention_backward_fake,
                                               image_attention_fake, window_attention_autograd,
                                               window_attention_backward_fake, window_attention_fake)


def cpu_window_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: Optional[torch.Tensor],
                            mask: Optional[torch.Tensor], logit_scale: Optional[torch.Tensor],
                            scale: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """(out, lse) of the CPU kernel, as window_attention_op's."""
    return torch.ops.fastswin.window_attention_cpu(q, k, v, bias, mask, logit_scale, scale)


def cpu_image_attention_op(qkv: torch.Tensor, bias: Optional[torch.Tensor], logit_scale: Optional[torch.Tensor],
                           qkv_bias: Optional[torch.Tensor], num_heads: int, window_size: List[int],
                           shift_size: List[int], timm_order: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """(out, lse) of the CPU kernel, as image_attention_op's; shift_size as applied
    (0 <= shift < window)."""
    return torch.ops.fastswin.shifted_window_attention_cpu(qkv, bias, logit_scale, qkv_bias, num_heads, window_size,
                                                           shift_size, timm_order)


def _register(op: str, fake, backward_fake, autograd) -> None:
    torch.library.register_fake(f"fastswin::{op}")(fake)
    torch.library.register_fake(f"fastswin::{op}_backward")(backward_fake)
    backward, setup_context = autograd(getattr(torch.ops.fastswin, f"{op}_backward"))
    torch.library.register_autograd(f"fastswin::{op}", backward, setup_context=setup_context)


if HAS_C:
    _register("window_attention_cpu", window_attention_fake, window_attention_backward_fake,
              window_attention_autograd)
    _register("shifted_window_attention_cpu", image_attention_fake, image_attention_backward_fake,
              image_attention_autograd)


def cpu_window_attention_backward_op(grad_out, q, k, v, out, lse, bias, mask, logit_scale, scale: float,
                                     bias_grad: bool, scale_grad: bool):
    """(dq, dk, dv, dbias, dlogit_scale) of the CPU kernel, as window_attention_backward_op's."""
    return torch.ops.fastswin.window_attention_cpu_backward(grad_out, q, k, v, out, lse, bias, mask, logit_scale,
                                                            scale, bias_grad, scale_grad)


def cpu_image_attention_backward_op(grad_out, qkv, out, lse, bias, logit_scale, qkv_bias, num_heads: int,
                                    window_size: List[int], shift_size: List[int], timm_order: bool, bias_grad: bool,
                                    scale_grad: bool, fill_grad: bool):
    """(dqkv, dbias, dlogit_scale, dqkv_bias) of the CPU kernel, as image_attention_backward_op's."""
    return torch.ops.fastswin.shifted_window_attention_cpu_backward(
        grad_out, qkv, out, lse, bias, logit_scale, qkv_bias, num_heads, window_size, shift_size, timm_order,
        bias_grad, scale_grad, fill_grad)
