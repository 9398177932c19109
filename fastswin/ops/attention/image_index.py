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
dimension without shift is one region. Only windows in the last row (column)
of windows hold two regions along h (w), so the kernels compare window-local
codes instead (token_regions).

The kernels take 0 <= shift < window (Swin's shifts), so every wrap-around is one
subtraction. `token_rows` and `token_regions` are the Triton form;
fastswin.reference.token_pixels the PyTorch one the tests compare them with.
"""
from fastswin.ops._triton import tl, triton


@triton.jit
def _wrap(p, size):
    """p mod size for 0 <= p < 2 size: a subtraction, not a vector division."""
    return tl.where(p >= size, p - size, p)


@triton.jit
def _rolled_position(window, tokens, windows_w, WIN_H: tl.constexpr, WIN_W: tl.constexpr):
    """(p_h, p_w): the tokens' positions in the rolled, padded map."""
    return (window // windows_w) * WIN_H + tokens // WIN_W, (window % windows_w) * WIN_W + tokens % WIN_W


@triton.jit
def _padding_slot(window, windows_w, windows_h):
    """Slot of a window that may hold padding tokens among those of its image: padding
    lies in the last two rows and the last two columns of windows (a band of less than
    a window, rolled by less than a window). The band's rows come first, then its
    columns above them (padding_rows counts the slots); other windows get no slot of
    their own, and hold no padding."""
    row, col = window // windows_w, window % windows_w
    first_row = tl.maximum(windows_h - 2, 0)
    first_col = tl.maximum(windows_w - 2, 0)
    in_rows = (row - first_row) * windows_w + col
    in_cols = (windows_h - first_row) * windows_w + row * (windows_w - first_col) + (col - first_col)
    return tl.where(row >= first_row, in_rows, in_cols)


def padding_rows(height: int, width: int, window) -> int:
    """Rows per image that token_rows gives padding tokens: N per _padding_slot."""
    windows_h, windows_w = -(-height // window[0]), -(-width // window[1])
    rows_band, cols_band = min(2, windows_h), min(2, windows_w)
    return (rows_band * windows_w + (windows_h - rows_band) * cols_band) * window[0] * window[1]


@triton.jit
def token_rows(window, tokens, height, width, windows_w, shift_h, shift_w,
               WIN_H: tl.constexpr, WIN_W: tl.constexpr, TIMM_ORDER: tl.constexpr, PADDED: tl.constexpr):
    """For tokens (a block of token indices) of `window` (its index within the image):
    (row, real). A real token is pixel (h, w) of the un-padded map, row h * W + w; a
    padding token gets row slot * N + token (_padding_slot), one of padding_rows rows
    of its own, where the backward stores its gradient. PADDED: the map is not a
    multiple of the window (else every token is a pixel, and both orders agree)."""
    p_h, p_w = _rolled_position(window, tokens, windows_w, WIN_H, WIN_W)
    if not PADDED:
        h, w = _wrap(p_h + shift_h, height), _wrap(p_w + shift_w, width)
        return h * width + w, tl.full(p_h.shape, True, tl.int1)
    padded_h = tl.cdiv(height, WIN_H) * WIN_H
    padded_w = tl.cdiv(width, WIN_W) * WIN_W
    if TIMM_ORDER:
        real = (p_h < height) & (p_w < width)
        h, w = _wrap(p_h + shift_h, height), _wrap(p_w + shift_w, width)
    else:
        h, w = _wrap(p_h + shift_h, padded_h), _wrap(p_w + shift_w, padded_w)
        real = (h < height) & (w < width)
    slot = _padding_slot(window, windows_w, padded_h // WIN_H)
    return tl.where(real, h * width + w, slot * (WIN_H * WIN_W) + tokens), real


@triton.jit
def token_regions(window, tokens, windows_w, windows_per_image, shift_h, shift_w,
                  WIN_H: tl.constexpr, WIN_W: tl.constexpr):
    """Shift-mask region codes of tokens of `window` (the same in both orders): tokens
    with different codes are masked from each other. Only the last row (column) of
    windows holds rolled positions of two regions along h (w), split at token row
    WIN_H - shift_h (column WIN_W - shift_w); every other window is one region along it.
    Kept apart from token_rows so that kernels compute them where the mask is applied,
    in the logits' layout, rather than carry them from the loads."""
    last_row = window >= windows_per_image - windows_w
    last_col = window % windows_w == windows_w - 1
    below = last_row & (tokens // WIN_W >= WIN_H - shift_h)
    right = last_col & (tokens % WIN_W >= WIN_W - shift_w)
    return below.to(tl.int32) * 2 + right.to(tl.int32)
