"""The image-layout index math (fastswin.ops.attention.image_index: token_rows, token_regions),
run in the Triton interpreter (or on the GPU), against rolled and partitioned
coordinate maps."""
import pytest
import torch
import triton
import triton.language as tl

from helpers import KERNEL_DEVICE as DEVICE

from fastswin import reference
from fastswin.ops.attention.image_index import padding_rows, token_regions, token_rows


@triton.jit
def _token_rows_kernel(out_row, out_real, out_region, height, width, windows_w, windows_per_image,
                       shift_h, shift_w, N: tl.constexpr, BLOCK: tl.constexpr, WIN_H: tl.constexpr,
                       WIN_W: tl.constexpr, TIMM_ORDER: tl.constexpr, PADDED: tl.constexpr):
    window = tl.program_id(0)
    tokens = tl.arange(0, BLOCK)
    row, real = token_rows(window, tokens, height, width, windows_w, shift_h, shift_w, WIN_H, WIN_W,
                           TIMM_ORDER, PADDED)
    region = token_regions(window, tokens, windows_w, windows_per_image, shift_h, shift_w, WIN_H, WIN_W)
    keep = tokens < N
    offsets = window * N + tokens
    tl.store(out_row + offsets, row, mask=keep)
    tl.store(out_real + offsets, real.to(tl.int32), mask=keep)
    tl.store(out_region + offsets, region, mask=keep)


def run_token_rows(height, width, window, shift, order):
    nW = -(-height // window[0]) * -(-width // window[1])
    n = window[0] * window[1]
    outs = [torch.full((nW, n), -7, dtype=torch.int32, device=DEVICE) for _ in range(3)]
    _token_rows_kernel[(nW,)](*outs, height, width, -(-width // window[1]), nW, shift[0], shift[1], N=n,
                              BLOCK=triton.next_power_of_2(n), WIN_H=window[0], WIN_W=window[1],
                              TIMM_ORDER=order == "timm",
                              PADDED=height % window[0] != 0 or width % window[1] != 0)
    return [o.cpu() for o in outs]


CASES = [(14, 14, (7, 7), (3, 3)), (13, 17, (7, 7), (3, 3)), (9, 10, (4, 5), (2, 1)), (10, 11, (4, 5), (0, 2)),
         (8, 8, (4, 4), (0, 0)), (5, 12, (7, 4), (0, 2)), (30, 9, (7, 4), (3, 2)), (22, 29, (5, 6), (4, 1))]


@pytest.mark.parametrize("order", ["torchvision", "timm"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_token_rows_match_the_reference(case, order):
    height, width, window, shift = case
    row, real, region = run_token_rows(height, width, window, shift, order)
    want_h, want_w, want_real, want_mask = reference.token_pixels(height, width, window, shift, order)
    assert torch.equal(real.bool(), want_real)
    assert torch.equal(row[want_real].long(), (want_h * width + want_w)[want_real])
    # Each padding token has a row of its own (the backward stores its gradient there).
    padding = row[~want_real]
    assert padding.unique().numel() == padding.numel()
    assert (padding >= 0).all() and (padding < padding_rows(height, width, window)).all()
    mask = torch.where(region[:, :, None] != region[:, None, :], reference.MASK_VALUE, 0.0)
    assert torch.equal(mask, want_mask)
