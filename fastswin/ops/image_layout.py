"""Where the tokens of a shifted window live in the un-partitioned (B, H, W, .) map:
the index math of the image-layout attention kernels (shifted_window_attention),
which read q, k, v from the map and write the output back to it, with no rolled,
padded or partitioned copy and no mask tensor.

For window (wy, wx) of an image and its token t = i * ww + j, the token's
position in the rolled, padded (Hp, Wp) map is p = (wy * wh + i, wx * ww + j).

- torchvision's order (pad, then roll by -shift): it holds the padded map's
  pixel ((p_h + s_h) mod Hp, (p_w + s_w) mod Wp), padding where that is past
  (H, W).
- timm's order (roll by -shift, then pad): it is padding where p is past (H, W),
  else pixel ((p_h + s_h) mod H, (p_w + s_w) mod W).

Its shift-mask region (tokens of different regions are masked with -100) is
that of p in the padded map, per dimension 0 for p < P - win, 1 for
p < P - shift, 2 beyond, as torchvision and timm build their masks; a
dimension without shift is one region.

The kernels take 0 <= shift < window (Swin's shifts), so every wrap-around is one
subtraction. `token_pixels` is the Triton form; `token_pixels_reference` the
PyTorch one the tests compare it with.
"""
import torch

from fastswin import reference
from fastswin.ops._triton import tl, triton


@triton.jit
def _region(p, padded, win: tl.constexpr, shift):
    """Shift-mask region (0, 1, 2) of rolled positions p along one dimension."""
    region = tl.where(p < padded - win, 0, tl.where(p < padded - shift, 1, 2))
    return tl.where(shift > 0, region, 0)


@triton.jit
def _wrap(p, size):
    """p mod size for 0 <= p < 2 size: a subtraction, not a vector division."""
    return tl.where(p >= size, p - size, p)


@triton.jit
def _rolled_position(window, tokens, windows_w, WIN_H: tl.constexpr, WIN_W: tl.constexpr):
    """(p_h, p_w): the tokens' positions in the rolled, padded map."""
    return (window // windows_w) * WIN_H + tokens // WIN_W, (window % windows_w) * WIN_W + tokens % WIN_W


@triton.jit
def token_pixels(window, tokens, height, width, windows_w, shift_h, shift_w,
                 WIN_H: tl.constexpr, WIN_W: tl.constexpr, TIMM_ORDER: tl.constexpr, PADDED: tl.constexpr):
    """For tokens (a block of token indices) of `window` (its index within the image):
    the pixel (h, w) each reads in the un-padded map and whether it is a real pixel (not
    padding; h and w are then in range but unused). PADDED: the map is not a multiple of
    the window (else every token is a pixel, and both orders agree)."""
    p_h, p_w = _rolled_position(window, tokens, windows_w, WIN_H, WIN_W)
    if not PADDED:
        return _wrap(p_h + shift_h, height), _wrap(p_w + shift_w, width), p_h >= 0
    padded_h = tl.cdiv(height, WIN_H) * WIN_H
    padded_w = tl.cdiv(width, WIN_W) * WIN_W
    if TIMM_ORDER:
        inside = (p_h < height) & (p_w < width)
        h = _wrap(p_h + shift_h, height)
        w = _wrap(p_w + shift_w, width)
    else:
        h = _wrap(p_h + shift_h, padded_h)
        w = _wrap(p_w + shift_w, padded_w)
        inside = (h < height) & (w < width)
        h = tl.where(inside, h, 0)
        w = tl.where(inside, w, 0)
    return h, w, inside


@triton.jit
def token_regions(window, tokens, height, width, windows_w, shift_h, shift_w,
                  WIN_H: tl.constexpr, WIN_W: tl.constexpr):
    """Shift-mask region ids of tokens of `window` (the same in both orders). Kept apart
    from token_pixels so that kernels compute them where the mask is added, in that
    tile's layout, rather than carry them from the loads."""
    p_h, p_w = _rolled_position(window, tokens, windows_w, WIN_H, WIN_W)
    padded_h = tl.cdiv(height, WIN_H) * WIN_H
    padded_w = tl.cdiv(width, WIN_W) * WIN_W
    return _region(p_h, padded_h, WIN_H, shift_h) * 3 + _region(p_w, padded_w, WIN_W, shift_w)


def token_pixels_reference(height: int, width: int, window_size, shift_size, order: str):
    """(h, w, inside, region), each (nW, N), from rolling and partitioning coordinate maps
    with the reference ops (torchvision's order) or torch.roll then pad (timm's)."""
    hh, ww = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    coords = torch.stack([hh, ww, torch.ones_like(hh)], dim=-1)[None].double()  # (1, H, W, 3)
    if order == "timm":
        rolled = torch.roll(coords, shifts=(-shift_size[0], -shift_size[1]), dims=(1, 2))
        windows = reference.window_partition(rolled, window_size)
    else:
        windows = reference.window_partition(coords, window_size, shift_size)
    h, w, inside = windows.flatten(1, 2).long().unbind(-1)
    mask = reference.shift_attention_mask(height, width, window_size, shift_size)
    return h, w, inside.bool(), mask
