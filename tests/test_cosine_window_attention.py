"""fastswin.ops.cosine_window_attention (Swin-V2 scaled cosine attention): the v1
kernels with COSINE on (compiled on a GPU, in the interpreter without one), against
the float64 reference.

Same rule as tests/test_window_attention.py: a kernel result passes when its error
against float64 is no worse than twice PyTorch's own error at the same precision
(the reference run in that dtype), plus a small floor.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from helpers import KERNEL_DEVICE, KERNEL_DTYPE_IDS, KERNEL_DTYPES, interpreter_only, random_tensor, versions
from test_window_attention import assert_close_to_reference, gpu_sized, make_inputs, window_cases

from fastswin import BackendError, reference
from fastswin.ops import cosine_window_attention
from fastswin.ops.attention.launch import window_attention_backward, window_attention_forward

# (B_, heads, N, head_dim, bias, nW or None for no mask); N = 144 runs the multi-tile kernels.
CASES = [
    (2, 2, 49, 32, True, 2),
    (2, 2, 64, 16, False, 1),
    (2, 2, 144, 16, True, None),
    # 24x24 windows (N = 576) at Swin2SR's head_dim 30, SwinUNETR's 7x7x7 (343) at its 8.
    (1, 1, 576, 30, True, 1),
    (1, 1, 343, 8, True, None),
]
# Per-head logit scales, exact in fp16 (so PyTorch's fp16 run sees the same values):
# the second is above the clamp (log 100 = 4.605), its gradient must be exactly 0.
LOGIT_SCALES = (2.5, 5.0)


def logit_scale_of(heads, values=LOGIT_SCALES, device=KERNEL_DEVICE):
    """Per-head values, cycled over the heads."""
    return torch.tensor([values[h % len(values)] for h in range(heads)], dtype=torch.float32,
                        device=device).reshape(heads, 1, 1)


def reference_grads(q, k, v, logit_scale, bias, mask, grad_out, dtype):
    """Output and gradients (dq, dk, dv, dlogit_scale[, dbias]) of the reference run in dtype."""
    leaves = [t.detach().to(dtype).requires_grad_() if t is not None else None
              for t in (q, k, v, logit_scale, bias)]
    out = reference.cosine_window_attention(*leaves[:4], leaves[4], None if mask is None else mask.to(dtype))
    grads = torch.autograd.grad(out, [t for t in leaves if t is not None], grad_out.to(dtype))
    return out.detach(), grads


def logit_scale_terms(q, k, v, logit_scale, bias, mask, grad_out):
    """Per head, the l1 mass sum |dS * s_h cos| of the terms dlogit_scale sums (float64):
    the scale of a sum's rounding error, where the sum itself may cancel to far less."""
    q, k, v, logit_scale, grad_out = (t.double() for t in (q, k, v, logit_scale, grad_out))
    scaled = (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
              * logit_scale.clamp(max=reference.LOGIT_SCALE_MAX).exp())
    s = scaled + (0 if bias is None else bias.double())
    if mask is not None:
        s = (s.view(-1, mask.shape[0], *s.shape[1:]) + mask.double()[:, None]).view(s.shape)
    p = s.softmax(-1)
    dp = grad_out @ v.transpose(-2, -1)
    ds = p * (dp - (p * dp).sum(-1, keepdim=True))
    return (ds * scaled).abs().sum((0, 2, 3))


def run_triton(q, k, v, logit_scale, bias, mask, grad_out):
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (q, k, v, logit_scale, bias)]
    out = cosine_window_attention(*leaves[:4], leaves[4], mask, backend="triton")
    return out, torch.autograd.grad(out, [t for t in leaves if t is not None], grad_out)


@pytest.mark.parametrize("dtype", KERNEL_DTYPES, ids=KERNEL_DTYPE_IDS)
@pytest.mark.parametrize("case", window_cases(CASES))
def test_forward_and_gradients_match_reference(case, dtype, poisoned_outputs):
    check_against_reference(case, dtype)


@gpu_sized
def test_gpu_sized_windows_match_reference(case, dtype, poisoned_outputs):
    """test_window_attention's GPU cases: eight or more windows per backward program."""
    check_against_reference(case, dtype)


def check_against_reference(case, dtype):
    B_, heads, n, d, with_bias, nW = case
    q, k, v, bias, mask = make_inputs(B_, heads, n, d, with_bias, nW, dtype)
    logit_scale = logit_scale_of(heads)
    grad_out = random_tensor((B_, heads, n, d), dtype, KERNEL_DEVICE, 7)

    out, grads = run_triton(q, k, v, logit_scale, bias, mask, grad_out)
    exact_out, exact_grads = reference_grads(q, k, v, logit_scale, bias, mask, grad_out, torch.float64)
    torch_out, torch_grads = reference_grads(q, k, v, logit_scale, bias, mask, grad_out, dtype)
    assert out.dtype == dtype
    assert_close_to_reference("out", out, torch_out, exact_out, dtype)
    for name, got, same, exact in zip(("dq", "dk", "dv", "dlogit_scale", "dbias"), grads, torch_grads, exact_grads):
        assert got.dtype == (torch.float32 if name == "dlogit_scale" else dtype), name
        if name != "dlogit_scale":
            assert_close_to_reference(name, got, same, exact, dtype)
    # dlogit_scale sums B_ N^2 terms of both signs per head, which cancel to far less
    # than their mass: its floor is one unit roundoff of that mass (the first-order
    # rounding error of a sum), not a fraction of the sum.
    dlogit_scale, torch_dlogit_scale, exact_dlogit_scale = grads[3], torch_grads[3], exact_grads[3]
    error = (dlogit_scale.double() - exact_dlogit_scale).abs().flatten()
    torch_error = (torch_dlogit_scale.double() - exact_dlogit_scale).abs().flatten()
    unit_roundoff = torch.finfo(dtype).eps / 2
    bound = 2 * torch_error + unit_roundoff * logit_scale_terms(q, k, v, logit_scale, bias, mask, grad_out)
    assert (error <= bound).all(), f"dlogit_scale: error {error.tolist()} > {bound.tolist()}"
    assert dlogit_scale.shape == (heads, 1, 1)
    assert (dlogit_scale[0::2] != 0).all()
    assert (dlogit_scale[1::2] == 0).all()  # clamped: exactly zero, as torch.clamp gives


@versions
@pytest.mark.parametrize("below", [False, True], ids=["at", "one-ulp-below"])
def test_logit_scale_gradient_at_the_clamp_follows_torch_clamp(below):
    """At exactly the bound (log 100 rounded to fp32) torch.clamp's gradient is 0; one
    ulp below, it passes."""
    q, k, v, bias, mask = make_inputs(2, 2, 49, 16, True, 2, torch.float32)
    bound = torch.full((2, 1, 1), math.log(100.0), dtype=torch.float32)
    if below:
        bound = torch.nextafter(bound, torch.zeros_like(bound))
    grad_out = random_tensor(q.shape, torch.float32, KERNEL_DEVICE, 7)
    _, grads = run_triton(q, k, v, bound, bias, mask, grad_out)
    _, torch_grads = reference_grads(q, k, v, bound, bias, mask, grad_out, torch.float32)
    if not below and (torch_grads[3] != 0).all():
        pytest.skip(f"torch {torch.__version__}'s clamp passes the gradient at its bound (it compares in fp32); "
                    "the kernels follow later versions, which give 0 there")
    assert bool((torch_grads[3] != 0).all()) == below
    if below:
        torch.testing.assert_close(grads[3], torch_grads[3], rtol=1e-4, atol=1e-4)
    else:
        assert torch.equal(grads[3], torch.zeros_like(grads[3]))


@versions
@interpreter_only
def test_zero_and_tiny_rows_follow_f_normalize():
    """Rows with ||x|| < eps: F.normalize divides by eps and drops the projection (the
    clamp's zero gradient); float64 in the interpreter, against the float64 reference."""
    q, k, v, bias, mask = make_inputs(2, 2, 49, 16, True, 2, torch.float64)
    q, k = q.clone(), k.clone()
    q[0, 1, 3] = 0.0
    k[1, 0, 5] = 0.0
    q[1, 0, 7] = 1e-14
    logit_scale = logit_scale_of(2).double()
    grad_out = random_tensor(q.shape, torch.float64, KERNEL_DEVICE, 7)
    out, grads = run_triton(q, k, v, logit_scale, bias, mask, grad_out)
    exact_out, exact_grads = reference_grads(q, k, v, logit_scale, bias, mask, grad_out, torch.float64)
    torch.testing.assert_close(out, exact_out, rtol=1e-10, atol=1e-10)
    for got, exact in zip(grads, exact_grads):
        torch.testing.assert_close(got, exact, rtol=1e-9, atol=1e-9 * exact.abs().max().item())


@versions
def test_strided_inputs_are_read_in_place_or_copied():
    """q, k, v as views of a packed qkv (read in place), a non-unit last stride (copied),
    a non-contiguous logit_scale and bias."""
    q, k, v, bias, mask = make_inputs(2, 2, 49, 32, True, 2, torch.float32)
    wide = random_tensor((2, 2, 49, 64), torch.float32, KERNEL_DEVICE, 11)
    k = wide[..., ::2]  # last stride 2
    logit_scale = torch.tensor([[[2.5, 0.0]], [[1.0, 0.0]]], device=KERNEL_DEVICE)[..., :1]  # strides (2, 2, 1)
    bias = random_tensor((49, 49, 2), torch.float32, KERNEL_DEVICE, 12).permute(2, 0, 1)
    assert not (k.stride(-1) == 1 or logit_scale.is_contiguous() or bias.is_contiguous())
    grad_out = random_tensor(q.shape, torch.float32, KERNEL_DEVICE, 7)
    out, grads = run_triton(q, k, v, logit_scale, bias, mask, grad_out)
    exact_out, exact_grads = reference_grads(q, k, v, logit_scale, bias, mask, grad_out, torch.float64)
    torch.testing.assert_close(out.double(), exact_out, rtol=1e-5, atol=1e-5)
    for got, exact in zip(grads, exact_grads):
        torch.testing.assert_close(got.double(), exact, rtol=1e-4, atol=1e-4 * exact.abs().max().item())


@versions
@interpreter_only
@pytest.mark.parametrize("n", [20, 40], ids=["one-tile", "multi-tile"])
def test_gradcheck_through_triton(n):
    """float64 in the interpreter; fast mode keeps it to seconds. The logit scale is
    below the clamp (where the gradient is smooth)."""
    q, k, v, bias, mask = make_inputs(2, 2, n, 16, True, 2, torch.float64)
    logit_scale = torch.tensor([1.5, 3.0], dtype=torch.float64, device=KERNEL_DEVICE).reshape(2, 1, 1)
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v, logit_scale, bias)]
    fn = lambda q, k, v, ls, bias: cosine_window_attention(q, k, v, ls, bias, mask, backend="triton")  # noqa: E731
    assert torch.autograd.gradcheck(fn, leaves, fast_mode=True)


@versions
@pytest.mark.parametrize("n", [49, 72], ids=["registers", "in-place-slots"])
def test_deterministic_equals_atomic(n):
    """Five windows in groups of two (the last group short): atomic and deterministic
    dbias and dlogit_scale differ only in summation order; deterministic runs are
    bitwise reproducible."""
    q, k, v, bias, mask = make_inputs(5, 2, n, 16, True, 5, torch.float32)
    logit_scale = logit_scale_of(2, (2.5, 1.0))
    out, lse = window_attention_forward(q, k, v, bias, mask, 1.0, logit_scale)
    grad_out = random_tensor(out.shape, torch.float32, KERNEL_DEVICE, 3)
    run = lambda deterministic: window_attention_backward(  # noqa: E731
        grad_out, q, k, v, out, lse, bias, mask, 1.0, True, deterministic=deterministic, group_size=2,
        logit_scale=logit_scale, logit_scale_grad=True)
    atomic, first, second = run(False), run(True), run(True)
    assert len(atomic) == 5
    for a, b, c in zip(atomic, first, second):
        assert torch.equal(b, c)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    _, exact_grads = reference_grads(q, k, v, logit_scale, bias, mask, grad_out, torch.float64)
    torch.testing.assert_close(first[4].double(), exact_grads[3], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(first[3].double(), exact_grads[4], rtol=1e-4, atol=1e-4)


@versions
def test_only_the_gradients_asked_for():
    """No bias, logit_scale frozen: the backward skips dbias and dlogit_scale."""
    q, k, v, _, mask = make_inputs(2, 2, 49, 16, False, 1, torch.float32)
    q = q.detach().requires_grad_()
    out = cosine_window_attention(q, k, v, logit_scale_of(2), None, mask, backend="triton")
    (dq,) = torch.autograd.grad(out.sum(), [q])
    assert torch.isfinite(dq).all()


@versions
def test_opcheck_registered_op():
    q, k, v, bias, mask = make_inputs(2, 2, 49, 16, True, 2, torch.float32)
    q, k, v, bias, logit_scale = [t.detach().clone().requires_grad_()
                                  for t in (q, k, v, bias, logit_scale_of(2, (2.5, 1.0)))]
    torch.library.opcheck(torch.ops.fastswin.window_attention_triton.default, (q, k, v, bias, mask, logit_scale, 1.0))


@versions
def test_torch_compile_traces_the_op_fullgraph():
    torch._dynamo.reset()
    mask = make_inputs(2, 2, 49, 16, True, 2, torch.float32)[4]

    def block(q, k, v, logit_scale, bias):
        out = cosine_window_attention(q, k, v, logit_scale, bias, mask, backend="triton")
        return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)

    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    q, k, v, bias, _ = make_inputs(2, 2, 49, 16, True, 2, torch.float32, seed=3)
    inputs = (q, k, v, logit_scale_of(2, (2.5, 1.0)), bias)
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    eager = [t.detach().clone().requires_grad_() for t in inputs]
    compiled(*leaves).sum().backward()
    block(*eager).sum().backward()
    for a, b in zip(leaves, eager):
        torch.testing.assert_close(a.grad, b.grad)


@versions
def test_auto_backend_on_cpu_never_runs_the_interpreter(monkeypatch):
    """Auto mode takes the C++ CPU kernels (or the reference without the extension)."""
    monkeypatch.setattr("fastswin.ops.attention.custom_ops.window_attention_forward", None)  # the Triton path
    q, k, v, bias, mask = make_inputs(2, 2, 49, 16, True, 2, torch.float32, device="cpu")
    logit_scale = logit_scale_of(2, device="cpu")
    out = cosine_window_attention(q, k, v, logit_scale, bias, mask)
    # Logits up to 100: fp32 rounding of 1e-5 either way.
    torch.testing.assert_close(out, reference.cosine_window_attention(q, k, v, logit_scale, bias, mask), rtol=1e-4,
                               atol=1e-4)


@versions
def test_forced_triton_says_why_it_cannot_run():
    q = torch.randn(2, 1, 1089, 16, device=KERNEL_DEVICE)
    with pytest.raises(BackendError, match="N = 1089"):
        cosine_window_attention(q, q, q, logit_scale_of(1), backend="triton")
    assert cosine_window_attention(q, q, q, logit_scale_of(1)).shape == q.shape


@versions
@pytest.mark.parametrize("backend", [None, "reference", "triton"])
@pytest.mark.parametrize("logit_scale, message", [
    (torch.zeros(3, 1, 1), "logit_scale must be"),
    (torch.zeros(2), "logit_scale must be"),
    (torch.zeros(2, 1, 1, dtype=torch.long), "logit_scale must be"),
    (torch.zeros(2, 1, 1, device="meta"), "one device"),
], ids=["heads", "rank", "integer", "device"])
def test_bad_logit_scale_raises_value_error(logit_scale, message, backend):
    q = torch.randn(2, 2, 49, 16)
    with pytest.raises(ValueError, match=message):
        cosine_window_attention(q, q, q, logit_scale, backend=backend)
