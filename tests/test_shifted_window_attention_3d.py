"""Shifted-window attention of video maps (B, T, H, W, 3C) in 3D windows: every backend
against torchvision's video Swin, and the fused image-layout kernels (3D wrap-around,
padding that reads the qkv bias, up to 27 shift regions) against the float64 reference,
forward and backward, at the windows of torchvision's video Swin (8x7x7 = 392 tokens)
and MONAI's SwinUNETR (7x7x7 = 343) and their head dims (8, 24, 30)."""
import math

import pytest
import torch

from helpers import KERNEL_DEVICE, KERNEL_DTYPES, interpreter_only, long, random_tensor, versions
from test_window_attention import assert_close_to_reference

from fastswin import ops

video = pytest.importorskip("torchvision.models.video.swin_transformer")


@versions
@pytest.mark.parametrize("shift", [(0, 0, 0), (1, 1, 2), (1, 0, 2)], ids=str)
@pytest.mark.parametrize("backend", ["reference", "cpu", "auto"])
def test_matches_torchvisions_video_swin(shift, backend):
    B, sizes, C, heads, window = 2, (3, 7, 9), 12, 3, (2, 3, 4)  # padded in every dim
    n = math.prod(window)
    x = random_tensor((B, *sizes, C), torch.float64, "cpu", 1)
    qkv_weight = random_tensor((3 * C, C), torch.float64, "cpu", 2) * C ** -0.5
    qkv_bias = random_tensor((3 * C,), torch.float64, "cpu", 3)
    bias = random_tensor((heads, n, n), torch.float64, "cpu", 4)
    want = video.shifted_window_attention_3d(x, qkv_weight, torch.eye(C, dtype=x.dtype), bias, list(window), heads,
                                             list(shift), qkv_bias=qkv_bias, training=False)
    got = ops.shifted_window_attention(torch.nn.functional.linear(x, qkv_weight, qkv_bias), heads, window, shift,
                                       bias, qkv_bias=qkv_bias, backend=backend)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------- the fused kernels

# (B, (T, H, W), C, heads, window, shift)
SMALL_CASES = [
    (2, (5, 7, 9), 16, 2, (2, 3, 4), (1, 1, 2)),  # padded in every dim, shifted in every dim: 8 regions a window
    (1, (4, 6, 8), 16, 2, (2, 3, 4), (1, 0, 2)),  # divisible, shifted in time and width
    (2, (3, 6, 8), 16, 2, (1, 3, 4), (0, 1, 2)),  # windows of depth 1: folded into 2D ones
]
# The real windows: torchvision's video Swin (8x7x7, shift 4x3x3) at head_dim 8 and
# SwinUNETR's (7x7x7, shift 3x3x3) at head_dim 30: two windows in time, padded and shifted
# there (the small cases shift every dim); v1 and v2, both orders, fp32 and fp16.
# Interpreted: three to four minutes a run, so not on the second stack.
REAL_CASES = [
    ((1, (9, 7, 7), 8, 1, (8, 7, 7), (4, 3, 3)), "torchvision", False, torch.float32),
    ((1, (8, 7, 7), 30, 1, (7, 7, 7), (3, 3, 3)), "timm", True, torch.float16),
]


def video_inputs(case, dtype, v2, seed=90):
    B, sizes, C, heads, window, _ = case
    n = math.prod(window)
    qkv = random_tensor((B, *sizes, 3 * C), dtype, KERNEL_DEVICE, seed)
    bias = random_tensor((heads, n, n), dtype, KERNEL_DEVICE, seed + 1)
    # One head above the clamp (log 100) on the v2 runs.
    scales = torch.tensor([5.0 if h % 2 == 0 else 1.3 for h in range(heads)], device=KERNEL_DEVICE)
    logit_scale = scales.view(heads, 1, 1) if v2 else None
    qkv_bias = random_tensor((3 * C,), dtype, KERNEL_DEVICE, seed + 2)
    return [qkv, bias, logit_scale, qkv_bias]


def run_video_attention(inputs, case, order, grad, backend):
    """Output and the gradients of every input given (None where an input is None)."""
    _, _, _, heads, window, shift = case
    leaves = [None if t is None else t.detach().clone().requires_grad_() for t in inputs]
    out = ops.shifted_window_attention(leaves[0], heads, window, shift, leaves[1], logit_scale=leaves[2],
                                       qkv_bias=leaves[3], order=order, backend=backend)
    given = [t for t in leaves if t is not None]
    # The fused op gives no gradient to a qkv_bias that no padding token reads: zeros.
    grads = iter(torch.autograd.grad(out, given, grad.to(out.dtype), allow_unused=True, materialize_grads=True))
    return out.detach(), [None if t is None else next(grads) for t in leaves]


def check_video_attention(case, order, v2, dtype):
    B, sizes, C = case[:3]
    inputs = video_inputs(case, dtype, v2)
    grad = random_tensor((B, *sizes, C), torch.float64, KERNEL_DEVICE, 95)
    got_out, got_grads = run_video_attention(inputs, case, order, grad, "triton")
    same_out, same_grads = run_video_attention(inputs, case, order, grad, "reference")
    exact_out, exact_grads = run_video_attention([None if t is None else t.double() for t in inputs], case, order,
                                                 grad, "reference")
    assert_close_to_reference("out", got_out, same_out, exact_out, dtype)
    for name, got, same, exact in zip(["dqkv", "dbias", "dlogit_scale", "dqkv_bias"], got_grads, same_grads,
                                      exact_grads):
        if name == "dlogit_scale" and got is not None:  # a sum of many cancelling terms: compare to its scale
            assert got[0].item() == 0.0, "a head above the clamp gets no gradient"
            # fp16: the kernels round dS to fp16 before the dQ product, as FlashAttention does
            # (PyTorch keeps it wider); over a few short windows that costs 3e-3 of the sum.
            tolerance = 5e-3 if dtype == torch.float16 else 1e-3
            torch.testing.assert_close(got.double(), exact, rtol=tolerance,
                                       atol=tolerance * exact.abs().max().item())
        elif exact is not None:  # d(qkv_bias) too: zero where the map has no padding
            assert_close_to_reference(name, got, same, exact, dtype)


def video_run(case, order, v2, dtype, second_stack=False):
    return pytest.param(case, order, v2, dtype, marks=versions if second_stack else (),
                        id=f"{case[1]}-w{case[4]}-s{case[5]}-{order}-v{1 + v2}-{str(dtype)[6:]}")


# Every order and version on the first case, fp32 and fp16 crossed with them (and bf16
# where compiled); two mixes on the others. The second stack runs the first case's and
# one of the folded windows.
SMALL_RUNS = [video_run(SMALL_CASES[0], "torchvision", False, torch.float32, second_stack=True),
              video_run(SMALL_CASES[0], "torchvision", True, torch.float16, second_stack=True),
              video_run(SMALL_CASES[0], "timm", False, torch.float16, second_stack=True),
              video_run(SMALL_CASES[0], "timm", True, torch.float32, second_stack=True),
              video_run(SMALL_CASES[1], "timm", True, torch.float32),
              video_run(SMALL_CASES[1], "torchvision", False, torch.float16),
              video_run(SMALL_CASES[2], "torchvision", True, torch.float32, second_stack=True),
              video_run(SMALL_CASES[2], "timm", False, torch.float16)]
SMALL_RUNS += [video_run(SMALL_CASES[0], order, v2, dtype) for order, v2 in (("torchvision", True), ("timm", False))
               for dtype in KERNEL_DTYPES[2:]]  # bf16, compiled only


@pytest.mark.parametrize("case, order, v2, dtype", SMALL_RUNS)
def test_triton_video_maps_match_reference(case, order, v2, dtype, poisoned_outputs):
    check_video_attention(case, order, v2, dtype)


@long
@pytest.mark.parametrize("case, order, v2, dtype", REAL_CASES, ids=str)
def test_triton_real_video_windows_match_reference(case, order, v2, dtype, poisoned_outputs):
    check_video_attention(case, order, v2, dtype)


@interpreter_only
def test_triton_video_gradcheck():
    case = (1, (3, 5, 4), 8, 2, (2, 3, 2), (1, 1, 1))  # head_dim 4: scale 0.5, exact in the kernel's fp32
    qkv, bias, _, qkv_bias = (t.double().requires_grad_() if t is not None else None
                              for t in video_inputs(case, torch.float64, v2=False))

    def f(qkv, bias, qkv_bias):
        return ops.shifted_window_attention(qkv, 2, (2, 3, 2), (1, 1, 1), bias, qkv_bias=qkv_bias, backend="triton")

    assert torch.autograd.gradcheck(f, (qkv, bias, qkv_bias), fast_mode=True)


@versions
def test_triton_video_opcheck():
    case = (1, (3, 4, 5), 8, 2, (2, 3, 4), (1, 1, 2))  # padded, shifted in every dim
    qkv, bias, _, qkv_bias = video_inputs(case, torch.float32, v2=False)
    args = (qkv.requires_grad_(), bias.requires_grad_(), None, qkv_bias.requires_grad_(), 2, [2, 3, 4], [1, 1, 2],
            False)
    torch.library.opcheck(torch.ops.fastswin.shifted_window_attention_triton.default, args)


@versions
@pytest.mark.parametrize("window, message", [((7, 7), "window_size must be an int or 3 ints"),
                                             ((2, 3, 4, 5), "window_size must be an int or 3 ints"),
                                             ((2, 0, 4), "window_size must be positive")])
def test_bad_video_window_raises(window, message):
    qkv = torch.randn(1, 4, 6, 8, 3 * 16)
    with pytest.raises(ValueError, match=message):
        ops.shifted_window_attention(qkv, 2, window, 0)



@versions
def test_the_op_refuses_a_window_of_the_wrong_rank():
    """Called directly, the registered op checks that the window fits the map (the public
    op's argument checks are not in its way)."""
    qkv = torch.randn(1, 4, 6, 8, 3 * 16, device=KERNEL_DEVICE)
    with pytest.raises(ValueError, match="an image layout takes"):
        torch.ops.fastswin.shifted_window_attention_triton(qkv, None, None, None, 2, [3, 4], [0, 0], False)
