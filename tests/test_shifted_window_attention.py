"""Shifted-window attention on the image layout against the reference composition
and torchvision's own shifted_window_attention."""
import pytest
import torch
import torch.nn.functional as F

from helpers import random_tensor, versions
from fastswin import ops

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


@versions
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


@versions
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


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_always_shift_differs_only_on_one_window_dims(backend):
    """A 5 x 12 map in 7 x 4 windows is one window tall: torchvision's rule drops the shift
    along H, always_shift keeps it (timm's and MaskFormer's blocks: test_nn.py and the
    patch tests check it against them); on a 14 x 12 map both shift alike."""
    for height, same in ((5, False), (14, True)):
        qkv = random_tensor((1, height, 12, 24), torch.float64, "cpu", 45)
        dropped, kept = (ops.shifted_window_attention(qkv, 2, (7, 4), (3, 2), always_shift=always, backend=backend)
                         for always in (False, True))
        assert torch.allclose(dropped, kept) == same


@pytest.mark.parametrize("kwargs, message", [
    (dict(qkv=torch.zeros(1, 7, 7, 10)), "must be \\(B, H, W, 3C\\)"),
    (dict(num_heads=5), "not divisible by num_heads"),
    (dict(bias=torch.zeros(2, 49, 48)), "bias must be"),
    (dict(logit_scale=torch.zeros(2)), "logit_scale must be"),
    (dict(qkv_bias=torch.zeros(24)), "qkv_bias must be"),
    (dict(order="swin"), "order must be"),
    (dict(window_size=0), "window_size must be positive"),
    (dict(shift_size=7), "shift_size must be smaller than window_size"),
    (dict(logit_scale=torch.ones(2, 1, 1, dtype=torch.int64)), "logit_scale must be a float"),
    (dict(window_size=7.0), "window_size must be an int or a pair of ints"),
    (dict(qkv=torch.ones(1, 7, 7, 36, dtype=torch.int64)), "qkv must be a float tensor"),
])
def test_bad_input_raises(kwargs, message):
    args = dict(qkv=torch.randn(1, 7, 7, 36), num_heads=2, window_size=7, shift_size=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ops.shifted_window_attention(**args)


def test_v2_reference_on_fp16_padding_without_qkv_bias_is_finite():
    """Zero padding tokens (no qkv_bias) normalized in fp16 were 0/0 in the reference (a
    fuzzed case): they are normalized in fp32 and give the float64 result."""
    qkv = random_tensor((2, 1, 5, 3 * 48), torch.float16, "cpu", 80)
    logit_scale = torch.tensor([0.5, 1.0, 1.5]).view(3, 1, 1)
    out = ops.shifted_window_attention(qkv, 3, 3, 0, logit_scale=logit_scale, backend="reference")
    exact = ops.shifted_window_attention(qkv.double(), 3, 3, 0, logit_scale=logit_scale.double(), backend="reference")
    torch.testing.assert_close(out.double(), exact, rtol=1e-2, atol=1e-2)


@versions
def test_mask_first_built_under_inference_mode_serves_training(device):
    """The shift mask is cached: one first built under inference mode must still be
    usable by autograd later."""
    qkv = random_tensor((1, 10, 11, 24), torch.float32, device, 50)
    with torch.inference_mode():
        ops.shifted_window_attention(qkv, 2, 5, 2)
    leaf = qkv.clone().requires_grad_()
    ops.shifted_window_attention(leaf, 2, 5, 2).sum().backward()
    assert torch.isfinite(leaf.grad).all()


# ----------------------------------------------------------------------------- the fused image-layout kernels
# The Triton backend (compiled on a GPU, forced in the interpreter on CPU tensors without
# one) against the float64 reference composition; a result passes when its error is no
# worse than twice the reference's own at the same precision (test_window_attention's rule).

from helpers import (INTERPRETED, KERNEL_DEVICE, KERNEL_DTYPE_IDS, KERNEL_DTYPES, compiled_only,  # noqa: E402
                     interpreter_only, long)
from test_window_attention import assert_close_to_reference  # noqa: E402

from fastswin import BackendError  # noqa: E402

# (B, H, W, C, heads, window, shift); head_dim 8 to 32.
IMAGE_CASES = [
    (2, 14, 14, 32, 2, (7, 7), (3, 3)),    # divisible
    (1, 13, 17, 32, 2, (7, 7), (3, 3)),    # padded both ways
    (2, 9, 10, 32, 2, (4, 5), (2, 1)),     # non-square window, non-uniform shift, padded
    (1, 5, 12, 32, 1, (7, 4), (3, 2)),     # window taller than the map: no shift along H
    (1, 8, 8, 32, 2, (4, 4), (0, 0)),      # no shift
    (1, 6, 7, 32, 1, (7, 7), (3, 3)),      # one window covers the map: shift off
    (1, 13, 24, 32, 1, (12, 12), (6, 6)),  # N = 144: the multi-tile kernels
    (1, 20, 23, 32, 2, (7, 7), (3, 3)),    # padded, 3 x 4 windows: padding in the last two of each
    (1, 10, 9, 24, 3, (10, 10), (5, 5)),  # Donut's 10x10, head_dim 8, padded
]
ORDERS = [("torchvision", True), ("timm", True), ("timm", False)]  # (order, with qkv_bias)


def image_inputs(case, dtype, v2, with_qkv_bias, seed=60):
    B, H, W, C, heads, window, _ = case
    N = window[0] * window[1]
    qkv = random_tensor((B, H, W, 3 * C), dtype, KERNEL_DEVICE, seed)
    bias = random_tensor((heads, N, N), dtype, KERNEL_DEVICE, seed + 1)
    # One head above the clamp (log 100) on the v2 runs.
    scales = [5.0 if h % 2 == 0 else 1.3 for h in range(heads)]
    logit_scale = torch.tensor(scales, dtype=torch.float32, device=KERNEL_DEVICE).view(heads, 1, 1) if v2 else None
    qkv_bias = random_tensor((3 * C,), dtype, KERNEL_DEVICE, seed + 2) if with_qkv_bias else None
    return [qkv, bias, logit_scale, qkv_bias]


def run_image_attention(inputs, case, order, grad, backend, always_shift=False):
    """Output and the gradients of every input given (None where an input is None)."""
    _, _, _, _, heads, window, shift = case
    leaves = [None if t is None else t.detach().clone().requires_grad_() for t in inputs]
    out = ops.shifted_window_attention(leaves[0], heads, window, shift, leaves[1], logit_scale=leaves[2],
                                       qkv_bias=leaves[3], order=order, always_shift=always_shift, backend=backend)
    given = [t for t in leaves if t is not None]
    # The fused op gives no gradient to a qkv_bias that no padding token reads: zeros.
    grads = iter(torch.autograd.grad(out, given, grad.to(out.dtype), allow_unused=True, materialize_grads=True))
    return out.detach(), [None if t is None else next(grads) for t in leaves]


def image_case_ids(case):
    B, H, W, C, heads, window, shift = case
    return f"{B}x{H}x{W}x{C}-h{heads}-w{window[0]}x{window[1]}-s{shift[0]}x{shift[1]}"


def image_run(case, order, with_qkv_bias, v2):
    """A named run; the second stack runs those of the first five (cheap) maps."""
    return pytest.param(case, order, with_qkv_bias, v2, marks=versions if case in IMAGE_CASES[:5] else (),
                        id=f"{image_case_ids(case)}-{order}-qkvbias{int(with_qkv_bias)}-v{1 + v2}")


# Every order, qkv_bias and version on the map padded both ways; on each other map a v1 and
# a v2 run, the orders in turn.
IMAGE_RUNS = ([image_run(IMAGE_CASES[1], *order, v2) for order in ORDERS for v2 in (False, True)]
              + [image_run(case, *ORDERS[(i + v2) % 3], v2) for i, case in enumerate(IMAGE_CASES) if i != 1
                 for v2 in (False, True)])


@pytest.mark.parametrize("case, order, with_qkv_bias, v2", IMAGE_RUNS)
def test_triton_image_layout_matches_reference(case, order, with_qkv_bias, v2, poisoned_outputs):
    check_image_layout(case, order, with_qkv_bias, v2, torch.float32)


# Shifts kept along dims of one window (always_shift: timm, Hugging Face, MaskFormer): a map
# shorter than the shift, MaskFormer's 8 x 8 stage in one 12 x 12 window, a window taller than the map.
KEPT_SHIFT_CASES = [(2, 2, 9, 32, 2, (7, 7), (3, 3)), (1, 8, 8, 32, 1, (12, 12), (6, 6)),
                    (1, 5, 12, 32, 1, (7, 4), (3, 2))]


# A v1 and a v2 run on each, the orders in turn; the second stack runs the first map's.
KEPT_SHIFT_RUNS = [pytest.param(case, ("torchvision", "timm")[(i + v2) % 2], v2, marks=versions if i == 0 else (),
                                id=f"{image_case_ids(case)}-{('torchvision', 'timm')[(i + v2) % 2]}-v{1 + v2}")
                   for i, case in enumerate(KEPT_SHIFT_CASES) for v2 in (False, True)]


@pytest.mark.parametrize("case, order, v2", KEPT_SHIFT_RUNS)
def test_triton_kept_shift_matches_reference(case, order, v2, poisoned_outputs):
    check_image_layout(case, order, True, v2, torch.float32, always_shift=True)


# v1 and v2 in turn over the first four maps; the second stack runs the first two.
LOW_PRECISION_RUNS = [pytest.param(case, i % 2 == 1, marks=versions if i < 2 else (),
                                   id=f"{image_case_ids(case)}-v{1 + i % 2}") for i, case in enumerate(IMAGE_CASES[:4])]


@pytest.mark.parametrize("dtype", KERNEL_DTYPES[1:], ids=KERNEL_DTYPE_IDS[1:])
@pytest.mark.parametrize("case, v2", LOW_PRECISION_RUNS)
def test_triton_image_layout_low_precision(case, v2, dtype, poisoned_outputs):
    check_image_layout(case, "torchvision", True, v2, dtype)


# SwinV2-384's 24x24 windows (N = 576: the query pass takes its keys in blocks), one padded
# window with its four shift regions, head_dim 24 (interpreted: about 50 s a run); both
# orders, versions and interpreted dtypes over two runs.
LARGE_WINDOW_CASE = (1, 22, 21, 24, 1, (24, 24), (12, 12))


@long
@pytest.mark.parametrize("order, v2, dtype", [("torchvision", False, torch.float32), ("timm", True, torch.float16)],
                         ids=str)
def test_triton_image_layout_large_window(order, v2, dtype, poisoned_outputs):
    check_image_layout(LARGE_WINDOW_CASE, order, True, v2, dtype)


# GPU-sized maps: Swin-T's first stage at batch 32, a padded detection-sized map, SwinV2's
# 16x16 windows (N = 256), SwinV2-B-384's first stage (24x24 windows, N = 576), head_dim 64;
# both orders, qkv_bias, v1 and v2.
GPU_IMAGE_CASES = [
    (32, 56, 56, 96, 3, (7, 7), (3, 3)),
    (2, 200, 334, 96, 3, (7, 7), (3, 3)),
    (8, 64, 64, 96, 3, (16, 16), (8, 8)),
    (4, 96, 96, 128, 4, (24, 24), (12, 12)),
    (8, 28, 28, 256, 4, (7, 7), (3, 3)),
]


@compiled_only
@pytest.mark.parametrize("dtype", KERNEL_DTYPES, ids=KERNEL_DTYPE_IDS)
@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
@pytest.mark.parametrize("order", ["torchvision", "timm"])
@pytest.mark.parametrize("case", GPU_IMAGE_CASES, ids=image_case_ids)
def test_gpu_sized_maps_match_reference(case, order, v2, dtype, poisoned_outputs):
    check_image_layout(case, order, True, v2, dtype)


def check_image_layout(case, order, with_qkv_bias, v2, dtype, always_shift=False):
    inputs = image_inputs(case, dtype, v2, with_qkv_bias)
    B, H, W, C = case[:4]
    grad = random_tensor((B, H, W, C), torch.float64, KERNEL_DEVICE, 70)
    got_out, got_grads = run_image_attention(inputs, case, order, grad, "triton", always_shift)
    same_out, same_grads = run_image_attention(inputs, case, order, grad, "reference", always_shift)
    exact_out, exact_grads = run_image_attention([None if t is None else t.double() for t in inputs], case, order,
                                                 grad, "reference", always_shift)
    assert_close_to_reference("out", got_out, same_out, exact_out, dtype)
    names = ["dqkv", "dbias", "dlogit_scale", "dqkv_bias"]
    for name, got, same, exact in zip(names, got_grads, same_grads, exact_grads):
        if exact is None:
            continue
        if name == "dlogit_scale":  # a sum of many cancelling terms: compare to its scale
            assert got[0].item() == 0.0, "a head above the clamp gets no gradient"
            torch.testing.assert_close(got.double(), exact, rtol=1e-3, atol=1e-3 * exact.abs().max().item())
        elif name == "dqkv_bias" and exact.abs().max() == 0:  # no padding: no gradient
            assert torch.equal(got, torch.zeros_like(got))
        else:
            assert_close_to_reference(name, got, same, exact, dtype)


def test_fp32_bias_on_a_low_precision_map_keeps_its_precision(poisoned_outputs):
    """Under autocast the qkv map is fp16 and the bias parameters fp32: the image-layout
    kernels read them in fp32, as the window-layout kernels do, so their error is the
    window layout's, and the bias gradients come back in fp32."""
    from fastswin import reference

    case = IMAGE_CASES[1]
    _, _, _, _, heads, window, shift = case
    qkv, bias, _, qkv_bias = image_inputs(case, torch.float32, v2=False, with_qkv_bias=True)
    inputs = [qkv.half(), bias, None, qkv_bias]
    grad = random_tensor(case[:3] + (case[3],), torch.float64, KERNEL_DEVICE, 72)

    def window_layout(qkv, bias, qkv_bias):
        return reference.compose_shifted_window_attention(
            qkv, heads, window, shift, bias, None, qkv_bias, "torchvision", reference.window_partition,
            reference.merge_windows, lambda q, k, v, b, m: ops.window_attention(q, k, v, b, m, backend="triton"),
            reference.cosine_window_attention)

    leaves = [t.detach().clone().requires_grad_() for t in (inputs[0], bias, qkv_bias)]
    want_out = window_layout(*leaves)
    want = [want_out] + list(torch.autograd.grad(want_out, leaves, grad.to(want_out.dtype)))
    got_out, (dqkv, dbias, _, dfill) = run_image_attention(inputs, case, "torchvision", grad, "triton")
    _, exact = run_image_attention([None if t is None else t.double() for t in inputs], case, "torchvision", grad,
                                   "reference")
    exact_out = ops.shifted_window_attention(inputs[0].double(), heads, window, shift, bias.double(),
                                             qkv_bias=qkv_bias.double(), backend="reference")
    assert dbias.dtype == torch.float32 and dfill.dtype == torch.float32
    for name, got, windowed, ref in zip(["out", "dqkv", "dbias", "dqkv_bias"], [got_out, dqkv, dbias, dfill], want,
                                        [exact_out, exact[0], exact[1], exact[3]]):
        error, window_error = ((x.double() - ref).abs().max().item() for x in (got, windowed))
        assert error <= 1.5 * window_error + 1e-6 * ref.abs().max().item(), (name, error, window_error)


@versions
def test_triton_image_layout_reads_strided_parameters(poisoned_outputs):
    """bias, logit_scale and qkv_bias given as strided views are read as what they hold,
    forward and backward (a fuzzed case found qkv_bias read as if contiguous)."""
    case = IMAGE_CASES[-1]  # padded: the qkv_bias is read
    _, _, _, _, heads, window, shift = case
    qkv, *params = image_inputs(case, torch.float32, v2=True, with_qkv_bias=True)
    grad = random_tensor(case[:4], torch.float32, KERNEL_DEVICE, 73)
    results = {}
    for backend in ("triton", "reference"):
        # every other element of a (..., 2) base: last stride 2, gradients through the base
        bases = [torch.stack([t, -t], dim=-1).requires_grad_() for t in params]
        bias, logit_scale, qkv_bias = (base[..., 0] for base in bases)
        assert not any(t.is_contiguous() for t in (bias, logit_scale, qkv_bias))
        out = ops.shifted_window_attention(qkv, heads, window, shift, bias, logit_scale=logit_scale,
                                           qkv_bias=qkv_bias, backend=backend)
        results[backend] = [out, *torch.autograd.grad(out, bases, grad)]
    for name, got, want in zip(["out", "dbias", "dlogit_scale", "dqkv_bias"], *results.values()):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, msg=lambda text, name=name: f"{name}: {text}")


@long
def test_triton_image_layout_deterministic_equals_atomic():
    case = IMAGE_CASES[1]
    inputs = image_inputs(case, torch.float32, v2=True, with_qkv_bias=True)
    grad = random_tensor(case[:3] + (case[3],), torch.float64, KERNEL_DEVICE, 71)
    _, atomic = run_image_attention(inputs, case, "torchvision", grad, "triton")
    torch.use_deterministic_algorithms(True)
    try:
        _, deterministic = run_image_attention(inputs, case, "torchvision", grad, "triton")
    finally:
        torch.use_deterministic_algorithms(False)
    for a, d in zip(atomic, deterministic):
        torch.testing.assert_close(a, d, rtol=1e-6, atol=1e-6)


@versions
def test_padding_store_alignment_is_what_the_rows_allow():
    """The backward's padding store tells the compiler the rows' alignment: 16 bytes for
    Swin's head_dim 32, less where a head_dim of 20 offsets the rows by 40 bytes."""
    from fastswin.ops.attention.launch import row_alignment

    for head_dim, want in ((32, 16), (20, 8)):
        qkv = torch.empty(2, 7 * 7, 3 * head_dim, dtype=torch.float16)  # one head
        k = qkv[..., head_dim:2 * head_dim].unsqueeze(1)                 # (B, heads, H * W, d)
        assert row_alignment(k) == want


@versions
@interpreter_only
def test_triton_image_layout_gradcheck():
    case = (1, 5, 6, 32, 2, (4, 4), (2, 1))
    inputs = [t.double().requires_grad_() for t in image_inputs(case, torch.float64, v2=False, with_qkv_bias=True)
              if t is not None]
    qkv, bias, qkv_bias = inputs

    def f(qkv, bias, qkv_bias):
        # scale head_dim ** -0.5 = 0.25: exact in the kernel's fp32 scale argument.
        return ops.shifted_window_attention(qkv, 2, (4, 4), (2, 1), bias, qkv_bias=qkv_bias, backend="triton")

    assert torch.autograd.gradcheck(f, (qkv, bias, qkv_bias), fast_mode=True)


@versions
def test_triton_image_layout_opcheck():
    case = IMAGE_CASES[2]
    qkv, bias, _, qkv_bias = image_inputs(case, torch.float32, v2=False, with_qkv_bias=True)
    args = (qkv.requires_grad_(), bias.requires_grad_(), None, qkv_bias.requires_grad_(), 2, [4, 5], [2, 1], True)
    torch.library.opcheck(torch.ops.fastswin.shifted_window_attention_triton.default, args)


@versions
def test_triton_image_layout_says_why_it_cannot_run():
    qkv = torch.randn(1, 7, 7, 3 * 16, device=KERNEL_DEVICE)
    with pytest.raises(BackendError, match="head_dim 2"):
        ops.shifted_window_attention(qkv, 8, 7, 3, backend="triton")
    if INTERPRETED:
        with pytest.raises(BackendError, match="bf16"):
            ops.shifted_window_attention(qkv.bfloat16(), 1, 7, 3, backend="triton")
