"""Window attention, forward and forward+backward: fastswin's default path against the
eager reference, PyTorch SDPA (bias + mask as one attn_mask, v1 only) and compiled
FlexAttention (bias + mask in a score_mod; where it runs), at the Swin-T stage shapes
(window 7, v1) and the SwinV2-T ones (windows 8 and 16, cosine attention), head_dim 32,
B_ = batch * nW. Inputs, byte and FLOP counts come from fastswin.benchmark and the
baselines from fastswin.bench_baselines, as `fastswin bench` uses them.

On a GPU: fp16 and bf16 at the benchmark batch. On CPU (a smoke test; the default path
is then the reference, and FlexAttention is skipped): fp32 at batch 2.
"""
import pytest
import torch

from bench_setup import BATCH, DEVICE
from fastswin import ops, reference
from fastswin.bench_baselines import (flex_cosine_window_attention, flex_unavailable, flex_window_attention,
                                      sdpa_attention)
from fastswin.benchmark import ATTENTION_STAGES, attention_bytes, attention_flops, attention_inputs

DTYPES = (torch.float16, torch.bfloat16) if DEVICE.type == "cuda" else (torch.float32,)
BENCH_BATCH = BATCH if DEVICE.type == "cuda" else 2
STAGES = [s for s in ATTENTION_STAGES if s[0] in ("swin_t", "swinv2_t", "swinv2_t_w16")]
V1_IMPLS = {"reference": reference.window_attention, "sdpa": sdpa_attention, "flex": flex_window_attention,
            "fastswin": ops.window_attention}
V2_IMPLS = {"reference": reference.cosine_window_attention, "flex": flex_cosine_window_attention,
            "fastswin": ops.cosine_window_attention}


def cases():
    for stage in STAGES:
        impls = V2_IMPLS if stage[0].startswith("swinv2") else V1_IMPLS
        for impl in impls:
            yield pytest.param(stage, impl, id=f"{stage[0]}.s{stage[1]}-{impl}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("stage, impl", list(cases()))
def test_window_attention(run_benchmark, benchmark, stage, impl, mode, dtype):
    if impl == "flex" and flex_unavailable(DEVICE, dtype):
        pytest.skip(flex_unavailable(DEVICE, dtype))
    model, _, size, heads, window = stage
    cosine = model.startswith("swinv2")
    qkv, q, k, v, bias, mask = attention_inputs(size, heads, window, BENCH_BATCH, DEVICE, dtype)
    # The SwinV2 logit scale is an fp32 parameter; the reference computes in q's dtype.
    logit_scale = torch.log(10 * torch.ones(heads, 1, 1, device=DEVICE)).requires_grad_()
    fn = (V2_IMPLS if cosine else V1_IMPLS)[impl]

    def attend(q, k, v, bias):
        return fn(q, k, v, logit_scale, bias, mask) if cosine else fn(q, k, v, bias, mask)

    info = dict(op="cosine_window_attention" if cosine else "window_attention", impl=impl, mode=mode,
                windows=q.shape[0], heads=heads, dtype=str(dtype))
    if mode == "fwd":
        run_benchmark(lambda: attend(q, k, v, bias), attention_bytes(q, mode), **info)
    else:
        leaves = (qkv.requires_grad_(), bias.requires_grad_()) + ((logit_scale,) if cosine else ())
        grad = torch.randn_like(q)
        run_benchmark(lambda: torch.autograd.grad(attend(*qkv.permute(2, 0, 3, 1, 4), bias), leaves, grad),
                      attention_bytes(q, mode), **info)
    if benchmark.stats is not None:
        benchmark.extra_info["tflops"] = attention_flops(q, mode) / benchmark.stats.stats.median / 1e12
