"""The registered ops of the attention kernels, with fake (meta) implementations, so
that torch.compile traces through them, and autograd:

- fastswin::window_attention_triton (+ _backward): window layout, (B_, heads, N, d)
  q, k, v; a logit_scale switches the kernels to Swin-V2 cosine attention; the C++ CPU
  kernels of the same signatures (cpu_ops.py) share its fake and autograd;
- fastswin::shifted_window_attention_triton (+ _backward): image layout, a
  (B, [T,] H, W, 3C) qkv map in, the (B, [T,] H, W, C) attention output out; the
  C++ CPU kernels of the same signatures (cpu_ops.py) share its fake and autograd.

A custom op cannot return None: empty tensors stand for the gradients not asked for.
"""
import math
from typing import List, Optional, Tuple

import torch

from fastswin.ops.attention.launch import bshd_empty, window_attention_backward, window_attention_forward
from fastswin.ops.attention.maps import folded, head_scale, heads_view, image_layout, map_windows, qkv_views
from fastswin.ops.attention.policy import accumulator


# ----------------------------------------------------------------------------- window layout


# One pair of ops for v1 and v2: logit_scale given switches the kernels to cosine attention.
@torch.library.custom_op("fastswin::window_attention_triton", mutates_args=())
def window_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: Optional[torch.Tensor],
                        mask: Optional[torch.Tensor], logit_scale: Optional[torch.Tensor],
                        scale: float) -> Tuple[torch.Tensor, torch.Tensor]:
    return window_attention_forward(q, k, v, bias, mask, scale, logit_scale)


def window_attention_fake(q, k, v, bias, mask, logit_scale, scale):
    """What a window-layout attention op returns (every backend's): out and lse."""
    B_, heads, n, _ = q.shape
    return bshd_empty(q), q.new_empty(B_, heads, n, dtype=accumulator(q.dtype))


window_attention_op.register_fake(window_attention_fake)


@torch.library.custom_op("fastswin::window_attention_triton_backward", mutates_args=())
def window_attention_backward_op(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 out: torch.Tensor, lse: torch.Tensor, bias: Optional[torch.Tensor],
                                 mask: Optional[torch.Tensor], logit_scale: Optional[torch.Tensor], scale: float,
                                 bias_grad: bool, logit_scale_grad: bool,
                                 ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    dq, dk, dv, dbias, *dscale = window_attention_backward(
        grad_out, q, k, v, out, lse, bias, mask, scale, bias_grad, logit_scale=logit_scale,
        logit_scale_grad=logit_scale_grad)
    return dq, dk, dv, dbias if bias_grad else q.new_empty(0), dscale[0] if logit_scale_grad else q.new_empty(0)


def window_attention_backward_fake(grad_out, q, k, v, out, lse, bias, mask, logit_scale, scale, bias_grad,
                                   logit_scale_grad):
    """What a window-layout attention backward op returns: d q, d k, d v, d bias and
    d logit_scale, empty where not asked for."""
    dbias = bias.new_empty(bias.shape) if bias_grad else q.new_empty(0)
    dscale = logit_scale.new_empty(logit_scale.shape) if logit_scale_grad else q.new_empty(0)
    return bshd_empty(q), bshd_empty(q), bshd_empty(q), dbias, dscale


window_attention_backward_op.register_fake(window_attention_backward_fake)


def window_attention_autograd(backward_op):
    """(backward, setup_context) of a window-layout attention op whose gradients
    backward_op computes (the same signature on every backend)."""
    def setup_context(ctx, inputs, output):
        q, k, v, bias, mask, logit_scale, ctx.scale = inputs
        out, lse = output
        ctx.save_for_backward(q, k, v, bias, mask, logit_scale, out, lse)
        ctx.mark_non_differentiable(lse)

    def backward(ctx, grad_out, _grad_lse):
        q, k, v, bias, mask, logit_scale, out, lse = ctx.saved_tensors
        bias_grad = bias is not None and ctx.needs_input_grad[3]
        scale_grad = logit_scale is not None and ctx.needs_input_grad[5]
        dq, dk, dv, dbias, dscale = backward_op(grad_out, q, k, v, out, lse, bias, mask, logit_scale, ctx.scale,
                                                bias_grad, scale_grad)
        return dq, dk, dv, dbias if bias_grad else None, None, dscale if scale_grad else None, None

    return backward, setup_context


_window_backward, _window_setup_context = window_attention_autograd(window_attention_backward_op)
window_attention_op.register_autograd(_window_backward, setup_context=_window_setup_context)


# ----------------------------------------------------------------------------- image layout


@torch.library.custom_op("fastswin::shifted_window_attention_triton", mutates_args=())
def image_attention_op(qkv: torch.Tensor, bias: Optional[torch.Tensor], logit_scale: Optional[torch.Tensor],
                       qkv_bias: Optional[torch.Tensor], num_heads: int, window_size: List[int],
                       shift_size: List[int], timm_order: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    (flat,), window, shift = folded([qkv], window_size, shift_size)
    q, k, v = qkv_views(flat, num_heads)
    out, lse = window_attention_forward(q, k, v, bias, None, head_scale(qkv, num_heads), logit_scale,
                                        image=image_layout(flat, window, shift, timm_order, qkv_bias))
    return out.transpose(1, 2).reshape(*qkv.shape[:-1], qkv.shape[-1] // 3), lse


def image_attention_fake(qkv, bias, logit_scale, qkv_bias, num_heads, window_size, shift_size, timm_order):
    """What an image-layout attention op returns (every backend's): out and lse."""
    return (qkv.new_empty(*qkv.shape[:-1], qkv.shape[-1] // 3),
            qkv.new_empty(map_windows(qkv, window_size), num_heads, math.prod(window_size),
                          dtype=accumulator(qkv.dtype)))


image_attention_op.register_fake(image_attention_fake)


@torch.library.custom_op("fastswin::shifted_window_attention_triton_backward", mutates_args=())
def image_attention_backward_op(grad_out: torch.Tensor, qkv: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
                                bias: Optional[torch.Tensor], logit_scale: Optional[torch.Tensor],
                                qkv_bias: Optional[torch.Tensor], num_heads: int, window_size: List[int],
                                shift_size: List[int], timm_order: bool, bias_grad: bool, scale_grad: bool,
                                fill_grad: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    (flat, grad_out, out), window, shift = folded([qkv, grad_out, out], window_size, shift_size)
    q, k, v = qkv_views(flat, num_heads)
    dqkv = torch.empty_like(flat, memory_format=torch.contiguous_format)
    grads = window_attention_backward(
        heads_view(grad_out, num_heads), q, k, v, heads_view(out, num_heads), lse, bias, None,
        head_scale(qkv, num_heads), bias_grad, logit_scale=logit_scale, logit_scale_grad=scale_grad,
        image=image_layout(flat, window, shift, timm_order, qkv_bias), fill_grad=fill_grad,
        grads=tuple(qkv_views(dqkv, num_heads)))
    dbias, dfill = grads[3], grads[-1]
    dscale = grads[4] if logit_scale is not None else None
    return tuple(x if x is not None else qkv.new_empty(0)
                 for x in (dqkv.view(qkv.shape), dbias, dscale, dfill))


def image_attention_backward_fake(grad_out, qkv, out, lse, bias, logit_scale, qkv_bias, num_heads, window_size,
                                  shift_size, timm_order, bias_grad, scale_grad, fill_grad):
    """What an image-layout attention backward op returns: d qkv, d bias, d logit_scale and
    d qkv_bias, empty where not asked for."""
    def like(x, wanted):
        return x.new_empty(x.shape) if wanted else qkv.new_empty(0)

    return qkv.new_empty(qkv.shape), like(bias, bias_grad), like(logit_scale, scale_grad), like(qkv_bias, fill_grad)


image_attention_backward_op.register_fake(image_attention_backward_fake)


def image_attention_autograd(backward_op):
    """(backward, setup_context) of an image-layout attention op whose gradients
    backward_op computes (the same signature on every backend)."""
    def setup_context(ctx, inputs, output):
        qkv, bias, logit_scale, qkv_bias, ctx.num_heads, ctx.window_size, ctx.shift_size, ctx.timm_order = inputs
        out, lse = output
        ctx.save_for_backward(qkv, bias, logit_scale, qkv_bias, out, lse)
        ctx.mark_non_differentiable(lse)

    def backward(ctx, grad_out, _grad_lse):
        qkv, bias, logit_scale, qkv_bias, out, lse = ctx.saved_tensors
        wanted = [t is not None and ctx.needs_input_grad[i] for i, t in ((1, bias), (2, logit_scale), (3, qkv_bias))]
        dqkv, dbias, dscale, dfill = backward_op(
            grad_out, qkv, out, lse, bias, logit_scale, qkv_bias, ctx.num_heads, ctx.window_size, ctx.shift_size,
            ctx.timm_order, *wanted)
        # An empty d(fill): no padded token reads the fill (its gradient is zero).
        dbias, dscale, dfill = (g if w and g.numel() else None for g, w in zip((dbias, dscale, dfill), wanted))
        return dqkv, dbias, dscale, dfill, None, None, None, None

    return backward, setup_context


_backward, _setup_context = image_attention_autograd(image_attention_backward_op)
image_attention_op.register_autograd(_backward, setup_context=_setup_context)
