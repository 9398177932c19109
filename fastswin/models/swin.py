"""Swin Transformer v1 / v2 models with timm 1.0's constructor arguments and
state-dict layout (timm checkpoints load with strict=True), built from
fastswin.nn blocks.

Stage i (of len(depths)) downsamples first (i > 0), then runs depths[i] blocks
alternating shift 0 and window // 2. Images are (B, in_chans, H, W) with H, W
any multiples of the patch size (unless strict_img_size); feature maps are
(B, H', W', C) ("NHWC").
"""
from typing import List, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint

from fastswin.nn.blocks import SwinTransformerBlock, SwinTransformerBlockV2
from fastswin.nn.layers import ClassifierHead, PatchEmbed, PatchMerging, PatchMergingV2
from fastswin.ops.arguments import IntPair, as_pair

WindowSpec = Union[IntPair, Sequence[IntPair]]


def stage_window_sizes(window_size: WindowSpec, num_stages: int) -> Tuple[Tuple[int, int], ...]:
    """One (h, w) window per stage from an int, an (h, w) pair, or one int / pair per stage
    (timm's rule: a sequence of two ints is one (h, w) window)."""
    if isinstance(window_size, int) or (len(window_size) == 2 and isinstance(window_size[0], int)):
        return (as_pair(window_size),) * num_stages
    if len(window_size) != num_stages:
        raise ValueError(f"fastswin: expected {num_stages} stage window sizes, got {window_size!r}")
    return tuple(as_pair(w) for w in window_size)


def stage_drop_path_rates(drop_path_rate: float, depths: Sequence[int]) -> List[List[float]]:
    """Stochastic-depth rates rising linearly from 0 over all blocks, split per stage."""
    return [r.tolist() for r in torch.linspace(0, drop_path_rate, sum(depths), device="cpu").split(list(depths))]


class SwinStage(nn.Module):
    """Optional patch merging, then `depth` blocks (even: no shift, odd: shift window // 2)."""

    def __init__(self, block_cls: Type[nn.Module], merge_cls: Type[nn.Module], dim: int, out_dim: int,
                 input_resolution: Tuple[int, int], depth: int, downsample: bool, window_size: Tuple[int, int],
                 drop_path: List[float], norm_layer, dd, **block_kwargs):
        super().__init__()
        self.input_resolution = input_resolution
        self.output_resolution = tuple((r + 1) // 2 for r in input_resolution) if downsample else input_resolution
        self.grad_checkpointing = False
        self.downsample = merge_cls(dim=dim, out_dim=out_dim, norm_layer=norm_layer, **dd) if downsample \
            else nn.Identity()
        shift = tuple(w // 2 for w in window_size)
        self.blocks = nn.Sequential(*[
            block_cls(dim=out_dim, input_resolution=self.output_resolution, window_size=window_size,
                      shift_size=0 if i % 2 == 0 else shift, drop_path=drop_path[i], norm_layer=norm_layer,
                      **block_kwargs, **dd)
            for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, dim) -> (B, H', W', out_dim)."""
        x = self.downsample(x)
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


class _SwinModelBase(nn.Module):
    """Patch embedding, stages, final norm and classifier head (shared by v1 and v2)."""

    def _build(self, block_cls, merge_cls, img_size, patch_size, in_chans, num_classes, global_pool, embed_dim,
               depths, window_size, strict_img_size, drop_rate, drop_path_rate, norm_layer, dd, block_kwargs):
        """Build the modules; block_kwargs go to every block, a tuple value one entry per stage."""
        self.num_classes, self.global_pool, self.in_chans = num_classes, global_pool, in_chans
        self.output_fmt = "NHWC"
        self.num_layers = len(depths)
        dims = list(embed_dim) if isinstance(embed_dim, (tuple, list)) else \
            [int(embed_dim * 2 ** i) for i in range(self.num_layers)]
        self.embed_dim, self.num_features = dims[0], dims[-1]
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, dims[0], norm_layer=norm_layer,
                                      strict_img_size=strict_img_size, **dd)
        windows = stage_window_sizes(window_size, self.num_layers)
        rates = stage_drop_path_rates(drop_path_rate, depths)
        grid = self.patch_embed.grid_size
        stages, self.feature_info, in_dim, scale = [], [], dims[0], 1
        for i in range(self.num_layers):
            stages.append(SwinStage(
                block_cls, merge_cls, in_dim, dims[i], tuple((g + scale - 1) // scale for g in grid), depths[i],
                downsample=i > 0, window_size=windows[i], drop_path=rates[i], norm_layer=norm_layer, dd=dd,
                **{k: (v[i] if isinstance(v, tuple) else v) for k, v in block_kwargs.items()}))
            in_dim = dims[i]
            scale = scale * 2 if i > 0 else scale  # stage i > 0 halves the map
            self.feature_info.append(dict(num_chs=dims[i], reduction=max(self.patch_embed.patch_size) * scale,
                                          module=f"layers.{i}"))
        self.layers = nn.Sequential(*stages)
        self.norm = norm_layer(self.num_features, **dd)
        self.head = ClassifierHead(self.num_features, num_classes, global_pool, drop_rate, **dd)
        self.head_hidden_size = self.num_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> (B, H / 32, W / 32, num_features) (for patch 4, 4 stages), normed."""
        return self.norm(self.layers(self.patch_embed(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, H', W', num_features) -> (B, num_classes), or pooled (B, num_features) with pre_logits."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> (B, num_classes) logits."""
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: Optional[Union[int, List[int]]] = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False):
        """Multi-scale features, as timm's forward_intermediates.

        Args:
            x: (B, in_chans, H, W).
            indices: stages to return: the last n for an int, those listed (negative from
                the end) for a list, all for None.
            norm: apply the final norm to the last stage's output.
            stop_early: stop after the last stage asked for.
            output_fmt: "NCHW" (B, C_i, H_i, W_i) or "NHWC" (B, H_i, W_i, C_i).
            intermediates_only: return only the list of features.

        Returns:
            the list of stage outputs, or (final normed features (B, H', W', C), that list).
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"fastswin: output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take = self._take_indices(indices)
        last = len(self.layers) - 1
        x = self.patch_embed(x)
        intermediates = []
        for i, stage in enumerate(self.layers[:max(take) + 1] if stop_early else self.layers):
            x = stage(x)
            if i in take:
                feature = self.norm(x) if norm and i == last else x
                intermediates.append(feature.permute(0, 3, 1, 2).contiguous() if output_fmt == "NCHW" else feature)
        if intermediates_only:
            return intermediates
        return (self.norm(x) if i == last else x), intermediates

    def _take_indices(self, indices) -> List[int]:
        n = len(self.layers)
        if indices is None:
            return list(range(n))
        if isinstance(indices, int):
            if not 0 < indices <= n:
                raise ValueError(f"fastswin: asked for the last {indices} of {n} stages")
            return list(range(n - indices, n))
        if any(not -n <= i < n for i in indices):
            raise ValueError(f"fastswin: stage indices {indices} out of range for {n} stages")
        return [i % n for i in indices]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.layers:
            stage.grad_checkpointing = enable

    def set_backend(self, backend: Optional[str]) -> None:
        """fastswin backend of every block's fused attention (None: FASTSWIN_BACKEND / auto)."""
        for module in self.modules():
            if isinstance(module, (SwinTransformerBlock, SwinTransformerBlockV2)):
                module.backend = backend

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        weight = self.norm.weight
        self.num_classes = num_classes
        self.global_pool = self.global_pool if global_pool is None else global_pool
        self.head = ClassifierHead(self.num_features, num_classes, self.global_pool, self.head.drop.p,
                                   device=weight.device, dtype=weight.dtype)

    def _init_linear_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)


class SwinTransformer(_SwinModelBase):
    """Swin Transformer (v1), timm's ``SwinTransformer`` arguments and state dict.

    Unlike timm, strict_img_size defaults to False: every multiple of the patch size runs.
    """

    def __init__(self, img_size: IntPair = 224, patch_size: int = 4, in_chans: int = 3, num_classes: int = 1000,
                 global_pool: str = "avg", embed_dim: int = 96, depths: Tuple[int, ...] = (2, 2, 6, 2),
                 num_heads: Tuple[int, ...] = (3, 6, 12, 24), head_dim: Optional[int] = None,
                 window_size: WindowSpec = 7, always_partition: bool = False, strict_img_size: bool = False,
                 mlp_ratio: float = 4., qkv_bias: bool = True, drop_rate: float = 0., proj_drop_rate: float = 0.,
                 attn_drop_rate: float = 0., drop_path_rate: float = 0.1, norm_layer=nn.LayerNorm,
                 device=None, dtype=None):
        super().__init__()
        block_kwargs = dict(num_heads=tuple(num_heads), head_dim=head_dim, always_partition=always_partition,
                            dynamic_mask=not strict_img_size, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                            proj_drop=proj_drop_rate, attn_drop=attn_drop_rate)
        self._build(SwinTransformerBlock, PatchMerging, img_size, patch_size, in_chans, num_classes, global_pool,
                    embed_dim, depths, window_size, strict_img_size, drop_rate, drop_path_rate, norm_layer,
                    {"device": device, "dtype": dtype}, block_kwargs)
        self._init_linear_weights()

    def no_weight_decay(self) -> set:
        return {n for n, _ in self.named_parameters() if "relative_position_bias_table" in n}


class SwinTransformerV2(_SwinModelBase):
    """Swin Transformer V2, timm's ``SwinTransformerV2`` arguments and state dict.

    Unlike timm, strict_img_size defaults to False: every multiple of the patch size runs.
    """

    def __init__(self, img_size: IntPair = 224, patch_size: int = 4, in_chans: int = 3, num_classes: int = 1000,
                 global_pool: str = "avg", embed_dim: int = 96, depths: Tuple[int, ...] = (2, 2, 6, 2),
                 num_heads: Tuple[int, ...] = (3, 6, 12, 24), window_size: WindowSpec = 7,
                 always_partition: bool = False, strict_img_size: bool = False, mlp_ratio: float = 4.,
                 qkv_bias: bool = True, drop_rate: float = 0., proj_drop_rate: float = 0.,
                 attn_drop_rate: float = 0., drop_path_rate: float = 0.1, act_layer="gelu",
                 norm_layer=nn.LayerNorm, pretrained_window_sizes: Tuple[int, ...] = (0, 0, 0, 0),
                 device=None, dtype=None):
        super().__init__()
        block_kwargs = dict(num_heads=tuple(num_heads), always_partition=always_partition,
                            dynamic_mask=not strict_img_size, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                            proj_drop=proj_drop_rate, attn_drop=attn_drop_rate, act_layer=act_layer,
                            pretrained_window_size=tuple(pretrained_window_sizes))
        self._build(SwinTransformerBlockV2, PatchMergingV2, img_size, patch_size, in_chans, num_classes,
                    global_pool, embed_dim, depths, window_size, strict_img_size, drop_rate, drop_path_rate,
                    norm_layer, {"device": device, "dtype": dtype}, block_kwargs)
        self._init_linear_weights()
        for block in self.modules():  # timm's res-post-norm init: every residual branch starts at zero
            if isinstance(block, SwinTransformerBlockV2):
                for norm in (block.norm1, block.norm2):
                    nn.init.zeros_(norm.weight)
                    nn.init.zeros_(norm.bias)

    def no_weight_decay(self) -> set:
        return {n for n, _ in self.named_parameters() if "cpb_mlp" in n or "logit_scale" in n}

