"""Shifted-window attention on the image layout, between a Swin block's qkv and
proj linears.

Math: see fastswin.reference.shifted_window_attention (torchvision's or timm's
order of pad and roll; v1 dot-product or v2 cosine attention; padded tokens
read qkv_bias).

Backends: "cuda" and "cpu" compose fastswin's one-pass window partition /
reverse kernels with fastswin's window attention (Triton on CUDA tensors);
"reference" is the pure PyTorch composition.
"""
import functools
from typing import Optional

import torch

from fastswin import reference
from fastswin._extension import compiled_reason
from fastswin.backends import select_backend
from fastswin.ops.window_attention import window_attention
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


def _device_reason(device: torch.device, backend: str) -> Optional[str]:
    if device.type != backend:
        return f"the {backend} backend needs {backend} tensors, got {device.type}"
    return compiled_reason(device)


def _check_args(qkv, num_heads, window_size, shift_size, bias, logit_scale, qkv_bias) -> None:
    if qkv.dim() != 4 or qkv.shape[3] % 3:
        raise ValueError(f"fastswin.shifted_window_attention: qkv must be (B, H, W, 3C), got {tuple(qkv.shape)}")
    C = qkv.shape[3] // 3
    if num_heads < 1 or C % num_heads:
        raise ValueError(f"fastswin.shifted_window_attention: C={C} is not divisible by num_heads={num_heads}")
    if min(window_size) < 1 or min(shift_size) < 0:
        raise ValueError(f"fastswin.shifted_window_attention: window_size must be positive and shift_size >= 0, "
                         f"got {window_size}, {shift_size}")
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
        backend: "auto", "cuda", "cpu" or "reference".

    Returns:
        (B, H, W, C): the attention output at the original positions, before the
        output projection.
    """
    window_size, shift_size = as_pair(window_size, "window_size"), as_pair(shift_size, "shift_size")
    _check_args(qkv, num_heads, window_size, shift_size, bias, logit_scale, qkv_bias)
    chosen = select_backend("shifted_window_attention", backend, [
        ("cuda", lambda: _device_reason(qkv.device, "cuda")),
        ("cpu", lambda: _device_reason(qkv.device, "cpu")),
        ("reference", lambda: None),
    ])
    if chosen == "reference":
        return reference.shifted_window_attention(qkv, num_heads, window_size, shift_size, bias, logit_scale,
                                                  qkv_bias, order)
    return reference.compose_shifted_window_attention(
        qkv, num_heads, window_size, shift_size, bias, logit_scale, qkv_bias, order,
        partition=lambda x, w, s: window_partition(x, w, s, backend=chosen),
        reverse=lambda x, w, h, wd, s: window_reverse(x, w, h, wd, s, backend=chosen),
        attention=lambda q, k, v, bias, mask: window_attention(q, k, v, bias, mask),
        cosine_attention=reference.cosine_window_attention, attention_mask=shift_mask)
