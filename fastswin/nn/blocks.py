"""Swin Transformer blocks with timm 1.0's constructor arguments and parameter
names, running fused image-layout window attention.

Window and shift follow timm's rules: unless ``always_partition``, a dimension
of the input resolution not larger than the window gets that size as its
window and no shift. The shift mask is always built for the actual input size
(timm's ``dynamic_mask`` behaviour; the flag is kept for compatibility), so a
block runs on any map size.
"""
from typing import Callable, Optional, Tuple, Union

import torch
import torch.nn as nn

from fastswin.nn.attention import WindowAttention, WindowAttentionV2
from fastswin.nn.layers import DropPath, Mlp, get_act_layer
from fastswin.ops.arguments import IntPair, as_pair


class _SwinBlockBase(nn.Module):
    """Residual attention and MLP branches around (B, H, W, C) maps.

    v1 (pre-norm): x + drop_path(attn(norm1(x))), then x + drop_path(mlp(norm2(x))).
    v2 (res-post-norm, ``post_norm = True``): x + drop_path(norm1(attn(x))), likewise for the MLP.
    """
    post_norm = False

    def _init_common(self, dim, input_resolution, window_size, shift_size, always_partition, dynamic_mask,
                     mlp_ratio, proj_drop, drop_path, act_layer, norm_layer, dd):
        self.dim = dim
        self.input_resolution = as_pair(input_resolution)
        self.target_shift_size = as_pair(shift_size)  # kept for set_input_size
        self.always_partition = always_partition
        self.dynamic_mask = dynamic_mask
        self.window_size, self.shift_size = self._calc_window_shift(window_size, shift_size)
        self.window_area = self.window_size[0] * self.window_size[1]
        self.mlp_ratio = mlp_ratio
        self.norm1 = norm_layer(dim, **dd)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = norm_layer(dim, **dd)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=get_act_layer(act_layer), drop=proj_drop, **dd)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.backend: Optional[str] = None  # fastswin backend of the fused attention (None: FASTSWIN_BACKEND / auto)

    def _calc_window_shift(self, target_window_size: IntPair,
                           target_shift_size: Optional[IntPair] = None) -> Tuple[Tuple[int, int], Tuple[int, int]]:
        """timm's rule: (window, shift) for the input resolution; shift None re-derives
        window // 2 when the block shifts at all."""
        window = as_pair(target_window_size)
        if target_shift_size is None:
            shift = tuple(w // 2 for w in window) if any(self.target_shift_size) else (0, 0)
        else:
            shift = as_pair(target_shift_size)
        if self.always_partition:
            return window, shift
        window = tuple(r if r <= w else w for r, w in zip(self.input_resolution, window))
        shift = tuple(0 if r <= w else s for r, w, s in zip(self.input_resolution, window, shift))
        return window, shift

    def set_input_size(self, feat_size: Tuple[int, int], window_size: IntPair,
                       always_partition: Optional[bool] = None) -> None:
        """New input resolution and window (window and shift re-derived by timm's rule)."""
        self.input_resolution = as_pair(feat_size)
        if always_partition is not None:
            self.always_partition = always_partition
        self.window_size, self.shift_size = self._calc_window_shift(window_size)
        self.window_area = self.window_size[0] * self.window_size[1]
        self.attn.set_window_size(self.window_size)

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C): shifted-window attention (qkv, fused op, proj)."""
        return self.attn(x, self.shift_size, backend=self.backend)

    def _branch(self, fn: Callable, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return norm(fn(x)) if self.post_norm else fn(norm(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        x = x + self.drop_path1(self._branch(self._attn, self.norm1, x))
        return x + self.drop_path2(self._branch(self.mlp, self.norm2, x))


class SwinTransformerBlock(_SwinBlockBase):
    """Swin-V1 block (timm's ``SwinTransformerBlock`` arguments and state dict)."""

    def __init__(self, dim: int, input_resolution: IntPair, num_heads: int = 4, head_dim: Optional[int] = None,
                 window_size: IntPair = 7, shift_size: IntPair = 0, always_partition: bool = False,
                 dynamic_mask: bool = False, mlp_ratio: float = 4., qkv_bias: bool = True, proj_drop: float = 0.,
                 attn_drop: float = 0., drop_path: float = 0., act_layer: Union[str, Callable] = nn.GELU,
                 norm_layer: Callable = nn.LayerNorm, device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self._init_common(dim, input_resolution, window_size, shift_size, always_partition, dynamic_mask,
                          mlp_ratio, proj_drop, drop_path, act_layer, norm_layer, dd)
        self.attn = WindowAttention(dim, num_heads=num_heads, head_dim=head_dim, window_size=self.window_size,
                                    qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop, **dd)


class SwinTransformerBlockV2(_SwinBlockBase):
    """Swin-V2 block (timm's ``SwinTransformerV2Block`` arguments and state dict):
    res-post-norm and cosine attention with a continuous position bias."""
    post_norm = True

    def __init__(self, dim: int, input_resolution: IntPair, num_heads: int, window_size: IntPair = 7,
                 shift_size: IntPair = 0, always_partition: bool = False, dynamic_mask: bool = False,
                 mlp_ratio: float = 4., qkv_bias: bool = True, proj_drop: float = 0., attn_drop: float = 0.,
                 drop_path: float = 0., act_layer: Union[str, Callable] = "gelu",
                 norm_layer: Callable = nn.LayerNorm, pretrained_window_size: IntPair = 0,
                 device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.num_heads = num_heads
        self._init_common(dim, input_resolution, window_size, shift_size, always_partition, dynamic_mask,
                          mlp_ratio, proj_drop, drop_path, act_layer, norm_layer, dd)
        self.attn = WindowAttentionV2(dim, window_size=self.window_size, num_heads=num_heads, qkv_bias=qkv_bias,
                                      attn_drop=attn_drop, proj_drop=proj_drop,
                                      pretrained_window_size=as_pair(pretrained_window_size), **dd)
