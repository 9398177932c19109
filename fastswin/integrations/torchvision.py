"""torchvision: swin_t/s/b, swin_v2_t/s/b, the video Swin swin3d_t/s/b and custom
configs of both.

torchvision's ShiftedWindowAttention(V2) already receives the (B, H, W, C) map
and does pad, roll, partition, attention, reverse and crop inside
torchvision.models.swin_transformer.shifted_window_attention; the patch
replaces its forward with: qkv Linear on the map, the fused op in torchvision's
pad-then-roll order, proj and output dropout. Swin-V2's k bias is zeroed as
torchvision does (its gradient is zero). The video Swin's ShiftedWindowAttention3d
likewise on (B, T, H, W, C) maps, with torchvision's own window rule (a window no
larger than the map, no shift along a dimension it fills) and its bias for that
window.

Falls back to torchvision's forward in training with attention_dropout > 0.
"""
import sys
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastswin import ops
from fastswin.integrations._core import (BACKEND_ATTR, Target, class_override_problem, library_is_faster, original,
                                         warn_if_unpredicted)

FALLBACKS = ["torchvision: training with attention_dropout > 0"]
# The video Swin's training step on CPU through the fused kernels measured 0.86-1.03x its
# own (swin3d_t, 1 x 16 x 112 x 112, fp32, 2-core Intel Xeon; 1.03x with its unshifted maps
# on torchvision's forward, ops.attention.checks.CPU_PLAIN_MAP): its shifted stage-1 block
# trains 1.26-1.38x faster fused, its shifted stage-2 block (4 windows of 392 tokens)
# 0.94-0.96x. Auto keeps torchvision's forward for its training.
VIDEO_CPU_TRAINING = False


def _qkv_bias(attn: nn.Module, v2: bool) -> Optional[torch.Tensor]:
    bias = attn.qkv.bias
    if bias is None or not v2:
        return bias
    C = bias.numel() // 3
    return torch.cat((bias[:C], torch.zeros_like(bias[C:2 * C]), bias[2 * C:]))


def _fused_forward(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Replaces ShiftedWindowAttention(V2).forward: (B, H, W, C) -> (B, H, W, C)."""
    # (the map's geometry is read on CPU only: library_is_faster)
    attended = (tuple(x.shape[1:3]), tuple(attn.window_size), tuple(attn.shift_size)) if x.is_cpu else None
    if (attn.training and attn.attention_dropout > 0) or library_is_faster(attn, x, attended):
        return original(attn, "forward")(x)
    v2 = hasattr(attn, "logit_scale")
    qkv_bias = _qkv_bias(attn, v2)
    qkv = F.linear(x, attn.qkv.weight, qkv_bias)
    warn_if_unpredicted(attn, qkv, attn.num_heads, attn.window_size)
    out = ops.shifted_window_attention(qkv, attn.num_heads, tuple(attn.window_size), tuple(attn.shift_size),
                                       attn.get_relative_position_bias()[0],
                                       logit_scale=attn.logit_scale if v2 else None, qkv_bias=qkv_bias,
                                       order="torchvision", backend=getattr(attn, BACKEND_ATTR))
    return F.dropout(attn.proj(out), p=attn.dropout, training=attn.training)


def _fused_forward_3d(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Replaces ShiftedWindowAttention3d.forward: (B, T, H, W, C) -> (B, T, H, W, C)."""
    video = sys.modules["torchvision.models.video.swin_transformer"]
    window, shift = video._get_window_and_shift_size(list(attn.shift_size), list(x.shape[1:4]),
                                                     list(attn.window_size))
    attended = (tuple(x.shape[1:4]), tuple(window), tuple(shift))
    if (attn.training and attn.attention_dropout > 0) or library_is_faster(attn, x, attended, VIDEO_CPU_TRAINING):
        return original(attn, "forward")(x)
    qkv = F.linear(x, attn.qkv.weight, attn.qkv.bias)
    warn_if_unpredicted(attn, qkv, attn.num_heads, window)
    out = ops.shifted_window_attention(qkv, attn.num_heads, tuple(window), tuple(shift),
                                       attn.get_relative_position_bias(window)[0], qkv_bias=attn.qkv.bias,
                                       order="torchvision", backend=getattr(attn, BACKEND_ATTR))
    return F.dropout(attn.proj(out), p=attn.dropout, training=attn.training)


def _geometry(attn: nn.Module):
    heads = attn.num_heads
    return heads, attn.qkv.weight.shape[0] // (3 * heads), tuple(attn.window_size)


def match(module: nn.Module) -> Optional[Target]:
    """A Target for torchvision's ShiftedWindowAttention(V2) and the video Swin's
    ShiftedWindowAttention3d, None for any other module."""
    from torchvision.models import swin_transformer as tv
    video = sys.modules.get("torchvision.models.video.swin_transformer")
    if video is not None and isinstance(module, video.ShiftedWindowAttention3d):
        problem = (class_override_problem(module, "forward", video.ShiftedWindowAttention3d)
                   or class_override_problem(module, "get_relative_position_bias", video.ShiftedWindowAttention3d))
        return Target(kind="torchvision ShiftedWindowAttention3d", attr="forward", fused=_fused_forward_3d,
                      geometry=_geometry, problem=problem, cpu_training=VIDEO_CPU_TRAINING)
    if not isinstance(module, tv.ShiftedWindowAttention):
        return None
    base = tv.ShiftedWindowAttentionV2 if isinstance(module, tv.ShiftedWindowAttentionV2) else tv.ShiftedWindowAttention
    problem = (class_override_problem(module, "forward", base)
               or class_override_problem(module, "get_relative_position_bias", base))
    return Target(kind=f"torchvision {base.__name__}", attr="forward", fused=_fused_forward, geometry=_geometry,
                  problem=problem)
