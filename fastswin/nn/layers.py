"""The non-attention layers of a Swin model, with timm 1.0's argument and
parameter names: patch embedding, patch merging (v1: norm then reduction; v2:
reduction then norm), MLP, stochastic depth, classifier head."""
from typing import Callable, Optional, Type, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastswin.ops.arguments import IntPair, as_pair

_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "swish": nn.SiLU}


def get_act_layer(act_layer: Union[str, Type[nn.Module]]) -> Type[nn.Module]:
    """An activation class from a timm-style name ("gelu", "relu", "silu") or the class itself."""
    if not isinstance(act_layer, str):
        return act_layer
    if act_layer not in _ACTIVATIONS:
        raise ValueError(f"fastswin.nn: unknown activation {act_layer!r}; use one of {sorted(_ACTIVATIONS)} "
                         "or pass a module class")
    return _ACTIVATIONS[act_layer]


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples with probability p, scale the rest by 1 / (1 - p)."""
    if p == 0. or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - p)
    return x * keep / (1 - p)


class DropPath(nn.Module):
    def __init__(self, drop_prob: float = 0.):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)


class Mlp(nn.Module):
    """fc1 -> act -> dropout -> fc2 -> dropout, on the last dimension."""

    def __init__(self, in_features: int, hidden_features: int, act_layer: Callable = nn.GELU, drop: float = 0.,
                 device=None, dtype=None):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features, device=device, dtype=dtype)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, in_features, device=device, dtype=dtype)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class PatchEmbed(nn.Module):
    """(B, in_chans, H, W) image -> (B, H / p, W / p, embed_dim) map: strided conv, then norm.

    strict_img_size: the input must be img_size (timm's rule); otherwise any size
    that is a multiple of the patch size runs.
    """

    def __init__(self, img_size: IntPair = 224, patch_size: IntPair = 4, in_chans: int = 3,
                 embed_dim: int = 96, norm_layer: Optional[Callable] = None, strict_img_size: bool = False,
                 device=None, dtype=None):
        super().__init__()
        self.img_size, self.patch_size = as_pair(img_size), as_pair(patch_size)
        self.grid_size = tuple(i // p for i, p in zip(self.img_size, self.patch_size))
        self.strict_img_size = strict_img_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size,
                              device=device, dtype=dtype)
        self.norm = norm_layer(embed_dim, device=device, dtype=dtype) if norm_layer else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        if self.strict_img_size and (H, W) != self.img_size:
            raise ValueError(f"fastswin: input size {(H, W)} differs from the model's img_size {self.img_size} "
                             "(build the model with strict_img_size=False to take other sizes)")
        if H % self.patch_size[0] or W % self.patch_size[1]:
            raise ValueError(f"fastswin: input size {(H, W)} is not a multiple of the patch size {self.patch_size}")
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


def merge_2x2(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 4C): zero-pad odd sizes, then stack each
    2x2 neighbourhood in the order (0,0), (1,0), (0,1), (1,1) as timm and the original do."""
    B, H, W, C = x.shape
    x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
    _, H, W, _ = x.shape
    return x.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).flatten(3)


class PatchMerging(nn.Module):
    """Swin-V1 downsampling: 2x2 merge, LayerNorm(4 dim), Linear(4 dim -> out_dim)."""

    def __init__(self, dim: int, out_dim: Optional[int] = None, norm_layer: Callable = nn.LayerNorm,
                 device=None, dtype=None):
        super().__init__()
        self.dim, self.out_dim = dim, out_dim or 2 * dim
        self.norm = norm_layer(4 * dim, device=device, dtype=dtype)
        self.reduction = nn.Linear(4 * dim, self.out_dim, bias=False, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, dim) -> (B, ceil(H/2), ceil(W/2), out_dim)."""
        return self.reduction(self.norm(merge_2x2(x)))


class PatchMergingV2(nn.Module):
    """Swin-V2 downsampling: 2x2 merge, Linear(4 dim -> out_dim), LayerNorm(out_dim)."""

    def __init__(self, dim: int, out_dim: Optional[int] = None, norm_layer: Callable = nn.LayerNorm,
                 device=None, dtype=None):
        super().__init__()
        self.dim, self.out_dim = dim, out_dim or 2 * dim
        self.reduction = nn.Linear(4 * dim, self.out_dim, bias=False, device=device, dtype=dtype)
        self.norm = norm_layer(self.out_dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, dim) -> (B, ceil(H/2), ceil(W/2), out_dim)."""
        return self.norm(self.reduction(merge_2x2(x)))


class ClassifierHead(nn.Module):
    """Global pool ("avg", "max" or "" for none) of a (B, H, W, C) map, dropout, Linear
    (Identity when num_classes is 0)."""

    def __init__(self, in_features: int, num_classes: int, pool_type: str = "avg", drop_rate: float = 0.,
                 device=None, dtype=None):
        super().__init__()
        if pool_type not in ("avg", "max", ""):
            raise ValueError(f"fastswin: global_pool must be 'avg', 'max' or '', got {pool_type!r}")
        self.pool_type = pool_type
        self.num_features = in_features
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes, device=device, dtype=dtype) if num_classes else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, H, W, C) -> (B, num_classes), or (B, C) pooled features with pre_logits."""
        if self.pool_type == "avg":
            x = x.mean(dim=(1, 2))
        elif self.pool_type == "max":
            x = x.amax(dim=(1, 2))
        x = self.drop(x)
        return x if pre_logits else self.fc(x)

