"""The fused C++ CPU shifted-window attention forward (csrc/window_attention_cpu.cpp,
torch.ops.fastswin.shifted_window_attention_cpu) against the float64 reference: 2D and
video maps, padded or not, shifted (kept shifts too), both orders, v1 and v2, with and
without a qkv bias, fp64 / fp32 / bf16, strided input, outputs poisoned first."""
import math

import pytest
import torch

from fastswin import ops, reference
from helpers import random_tensor, versions

_C = pytest.importorskip("fastswin._C", reason="the C++ extension is not built")
pytestmark = pytest.mark.usefixtures("poisoned_outputs")  # conftest.py

# (sizes, window, shift): padded in both dims; one window along H with a kept shift
# longer than the map; unshifted; video maps padded and shifted in every dim.
CASES = [((9, 11), (7, 7), (3, 3)), ((2, 9), (7, 7), (3, 3)), ((8, 8), (4, 4), (0, 0)),
         ((5, 6, 7), (2, 3, 4), (1, 1, 2)), ((3, 5, 9), (2, 3, 4), (1, 2, 3))]
HEADS, HEAD_DIM = 3, 8


def _inputs(sizes, window, v2, fill, dtype, seed, heads=HEADS, head_dim=HEAD_DIM):
    n = math.prod(window)
    wide = random_tensor((2, *sizes, 3 * heads * head_dim + 5), dtype, "cpu", seed)
    qkv = wide[..., 2:-3]  # strided: rows of a wider map
    bias = random_tensor((heads, n, n), torch.float32, "cpu", seed + 1)
    logit_scale = random_tensor((heads, 1, 1), torch.float32, "cpu", seed + 2) + 1 if v2 else None
    qkv_bias = random_tensor((3 * heads * head_dim,), torch.float32, "cpu", seed + 3) if fill else None
    return qkv, bias, logit_scale, qkv_bias


def _reference(qkv, bias, logit_scale, qkv_bias, window, shift, order, dtype):
    def cast(t):
        return None if t is None else t.to(dtype)
    return reference.shifted_window_attention(cast(qkv), HEADS, window, shift, cast(bias), cast(logit_scale),
                                              cast(qkv_bias), order, always_shift=True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("v2,fill", [(False, False), (False, True), (True, True)])
@pytest.mark.parametrize("order", ["torchvision", "timm"])
@pytest.mark.parametrize("sizes,window,shift", CASES)
def test_cpu_forward_matches_reference(sizes, window, shift, order, v2, fill, dtype):
    qkv, bias, logit_scale, qkv_bias = _inputs(sizes, window, v2, fill, dtype, seed=len(sizes) * 10 + sum(shift))
    out, lse = torch.ops.fastswin.shifted_window_attention_cpu(qkv, bias, logit_scale, qkv_bias, HEADS,
                                                               list(window), list(shift), order == "timm")
    want = _reference(qkv, bias, logit_scale, qkv_bias, window, shift, order, torch.float64)
    eager_error = (_reference(qkv, bias, logit_scale, qkv_bias, window, shift, order, dtype).double()
                   - want).abs().max().item()
    assert out.dtype == dtype and out.shape == want.shape and out.is_contiguous()
    # fp32 accumulation in another order than eager's: within 2x its error, or a few fp32 ulps.
    floor = {torch.float64: 1e-12, torch.float32: 4e-6, torch.bfloat16: 0.0}[dtype]
    assert (out.double() - want).abs().max().item() <= max(2 * eager_error, floor)
    assert lse.shape == (2 * math.prod(-(-s // w) for s, w in zip(sizes, window)), HEADS, math.prod(window))


def test_cpu_forward_log_sum_exp():
    """lse[window, head, i] = logsumexp_j of the logits, here on an unshifted, unpadded map."""
    qkv, bias, _, _ = _inputs((8, 8), (4, 4), False, False, torch.float64, seed=5)
    _, lse = torch.ops.fastswin.shifted_window_attention_cpu(qkv, bias, None, None, HEADS, [4, 4], [0, 0], False)
    windows = reference.window_partition(qkv, (4, 4)).reshape(-1, 16, 3, HEADS, HEAD_DIM).permute(2, 0, 3, 1, 4)
    q, k, _ = windows
    logits = (q * HEAD_DIM ** -0.5) @ k.transpose(-2, -1) + bias
    torch.testing.assert_close(lse, logits.logsumexp(-1), rtol=1e-12, atol=1e-12)


@versions
@pytest.mark.parametrize("bad,match", [
    (dict(shift=[7, 0]), "0 <= shift < window"),
    (dict(heads=5), "do not split"),
    (dict(bias=torch.zeros(3, 48, 48)), "bias must be"),
])
def test_cpu_forward_refuses_bad_arguments(bad, match):
    qkv = random_tensor((1, 9, 9, 72), torch.float32, "cpu", 3)
    args = dict(bias=torch.zeros(3, 49, 49), heads=3, shift=[3, 3]) | bad
    with pytest.raises(RuntimeError, match=match):
        torch.ops.fastswin.shifted_window_attention_cpu(qkv, args["bias"], None, None, args["heads"], [7, 7],
                                                        args["shift"], False)


def _grads(dtype, sizes, window, shift, order, v2, seed, backend, heads=HEADS, head_dim=HEAD_DIM):
    """Output and gradients of (qkv, bias, logit_scale, qkv_bias) through the op, in dtype."""
    qkv, bias, logit_scale, qkv_bias = _inputs(sizes, window, v2, True, torch.float64, seed, heads, head_dim)
    grad = random_tensor((2, *sizes, heads * head_dim), torch.float64, "cpu", seed + 4)
    if v2:
        logit_scale[0] = 5.0  # past the clamp: no gradient for this head
    leaves = [t.to(dtype).requires_grad_() for t in (qkv, bias, logit_scale, qkv_bias) if t is not None]
    out = ops.shifted_window_attention(leaves[0], heads, window, shift, leaves[1], order=order, backend=backend,
                                       logit_scale=leaves[2] if v2 else None, qkv_bias=leaves[-1], always_shift=True)
    out.backward(grad.to(dtype).transpose(1, 2).contiguous().transpose(1, 2))  # a strided gradient
    return [out.double()] + [t.grad.double() for t in leaves]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("v2", [False, True])
@pytest.mark.parametrize("order", ["torchvision", "timm"])
@pytest.mark.parametrize("sizes,window,shift", CASES)
def test_cpu_backward_matches_reference(sizes, window, shift, order, v2, dtype):
    """Every gradient within twice eager's error at the same dtype (fp64 is compared exactly by
    test_shifted_window_attention.py, which runs the cpu backend in auto mode)."""
    seed = 7 + len(sizes) + sum(shift)
    want = _grads(torch.float64, sizes, window, shift, order, v2, seed, "reference")
    eager = _grads(dtype, sizes, window, shift, order, v2, seed, "reference")
    got = _grads(dtype, sizes, window, shift, order, v2, seed, "cpu")
    _assert_within_twice_eager(got, eager, want, 1e-5 if dtype == torch.float32 else 0.0)


def _assert_within_twice_eager(got, eager, want, floor):
    for name, g, e, w in zip(["out", "qkv", "bias", "logit_scale", "qkv_bias"][:len(got)], got, eager, want):
        assert (g - w).abs().max().item() <= max(2 * (e - w).abs().max().item(), floor * w.abs().max().item()), name


# Head dims off the 16-float vector (a product reads a head's v and dO into the next
# head's columns, the last head's into the buffers' slack) and windows of 1, 6 and 343
# tokens (fewer rows than a register tile; a video window).
ODD_SHAPES = [((3, 4), (1, 1), (0, 0), 5, 4), ((5, 7), (2, 3), (1, 1), 2, 30),
              ((7, 8, 9), (7, 7, 7), (3, 3, 3), 1, 24)]


@versions
@pytest.mark.parametrize("v2", [False, True])
@pytest.mark.parametrize("sizes,window,shift,heads,head_dim", ODD_SHAPES)
def test_cpu_kernels_at_odd_head_dims_and_windows(sizes, window, shift, heads, head_dim, v2):
    args = (sizes, window, shift, "timm", v2, 3 + heads, "reference", heads, head_dim)
    want, eager = _grads(torch.float64, *args), _grads(torch.float32, *args)
    got = _grads(torch.float32, *args[:6], "cpu", heads, head_dim)
    _assert_within_twice_eager(got, eager, want, 1e-5)


@versions
def test_cpu_gradcheck_and_opcheck():
    qkv, bias, logit_scale, qkv_bias = _inputs((5, 6), (4, 4), True, True, torch.float64, seed=9)
    leaves = [t.double().requires_grad_() for t in (qkv.contiguous(), bias, logit_scale, qkv_bias)]

    def f(qkv, bias, logit_scale, qkv_bias):
        return ops.shifted_window_attention(qkv, HEADS, (4, 4), (2, 1), bias, logit_scale=logit_scale,
                                            qkv_bias=qkv_bias, order="timm", backend="cpu")

    assert torch.autograd.gradcheck(f, leaves, fast_mode=True)
    args = (*leaves, HEADS, [4, 4], [2, 1], True)
    torch.library.opcheck(torch.ops.fastswin.shifted_window_attention_cpu.default, args)


@versions
def test_cpu_compiles_fullgraph_without_recompiles():
    bias = random_tensor((HEADS, 49, 49), torch.float32, "cpu", 11)

    def f(qkv):
        return ops.shifted_window_attention(qkv, HEADS, 7, 3, bias, order="timm", backend="cpu")

    compiled = torch.compile(f, fullgraph=True, dynamic=False)
    for batch in (2, 2):
        qkv = random_tensor((batch, 9, 11, 3 * HEADS * HEAD_DIM), torch.float32, "cpu", 12)
        with torch._dynamo.config.patch(error_on_recompile=True):
            torch.testing.assert_close(compiled(qkv), f(qkv))
