"""fastswin.ops.window_attention: the Triton kernels (compiled on a GPU, in the
interpreter on CPU tensors without one: helpers.KERNEL_DEVICE) against the float64
reference.

A kernel result passes when its error against float64 is no worse than twice
PyTorch's own error at the same precision (the reference run in that dtype),
plus a small floor for values where PyTorch happens to be exact.
"""
import os
import subprocess
import sys

import pytest
import torch

from helpers import (KERNEL_DEVICE, KERNEL_DTYPE_IDS, KERNEL_DTYPES, compiled_only, interpreter_only,
                     long, random_tensor, versions)

from fastswin import BackendError, reference
from fastswin.ops import cosine_window_attention, window_attention
from fastswin.ops.attention.launch import window_attention_backward, window_attention_forward
from fastswin.ops.attention.policy import tile_config, windows_per_program

# (B_, heads, N, head_dim, bias, nW or None for no mask): Swin's 7x7, 8x8 and 12x12
# windows and a 7x9 one; N = 144 runs the multi-tile kernels (tiles of 64).
CASES = [
    (2, 1, 49, 32, True, 2),
    (4, 2, 49, 16, True, None),
    (2, 3, 64, 32, False, 1),
    (3, 2, 63, 16, True, 3),
    (2, 4, 49, 32, False, None),
    (2, 1, 144, 16, True, 2),
    (2, 2, 144, 32, True, None),
    (2, 2, 49, 24, True, 2),  # head_dim padded to a 32-wide tile
    # Large windows and any head size: 24x24 (N = 576) at head_dim 8, video Swin's 8x7x7
    # (392) at Swin2SR's 30, Donut's 10x10 at CLAP's 24, SwinIR-light's 10, 256 channels;
    # N = 576 and 392 take the query pass's keys in several blocks.
    (1, 1, 576, 8, True, 1),
    (1, 1, 392, 30, True, None),
    (2, 1, 100, 24, True, 2),
    (2, 2, 64, 10, True, 1),
    (2, 1, 49, 256, True, 2),
]
SCALE = 0.37  # not head_dim ** -0.5, so a kernel that ignores it fails
# fp32's floor is the saved-lse design's: the backward recomputes P = exp(S - lse) from the
# fp32 lse, whose rounding, eps * |lse|, reaches 1e-5 where logits reach 100 (Swin-V2's
# cosine logits, heads of 256 channels at SCALE), on every P of the row at once (measured:
# 2-14e-6 of the largest gradient in the 3.8 interpreter, 2-6x PyTorch's own error).
FLOOR = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}


def make_inputs(B_, heads, n, d, with_bias, nW, dtype, seed=0, device=KERNEL_DEVICE):
    """q, k, v as the strided views a Swin block makes of its packed qkv; bias and mask."""
    qkv = random_tensor((B_, n, 3, heads, d), dtype, device, seed)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    bias = random_tensor((heads, n, n), dtype, device, seed + 1) if with_bias else None
    mask = None
    if nW is not None:
        # A real shift mask (0 / -100) where the window allows it, plus noise so
        # that every window of the mask differs.
        mask = random_tensor((nW, n, n), dtype, device, seed + 2)
        mask[:, : n // 2, n // 2:] = reference.MASK_VALUE
    return q, k, v, bias, mask


def reference_grads(q, k, v, bias, mask, grad_out, dtype):
    """Output and gradients (dq, dk, dv, dbias) of the reference run in dtype."""
    leaves = [t.detach().to(dtype).requires_grad_() if t is not None else None for t in (q, k, v, bias)]
    out = reference.window_attention(*leaves[:3], leaves[3], None if mask is None else mask.to(dtype), SCALE)
    inputs = [t for t in leaves if t is not None]
    grads = torch.autograd.grad(out, inputs, grad_out.to(dtype))
    return out.detach(), grads


def assert_close_to_reference(name, got, torch_same_precision, exact, dtype):
    """Error of `got` vs float64 no worse than 2x PyTorch's at the same precision (+ floor)."""
    assert torch.isfinite(got).all(), f"{name}: non-finite values"
    assert got.shape == exact.shape, f"{name}: shape {tuple(got.shape)} != {tuple(exact.shape)}"
    error = (got.double() - exact).abs().max().item()
    torch_error = (torch_same_precision.double() - exact).abs().max().item()
    bound = 2 * torch_error + FLOOR[dtype] * exact.abs().max().item()
    assert error <= bound, f"{name}: error {error:.3g} > {bound:.3g} (PyTorch's own error {torch_error:.3g})"


def window_cases(cases):
    """The cases as named parameters; the second stack runs those of N <= 256 (the larger
    windows' key blocks are run there at small sizes: test_gradcheck_through_triton), the
    larger ones are long."""
    return [pytest.param(c, marks=versions if c[2] <= 256 else long,
                         id=f"B{c[0]}-h{c[1]}-N{c[2]}-d{c[3]}-bias{int(c[4])}-nW{c[5]}") for c in cases]


@pytest.mark.parametrize("dtype", KERNEL_DTYPES, ids=KERNEL_DTYPE_IDS)
@pytest.mark.parametrize("case", window_cases(CASES))
def test_forward_and_gradients_match_reference(case, dtype, poisoned_outputs):
    check_against_reference(case, dtype)


# GPU-sized: enough windows that each backward program sums dbias over eight or more
# (windows_per_program), Swin's and SwinV2's windows (N = 49, 64, 144, 256), head_dim 64;
# SwinV2-384's 24x24 windows (N = 576), SwinUNETR's 7x7x7 at head_dim 8, Swin2SR's
# head_dim 30 and heads of 256 channels.
GPU_CASES = [
    (1024, 8, 49, 32, True, 64),
    (1024, 8, 64, 32, True, 16),
    (512, 16, 144, 32, True, 4),
    (256, 32, 256, 32, True, None),
    (1024, 8, 49, 64, True, 64),
    (256, 4, 576, 32, True, 16),
    (128, 3, 343, 8, True, 8),
    (256, 6, 64, 30, True, 16),
    (128, 2, 49, 256, True, 64),
]



def gpu_sized(test):
    """test(case, dtype) over GPU_CASES and every kernel dtype, compiled only."""
    ids = [f"B{c[0]}-h{c[1]}-N{c[2]}-d{c[3]}-nW{c[5]}" for c in GPU_CASES]
    for mark in (pytest.mark.parametrize("case", GPU_CASES, ids=ids),
                 pytest.mark.parametrize("dtype", KERNEL_DTYPES, ids=KERNEL_DTYPE_IDS), compiled_only):
        test = mark(test)
    return test


@gpu_sized
def test_gpu_sized_windows_match_reference(case, dtype, poisoned_outputs):
    assert windows_per_program(case[0], case[1]) >= 8
    check_against_reference(case, dtype)


def check_against_reference(case, dtype):
    B_, heads, n, d, with_bias, nW = case
    q, k, v, bias, mask = make_inputs(B_, heads, n, d, with_bias, nW, dtype)
    grad_out = random_tensor((B_, heads, n, d), dtype, KERNEL_DEVICE, 7)

    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (q, k, v, bias)]
    out = window_attention(*leaves[:3], leaves[3], mask, SCALE, backend="triton")
    inputs = [t for t in leaves if t is not None]
    grads = torch.autograd.grad(out, inputs, grad_out)

    exact_out, exact_grads = reference_grads(q, k, v, bias, mask, grad_out, torch.float64)
    torch_out, torch_grads = reference_grads(q, k, v, bias, mask, grad_out, dtype)
    assert out.dtype == dtype
    assert_close_to_reference("out", out, torch_out, exact_out, dtype)
    for name, got, same, exact in zip(("dq", "dk", "dv", "dbias"), grads, torch_grads, exact_grads):
        assert got.dtype == dtype, name
        assert_close_to_reference(name, got, same, exact, dtype)


@versions
def test_output_is_a_view_of_a_tokens_major_buffer():
    """The caller's (B_, heads, N, d) -> (B_, N, heads * d) reshape costs no copy."""
    q, k, v, bias, mask = make_inputs(2, 3, 49, 16, True, 2, torch.float32)
    out = window_attention(q, k, v, bias, mask, backend="triton")
    assert out.transpose(1, 2).is_contiguous()


@versions
def test_default_scale_is_head_dim_rsqrt():
    q, k, v, bias, mask = make_inputs(2, 1, 49, 16, True, None, torch.float32)
    out = window_attention(q, k, v, bias, backend="triton")
    expected = reference.window_attention(q.double(), k.double(), v.double(), bias.double(), None, 16 ** -0.5)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


@versions
@interpreter_only
@pytest.mark.parametrize("n, d", [(20, 16), (72, 16), (72, 64)], ids=["one-tile", "multi-tile", "key-blocks"])
def test_gradcheck_through_triton(n, d):
    """float64 runs in the interpreter (accumulating in fp64), so gradcheck's default
    tolerances apply; fast mode (random projections) keeps it to seconds. At head_dim
    64 the query pass takes the 72 keys in three blocks."""
    assert (tile_config(n, d, torch.float64).key_blocks > 1) == (d == 64)
    q, k, v, bias, mask = make_inputs(2, 1, n, d, True, 2, torch.float64)
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v, bias)]
    # The kernel takes scale as fp32: 0.5 is exact there, so the fp64 check stays tight.
    fn = lambda q, k, v, bias: window_attention(q, k, v, bias, mask, 0.5, backend="triton")  # noqa: E731
    assert torch.autograd.gradcheck(fn, leaves, fast_mode=True)


@pytest.mark.parametrize("n, d", [pytest.param(49, 16, id="registers", marks=versions),
                                  pytest.param(72, 16, id="in-place-slots", marks=versions),
                                  pytest.param(72, 64, id="key-blocks", marks=long)])
def test_deterministic_dbias_equals_atomic(n, d):
    """Five windows in groups of two: the last group is short. Atomic and deterministic
    dbias differ only in summation order (a few fp32 ulps); deterministic runs are
    bitwise reproducible."""
    q, k, v, bias, mask = make_inputs(5, 2, n, d, True, 5, torch.float32)
    out, lse = window_attention_forward(q, k, v, bias, mask, SCALE)
    grad_out = random_tensor(out.shape, torch.float32, KERNEL_DEVICE, 3)
    run = lambda deterministic: window_attention_backward(  # noqa: E731
        grad_out, q, k, v, out, lse, bias, mask, SCALE, True, deterministic=deterministic, group_size=2)
    atomic, first, second = run(False), run(True), run(True)
    for a, b, c in zip(atomic, first, second):
        assert torch.equal(b, c)
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    exact_out, exact_grads = reference_grads(q, k, v, bias, mask, grad_out, torch.float64)
    torch.testing.assert_close(first[3].double(), exact_grads[3], rtol=1e-4, atol=1e-4)


def test_windows_per_program_fills_a_gpu_and_bounds_the_loop():
    assert windows_per_program(4, 2) == 1
    assert 1 < windows_per_program(128 * 64, 3) <= 64
    assert windows_per_program(10 ** 7, 24) == 64


@versions
def test_bias_gradient_only_when_needed():
    q, k, v, bias, mask = make_inputs(2, 2, 49, 16, True, 1, torch.float32)
    q = q.detach().requires_grad_()
    out = window_attention(q, k, v, bias, mask, backend="triton")
    (dq,) = torch.autograd.grad(out.sum(), [q])
    assert torch.isfinite(dq).all()


@versions
def test_opcheck_registered_op():
    q, k, v, bias, mask = make_inputs(2, 2, 49, 16, True, 2, torch.float32)
    args = [t.detach().clone().requires_grad_() for t in (q, k, v, bias)]
    torch.library.opcheck(torch.ops.fastswin.window_attention_triton.default, (*args, mask, None, SCALE))


@versions
def test_torch_compile_traces_the_op_fullgraph_without_recompiles():
    torch._dynamo.reset()
    mask = make_inputs(2, 2, 49, 16, True, 2, torch.float32)[4]

    def block(q, k, v, bias):
        out = window_attention(q, k, v, bias, mask, SCALE, backend="triton")
        return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)

    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    for windows in (2, 4, 6):  # the second batch makes the graph dynamic, the third reuses it
        q, k, v, bias, _ = make_inputs(windows, 2, 49, 16, True, 2, torch.float32, seed=windows)
        leaves = [t.detach().clone().requires_grad_() for t in (q, k, v, bias)]
        eager = [t.detach().clone().requires_grad_() for t in (q, k, v, bias)]
        with torch._dynamo.config.patch(error_on_recompile=windows == 6):
            compiled(*leaves).sum().backward()
        block(*eager).sum().backward()
        for a, b in zip(leaves, eager):
            torch.testing.assert_close(a.grad, b.grad)


@versions
def test_auto_backend_on_cpu_never_runs_the_interpreter(monkeypatch):
    """The interpreter runs only when forced: auto mode takes the C++ CPU kernels (or the
    reference without the extension) silently."""
    monkeypatch.setattr("fastswin.ops.attention.custom_ops.window_attention_forward", None)  # the Triton path
    q, k, v, bias, mask = make_inputs(2, 2, 49, 16, True, 2, torch.float32, device="cpu")
    out = window_attention(q, k, v, bias, mask, SCALE)
    torch.testing.assert_close(out, reference.window_attention(q, k, v, bias, mask, SCALE), rtol=1e-5, atol=1e-5)


@versions
@pytest.mark.parametrize("n, d, dtype, needle", [
    (1089, 16, torch.float32, "N = 1089"),
    (49, 2, torch.float32, "head_dim 2"),
    (49, 264, torch.float32, "head_dim 264"),
])
def test_forced_triton_rejects_what_it_cannot_run(n, d, dtype, needle):
    q = torch.randn(2, 1, n, d, dtype=dtype, device=KERNEL_DEVICE)
    with pytest.raises(BackendError, match=needle):
        window_attention(q, q, q, backend="triton")
    # Auto mode runs them on the reference.
    assert window_attention(q, q, q).shape == q.shape


def _bad_inputs():
    q = torch.randn(4, 2, 49, 16)
    bias, mask = torch.randn(2, 49, 49), torch.randn(2, 49, 49)
    return {
        "rank": ((q[0], q[0], q[0], None, None), "must be \\(B_, heads, N, d\\)"),
        "shapes": ((q, q, q[:, :, :48], None, None), "one shape"),
        "dtypes": ((q, q, q.double(), None, None), "one float dtype"),
        "integer": ((q.long(), q.long(), q.long(), None, None), "one float dtype"),
        "head_dim 0": ((q[..., :0], q[..., :0], q[..., :0], None, None), "head_dim of at least 1"),
        "bias shape": ((q, q, q, bias[:1], None), "bias must be"),
        "mask shape": ((q, q, q, None, mask[:, :48]), "mask must be"),
        "mask windows": ((q, q, q, None, torch.randn(3, 49, 49)), "not a multiple"),
        "devices": ((q, q, q, bias.to("meta"), None), "one device"),
    }


@versions
@pytest.mark.parametrize("backend", [None, "reference", "triton", "cpu"])
@pytest.mark.parametrize("kind", list(_bad_inputs()))
def test_bad_input_raises_value_error_in_every_backend(kind, backend):
    args, message = _bad_inputs()[kind]
    with pytest.raises(ValueError, match=message):
        window_attention(*args, backend=backend)


@versions
def test_without_triton_the_reference_backend_still_runs():
    """Triton is optional: without it fastswin imports, auto mode runs the reference and
    a forced Triton backend says why it cannot run."""
    script = "\n".join([
        "import sys; sys.modules['triton'] = None",  # any `import triton` now fails
        "import torch, fastswin",
        "q = torch.randn(2, 1, 49, 16)",
        "assert fastswin.ops.window_attention(q, q, q).shape == q.shape",
        "try:",
        "    fastswin.ops.window_attention(q, q, q, backend='triton')",
        "except fastswin.BackendError as e:",
        "    assert 'triton is not installed' in str(e), e",
        "else:",
        "    raise AssertionError('no BackendError')",
    ])
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@versions
@pytest.mark.parametrize("cosine", [False, True], ids=["v1", "v2"])
def test_reference_takes_a_wider_bias_than_q(cosine):
    """fp16 q, k, v with fp32 bias and mask (autocast's mix) run on the reference backend
    too, and give fp16 as the kernels do (a fuzzed case found a dtype error there)."""
    q, k, v = (random_tensor((4, 2, 16, 16), torch.float16, "cpu", seed) for seed in (1, 2, 3))
    bias, mask = random_tensor((2, 16, 16), torch.float32, "cpu", 4), random_tensor((2, 16, 16), torch.float32, "cpu", 5)
    scale = torch.full((2, 1, 1), 2.0)
    run = (lambda *t, **kw: cosine_window_attention(*t[:3], scale, *t[3:], **kw)) if cosine else window_attention
    got = run(q, k, v, bias, mask, backend="reference")
    exact = run(q.double(), k.double(), v.double(), bias.double(), mask.double(), backend="reference")
    assert got.dtype == torch.float16
    torch.testing.assert_close(got.double(), exact, rtol=1e-2, atol=1e-2)
