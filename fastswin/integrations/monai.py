"""MONAI: SwinUNETR's Swin encoder (monai.networks.nets.swin_unetr), 2D and 3D.

MONAI's block attends in ``forward_part1`` (norm, pad, roll, partition, attention,
reverse, roll back, crop: torchvision's order, padding before the qkv Linear); the
patch replaces it with: norm, the qkv Linear on the (B, [D,] H, W, C) map, the fused
op, proj. MONAI's own window rule (``get_window_size``: a window no larger than the map,
no shift along a dimension the map fills) and its bias for a shrunk window
(``relative_position_index[:n, :n]`` of the full window's table) are kept, and so is
``forward``: gradient checkpointing (``use_checkpoint``) wraps the patched method,
the MLP and drop path are MONAI's. The decoder is untouched.

Falls back to MONAI's forward in training with attention dropout > 0.
"""
import math
import sys
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastswin.integrations._core import (BACKEND_ATTR, Target, class_override_problem, library_is_faster, original,
                                         warn_if_unpredicted)
from fastswin.nn.functional import window_attention_map

FALLBACKS = ["monai: training with attn_drop_rate > 0 (attention dropout)"]
MODULE = "monai.networks.nets.swin_unetr"


def _sliced_bias(attn: nn.Module, n: int) -> torch.Tensor:
    """(heads, n, n): MONAI's bias of an n-token window, the full window's index sliced."""
    index = attn.relative_position_index[:n, :n].reshape(-1)
    return attn.relative_position_bias_table[index].reshape(n, n, -1).permute(2, 0, 1)


def _fused_part1(block: nn.Module, x: torch.Tensor, mask_matrix: Optional[torch.Tensor]) -> torch.Tensor:
    """Replaces SwinTransformerBlock.forward_part1: (B, [D,] H, W, C) -> the attention output, same shape."""
    attn = block.attn
    window, shift = sys.modules[MODULE].get_window_size(tuple(x.shape[1:-1]), block.window_size, block.shift_size)
    attended = (tuple(x.shape[1:-1]), tuple(window), tuple(shift))
    if (attn.training and attn.attn_drop.p > 0) or library_is_faster(block, x, attended):
        return original(block, "forward_part1")(x, mask_matrix)
    x = block.norm1(x)
    qkv = F.linear(x, attn.qkv.weight, attn.qkv.bias)
    warn_if_unpredicted(block, qkv, attn.num_heads, window)
    out = window_attention_map(qkv, attn.num_heads, window, shift, bias=_sliced_bias(attn, math.prod(window)),
                               qkv_bias=attn.qkv.bias, order="torchvision", backend=getattr(block, BACKEND_ATTR))
    return attn.proj_drop(attn.proj(out))


def _geometry(block: nn.Module):
    heads = block.attn.num_heads
    return heads, block.attn.qkv.weight.shape[0] // (3 * heads), tuple(block.window_size)


def match(module: nn.Module) -> Optional[Target]:
    """A Target for SwinUNETR's SwinTransformerBlock, None for any other module."""
    swin_unetr = sys.modules.get(MODULE)
    if swin_unetr is None or not isinstance(module, swin_unetr.SwinTransformerBlock):
        return None
    problem = class_override_problem(module, "forward_part1", swin_unetr.SwinTransformerBlock)
    if not isinstance(module.attn, swin_unetr.WindowAttention):
        problem = f"its attention is a {type(module.attn).__qualname__}, not MONAI's WindowAttention"
    return Target(kind="monai SwinTransformerBlock", attr="forward_part1", fused=_fused_part1, geometry=_geometry,
                  problem=problem)
