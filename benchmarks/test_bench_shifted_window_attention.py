"""The attention of a Swin block between its qkv and proj linears, forward and
forward+backward, on the (B, H, W, 3C) map: fastswin's fused image-layout kernels (Triton
on CUDA, C++ on CPU) against eager PyTorch (pad, roll, partition, attention, reverse,
roll back, crop), on CUDA fastswin's own composition (partition kernel + fused window
attention + reverse) and the eager path with compiled FlexAttention (where it runs), at
the Swin-T and SwinV2-T (windows 8 and 16) stage shapes. GB/s counts the floor, 4 T C
elements forward (q, k, v in, output out), 12 T C forward+backward.

On a GPU: fp16 and bf16 at the benchmark batch; on CPU: fp32 at batch 2, a smoke test
(FlexAttention skipped).
"""
import pytest
import torch

from bench_setup import BATCH, DEVICE
from fastswin import ops
from fastswin.bench_baselines import flex_shifted_window_attention, flex_unavailable
from fastswin.benchmark import IMAGE_STAGES, image_attention_bytes, image_attention_inputs, stage_shift

DTYPES = (torch.float16, torch.bfloat16) if DEVICE.type == "cuda" else (torch.float32,)
BENCH_BATCH = BATCH if DEVICE.type == "cuda" else 2
STAGES = [s for s in IMAGE_STAGES if s[0] in ("swin_t", "swinv2_t", "swinv2_t_w16")]
# impl -> fastswin backend: the fused kernels forced (Triton on CUDA, C++ on CPU), with gradients too
BACKENDS = ({"eager": "reference", "composed": "cuda", "fastswin": "triton"} if DEVICE.type == "cuda"
            else {"eager": "reference", "fastswin": "cpu"})


@pytest.mark.parametrize("impl", [*BACKENDS, "flex"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("stage", STAGES, ids=lambda s: f"{s[0]}.s{s[1]}")
def test_shifted_window_attention(run_benchmark, stage, mode, dtype, impl):
    if impl == "flex" and flex_unavailable(DEVICE, dtype):
        pytest.skip(flex_unavailable(DEVICE, dtype))
    model, _, sizes, channels, heads, window, v2 = stage
    qkv, bias, qkv_bias, logit_scale = image_attention_inputs(sizes, channels, heads, window, v2, BENCH_BATCH,
                                                              DEVICE, dtype)
    shift = stage_shift(sizes, window)

    def attend(x, b):
        if impl == "flex":
            return flex_shifted_window_attention(x, heads, window, shift, b, logit_scale, qkv_bias)
        return ops.shifted_window_attention(x, heads, window, shift, b, logit_scale=logit_scale, qkv_bias=qkv_bias,
                                            backend=BACKENDS[impl])

    info = dict(op="shifted_window_attention", impl=impl, mode=mode, model=model, dtype=str(dtype))
    if mode == "fwd":
        run_benchmark(lambda: attend(qkv, bias), image_attention_bytes(qkv, mode), **info)
        return
    leaves = (qkv.requires_grad_(), bias.requires_grad_())
    grad = torch.randn(*qkv.shape[:-1], channels, device=DEVICE, dtype=dtype)
    run_benchmark(lambda: torch.autograd.grad(attend(*leaves), leaves, grad), image_attention_bytes(qkv, mode),
                  **info)
