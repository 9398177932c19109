"""The fused C++ CPU window-layout attention (csrc/window_layout_attention_cpu.cpp,
torch.ops.fastswin.window_attention_cpu: what ops.window_attention and
ops.cosine_window_attention run with backend="cpu") against the float64 reference: v1
and v2 (one head's logit scale past the clamp), with and without bias and mask, strided
q, k, v, fp64 / fp32 / fp16 / bf16, outputs poisoned first, and every gradient within
2x eager PyTorch's error at the same dtype."""
import pytest
import torch

from fastswin import reference
from fastswin.ops import cosine_window_attention, window_attention
from fastswin.ops.attention import eager
from helpers import random_tensor, versions

_C = pytest.importorskip("fastswin._C", reason="the C++ extension is not built")
pytestmark = pytest.mark.usefixtures("poisoned_outputs")  # conftest.py

# (B_, heads, N, d, bias, nW or None): Swin's 7x7 and 8x8 windows, a 7x9 one at head dim
# 24, video Swin's 8x7x7 at Swin2SR's 30, one-token windows at head dim 4, six tokens.
CASES = [(4, 2, 49, 32, True, 2), (3, 3, 64, 16, False, None), (2, 1, 63, 24, True, 1),
         (1, 2, 392, 30, True, 1), (4, 2, 1, 4, True, 4), (2, 2, 6, 8, False, 2)]
SCALE = 0.37  # not head_dim ** -0.5, so a kernel that ignores it fails
# Relative to the largest exact value: where eager PyTorch happens to be exact.
FLOOR = {torch.float64: 1e-12, torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}


def _inputs(case, dtype, seed=0):
    """A packed qkv leaf, (B_, N, 3, heads, d + 3), whose strided views are q, k, v;
    bias, mask and logit_scale in fp32 (a module's parameters, autocast's mix)."""
    B_, heads, n, d, with_bias, nW = case
    packed = random_tensor((B_, n, 3, heads, d + 3), dtype, "cpu", seed).requires_grad_()
    bias = random_tensor((heads, n, n), torch.float32, "cpu", seed + 1).requires_grad_() if with_bias else None
    mask = None
    if nW is not None:
        mask = random_tensor((nW, n, n), torch.float32, "cpu", seed + 2)
        mask[:, : n // 2, n // 2:] = reference.MASK_VALUE
    logit_scale = random_tensor((heads, 1, 1), torch.float32, "cpu", seed + 3) + 1
    logit_scale[-1] = 5.0  # past log 100: the clamp passes no gradient
    return packed, bias, mask, logit_scale.requires_grad_()


def _attention(v2, packed, bias, mask, logit_scale, backend, dtype=None):
    """The op's output, with every input cast to dtype first where given (eager's own
    precision, or float64)."""
    def cast(t):
        return t if t is None or dtype is None else t.to(dtype)
    q, k, v = cast(packed)[..., 1:-2].permute(2, 0, 3, 1, 4)
    if v2:
        return cosine_window_attention(q, k, v, cast(logit_scale), cast(bias), cast(mask), backend=backend)
    return window_attention(q, k, v, cast(bias), cast(mask), SCALE, backend=backend)


def _output_and_grads(v2, inputs, grad_out, backend, dtype=None):
    packed, bias, mask, logit_scale = inputs
    out = _attention(v2, packed, bias, mask, logit_scale, backend, dtype)
    leaves = [t for t in (packed, bias, logit_scale if v2 else None) if t is not None]
    return [out, *torch.autograd.grad(out, leaves, grad_out.to(out.dtype))]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
@pytest.mark.parametrize("case", CASES, ids=[f"B{c[0]}-h{c[1]}-N{c[2]}-d{c[3]}-bias{int(c[4])}-nW{c[5]}"
                                             for c in CASES])
def test_cpu_window_attention_matches_reference(case, v2, dtype):
    inputs = _inputs(case, dtype)
    B_, heads, n, d = case[:4]
    grad_out = random_tensor((B_, heads, n, d), torch.float64, "cpu", 7)
    got = _output_and_grads(v2, inputs, grad_out, "cpu")
    exact = _output_and_grads(v2, inputs, grad_out, "reference", torch.float64)
    eager = _output_and_grads(v2, inputs, grad_out, "reference", dtype)
    names = ["out", "d packed", "d bias", "d logit_scale"] if case[4] else ["out", "d packed", "d logit_scale"]
    for name, g, x, e in zip(names, got, exact, eager):
        assert g.dtype == e.dtype and g.shape == x.shape, name
        error, eager_error = (g.double() - x).abs().max().item(), (e.double() - x).abs().max().item()
        bound = 2 * eager_error + FLOOR[dtype] * x.abs().max().item()
        assert error <= bound, f"{name}: error {error:.3g} > {bound:.3g} (eager's own {eager_error:.3g})"
    if v2:
        assert got[-1][-1].item() == 0  # the clamped head's logit scale


def test_outputs_are_views_of_tokens_major_buffers():
    """As the Triton ops': out, dq, dk, dv are (B_, heads, N, d) views of contiguous
    (B_, N, heads, d) buffers."""
    q, k, v = (random_tensor((3, 2, 49, 16), torch.float32, "cpu", seed).requires_grad_() for seed in (1, 2, 3))
    out, _ = torch.ops.fastswin.window_attention_cpu(q, k, v, None, None, None, SCALE)
    grads = torch.autograd.grad(out, (q, k, v), torch.randn_like(out))
    for x in (out, *grads):
        assert x.shape == q.shape and x.transpose(1, 2).is_contiguous()


def test_cpu_log_sum_exp():
    """lse[window, head, i] = logsumexp_j of the logits, in float64 for float64 inputs."""
    q, k, v = (random_tensor((4, 2, 49, 8), torch.float64, "cpu", seed) for seed in (1, 2, 3))
    bias, mask = random_tensor((2, 49, 49), torch.float64, "cpu", 4), random_tensor((2, 49, 49), torch.float64, "cpu", 5)
    _, lse = torch.ops.fastswin.window_attention_cpu(q, k, v, bias, mask, None, SCALE)
    logits = SCALE * q @ k.transpose(-2, -1) + bias + mask.repeat(2, 1, 1)[:, None]
    torch.testing.assert_close(lse, logits.logsumexp(-1), rtol=1e-12, atol=1e-12)


@versions
@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_opcheck_cpu_window_op(v2):
    packed, bias, mask, logit_scale = _inputs(CASES[0], torch.float32)
    q, k, v = (t.detach().clone().requires_grad_() for t in packed[..., 1:-2].permute(2, 0, 3, 1, 4))
    torch.library.opcheck(torch.ops.fastswin.window_attention_cpu.default,
                          (q, k, v, bias, mask, logit_scale if v2 else None, 1.0 if v2 else SCALE))


@versions
def test_torch_compile_traces_the_cpu_op_fullgraph_without_recompiles():
    torch._dynamo.reset()
    mask = _inputs(CASES[0], torch.float32)[2]

    def block(q, k, v, bias):
        out = window_attention(q, k, v, bias, mask, SCALE, backend="cpu")
        return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)

    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    for windows in (2, 4, 6):  # the second batch makes the graph dynamic, the third reuses it
        q, k, v = (random_tensor((windows, 2, 49, 32), torch.float32, "cpu", seed) for seed in (1, 2, 3))
        bias = random_tensor((2, 49, 49), torch.float32, "cpu", 4)
        leaves = [t.clone().requires_grad_() for t in (q, k, v, bias)]
        eager = [t.clone().requires_grad_() for t in (q, k, v, bias)]
        with torch._dynamo.config.patch(error_on_recompile=windows == 6):
            compiled(*leaves).sum().backward()
        block(*eager).sum().backward()
        for a, b in zip(leaves, eager):
            torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("dtype, trains", [(torch.float32, True), (torch.bfloat16, False)], ids=["fp32", "bf16"])
@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_auto_mode_on_cpu_trains_through_the_kernels_in_fp32_only(v2, dtype, trains, monkeypatch):
    """Auto picks the fused kernels for inference, and with gradients in fp32 / fp64 only
    (bf16 / fp16: the reference, checks.CPU_TRAINING_LIMIT), as for the image layout."""
    calls = []
    kernel = eager.cpu_window_attention_op
    monkeypatch.setattr(eager, "cpu_window_attention_op", lambda *args: calls.append(1) or kernel(*args))
    packed, bias, mask, logit_scale = _inputs(CASES[0], dtype)
    with torch.no_grad():
        out = _attention(v2, packed, bias, mask, logit_scale, None)
        want = _attention(v2, packed, bias, mask, logit_scale, "reference", torch.float64)
    assert len(calls) == 1
    torch.testing.assert_close(out.double(), want, rtol=2e-2 if trains else 0.1, atol=2e-2 if trains else 0.1)
    _attention(v2, packed, bias, mask, logit_scale, None).sum().backward()
    assert len(calls) == 1 + trains and packed.grad is not None


@versions
@pytest.mark.parametrize("bad,match", [
    (dict(k=torch.zeros(4, 2, 48, 16)), "of one shape"),
    (dict(k=torch.zeros(4, 2, 49, 16, dtype=torch.float64)), "share a dtype"),
    (dict(bias=torch.zeros(2, 48, 48)), "bias must be"),
    (dict(mask=torch.zeros(3, 49, 49)), "multiple of nW"),
    (dict(logit_scale=torch.zeros(3, 1, 1)), "logit_scale must have 2"),
])
def test_cpu_window_op_refuses_bad_arguments(bad, match):
    q = random_tensor((4, 2, 49, 16), torch.float32, "cpu", 3)
    args = dict(k=q, bias=None, mask=None, logit_scale=None) | bad
    with pytest.raises(RuntimeError, match=match):
        torch.ops.fastswin.window_attention_cpu(q, args["k"], q, args["bias"], args["mask"], args["logit_scale"], 1.0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_zero_and_tiny_rows_follow_f_normalize(dtype):
    """Rows with ||x|| < eps (F.normalize divides by eps, and its clamp passes no
    projection back), tiny ones among them, whose squares the kernels flush to zero
    (denormals.h), and masked keys whose numerators are denormal."""
    packed, bias, mask, logit_scale = _inputs(CASES[0], dtype)
    with torch.no_grad():
        packed[0, 3, 0, 1] = 0.0  # q of window 0, token 3, head 1
        packed[1, 5, 1, 0] = 0.0  # k
        packed[1, 7, 0, 0] = 1e-14
        packed[2, 9, 1, 1] = 1e-30
        mask[1, :, 10:20] = -300.0  # exp(-300 - max) is denormal or zero in either dtype
    grad_out = random_tensor(packed[..., 1:-2].permute(2, 0, 3, 1, 4)[0].shape, torch.float64, "cpu", 7)
    got = _output_and_grads(True, (packed, bias, mask, logit_scale), grad_out, "cpu")
    exact = _output_and_grads(True, (packed, bias, mask, logit_scale), grad_out, "reference", torch.float64)
    tolerance = {torch.float64: 1e-9, torch.float32: 2e-4}[dtype]
    for g, x in zip(got, exact):
        torch.testing.assert_close(g.double(), x.double(), rtol=tolerance, atol=tolerance * x.abs().max().item())
