"""Reference implementations of every fastswin op: pure PyTorch, differentiable,
any device and dtype. They are the ground truth of the tests and the
`reference` backend; they favour clarity over speed.

Window layout (torchvision's order): a (B, H, W, C) map is zero-padded
bottom/right to (Hp, Wp), multiples of the window (wh, ww), rolled by
(-sh, -sw), and cut into B * nW windows, nW = (Hp / wh) * (Wp / ww), window-major
in raster order, tokens in raster order inside each window (N = wh * ww).
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

Pair = Tuple[int, int]

# Swin-V2 clamps the learned logit scale at log(1 / 0.01).
LOGIT_SCALE_MAX = math.log(100.0)
# Additive mask value between tokens of different regions (timm, torchvision).
MASK_VALUE = -100.0


def padded_size(height: int, width: int, window_size: Pair) -> Pair:
    return -(-height // window_size[0]) * window_size[0], -(-width // window_size[1]) * window_size[1]


def window_partition(x: torch.Tensor, window_size: Pair, shift_size: Pair = (0, 0)) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, wh, ww, C): pad, roll by -shift, cut windows."""
    B, H, W, C = x.shape
    wh, ww = window_size
    Hp, Wp = padded_size(H, W, window_size)
    x = F.pad(x, (0, 0, 0, Wp - W, 0, Hp - H))
    if shift_size[0] or shift_size[1]:
        x = torch.roll(x, shifts=(-shift_size[0], -shift_size[1]), dims=(1, 2))
    x = x.reshape(B, Hp // wh, wh, Wp // ww, ww, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh, ww, C)


def window_reverse(windows: torch.Tensor, window_size: Pair, height: int, width: int,
                   shift_size: Pair = (0, 0)) -> torch.Tensor:
    """(B * nW, wh, ww, C) -> (B, H, W, C): merge windows, roll by +shift, crop."""
    wh, ww = window_size
    C = windows.shape[-1]
    Hp, Wp = padded_size(height, width, window_size)
    x = windows.reshape(-1, Hp // wh, Wp // ww, wh, ww, C).permute(0, 1, 3, 2, 4, 5)
    x = x.reshape(-1, Hp, Wp, C)
    if shift_size[0] or shift_size[1]:
        x = torch.roll(x, shifts=shift_size, dims=(1, 2))
    return x[:, :height, :width, :]


def shift_attention_mask(height: int, width: int, window_size: Pair, shift_size: Pair,
                         device=None, dtype=torch.float32) -> torch.Tensor:
    """(nW, N, N) additive mask of shifted windows: 0 within a region, -100 across.

    Regions are those of the padded (Hp, Wp) map, as torchvision computes them.
    """
    Hp, Wp = padded_size(height, width, window_size)
    region = torch.zeros(Hp, Wp, device=device, dtype=dtype)
    count = 0
    for hs in _region_slices(window_size[0], shift_size[0]):
        for ws in _region_slices(window_size[1], shift_size[1]):
            region[hs, ws] = count
            count += 1
    region = window_partition(region[None, :, :, None], window_size).flatten(1)  # (nW, N)
    diff = region[:, None, :] - region[:, :, None]
    return torch.where(diff != 0, MASK_VALUE, 0.0).to(dtype)


def _region_slices(window: int, shift: int):
    return slice(0, -window), slice(-window, -shift if shift else None), slice(-shift if shift else None, None)


def _add_bias_and_mask(attn: torch.Tensor, bias: Optional[torch.Tensor],
                       mask: Optional[torch.Tensor]) -> torch.Tensor:
    if bias is not None:
        attn = attn + bias
    if mask is not None:
        B_, heads, N, _ = attn.shape
        nW = mask.shape[0]
        attn = (attn.view(B_ // nW, nW, heads, N, N) + mask[None, :, None]).view(B_, heads, N, N)
    return attn


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     bias: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None,
                     scale: Optional[float] = None) -> torch.Tensor:
    """Swin-V1 window attention: softmax(scale * q k^T + bias + mask[b % nW]) v.

    q, k, v: (B_, heads, N, d); bias: (heads, N, N); mask: (nW, N, N).
    Returns (B_, heads, N, d).
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    attn = (q * scale) @ k.transpose(-2, -1)
    attn = _add_bias_and_mask(attn, bias, mask)
    return attn.softmax(dim=-1) @ v


def cosine_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            logit_scale: torch.Tensor, bias: Optional[torch.Tensor] = None,
                            mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Swin-V2 scaled cosine attention.

    softmax(cos(q_i, k_j) * exp(min(logit_scale[h], log 100)) + bias + mask[b % nW]) v,
    with q and k normalized as F.normalize(dim=-1) does. logit_scale: (heads, 1, 1).
    """
    attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
    attn = attn * torch.clamp(logit_scale, max=LOGIT_SCALE_MAX).exp()
    attn = _add_bias_and_mask(attn, bias, mask)
    return attn.softmax(dim=-1) @ v
