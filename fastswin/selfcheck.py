"""`fastswin check`: correctness self-test of every backend that can run on the
present device, forward and backward, against the reference.

Each case builds random inputs, runs the op on one backend and the reference
on float64 copies of the same inputs, and compares outputs and input
gradients: bit-exact for the data-movement ops, by relative error for the
attention ops (a bound per dtype, a few times that dtype's rounding).
"""
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch

from fastswin import ops, reference
from fastswin.backends import BACKENDS, BackendError

# ||got - want|| / ||want|| allowed per dtype: fp32 allows TF32 matmuls on GPUs; fp64 (the
# Triton kernels run it only in the interpreter) allows their fp32 softmax scale.
REL_TOL = {torch.float64: 1e-6, torch.float32: 2e-3, torch.float16: 1e-2, torch.bfloat16: 4e-2}


@dataclass
class CheckResult:
    op: str
    backend: str
    dtype: str
    status: str   # "ok", "FAIL" or "skipped"
    detail: str = ""


@dataclass
class Case:
    op: str
    shapes: Sequence[tuple]            # of the differentiable inputs
    run: Callable[..., torch.Tensor]   # run(*inputs, backend=...)
    exact: bool                        # bit-exact against the reference in the same dtype


def _cases() -> List[Case]:
    window, shift, H, W = (7, 7), (3, 3), 13, 17
    windows = (2 * 2 * 3, 7, 7, 5)
    heads, N = 2, 49

    def mask(like: torch.Tensor) -> torch.Tensor:  # (12, N, N): the 2x3 windows of a 13x17 map, shifted
        return reference.shift_attention_mask(H, W, window, shift, like.device, like.dtype)

    return [
        Case("window_partition", [(2, H, W, 5)], lambda x, backend: ops.window_partition(
            x, window, shift, backend=backend), exact=True),
        Case("window_reverse", [windows], lambda w, backend: ops.window_reverse(
            w, window, H, W, shift, backend=backend), exact=True),
        Case("window_partition_3d", [(2, 5, H, W, 5)], lambda x, backend: ops.window_partition_3d(
            x, (2, *window), (1, *shift), backend=backend), exact=True),
        Case("window_reverse_3d", [(2 * 3 * 2 * 3, 2, 7, 7, 5)], lambda w, backend: ops.window_reverse_3d(
            w, (2, *window), (5, H, W), (1, *shift), backend=backend), exact=True),
        Case("window_attention", [(24, heads, N, 32)] * 3 + [(heads, N, N)],
             lambda q, k, v, bias, backend: ops.window_attention(q, k, v, bias, mask(q), backend=backend),
             exact=False),
        Case("cosine_window_attention", [(24, heads, N, 32)] * 3 + [(heads, 1, 1), (heads, N, N)],
             lambda q, k, v, logit_scale, bias, backend: ops.cosine_window_attention(
                 q, k, v, logit_scale, bias, mask(q), backend=backend),
             exact=False),
        Case("shifted_window_attention", [(2, H, W, 3 * 16), (heads, N, N)],
             lambda qkv, bias, backend: ops.shifted_window_attention(qkv, heads, window, shift, bias, backend=backend),
             exact=False),
        # A small video map (the interpreter runs it on CPU): padded and shifted in every dim.
        Case("shifted_window_attention 3D", [(1, 3, 5, 9, 3 * 16), (heads, 24, 24)],
             lambda qkv, bias, backend: ops.shifted_window_attention(qkv, heads, (2, 3, 4), (1, 1, 2), bias,
                                                                     backend=backend),
             exact=False),
    ]


def _gpu_cases() -> List[Case]:
    """GPU-sized cases: enough windows that each backward program sums dbias over eight
    or more, Swin's 7x7 and SwinV2's 16x16 windows, head_dim 64, a padded map in timm's
    order with qkv_bias, v1 and v2."""
    def image(B, H, W, C, heads, window, shift, order, v2):
        N = window * window
        shapes = [(B, H, W, 3 * C), (heads, N, N), (3 * C,)] + [(heads, 1, 1)] * v2

        def run(qkv, bias, qkv_bias, *logit_scale, backend):
            return ops.shifted_window_attention(qkv, heads, window, shift, bias, logit_scale=(logit_scale or [None])[0],
                                                qkv_bias=qkv_bias, order=order, backend=backend)
        return Case(f"shifted_window_attention {B}x{H}x{W}x{C}/{heads} w{window} {order}{' v2' * v2}", shapes, run,
                    exact=False)

    def mask(like: torch.Tensor) -> torch.Tensor:  # the 64 windows of a shifted 56x56 map
        return reference.shift_attention_mask(56, 56, (7, 7), (3, 3), like.device, like.dtype)

    return [
        Case("window_attention 1024x8x49x64", [(1024, 8, 49, 64)] * 3 + [(8, 49, 49)],
             lambda q, k, v, bias, backend: ops.window_attention(q, k, v, bias, mask(q), backend=backend),
             exact=False),
        image(32, 56, 56, 96, 3, 7, 3, "torchvision", False),
        image(4, 100, 167, 96, 3, 7, 3, "timm", False),
        image(4, 100, 167, 96, 3, 7, 3, "timm", True),
        image(16, 64, 64, 96, 3, 16, 8, "torchvision", True),
        # torchvision's video Swin-T, stage 1: 8 x 7 x 7 windows (N = 392), 9 frames (padded, shifted in time)
        Case("shifted_window_attention 2x9x56x56x96/3 w8x7x7", [(2, 9, 56, 56, 3 * 96), (3, 392, 392)],
             lambda qkv, bias, backend: ops.shifted_window_attention(qkv, 3, (8, 7, 7), (4, 3, 3), bias,
                                                                     backend=backend),
             exact=False),
    ]


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want).norm() / want.norm().clamp_min(1e-30)).item()


def _forward_backward(case: Case, inputs, grad, backend: str):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = case.run(*leaves, backend=backend)
    out.backward(grad.to(out.dtype))
    return [out] + [t.grad for t in leaves]


def _compare(case: Case, got, want) -> Optional[str]:
    names = ["output"] + [f"grad[{i}]" for i in range(len(got) - 1)]
    for name, g, w in zip(names, got, want):
        if case.exact:
            if not torch.equal(g, w.to(g.dtype)):
                return f"{name} differs from the reference"
        else:
            error = _relative_error(g, w)
            if not error <= REL_TOL[g.dtype]:  # also catches NaN
                return f"{name}: relative error {error:.2e} > {REL_TOL[g.dtype]:.0e}"
    return None


def check_case(case: Case, backend: str, dtype: torch.dtype, device: torch.device, seed: int = 0) -> CheckResult:
    g = torch.Generator().manual_seed(seed)
    inputs = [torch.randn(s, generator=g, dtype=torch.float64).to(device) for s in case.shapes]
    low = [t.to(dtype) for t in inputs]
    # Reference on the same (rounded) values, in float64; exact cases in the same dtype.
    ref_inputs = low if case.exact else [t.double() for t in low]
    out_shape = case.run(*ref_inputs, backend="reference").shape
    grad = torch.randn(out_shape, generator=g, dtype=torch.float64).to(device)
    name = str(dtype).replace("torch.", "")
    try:
        got = _forward_backward(case, low, grad, backend)
    except BackendError as error:
        return CheckResult(case.op, backend, name, "skipped", str(error).split("cannot run: ")[-1])
    want = _forward_backward(case, ref_inputs, grad, "reference")
    failure = _compare(case, got, want)
    return CheckResult(case.op, backend, name, "FAIL" if failure else "ok", failure or "")


def device_dtypes(device: torch.device) -> List[torch.dtype]:
    dtypes = [torch.float32, torch.float16, torch.float64]
    if device.type == "cpu" or torch.cuda.is_bf16_supported():
        dtypes.insert(2, torch.bfloat16)
    return dtypes


def run_checks(device: torch.device) -> List[CheckResult]:
    """Every op x backend (but auto) x dtype the device supports; on a GPU also GPU-sized cases."""
    cases = _cases() + (_gpu_cases() if device.type == "cuda" else [])
    return [check_case(case, backend, dtype, device)
            for case in cases for backend in BACKENDS if backend != "auto"
            for dtype in device_dtypes(device)]
