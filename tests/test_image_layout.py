"""The image-layout index math (fastswin.ops.attention.image_index: token_rows, token_regions)
of 2D and video maps, run in the Triton interpreter (or on the GPU), against rolled and partitioned
coordinate maps."""
import math

import pytest
import torch
import triton
import triton.language as tl

from helpers import KERNEL_DEVICE as DEVICE, versions

from fastswin import reference
from fastswin.ops.attention.image_index import padding_rows, token_regions, token_rows

pytestmark = versions  # helpers.py


@triton.jit
def _token_rows_kernel(out_row, out_real, out_region, depth, height, width, windows_w, windows_per_image,
                       shift_t, shift_h, shift_w, N: tl.constexpr, BLOCK: tl.constexpr, WIN_T: tl.constexpr,
                       WIN_H: tl.constexpr, WIN_W: tl.constexpr, TIMM_ORDER: tl.constexpr, PADDED: tl.constexpr):
    window = tl.program_id(0)
    tokens = tl.arange(0, BLOCK)
    row, real = token_rows(window, tokens, depth, height, width, windows_w, shift_t, shift_h, shift_w, WIN_T, WIN_H,
                           WIN_W, TIMM_ORDER, PADDED)
    region = token_regions(window, tokens, height, windows_w, windows_per_image, shift_t, shift_h, shift_w, WIN_T,
                           WIN_H, WIN_W)
    keep = tokens < N
    offsets = window * N + tokens
    tl.store(out_row + offsets, row, mask=keep)
    tl.store(out_real + offsets, real.to(tl.int32), mask=keep)
    tl.store(out_region + offsets, region, mask=keep)


def run_token_rows(sizes, window, shift, order):
    """The kernels' (row, real, region) of every token of every window, each (nW, N)."""
    (depth, height, width), (wt, wh, ww), (st, sh, sw) = [(fill,) * (3 - len(x)) + tuple(x)
                                                          for x, fill in ((sizes, 1), (window, 1), (shift, 0))]
    counts = [-(-size // win) for size, win in zip((depth, height, width), (wt, wh, ww))]
    nW, n = math.prod(counts), wt * wh * ww
    outs = [torch.full((nW, n), -7, dtype=torch.int32, device=DEVICE) for _ in range(3)]
    _token_rows_kernel[(nW,)](*outs, depth, height, width, counts[2], nW, st, sh, sw, N=n,
                              BLOCK=triton.next_power_of_2(n), WIN_T=wt, WIN_H=wh, WIN_W=ww,
                              TIMM_ORDER=order == "timm",
                              PADDED=any(size % win for size, win in zip(sizes, window)))
    return [o.cpu() for o in outs]


CASES = [((14, 14), (7, 7), (3, 3)), ((13, 17), (7, 7), (3, 3)), ((9, 10), (4, 5), (2, 1)),
         ((10, 11), (4, 5), (0, 2)), ((8, 8), (4, 4), (0, 0)), ((5, 12), (7, 4), (0, 2)), ((30, 9), (7, 4), (3, 2)),
         ((22, 29), (5, 6), (4, 1))]
# Video maps: torchvision's video Swin window (8, 7, 7) and shift (4, 3, 3), padded and not;
# shifts in some dims only; windows of depth 1 are folded into 2D ones before the kernels.
VIDEO_CASES = [((16, 14, 14), (8, 7, 7), (4, 3, 3)), ((9, 13, 10), (8, 7, 7), (4, 3, 3)),
               ((5, 7, 9), (2, 3, 4), (1, 0, 2)), ((6, 5, 8), (3, 2, 3), (0, 1, 0)), ((4, 6, 6), (2, 3, 3), (0, 0, 0)),
               ((7, 9, 5), (3, 4, 2), (2, 0, 1)), ((3, 7, 7), (2, 7, 7), (1, 0, 0))]
# Shifts kept along dims of one window (always_shift: timm, MaskFormer), some past the map.
KEPT_SHIFT_CASES = [((2, 9), (7, 7), (3, 3)), ((1, 5), (7, 4), (3, 2)), ((3, 3), (4, 4), (2, 2)),
                    ((8, 8), (12, 12), (6, 6)), ((2, 6, 7), (4, 3, 4), (3, 1, 2))]


@pytest.mark.parametrize("order", ["torchvision", "timm"])
@pytest.mark.parametrize("case", CASES + VIDEO_CASES + KEPT_SHIFT_CASES, ids=str)
def test_token_rows_match_the_reference(case, order):
    sizes, window, shift = case
    row, real, region = run_token_rows(sizes, window, shift, order)
    want_row, want_real, want_mask = reference.token_pixels(sizes, window, shift, order)
    assert torch.equal(real.bool(), want_real)
    assert torch.equal(row[want_real].long(), want_row[want_real])
    # Each padding token has a row of its own (the backward stores its gradient there).
    padding = row[~want_real]
    assert padding.unique().numel() == padding.numel()
    assert (padding >= 0).all() and (padding < padding_rows(sizes, window)).all()
    mask = torch.where(region[:, :, None] != region[:, None, :], reference.MASK_VALUE, 0.0)
    assert torch.equal(mask, want_mask)
