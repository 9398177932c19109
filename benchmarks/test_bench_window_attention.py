"""Window attention (Swin-V1), forward and forward+backward, reference (eager PyTorch)
vs the default fastswin path, at the Swin-T stage attention shapes: window 7
(N = 49), heads 3 / 6 / 12 / 24, head_dim 32, B_ = batch * nW, relative-position
bias, shift mask on the shifted stages.

Swin-V2 scaled cosine attention likewise at the SwinV2-T window-8 shapes (N = 64,
heads 3 / 6 / 12 / 24, head_dim 32, continuous position bias as an additive
(heads, N, N) bias, learnable logit_scale), reference vs fastswin.

On a GPU: bf16 at the benchmark batch. On CPU (a smoke test; the default path is
then the reference): fp32 at batch 2.
"""
import pytest
import torch

from bench_setup import BATCH, DEVICE
from fastswin import ops, reference
from fastswin.benchmark import SHIFT, WINDOW

HEAD_DIM = 32
# (stage, H = W of the feature map, heads) of Swin-T at 224 px.
SWIN_T_ATTENTION = [(1, 56, 3), (2, 28, 6), (3, 14, 12), (4, 7, 24)]
DTYPE = torch.bfloat16 if DEVICE.type == "cuda" else torch.float32
BENCH_BATCH = BATCH if DEVICE.type == "cuda" else 2

IMPLS = {
    "reference": lambda q, k, v, bias, mask: reference.window_attention(q, k, v, bias, mask),
    "fastswin": lambda q, k, v, bias, mask: ops.window_attention(q, k, v, bias, mask),
}


def attention_inputs(size: int, heads: int, window: int = WINDOW, shift: int = SHIFT):
    """q, k, v as views of a packed qkv (B_, N, 3, heads, d), bias, and the shift mask
    (None where the map is one window and no shift applies)."""
    n = window * window
    windows = BENCH_BATCH * (size // window) ** 2
    qkv = torch.randn(windows, n, 3, heads, HEAD_DIM, device=DEVICE, dtype=DTYPE)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    bias = torch.randn(heads, n, n, device=DEVICE, dtype=DTYPE)
    mask = None
    if size > window:
        mask = reference.shift_attention_mask(size, size, (window, window), (shift, shift), DEVICE, DTYPE)
    return qkv, q, k, v, bias, mask


def bytes_moved(q: torch.Tensor, mode: str) -> int:
    """The floor's bytes: forward reads q, k, v and writes out (+ fp32 lse); backward reads
    q, k, v, out, dout, lse and writes dq, dk, dv. bias and mask are small and cached."""
    tile, lse = q.numel() * q.element_size(), q.numel() // q.shape[-1] * 4
    forward = 4 * tile + lse
    return forward if mode == "fwd" else forward + 8 * tile + lse


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("stage", SWIN_T_ATTENTION, ids=lambda s: f"swin_t.s{s[0]}")
def test_window_attention(run_benchmark, stage, mode, impl):
    _, size, heads = stage
    qkv, q, k, v, bias, mask = attention_inputs(size, heads)
    fn = IMPLS[impl]
    info = dict(op="window_attention", impl=impl, mode=mode, windows=q.shape[0], heads=heads, dtype=str(DTYPE))
    if mode == "fwd":
        run_benchmark(lambda: fn(q, k, v, bias, mask), bytes_moved(q, mode), **info)
        return
    qkv.requires_grad_()
    bias.requires_grad_()
    grad = torch.randn_like(q)

    def forward_backward():
        out = fn(*qkv.permute(2, 0, 3, 1, 4), bias, mask)
        torch.autograd.grad(out, (qkv, bias), grad)

    run_benchmark(forward_backward, bytes_moved(q, mode), **info)


# (stage, H = W of the feature map, heads) of SwinV2-T at 256 px, window 8 (shift 4).
SWINV2_T_ATTENTION = [(1, 64, 3), (2, 32, 6), (3, 16, 12), (4, 8, 24)]
V2_WINDOW = 8
COSINE_IMPLS = {
    "reference": lambda q, k, v, logit_scale, bias, mask: reference.cosine_window_attention(
        q, k, v, logit_scale.to(q.dtype), bias, mask),
    "fastswin": lambda q, k, v, logit_scale, bias, mask: ops.cosine_window_attention(q, k, v, logit_scale, bias, mask),
}


def attention_flops(q: torch.Tensor, mode: str) -> int:
    """Matmul FLOPs as flash-window-attention-v2 counts them: 2 matmuls of 2 N^2 d per
    window and head forward, 2.5x that for the backward (5 matmuls)."""
    windows, heads, n, d = q.shape
    forward = 4 * windows * heads * n * n * d
    return forward if mode == "fwd" else forward * 7 // 2


@pytest.mark.parametrize("impl", COSINE_IMPLS)
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("stage", SWINV2_T_ATTENTION, ids=lambda s: f"swinv2_t.s{s[0]}")
def test_cosine_window_attention(run_benchmark, benchmark, stage, mode, impl):
    _, size, heads = stage
    qkv, q, k, v, bias, mask = attention_inputs(size, heads, V2_WINDOW, V2_WINDOW // 2)
    logit_scale = torch.log(10 * torch.ones(heads, 1, 1, device=DEVICE))  # fp32 parameter, as in SwinV2
    fn = COSINE_IMPLS[impl]
    info = dict(op="cosine_window_attention", impl=impl, mode=mode, windows=q.shape[0], heads=heads,
                dtype=str(DTYPE), flops=attention_flops(q, mode))
    if mode == "fwd":
        run_benchmark(lambda: fn(q, k, v, logit_scale, bias, mask), bytes_moved(q, mode), **info)
    else:
        qkv.requires_grad_()
        bias.requires_grad_()
        logit_scale.requires_grad_()
        grad = torch.randn_like(q)

        def forward_backward():
            out = fn(*qkv.permute(2, 0, 3, 1, 4), logit_scale, bias, mask)
            torch.autograd.grad(out, (qkv, logit_scale, bias), grad)

        run_benchmark(forward_backward, bytes_moved(q, mode), **info)
    if benchmark.stats is not None:
        benchmark.extra_info["tflops"] = info["flops"] / benchmark.stats.stats.median / 1e12
