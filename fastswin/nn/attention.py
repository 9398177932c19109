"""Window attention modules with timm 1.0's constructor arguments and
parameter / buffer names (timm state dicts load with strict=True), run on the
image layout: qkv Linear on the whole (B, H, W, C) map, fused shifted-window
attention, proj.

Unlike timm's, forward takes the un-partitioned map and the block's shift:
the roll, padding, partition and mask live inside the fused op.
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastswin.nn.functional import (continuous_position_bias, table_position_bias, v2_qkv_bias,
                                    window_attention_map)
from fastswin.ops.arguments import IntPair, as_pair


def relative_position_index(window_size: Tuple[int, int], device=None) -> torch.Tensor:
    """(N, N) index into a ((2wh - 1) * (2ww - 1), heads) table of relative offsets."""
    wh, ww = window_size
    coords = torch.stack(torch.meshgrid(torch.arange(wh, device=device), torch.arange(ww, device=device),
                                        indexing="ij")).flatten(1)  # (2, N)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # (N, N, 2)
    return (relative[..., 0] + wh - 1) * (2 * ww - 1) + relative[..., 1] + ww - 1


def log_spaced_coords_table(window_size: Tuple[int, int], pretrained_window_size: Tuple[int, int],
                            device=None, dtype=None) -> torch.Tensor:
    """(1, 2wh - 1, 2ww - 1, 2) Swin-V2 relative coordinates, normalized to the
    (pretrained) window and log-spaced: sign(t) log2(1 + |8t|) / 3."""
    reference = pretrained_window_size if pretrained_window_size[0] > 0 else window_size
    axes = [torch.arange(-(w - 1), w, device=device, dtype=torch.float32) / max(r - 1, 1)
            for w, r in zip(window_size, reference)]
    table = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)[None] * 8
    table = torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)
    return table if dtype is None else table.to(dtype)


class _ImageWindowAttention(nn.Module):
    """What v1 and v2 share: qkv Linear on the map, fused attention, proj.

    Subclasses give relative_position_bias(), qkv_bias_vector() and logit_scale_or_none().
    """

    def forward(self, x: torch.Tensor, shift_size: IntPair = 0, backend: Optional[str] = None) -> torch.Tensor:
        """(B, H, W, dim) map -> (B, H, W, dim): shifted-window attention with this
        module's window, shifted by shift_size (int or (h, w)), timm's roll-then-pad order."""
        qkv = F.linear(x, self.qkv.weight, self.qkv_bias_vector())
        attn_drop = self.attn_drop.p if self.training else 0.0
        out = window_attention_map(qkv, self.num_heads, self.window_size, as_pair(shift_size),
                                   bias=self.relative_position_bias(), logit_scale=self.logit_scale_or_none(),
                                   qkv_bias=self.qkv_bias_vector(), order="timm", attn_drop=attn_drop,
                                   backend=backend)
        return self.proj_drop(self.proj(out))


class WindowAttention(_ImageWindowAttention):
    """Swin-V1 window attention: scaled dot product plus a learned relative-position
    bias table ((2wh - 1) * (2ww - 1), heads)."""

    def __init__(self, dim: int, num_heads: int, head_dim: Optional[int] = None, window_size: IntPair = 7,
                 qkv_bias: bool = True, attn_drop: float = 0., proj_drop: float = 0., device=None, dtype=None):
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        self.dim = dim
        self.window_size = as_pair(window_size)
        self.window_area = self.window_size[0] * self.window_size[1]
        self.num_heads = num_heads
        head_dim = head_dim or dim // num_heads
        attn_dim = head_dim * num_heads
        self.scale = head_dim ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.empty(self._table_rows(), num_heads, **dd))
        self.register_buffer("relative_position_index", relative_position_index(self.window_size, device),
                             persistent=False)
        self.qkv = nn.Linear(dim, attn_dim * 3, bias=qkv_bias, **dd)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(attn_dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=.02)

    def _table_rows(self) -> int:
        return (2 * self.window_size[0] - 1) * (2 * self.window_size[1] - 1)

    def relative_position_bias(self) -> torch.Tensor:
        """(heads, N, N)."""
        return table_position_bias(self.relative_position_bias_table, self.relative_position_index)

    def qkv_bias_vector(self) -> Optional[torch.Tensor]:
        return self.qkv.bias

    def logit_scale_or_none(self) -> None:
        return None

    def set_window_size(self, window_size: IntPair) -> None:
        """New window; the bias table is resampled bicubically (as an image of offsets)."""
        window_size = as_pair(window_size)
        if window_size == self.window_size:
            return
        old = self.relative_position_bias_table
        grid = old.T.reshape(1, self.num_heads, 2 * self.window_size[0] - 1, 2 * self.window_size[1] - 1)
        self.window_size, self.window_area = window_size, window_size[0] * window_size[1]
        with torch.no_grad():
            grid = F.interpolate(grid.float(), size=(2 * window_size[0] - 1, 2 * window_size[1] - 1),
                                 mode="bicubic", align_corners=False).to(old.dtype)
        self.relative_position_bias_table = nn.Parameter(grid.reshape(self.num_heads, -1).T.contiguous(),
                                                         requires_grad=old.requires_grad)
        self.relative_position_index = relative_position_index(window_size, old.device)


class WindowAttentionV2(_ImageWindowAttention):
    """Swin-V2 window attention: scaled cosine attention (learned per-head logit
    scale, clamped at log 100) plus a continuous position bias, 16 sigmoid(cpb_mlp(coords)).

    The bias is computed once per forward; in eval mode, without autograd, it is
    cached until train() or a change of the cpb MLP's parameters (in place or by
    replacement) or of the module's device / dtype.
    """

    def __init__(self, dim: int, window_size: IntPair, num_heads: int, qkv_bias: bool = True,
                 qkv_bias_separate: bool = False, attn_drop: float = 0., proj_drop: float = 0.,
                 pretrained_window_size: IntPair = (0, 0), device=None, dtype=None):
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        self.dim = dim
        self.window_size = as_pair(window_size)
        self.pretrained_window_size = as_pair(pretrained_window_size)
        self.num_heads = num_heads
        self.qkv_bias_separate = qkv_bias_separate  # timm's switch; the same sum either way
        self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10), **dd))
        self.cpb_mlp = nn.Sequential(nn.Linear(2, 512, bias=True, **dd), nn.ReLU(inplace=True),
                                     nn.Linear(512, num_heads, bias=False, **dd))
        self.qkv = nn.Linear(dim, dim * 3, bias=False, **dd)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim, **dd))
            self.register_buffer("k_bias", torch.zeros(dim, **dd), persistent=False)
            self.v_bias = nn.Parameter(torch.zeros(dim, **dd))
        else:
            self.q_bias = self.k_bias = self.v_bias = None
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)
        self._register_position_buffers(device, dtype)
        self._bias_cache = None  # (key, bias): see relative_position_bias

    def _register_position_buffers(self, device, dtype) -> None:
        table = log_spaced_coords_table(self.window_size, self.pretrained_window_size, device, dtype)
        self.register_buffer("relative_coords_table", table, persistent=False)
        self.register_buffer("relative_position_index", relative_position_index(self.window_size, device),
                             persistent=False)

    def relative_position_bias(self) -> torch.Tensor:
        """(heads, N, N): 16 sigmoid(cpb_mlp(relative_coords_table)) gathered per token pair."""
        if self.training or torch.is_grad_enabled() or torch.compiler.is_compiling():
            return self._compute_bias()
        key = self._cache_key()
        if self._bias_cache is None or self._bias_cache[0] != key:
            self._bias_cache = (key, self._compute_bias())
        return self._bias_cache[1]

    def _compute_bias(self) -> torch.Tensor:
        return continuous_position_bias(self.cpb_mlp, self.relative_coords_table, self.relative_position_index,
                                        self.num_heads)

    def _cache_key(self):
        # A tensor's _version counts its in-place changes (optimizer steps, load_state_dict,
        # copy_); data_ptr changes when a parameter is replaced or moved.
        tensors = [*self.cpb_mlp.parameters(), self.relative_coords_table, self.relative_position_index]
        return tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)

    def train(self, mode: bool = True):
        self._bias_cache = None
        return super().train(mode)

    def qkv_bias_vector(self) -> Optional[torch.Tensor]:
        return v2_qkv_bias(self.q_bias, self.k_bias, self.v_bias)

    def logit_scale_or_none(self) -> torch.Tensor:
        return self.logit_scale

    def set_window_size(self, window_size: IntPair) -> None:
        """New window: the continuous bias needs only new coordinates."""
        window_size = as_pair(window_size)
        if window_size != self.window_size:
            self.window_size = window_size
            self._register_position_buffers(self.relative_coords_table.device, self.relative_coords_table.dtype)
            self._bias_cache = None
