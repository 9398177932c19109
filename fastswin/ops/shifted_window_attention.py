"""Shifted-window attention on the image layout, between a Swin block's qkv and
proj linears.

Math: see fastswin.reference.shifted_window_attention (torchvision's or timm's
order of pad and roll; v1 dot-product or v2 cosine attention; padded tokens
read qkv_bias).

Backends:
- "triton": the window attention kernels (fastswin.ops.window_attention) on the
  image layout: each program reads its window's q, k, v rows straight from the
  (B, H, W, 3C) map at the pixels its tokens come from (wrap-around and padding
  computed on the fly, fastswin.ops.image_layout), builds the shift mask from the
  tokens' regions, and writes its output rows to their pixels of a (B, H, W, C)
  map; the backward writes d(qkv) likewise. No rolled, padded or partitioned
  copy, no mask tensor: q, k, v in, output out.
- "cuda" and "cpu": fastswin's one-pass window partition / reverse kernels
  composed with fastswin's window attention (the fallback where the Triton
  kernels cannot run, and the baseline the fused path is measured against).
- "reference": the pure PyTorch composition.
"""
import functools
from typing import List, Optional, Tuple

import torch

from fastswin import reference
from fastswin._extension import compiled_reason
from fastswin.backends import select_backend
from fastswin.backends import requested_backend
from fastswin.ops.window_attention import (ImageLayout, triton_kernels_reason, window_attention,
                                           window_attention_backward, window_attention_forward)
from fastswin.ops.window_process import IntPair, as_pair, window_partition, window_reverse


def shift_mask(height, width, window_size, shift_size, device, dtype) -> torch.Tensor:
    """reference.shift_attention_mask, built once per map size, window and shift in
    eager mode; traced (and constant-folded) under torch.compile."""
    if torch.compiler.is_compiling():
        return reference.shift_attention_mask(height, width, window_size, shift_size, device, dtype)
    return _cached_shift_mask(height, width, window_size, shift_size, device, dtype)


@functools.lru_cache(maxsize=64)
def _cached_shift_mask(height, width, window_size, shift_size, device, dtype) -> torch.Tensor:
    with torch.inference_mode(False):  # a normal tensor even when first asked for under inference mode
        return reference.shift_attention_mask(height, width, window_size, shift_size, device, dtype)


# ----------------------------------------------------------------------------- registered ops


def _qkv_views(qkv: torch.Tensor, num_heads: int):
    """q, k, v of a (B, H, W, 3C) map as (B, heads, H * W, d) views (a copy only if H and
    W cannot be merged)."""
    B, H, W, C3 = qkv.shape
    return qkv.reshape(B, H * W, 3, num_heads, C3 // (3 * num_heads)).permute(2, 0, 3, 1, 4)


def _heads_view(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """A (B, H, W, C) map as a (B, heads, H * W, d) view."""
    B, H, W, C = x.shape
    return x.reshape(B, H * W, num_heads, C // num_heads).transpose(1, 2)


def _layout(qkv, window_size, shift_size, timm_order, qkv_bias) -> ImageLayout:
    return ImageLayout(qkv.shape[1], qkv.shape[2], tuple(window_size), tuple(shift_size), timm_order, qkv_bias)


def _scale(qkv: torch.Tensor, num_heads: int) -> float:
    return (qkv.shape[3] // (3 * num_heads)) ** -0.5


def _windows(qkv: torch.Tensor, window_size) -> int:
    Hp, Wp = reference.padded_size(qkv.shape[1], qkv.shape[2], window_size)
    return qkv.shape[0] * (Hp // window_size[0]) * (Wp // window_size[1])


@torch.library.custom_op("fastswin::shifted_window_attention_triton", mutates_args=())
def _image_attention_op(qkv: torch.Tensor, bias: Optional[torch.Tensor], logit_scale: Optional[torch.Tensor],
                        qkv_bias: Optional[torch.Tensor], num_heads: int, window_size: List[int],
                        shift_size: List[int], timm_order: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    q, k, v = _qkv_views(qkv, num_heads)
    out, lse = window_attention_forward(q, k, v, bias, None, _scale(qkv, num_heads), logit_scale,
                                        image=_layout(qkv, window_size, shift_size, timm_order, qkv_bias))
    B, H, W, C3 = qkv.shape
    return out.transpose(1, 2).reshape(B, H, W, C3 // 3), lse


@_image_attention_op.register_fake
def _(qkv, bias, logit_scale, qkv_bias, num_heads, window_size, shift_size, timm_order):
    B, H, W, C3 = qkv.shape
    lse_dtype = torch.float64 if qkv.dtype == torch.float64 else torch.float32
    n = window_size[0] * window_size[1]
    return qkv.new_empty(B, H, W, C3 // 3), qkv.new_empty(_windows(qkv, window_size), num_heads, n, dtype=lse_dtype)


@torch.library.custom_op("fastswin::shifted_window_attention_triton_backward", mutates_args=())
def _image_attention_backward_op(grad_out: torch.Tensor, qkv: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
                                 bias: Optional[torch.Tensor], logit_scale: Optional[torch.Tensor],
                                 qkv_bias: Optional[torch.Tensor], num_heads: int, window_size: List[int],
                                 shift_size: List[int], timm_order: bool, bias_grad: bool, scale_grad: bool,
                                 fill_grad: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    q, k, v = _qkv_views(qkv, num_heads)
    dqkv = torch.empty_like(qkv, memory_format=torch.contiguous_format)
    grads = window_attention_backward(
        _heads_view(grad_out, num_heads), q, k, v, _heads_view(out, num_heads), lse, bias, None,
        _scale(qkv, num_heads), bias_grad, logit_scale=logit_scale, logit_scale_grad=scale_grad,
        image=_layout(qkv, window_size, shift_size, timm_order, qkv_bias), fill_grad=fill_grad,
        grads=tuple(_qkv_views(dqkv, num_heads)))
    dbias, dfill = grads[3], grads[-1]
    dscale = grads[4] if logit_scale is not None else None
    # A custom op cannot return None: empty tensors stand for the gradients not asked for.
    return tuple(x if x is not None else qkv.new_empty(0) for x in (dqkv, dbias, dscale, dfill))


@_image_attention_backward_op.register_fake
def _(grad_out, qkv, out, lse, bias, logit_scale, qkv_bias, num_heads, window_size, shift_size, timm_order,
      bias_grad, scale_grad, fill_grad):
    def like(x, wanted):
        return x.new_empty(x.shape) if wanted else qkv.new_empty(0)

    return qkv.new_empty(qkv.shape), like(bias, bias_grad), like(logit_scale, scale_grad), like(qkv_bias, fill_grad)


def _image_setup_context(ctx, inputs, output):
    qkv, bias, logit_scale, qkv_bias, ctx.num_heads, ctx.window_size, ctx.shift_size, ctx.timm_order = inputs
    out, lse = output
    ctx.save_for_backward(qkv, bias, logit_scale, qkv_bias, out, lse)
    ctx.mark_non_differentiable(lse)


def _image_backward(ctx, grad_out, _grad_lse):
    qkv, bias, logit_scale, qkv_bias, out, lse = ctx.saved_tensors
    wanted = [t is not None and ctx.needs_input_grad[i] for i, t in ((1, bias), (2, logit_scale), (3, qkv_bias))]
    dqkv, dbias, dscale, dfill = _image_attention_backward_op(
        grad_out, qkv, out, lse, bias, logit_scale, qkv_bias, ctx.num_heads, ctx.window_size, ctx.shift_size,
        ctx.timm_order, *wanted)
    dbias, dscale, dfill = (g if w else None for g, w in zip((dbias, dscale, dfill), wanted))
    return dqkv, dbias, dscale, dfill, None, None, None, None


_image_attention_op.register_autograd(_image_backward, setup_context=_image_setup_context)


# ----------------------------------------------------------------------------- public op


def _triton_reason(qkv: torch.Tensor, num_heads: int, window_size, shift_size,
                   backend: Optional[str]) -> Optional[str]:
    if shift_size[0] >= window_size[0] or shift_size[1] >= window_size[1]:
        return f"shift {shift_size} not smaller than the window {window_size}; the kernels take 0 <= shift < window"
    n = window_size[0] * window_size[1]
    head_dim = qkv.shape[3] // (3 * num_heads)
    forced = requested_backend(backend) == "triton"
    return triton_kernels_reason(n, head_dim, qkv.dtype, qkv.device, forced)


def _device_reason(device: torch.device, backend: str) -> Optional[str]:
    if device.type != backend:
        return f"the {backend} backend needs {backend} tensors, got {device.type}"
    return compiled_reason(device)


def _check_args(qkv, num_heads, window_size, shift_size, bias, logit_scale, qkv_bias, order) -> None:
    if qkv.dim() != 4 or qkv.shape[3] % 3:
        raise ValueError(f"fastswin.shifted_window_attention: qkv must be (B, H, W, 3C), got {tuple(qkv.shape)}")
    C = qkv.shape[3] // 3
    if num_heads < 1 or C % num_heads:
        raise ValueError(f"fastswin.shifted_window_attention: C={C} is not divisible by num_heads={num_heads}")
    if min(window_size) < 1 or min(shift_size) < 0:
        raise ValueError(f"fastswin.shifted_window_attention: window_size must be positive and shift_size >= 0, "
                         f"got {window_size}, {shift_size}")
    if order not in ("torchvision", "timm"):
        raise ValueError(f"fastswin.shifted_window_attention: order must be 'torchvision' or 'timm', got {order!r}")
    N = window_size[0] * window_size[1]
    expected = {"bias": (bias, (num_heads, N, N)), "logit_scale": (logit_scale, (num_heads, 1, 1)),
                "qkv_bias": (qkv_bias, (3 * C,))}
    for name, (tensor, shape) in expected.items():
        if tensor is None:
            continue
        if tuple(tensor.shape) != shape:
            raise ValueError(f"fastswin.shifted_window_attention: {name} must be {shape}, got {tuple(tensor.shape)}")
        if tensor.device != qkv.device:
            raise ValueError(f"fastswin.shifted_window_attention: {name} is on {tensor.device}, qkv on {qkv.device}")


def shifted_window_attention(qkv: torch.Tensor, num_heads: int, window_size: IntPair, shift_size: IntPair,
                             bias: Optional[torch.Tensor] = None, *, logit_scale: Optional[torch.Tensor] = None,
                             qkv_bias: Optional[torch.Tensor] = None, order: str = "torchvision",
                             backend: Optional[str] = None) -> torch.Tensor:
    """Shifted-window attention of a (B, H, W, 3C) qkv map, in place of roll, pad,
    partition, window attention, reverse and crop.

    Args:
        qkv: (B, H, W, 3C), the qkv Linear applied to the un-partitioned map; channels
            ordered [q | k | v] x heads x head_dim.
        num_heads: heads; head_dim = C / num_heads.
        window_size, shift_size: int or (h, w). No shift along a dimension that the
            padded map fills with one window.
        bias: (heads, N, N) relative-position bias (N = wh * ww), differentiable.
        logit_scale: (heads, 1, 1), the raw Swin-V2 parameter: cosine attention with
            logits scaled by exp(min(logit_scale, log 100)). None: v1 attention with
            scale head_dim^-0.5.
        qkv_bias: (3C,), what padded positions read (the qkv Linear's output for a
            zero token); zeros when None.
        order: "torchvision" (pad, then roll) or "timm" (roll, then pad); they differ
            only on maps that are not multiples of the window.
        backend: "auto", "triton" (the fused image-layout kernels), "cuda", "cpu" or
            "reference" (see the module docstring).

    Returns:
        (B, H, W, C): the attention output at the original positions, before the
        output projection.
    """
    window_size, shift_size = as_pair(window_size, "window_size"), as_pair(shift_size, "shift_size")
    _check_args(qkv, num_heads, window_size, shift_size, bias, logit_scale, qkv_bias, order)
    chosen = select_backend("shifted_window_attention", backend, [
        ("triton", lambda: _triton_reason(qkv, num_heads, window_size, shift_size, backend)),
        ("cuda", lambda: _device_reason(qkv.device, "cuda")),
        ("cpu", lambda: _device_reason(qkv.device, "cpu")),
        ("reference", lambda: None),
    ])
    if chosen == "triton":
        shift = reference.effective_shift(qkv.shape[1], qkv.shape[2], window_size, shift_size)
        as_dtype = [None if t is None else t.to(qkv.dtype) for t in (bias, qkv_bias)]
        return _image_attention_op(qkv, as_dtype[0], logit_scale, as_dtype[1], num_heads, list(window_size),
                                   list(shift), order == "timm")[0]
    if chosen == "reference":
        return reference.shifted_window_attention(qkv, num_heads, window_size, shift_size, bias, logit_scale,
                                                  qkv_bias, order)
    return reference.compose_shifted_window_attention(
        qkv, num_heads, window_size, shift_size, bias, logit_scale, qkv_bias, order,
        partition=lambda x, w, s: window_partition(x, w, s, backend=chosen),
        reverse=lambda x, w, h, wd, s: window_reverse(x, w, h, wd, s, backend=chosen),
        attention=lambda q, k, v, bias, mask: window_attention(q, k, v, bias, mask),
        cosine_attention=reference.cosine_window_attention, attention_mask=shift_mask)
