"""The image layout's tensors as the launchers take them: q, k, v and outputs of a
(B, [T,] H, W, .) map as (B, heads, T * H * W, d) views, video maps whose windows have
depth 1 folded into 2D maps. Shared by the registered ops and the eager path."""
import math
from typing import Optional, Sequence

import torch

from fastswin import reference
from fastswin.ops.attention.launch import ImageLayout


def qkv_views(qkv: torch.Tensor, num_heads: int):
    """q, k, v of a (B, *S, 3C) map as (B, heads, prod(S), d) views (a copy only if the
    spatial dims cannot be merged)."""
    B, C3 = qkv.shape[0], qkv.shape[-1]
    return qkv.reshape(B, -1, 3, num_heads, C3 // (3 * num_heads)).permute(2, 0, 3, 1, 4)


def heads_view(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """A (B, *S, C) map as a (B, heads, prod(S), d) view."""
    B, C = x.shape[0], x.shape[-1]
    return x.reshape(B, -1, num_heads, C // num_heads).transpose(1, 2)


def folds(window_size: Sequence[int]) -> bool:
    """Whether the kernels take maps of these windows folded: video maps whose windows
    have depth 1 (so no shift in time) are 2D maps of B * T images, their windows in the
    same order."""
    return len(window_size) == 3 and window_size[0] == 1


def folded(maps: Sequence[torch.Tensor], window_size, shift_size):
    """(maps, window, shift) as the kernels take them (folds)."""
    if folds(window_size):
        return [x.flatten(0, 1) for x in maps], tuple(window_size[1:]), tuple(shift_size[1:])
    return list(maps), tuple(window_size), tuple(shift_size)


def image_layout(qkv: torch.Tensor, window_size, shift_size, timm_order: bool,
                 qkv_bias: Optional[torch.Tensor]) -> ImageLayout:
    return ImageLayout(tuple(qkv.shape[1:-1]), window_size, shift_size, timm_order, qkv_bias)


def head_scale(qkv: torch.Tensor, num_heads: int) -> float:
    """Swin-V1's softmax scale, head_dim ** -0.5."""
    return (qkv.shape[-1] // (3 * num_heads)) ** -0.5


def map_windows(qkv: torch.Tensor, window_size) -> int:
    """Windows of a (B, *S, 3C) map, padding included."""
    padded = reference.padded_sizes(qkv.shape[1:-1], window_size)
    return qkv.shape[0] * math.prod(p // w for p, w in zip(padded, window_size))
