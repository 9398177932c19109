"""Shifted-window attention of a whole (B, [T,] H, W, 3C) qkv map, as the Swin blocks
of fastswin.nn and the patched timm / Hugging Face / MONAI blocks call it: the fused
op (fastswin.ops.shifted_window_attention) with the shift the block gives kept along
every dimension (timm with ``always_partition=True`` or an input smaller than the block
was built for, and Hugging Face's MaskFormer, shift maps of one window too).

Attention dropout in training runs an explicit (unfused) composition instead: the
fused op has no dropout on the attention probabilities.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from fastswin import ops, reference

Sizes = Tuple[int, ...]  # (h, w) or (t, h, w)


def window_attention_map(qkv: torch.Tensor, num_heads: int, window_size: Sizes, shift_size: Sizes, *,
                         bias: Optional[torch.Tensor], logit_scale: Optional[torch.Tensor] = None,
                         qkv_bias: Optional[torch.Tensor] = None, order: str = "timm",
                         attn_drop: float = 0.0, backend: Optional[str] = None) -> torch.Tensor:
    """Swin window attention of a qkv map, with the library's own shift rule kept.

    Args:
        qkv: (B, H, W, 3C) or a video map (B, T, H, W, 3C), the qkv Linear of the
            un-partitioned map.
        num_heads: heads; head_dim = C / num_heads.
        window_size, shift_size: (h, w), or (t, h, w) for video maps, as the block uses
            them (no adjustment here).
        bias: (heads, N, N) relative-position bias, N the window's tokens.
        logit_scale: (heads, 1, 1) raw Swin-V2 logit scale (cosine attention), or None (v1).
        qkv_bias: (3C,), what padded tokens read (the qkv Linear of a zero token).
        order: "timm" (roll, then pad) or "torchvision" (pad, then roll; Hugging Face's order too).
        attn_drop: dropout probability on the attention probabilities (0 outside training).
        backend: fastswin backend of the fused op.

    Returns:
        (B, [T,] H, W, C), the attention output at the original positions, before proj.
    """
    if attn_drop > 0:
        return _unfused(qkv, num_heads, window_size, shift_size, bias, logit_scale, qkv_bias, order, attn_drop)
    return ops.shifted_window_attention(qkv, num_heads, window_size, shift_size, bias, logit_scale=logit_scale,
                                        qkv_bias=qkv_bias, order=order, always_shift=True, backend=backend)


def _unfused(qkv, num_heads, window_size, shift_size, bias, logit_scale, qkv_bias, order, attn_drop):
    """The reference composition (roll, pad, partition, attend, reverse) with attention dropout."""
    return reference.compose_shifted_window_attention(
        qkv, num_heads, window_size, shift_size, bias, logit_scale, qkv_bias, order,
        partition=reference.window_partition, reverse=reference.merge_windows,
        attention=lambda q, k, v, b, mask: _attention_with_dropout(q, k, v, b, mask, None, attn_drop),
        cosine_attention=lambda q, k, v, scale, b, mask: _attention_with_dropout(q, k, v, b, mask, scale, attn_drop),
        always_shift=True)


def _attention_with_dropout(q, k, v, bias, mask, logit_scale, attn_drop):
    """softmax(logits + bias + mask) with dropout on the probabilities, then @ v; (B_, heads, N, d)."""
    if logit_scale is None:
        logits = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    else:
        logits = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        logits = logits * torch.clamp(logit_scale, max=reference.LOGIT_SCALE_MAX).exp()
    if bias is not None:
        logits = logits + bias
    if mask is not None:
        B_, heads, N, _ = logits.shape
        logits = (logits.view(B_ // mask.shape[0], mask.shape[0], heads, N, N) + mask[None, :, None]).view_as(logits)
    probs = F.dropout(logits.softmax(dim=-1), p=attn_drop, training=attn_drop > 0)
    return probs @ v


def v2_qkv_bias(q_bias: Optional[torch.Tensor], k_bias: Optional[torch.Tensor],
                v_bias: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Swin-V2's qkv bias (3C,) from its q, k (a zero buffer) and v parts; None without
    q_bias (qkv_bias=False)."""
    return None if q_bias is None else torch.cat((q_bias, k_bias, v_bias))


def table_position_bias(table: torch.Tensor, index: torch.Tensor,
                        flat_index: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Swin-V1 relative-position bias: (rows, heads) table gathered by an (N, N) or (N*N,)
    index -> (heads, N, N). flat_index: table_bias_index(index, heads), kept by the caller:
    the bias is then gathered contiguous, as the kernels read it (else a strided view,
    which they copy, forward and backward)."""
    N = int(round(index.numel() ** 0.5))
    if flat_index is not None:
        # index_select, not indexing: ~4x less host and CPU time, and its backward adds
        # (index_add_) where indexing's sorts (index_put_ with accumulate).
        return torch.index_select(table.reshape(-1), 0, flat_index).view(-1, N, N)
    return table[index.reshape(-1)].view(N, N, -1).permute(2, 0, 1)


def table_bias_index(index: torch.Tensor, heads: int) -> torch.Tensor:
    """The (heads * N * N,) index into a (rows, heads) table's flat view that gathers
    table_position_bias, (heads, N, N), in one contiguous gather."""
    N = int(round(index.numel() ** 0.5))
    return (index.reshape(1, N * N) * heads + torch.arange(heads, device=index.device).view(heads, 1)).reshape(-1)


def continuous_position_bias(cpb_mlp: torch.nn.Module, coords_table: torch.Tensor,
                             index: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Swin-V2 continuous position bias: 16 sigmoid(cpb_mlp(coords)) gathered per token pair.

    coords_table: (1, 2wh - 1, 2ww - 1, 2); index: (N, N) or (N*N,). Returns (heads, N, N).
    """
    return 16 * torch.sigmoid(table_position_bias(cpb_mlp(coords_table).view(-1, num_heads), index))
