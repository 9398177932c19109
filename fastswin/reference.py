"""Reference implementations of every fastswin op: pure PyTorch, differentiable,
any device and dtype. They are the ground truth of the tests and the
`reference` backend; they favour clarity over speed.

Window layout (torchvision's order): a (B, H, W, C) map is zero-padded
bottom/right to (Hp, Wp), multiples of the window (wh, ww), rolled by
(-sh, -sw), and cut into B * nW windows, nW = (Hp / wh) * (Wp / ww), window-major
in raster order, tokens in raster order inside each window (N = wh * ww).
Video maps (B, T, H, W, C) follow the same order in three dims (torchvision's video
Swin): window_partition, merge_windows, region_mask and effective_shifts take any
number of spatial dims; the 2D functions are those with two.
"""
import itertools
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

Pair = Tuple[int, int]
Sizes = Tuple[int, ...]  # one entry per spatial dim: (h, w) or (t, h, w)

# Swin-V2 clamps the learned logit scale at log(1 / 0.01).
LOGIT_SCALE_MAX = math.log(100.0)
# Additive mask value between tokens of different regions (timm, torchvision).
MASK_VALUE = -100.0


def padded_size(height: int, width: int, window_size: Pair) -> Pair:
    return padded_sizes((height, width), window_size)


def padded_sizes(sizes: Sizes, window_size: Sizes) -> Sizes:
    """Each spatial size rounded up to a multiple of the window."""
    return tuple(-(-size // window) * window for size, window in zip(sizes, window_size))


def window_partition(x: torch.Tensor, window_size: Sizes, shift_size: Optional[Sizes] = None) -> torch.Tensor:
    """(B, *S, C) -> (B * nW, *window_size, C), S = (H, W) or (T, H, W): pad, roll by
    -shift, cut windows (window-major in raster order, tokens in raster order)."""
    B, *sizes, C = x.shape
    dims = range(len(sizes))
    padded = padded_sizes(sizes, window_size)
    x = F.pad(x, [0, 0] + [p for i in reversed(dims) for p in (0, padded[i] - sizes[i])])
    if shift_size is not None and any(shift_size):
        x = torch.roll(x, shifts=tuple(-s for s in shift_size), dims=tuple(i + 1 for i in dims))
    counts = [p // w for p, w in zip(padded, window_size)]
    x = x.reshape(B, *[n for i in dims for n in (counts[i], window_size[i])], C)
    x = x.permute(0, *[1 + 2 * i for i in dims], *[2 + 2 * i for i in dims], 1 + 2 * len(sizes))
    return x.reshape(B * math.prod(counts), *window_size, C)  # no -1: C may be 0


def window_reverse(windows: torch.Tensor, window_size: Pair, height: int, width: int,
                   shift_size: Pair = (0, 0)) -> torch.Tensor:
    """(B * nW, wh, ww, C) -> (B, H, W, C): merge windows, roll by +shift, crop."""
    return merge_windows(windows, window_size, (height, width), shift_size)


def merge_windows(windows: torch.Tensor, window_size: Sizes, sizes: Sizes,
                  shift_size: Optional[Sizes] = None) -> torch.Tensor:
    """(B * nW, *window_size, C) -> (B, *sizes, C): the inverse of window_partition (merge
    windows, roll by +shift, crop)."""
    C = windows.shape[-1]
    dims = range(len(sizes))
    padded = padded_sizes(sizes, window_size)
    counts = [p // w for p, w in zip(padded, window_size)]
    B = windows.shape[0] // math.prod(counts)  # no -1: C may be 0
    x = windows.reshape(B, *counts, *window_size, C)
    x = x.permute(0, *[n for i in dims for n in (1 + i, 1 + len(sizes) + i)], 1 + 2 * len(sizes))
    x = x.reshape(B, *padded, C)
    if shift_size is not None and any(shift_size):
        x = torch.roll(x, shifts=tuple(shift_size), dims=tuple(i + 1 for i in dims))
    return x[(slice(None), *[slice(0, size) for size in sizes])].contiguous()


def shift_attention_mask(height: int, width: int, window_size: Pair, shift_size: Pair,
                         device=None, dtype=torch.float32) -> torch.Tensor:
    """(nW, N, N) additive mask of shifted windows: 0 within a region, -100 across.

    Regions are those of the padded (Hp, Wp) map, as torchvision computes them.
    """
    return region_mask((height, width), window_size, shift_size, device, dtype)


def region_mask(sizes: Sizes, window_size: Sizes, shift_size: Sizes, device=None,
                dtype=torch.float32) -> torch.Tensor:
    """shift_attention_mask for maps of any number of spatial dims (torchvision's video
    Swin: (T, H, W), up to 27 regions)."""
    region = torch.zeros(padded_sizes(sizes, window_size), device=device, dtype=dtype)
    slices = [_region_slices(w, s) for w, s in zip(window_size, shift_size)]
    for count, where in enumerate(itertools.product(*slices)):
        region[where] = count
    region = window_partition(region[None, ..., None], window_size).flatten(1)  # (nW, N)
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
    return attn.softmax(dim=-1).to(v.dtype) @ v  # a wider bias (fp32 under fp16 q) widened the scores


def cosine_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            logit_scale: torch.Tensor, bias: Optional[torch.Tensor] = None,
                            mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Swin-V2 scaled cosine attention.

    softmax(cos(q_i, k_j) * exp(min(logit_scale[h], log 100)) + bias + mask[b % nW]) v,
    with q and k normalized as F.normalize(dim=-1) does. logit_scale: (heads, 1, 1).
    """
    # Normalized in fp32 at least: in fp16 F.normalize's eps (1e-12) rounds to 0, and a zero
    # row (a padding token without qkv bias) would become 0/0.
    q, k = (F.normalize(t.to(torch.promote_types(t.dtype, torch.float32)), dim=-1).to(t.dtype) for t in (q, k))
    attn = q @ k.transpose(-2, -1)
    attn = attn * torch.clamp(logit_scale, max=LOGIT_SCALE_MAX).exp().to(attn.dtype)
    attn = _add_bias_and_mask(attn, bias, mask)
    return attn.softmax(dim=-1).to(v.dtype) @ v  # a wider bias (fp32 under fp16 q) widened the scores


def effective_shifts(sizes: Sizes, window_size: Sizes, shift_size: Sizes) -> Sizes:
    """The shift applied: none along a dimension that the (padded) map fills with one
    window, nor on an empty map (any number of spatial dims)."""
    padded = padded_sizes(sizes, window_size)
    if 0 in padded:
        return (0,) * len(sizes)
    return tuple(0 if w >= p else s for p, w, s in zip(padded, window_size, shift_size))


def pad_map(x: torch.Tensor, window_size: Sizes, fill: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Pad (B, *S, C) at the end of each spatial dim to multiples of the window with
    `fill` (C,), or zeros (x itself where no padding is needed). A fill is always in
    the graph: its gradient is zero, not None, on maps without padding."""
    sizes = tuple(x.shape[1:-1])
    padded = padded_sizes(sizes, window_size)
    if fill is None:
        if padded == sizes:
            return x
        return F.pad(x, [0, 0] + [p for i in reversed(range(len(sizes))) for p in (0, padded[i] - sizes[i])])
    fill = fill.to(x.dtype)
    for dim, size in enumerate(padded, start=1):
        x = torch.cat([x, fill.expand(*x.shape[:dim], size - x.shape[dim], *x.shape[dim + 1:])], dim=dim)
    return x


def compose_shifted_window_attention(qkv, num_heads, window_size, shift_size, bias, logit_scale, qkv_bias,
                                     order, partition, reverse, attention, cosine_attention,
                                     attention_mask=region_mask, always_shift=False):
    """Shifted-window attention as the sequence of window ops it stands for, each
    one given as a callable (the reference's, or fastswin's fused ops): partition as
    window_partition, reverse as merge_windows, and the shift mask from
    `attention_mask` (same arguments as region_mask).

    See shifted_window_attention for the arguments and semantics.
    """
    if order not in ("torchvision", "timm"):
        raise ValueError(f"fastswin: order must be 'torchvision' or 'timm', got {order!r}")
    B, *sizes, C3 = qkv.shape
    sizes, window_size, C = tuple(sizes), tuple(window_size), C3 // 3
    if qkv.numel() == 0:  # an empty map attends to nothing (and its windows cannot say their batch)
        return qkv[..., :C].clone()
    dims = tuple(range(1, len(sizes) + 1))
    shift = tuple(shift_size) if always_shift else effective_shifts(sizes, window_size, shift_size)
    no_shift = (0,) * len(sizes)
    if order == "torchvision":  # pad, then roll (inside partition)
        windows = partition(pad_map(qkv, window_size, qkv_bias), window_size, shift)
    else:  # roll, then pad
        rolled = torch.roll(qkv, shifts=tuple(-s for s in shift), dims=dims) if any(shift) else qkv
        windows = partition(pad_map(rolled, window_size, qkv_bias), window_size, no_shift)
    B_, N = windows.shape[0], math.prod(window_size)
    q, k, v = windows.reshape(B_, N, 3, num_heads, C // num_heads).permute(2, 0, 3, 1, 4)
    mask = attention_mask(sizes, window_size, shift, qkv.device, qkv.dtype) if any(shift) else None
    if logit_scale is None:
        out = attention(q, k, v, bias, mask)
    else:
        out = cosine_attention(q, k, v, logit_scale, bias, mask)
    out = out.transpose(1, 2).reshape(B_, *window_size, C)
    if order == "torchvision":  # merge and roll back (inside reverse), crop
        return reverse(out, window_size, sizes, shift)
    merged = reverse(out, window_size, padded_sizes(sizes, window_size), no_shift)  # merge, crop, roll back
    merged = merged[(slice(None), *[slice(0, size) for size in sizes])]
    return torch.roll(merged, shifts=shift, dims=dims) if any(shift) else merged.contiguous()


def shifted_window_attention(qkv: torch.Tensor, num_heads: int, window_size: Sizes, shift_size: Sizes,
                             bias: Optional[torch.Tensor] = None, logit_scale: Optional[torch.Tensor] = None,
                             qkv_bias: Optional[torch.Tensor] = None, order: str = "torchvision",
                             always_shift: bool = False) -> torch.Tensor:
    """Shifted-window attention on the image layout, between a block's qkv and proj linears.

    qkv: (B, H, W, 3C), or a video map (B, T, H, W, 3C) with 3D windows and shifts;
    channels [q | k | v] x heads x head_dim. Returns (B, [T,] H, W, C).
    order "torchvision": pad to multiples of the window, roll by -shift, partition,
    attend, reverse, roll back, crop. order "timm": roll, pad, ..., crop, roll back.
    No shift along a dimension the padded map fills with one window (torchvision's
    rule), unless always_shift (timm's and Hugging Face's: the shift given). Padded
    positions read qkv_bias (3C,), what the qkv Linear gives a zero token, or zeros.
    v1 attention (scale head_dim^-0.5) with bias (heads, N, N) and the shift
    mask; v2 cosine attention when logit_scale (heads, 1, 1) is given.
    """
    return compose_shifted_window_attention(
        qkv, num_heads, window_size, shift_size, bias, logit_scale, qkv_bias, order,
        partition=window_partition, reverse=merge_windows,
        attention=window_attention, cosine_attention=cosine_window_attention, always_shift=always_shift)


def token_pixels(sizes: Sizes, window_size: Sizes, shift_size: Sizes, order: str):
    """Where each token of each window comes from in an (H, W) or (T, H, W) map: (row,
    inside), each (nW, N), the pixel it reads as a row of the flattened map and whether
    it is one (else padding), from rolling and partitioning a map of row numbers
    (window_partition: torchvision's order; torch.roll then pad: timm's); and the
    (nW, N, N) shift mask. What the image-layout kernels' index math
    (fastswin.ops.attention.image_index) is tested against."""
    rows = torch.arange(math.prod(sizes), dtype=torch.float64).reshape(1, *sizes)
    coords = torch.stack([rows, torch.ones_like(rows)], dim=-1)  # (1, *S, 2)
    if order == "timm":
        rolled = torch.roll(coords, shifts=tuple(-s for s in shift_size), dims=tuple(range(1, len(sizes) + 1)))
        windows = window_partition(rolled, window_size)
    else:
        windows = window_partition(coords, window_size, shift_size)
    row, inside = windows.flatten(1, -2).long().unbind(-1)
    return row, inside.bool(), region_mask(sizes, window_size, shift_size)
