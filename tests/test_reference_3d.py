"""The reference's window semantics in three dims (video maps (B, T, H, W, C)) against
torchvision's video Swin, which defines them: pad, roll by -shift, partition; the
shift mask's up to 27 regions; merge as the inverse. 2D is the same code with two dims."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from fastswin import reference
from helpers import random_tensor

video = pytest.importorskip("torchvision.models.video.swin_transformer")

WINDOW = (2, 3, 4)
SIZES = (3, 7, 9)  # padded to (4, 9, 12) in every dim
SHIFTS = [s for s in itertools.product((0, 1), (0, 1), (0, 2))]  # every subset of the dims


@pytest.mark.parametrize("shift", SHIFTS, ids=str)
def test_region_mask_is_torchvisions(shift):
    padded = reference.padded_sizes(SIZES, WINDOW)
    expected = video._compute_attention_mask_3d(torch.zeros(1), padded, WINDOW, shift)
    assert torch.equal(reference.region_mask(SIZES, WINDOW, shift), expected)


@pytest.mark.parametrize("shift", SHIFTS, ids=str)
def test_merge_inverts_partition(shift):
    x = random_tensor((2, *SIZES, 5), torch.float32, "cpu", 0)
    windows = reference.window_partition(x, WINDOW, shift)
    assert windows.shape == (2 * 2 * 3 * 3, *WINDOW, 5)
    assert torch.equal(reference.merge_windows(windows, WINDOW, SIZES, shift), x)


def test_2d_is_the_same_code():
    x = random_tensor((2, 7, 9, 5), torch.float32, "cpu", 1)
    windows = reference.window_partition(x, (3, 4), (1, 2))
    assert torch.equal(windows, reference.window_partition(x[:, None], (1, 3, 4), (0, 1, 2)).squeeze(1))
    assert torch.equal(reference.window_reverse(windows, (3, 4), 7, 9, (1, 2)), x)
    assert torch.equal(reference.shift_attention_mask(7, 9, (3, 4), (1, 2)),
                       reference.region_mask((1, 7, 9), (1, 3, 4), (0, 1, 2)))


@pytest.mark.parametrize("shift", [(0, 0, 0), (1, 1, 2), (0, 1, 0)], ids=str)
def test_video_attention_composed_from_the_reference_is_torchvisions(shift):
    """torchvision's shifted_window_attention_3d, as pad, roll, partition, window
    attention with bias and region mask, merge, roll back, crop, from the reference."""
    B, C, heads = 2, 12, 3
    n = WINDOW[0] * WINDOW[1] * WINDOW[2]
    x = random_tensor((B, *SIZES, C), torch.float64, "cpu", 2)
    qkv_weight, proj_weight = (random_tensor(shape, torch.float64, "cpu", seed) * 0.3
                               for shape, seed in (((3 * C, C), 3), ((C, C), 4)))
    qkv_bias, proj_bias = random_tensor((3 * C,), torch.float64, "cpu", 5), random_tensor((C,), torch.float64, "cpu", 6)
    bias = random_tensor((heads, n, n), torch.float64, "cpu", 7)
    expected = video.shifted_window_attention_3d(x, qkv_weight, proj_weight, bias, list(WINDOW), heads, list(shift),
                                                 qkv_bias=qkv_bias, proj_bias=proj_bias, training=False)

    windows = reference.window_partition(x, WINDOW, shift).flatten(1, 3)  # (B_, N, C)
    q, k, v = F.linear(windows, qkv_weight, qkv_bias).reshape(-1, n, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    mask = reference.region_mask(SIZES, WINDOW, shift, dtype=torch.float64) if any(shift) else None
    out = reference.window_attention(q, k, v, bias, mask, (C // heads) ** -0.5)
    out = F.linear(out.transpose(1, 2).reshape(-1, *WINDOW, C), proj_weight, proj_bias)
    torch.testing.assert_close(reference.merge_windows(out, WINDOW, SIZES, shift), expected)


def test_effective_shifts_drop_dims_filled_by_one_window():
    assert reference.effective_shifts((8, 14, 14), (8, 7, 7), (4, 3, 3)) == (0, 3, 3)
    assert reference.effective_shifts((0, 14, 14), (8, 7, 7), (4, 3, 3)) == (0, 0, 0)
