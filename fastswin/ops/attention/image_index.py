"""Where the tokens of a shifted window live in the un-partitioned (B, [T,] H, W, .)
map: the index math of the image-layout attention kernels (shifted_window_attention),
which read q, k, v from the map and write the output back to it, with no rolled,
padded or partitioned copy and no mask tensor.

A map has three spatial dims (t, h, w); a 2D map is one of depth 1 with windows of
depth WIN_T = 1, whose time dim is compiled out. Windows are numbered in raster
order, tokens in raster order inside each: for window (wt, wy, wx) and its token
(i, j, k), the token's position in the rolled, padded (Tp, Hp, Wp) map is
p = (wt * WIN_T + i, wy * WIN_H + j, wx * WIN_W + k).

- torchvision's order (pad, then roll by -shift): it holds the padded map's
  pixel (p + s) mod Pp per dim, padding where that is past the map.
- timm's order (roll by -shift, then pad): it is padding where p is past the map,
  else pixel (p + s) mod P per dim.

Its shift-mask region (tokens of different regions are masked with -100) is
that of p in the padded map, per dimension 0 for p < Pp - win, 1 for
p < Pp - shift, 2 beyond, as torchvision and timm build their masks; a
dimension without shift is one region. Only the last window along a dim holds
two regions along it, so the kernels compare window-local codes instead
(token_regions; up to 8 codes a window, of 27 regions in a video map).

The kernels take 0 <= shift < window (Swin's shifts), so every wrap-around is one
subtraction (timm's order first takes the shift modulo the un-padded map's size: a
shift kept along a dim of one window may pass a map smaller than it). `token_rows` and `token_regions` are the Triton form;
fastswin.reference.token_pixels the PyTorch one the tests compare them with.
"""
import math
from typing import Sequence

from fastswin.ops._triton import tl, triton


@triton.jit
def _wrap(p, size):
    """p mod size for 0 <= p < 2 size: a subtraction, not a vector division."""
    return tl.where(p >= size, p - size, p)


@triton.jit
def _window_coords(window, height, windows_w, WIN_T: tl.constexpr, WIN_H: tl.constexpr):
    """(wt, wy, wx): a window's place among those of its map (wt = 0 in 2D)."""
    if WIN_T > 1:
        windows_h = tl.cdiv(height, WIN_H)
        return window // (windows_h * windows_w), (window // windows_w) % windows_h, window % windows_w
    else:
        return 0, window // windows_w, window % windows_w


@triton.jit
def _token_coords(tokens, WIN_T: tl.constexpr, WIN_H: tl.constexpr, WIN_W: tl.constexpr):
    """(i, j, k): the tokens' places inside their window (i = 0 in 2D)."""
    if WIN_T > 1:
        return tokens // (WIN_H * WIN_W), (tokens // WIN_W) % WIN_H, tokens % WIN_W
    else:
        return 0, tokens // WIN_W, tokens % WIN_W


@triton.jit
def _rolled_position(window, tokens, height, windows_w, WIN_T: tl.constexpr, WIN_H: tl.constexpr,
                     WIN_W: tl.constexpr):
    """(p_t, p_h, p_w): the tokens' positions in the rolled, padded map (p_t = 0 in 2D)."""
    wt, wy, wx = _window_coords(window, height, windows_w, WIN_T, WIN_H)
    i, j, k = _token_coords(tokens, WIN_T, WIN_H, WIN_W)
    return wt * WIN_T + i, wy * WIN_H + j, wx * WIN_W + k


@triton.jit
def _inner(size, win: tl.constexpr):
    """Windows along a dim, past which the band that may hold padding begins: the last
    two (a band of less than a window, rolled by less than a window) where the dim is
    padded, else none."""
    windows = tl.cdiv(size, win)
    return tl.where(size % win != 0, tl.maximum(windows - 2, 0), windows)


@triton.jit
def _padding_slot(window, depth, height, width, WIN_T: tl.constexpr, WIN_H: tl.constexpr, WIN_W: tl.constexpr):
    """Slot of a window that may hold padding tokens among those of its map: its index
    among the windows outside the inner box (_inner along each dim), in raster order
    (padding_rows counts the slots). Windows inside the box hold no padding."""
    windows_w = tl.cdiv(width, WIN_W)
    wt, wy, wx = _window_coords(window, height, windows_w, WIN_T, WIN_H)
    inner_h, inner_w = _inner(height, WIN_H), _inner(width, WIN_W)
    # Inner windows before this one in raster order: whole planes, whole rows, then this row's.
    before = tl.minimum(wy, inner_h) * inner_w + tl.where(wy < inner_h, tl.minimum(wx, inner_w), 0)
    if WIN_T > 1:
        inner_t = _inner(depth, WIN_T)
        before = tl.minimum(wt, inner_t) * inner_h * inner_w + tl.where(wt < inner_t, before, 0)
    return window - before


def padding_rows(sizes: Sequence[int], window: Sequence[int]) -> int:
    """Rows per map that token_rows gives padding tokens: N per _padding_slot. sizes and
    window: (H, W) or (T, H, W)."""
    windows = [-(-size // win) for size, win in zip(sizes, window)]
    inner = [count - min(2, count) if size % win else count for size, win, count in zip(sizes, window, windows)]
    return (math.prod(windows) - math.prod(inner)) * math.prod(window)


@triton.jit
def token_rows(window, tokens, depth, height, width, windows_w, shift_t, shift_h, shift_w, WIN_T: tl.constexpr,
               WIN_H: tl.constexpr, WIN_W: tl.constexpr, TIMM_ORDER: tl.constexpr, PADDED: tl.constexpr):
    """For tokens (a block of token indices) of `window` (its index within the map):
    (row, real). A real token is pixel (t, h, w) of the un-padded map, row
    (t * H + h) * W + w; a padding token gets row slot * N + token (_padding_slot), one
    of padding_rows rows of its own, where the backward stores its gradient. PADDED:
    the map is not a multiple of the window (else every token is a pixel, and both
    orders agree)."""
    p_t, p_h, p_w = _rolled_position(window, tokens, height, windows_w, WIN_T, WIN_H, WIN_W)
    if not PADDED:
        t = _wrap(p_t + shift_t, depth) if WIN_T > 1 else 0
        h, w = _wrap(p_h + shift_h, height), _wrap(p_w + shift_w, width)
        return (t * height + h) * width + w, tl.full(p_h.shape, True, tl.int1)
    padded_t = tl.cdiv(depth, WIN_T) * WIN_T
    padded_h = tl.cdiv(height, WIN_H) * WIN_H
    padded_w = tl.cdiv(width, WIN_W) * WIN_W
    if TIMM_ORDER:  # the un-padded map rolls: by the shift modulo its size (a kept shift may pass it)
        real = (p_h < height) & (p_w < width)
        if WIN_T > 1:
            real = real & (p_t < depth)
        t = _wrap(p_t + shift_t % depth, depth) if WIN_T > 1 else 0
        h, w = _wrap(p_h + shift_h % height, height), _wrap(p_w + shift_w % width, width)
    else:
        t = _wrap(p_t + shift_t, padded_t) if WIN_T > 1 else 0
        h, w = _wrap(p_h + shift_h, padded_h), _wrap(p_w + shift_w, padded_w)
        real = (h < height) & (w < width)
        if WIN_T > 1:
            real = real & (t < depth)
    slot = _padding_slot(window, depth, height, width, WIN_T, WIN_H, WIN_W)
    return tl.where(real, (t * height + h) * width + w, slot * (WIN_T * WIN_H * WIN_W) + tokens), real


@triton.jit
def _last_window_part(tokens_along, last, shift, win: tl.constexpr):
    """1 for tokens of the last window along a dim at or past index win - shift along it
    (the region beyond the shift), else 0."""
    return (last & (tokens_along >= win - shift)).to(tl.int32)


@triton.jit
def token_regions(window, tokens, height, windows_w, windows_per_image, shift_t, shift_h, shift_w,
                  WIN_T: tl.constexpr, WIN_H: tl.constexpr, WIN_W: tl.constexpr):
    """Shift-mask region codes of tokens of `window` (the same in both orders): tokens
    with different codes are masked from each other. Only the last window along a dim
    holds rolled positions of two regions along it, split at token index win - shift
    along it; every other window is one region along it. Kept apart from token_rows so
    that kernels compute them where the mask is applied, in the logits' layout, rather
    than carry them from the loads."""
    wt, wy, wx = _window_coords(window, height, windows_w, WIN_T, WIN_H)
    i, j, k = _token_coords(tokens, WIN_T, WIN_H, WIN_W)
    windows_h = tl.cdiv(height, WIN_H)
    code = _last_window_part(j, wy == windows_h - 1, shift_h, WIN_H) * 2
    code += _last_window_part(k, wx == windows_w - 1, shift_w, WIN_W)
    if WIN_T > 1:
        code += _last_window_part(i, window >= windows_per_image - windows_h * windows_w, shift_t, WIN_T) * 4
    return code
