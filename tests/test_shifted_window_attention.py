"""Shifted-window attention on the image layout against the reference composition
and torchvision's own shifted_window_attention."""
import pytest
import torch
import torch.nn.functional as F

from helpers import random_tensor
from fastswin import ops, reference

torchvision_swin = pytest.importorskip("torchvision.models.swin_transformer")

# (B, H, W, C, heads, window, shift)
CASES = [
    (2, 14, 14, 16, 2, (7, 7), (3, 3)),   # divisible
    (1, 13, 17, 12, 3, (7, 7), (3, 3)),   # padded both ways
    (2, 9, 10, 8, 2, (4, 5), (2, 1)),     # non-square window, non-uniform shift
    (1, 5, 12, 8, 2, (7, 4), (3, 2)),     # window taller than the map: no shift along H
    (1, 8, 8, 8, 1, (4, 4), (0, 0)),      # no shift
]


def linear_inputs(case, device, seed):
    B, H, W, C, heads, window, _ = case
    N = window[0] * window[1]
    x = random_tensor((B, H, W, C), torch.float64, device, seed)
    qkv_weight = random_tensor((3 * C, C), torch.float64, device, seed + 1) * C ** -0.5
    qkv_bias = random_tensor((3 * C,), torch.float64, device, seed + 2)
    bias = random_tensor((heads, N, N), torch.float64, device, seed + 3)
    logit_scale = torch.log(1 + 20 * torch.rand(heads, 1, 1, dtype=torch.float64, device=device))
    return x, qkv_weight, qkv_bias, bias, logit_scale


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_torchvision(case, v2, device):
    B, H, W, C, heads, window, shift = case
    x, qkv_weight, qkv_bias, bias, logit_scale = linear_inputs(case, device, seed=10)
    logit_scale = logit_scale if v2 else None
    want = torchvision_swin.shifted_window_attention(
        x, qkv_weight, torch.eye(C, dtype=x.dtype, device=device), bias, list(window), heads, list(shift),
        qkv_bias=qkv_bias, logit_scale=logit_scale, training=False)
    if v2:  # torchvision zeroes the k bias of Swin-V2 inside its function
        qkv_bias = torch.cat([qkv_bias[:C], torch.zeros_like(qkv_bias[:C]), qkv_bias[2 * C:]])
    qkv = F.linear(x, qkv_weight, qkv_bias)
    for backend in ("reference", "auto"):
        got = ops.shifted_window_attention(qkv, heads, window, shift, bias, logit_scale=logit_scale,
                                           qkv_bias=qkv_bias, backend=backend)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("order", ["torchvision", "timm"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_gradients_match_reference(case, order, device):
    B, H, W, C, heads, window, shift = case
    _, _, qkv_bias, bias, logit_scale = linear_inputs(case, device, seed=20)
    qkv = random_tensor((B, H, W, 3 * C), torch.float64, device, 30)
    grad = random_tensor((B, H, W, C), torch.float64, device, 31)

    def grads(backend):
        leaves = [t.clone().requires_grad_() for t in (qkv, bias, logit_scale, qkv_bias)]
        out = ops.shifted_window_attention(leaves[0], heads, window, shift, leaves[1], logit_scale=leaves[2],
                                           qkv_bias=leaves[3], order=order, backend=backend)
        out.backward(grad)
        return [out] + [t.grad for t in leaves]

    for got, want in zip(grads("auto"), grads("reference")):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_orders_differ_only_when_padded():
    qkv = random_tensor((1, 13, 17, 36), torch.float64, "cpu", 40)
    tv = ops.shifted_window_attention(qkv, 3, 7, 3, order="torchvision")
    timm = ops.shifted_window_attention(qkv, 3, 7, 3, order="timm")
    assert not torch.allclose(tv, timm)
    qkv = qkv[:, :7, :14]
    torch.testing.assert_close(ops.shifted_window_attention(qkv, 3, 7, 3, order="torchvision"),
                               ops.shifted_window_attention(qkv, 3, 7, 3, order="timm"))


@pytest.mark.parametrize("kwargs, message", [
    (dict(qkv=torch.zeros(1, 7, 7, 10)), "must be \\(B, H, W, 3C\\)"),
    (dict(num_heads=5), "not divisible by num_heads"),
    (dict(bias=torch.zeros(2, 49, 48)), "bias must be"),
    (dict(logit_scale=torch.zeros(2)), "logit_scale must be"),
    (dict(qkv_bias=torch.zeros(24)), "qkv_bias must be"),
    (dict(order="swin"), "order must be"),
    (dict(window_size=0), "window_size must be positive"),
])
def test_bad_input_raises(kwargs, message):
    args = dict(qkv=torch.randn(1, 7, 7, 36), num_heads=2, window_size=7, shift_size=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ops.shifted_window_attention(**args)


def test_mask_first_built_under_inference_mode_serves_training(device):
    """The shift mask is cached: one first built under inference mode must still be
    usable by autograd later."""
    qkv = random_tensor((1, 10, 11, 24), torch.float32, device, 50)
    with torch.inference_mode():
        ops.shifted_window_attention(qkv, 2, 5, 2)
    leaf = qkv.clone().requires_grad_()
    ops.shifted_window_attention(leaf, 2, 5, 2).sum().backward()
    assert torch.isfinite(leaf.grad).all()
