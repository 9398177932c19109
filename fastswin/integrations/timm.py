"""timm: SwinTransformer / SwinTransformerV2 (timm.models.swin_transformer, _v2).

timm's window attention module receives already-partitioned windows, so the
patch replaces the block's ``_attn`` (roll, pad, partition, attention, reverse,
crop, roll back) with: qkv Linear on the (B, H, W, C) map, the fused op in
timm's roll-then-pad order, proj. The block's norms, MLP, drop path and
window / shift rules are timm's own.

Falls back to timm's ``_attn`` in training with attention dropout > 0.
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastswin.integrations._core import (BACKEND_ATTR, PREFIX, Target, class_override_problem, library_is_faster,
                                         original, warn_if_unpredicted)
from fastswin.nn.functional import (continuous_position_bias, table_bias_index, table_position_bias, v2_qkv_bias,
                                    window_attention_map)

BIAS_INDEX_ATTR = PREFIX + "bias_index"  # (the attention's index buffer, its version, its flat bias index)

FALLBACKS = ["timm: training with attn_drop > 0 (attention dropout)"]


def _v1_bias(block: nn.Module) -> torch.Tensor:
    attn = block.attn
    return table_position_bias(attn.relative_position_bias_table, attn.relative_position_index, _bias_index(block))


def _bias_index(block: nn.Module) -> Optional[torch.Tensor]:
    """The block's flat bias index (nn.functional.table_bias_index), made once per index
    buffer and its contents (a new buffer after .to(device), a new version after an
    in-place write) and kept on the patched block; None under torch.compile, which traces
    the plain gather."""
    if torch.compiler.is_compiling():
        return None
    index = block.attn.relative_position_index
    kept = block.__dict__.get(BIAS_INDEX_ATTR)
    if kept is None or kept[0] is not index or kept[1] != index._version:
        # A normal tensor even when first made under inference mode: backward saves it.
        with torch.inference_mode(False):
            flat = table_bias_index(index, block.attn.num_heads)
        kept = block.__dict__[BIAS_INDEX_ATTR] = (index, index._version, flat)
    return kept[2]


def _v2_bias(attn: nn.Module) -> torch.Tensor:
    return continuous_position_bias(attn.cpb_mlp, attn.relative_coords_table, attn.relative_position_index,
                                    attn.num_heads)


def _fused_attn(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Replaces SwinTransformerBlock._attn / SwinTransformerV2Block._attn: (B, H, W, C) -> (B, H, W, C)."""
    attn = block.attn
    # (the map's geometry is read on CPU only: library_is_faster)
    attended = (tuple(x.shape[1:3]), tuple(block.window_size), tuple(block.shift_size)) if x.is_cpu else None
    if (attn.training and attn.attn_drop.p > 0) or library_is_faster(block, x, attended):
        return original(block, "_attn")(x)
    v2 = "cpb_mlp" in attn._modules  # (hasattr on a module raises and catches where it is absent: ~3 us)
    qkv_bias = v2_qkv_bias(attn.q_bias, attn.k_bias, attn.v_bias) if v2 else attn.qkv.bias
    qkv = F.linear(x, attn.qkv.weight, qkv_bias)
    warn_if_unpredicted(block, qkv, attn.num_heads, block.window_size)
    out = window_attention_map(qkv, attn.num_heads, tuple(block.window_size), tuple(block.shift_size),
                               bias=_v2_bias(attn) if v2 else _v1_bias(block),
                               logit_scale=attn.logit_scale if v2 else None, qkv_bias=qkv_bias, order="timm",
                               backend=getattr(block, BACKEND_ATTR))
    out = attn.proj(out)
    # The block's _attn is replaced whole (attn.forward never runs): an identity dropout is skipped too.
    return out if _identity(attn.proj_drop) else attn.proj_drop(out)


def _identity(dropout: nn.Module) -> bool:
    return type(dropout) is nn.Dropout and (dropout.p == 0 or not dropout.training)


def _geometry(block: nn.Module):
    heads = block.attn.num_heads
    return heads, block.attn.qkv.weight.shape[0] // (3 * heads), tuple(block.window_size)


def match(module: nn.Module) -> Optional[Target]:
    """A Target for timm's Swin v1 / v2 blocks, None for any other module."""
    from timm.models import swin_transformer as v1
    from timm.models import swin_transformer_v2 as v2
    for block_cls, attn_cls in ((v1.SwinTransformerBlock, v1.WindowAttention),
                                (v2.SwinTransformerV2Block, v2.WindowAttention)):
        if isinstance(module, block_cls):
            kind = f"timm {block_cls.__name__}"
            problem = (class_override_problem(module, "_attn", block_cls)
                       or _attention_problem(module.attn, attn_cls))
            return Target(kind=kind, attr="_attn", fused=_fused_attn, geometry=_geometry, problem=problem)
    return None


def _attention_problem(attn: nn.Module, attn_cls: type) -> Optional[str]:
    if not isinstance(attn, attn_cls):
        return f"its attention is a {type(attn).__qualname__}, not timm's {attn_cls.__qualname__}"
    return class_override_problem(attn, "forward", attn_cls)
