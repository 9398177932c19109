"""The attention of a Swin block between its qkv and proj linears, forward and
forward+backward, on the (B, H, W, 3C) map: fastswin's default path (on CUDA the fused
image-layout kernels) against eager PyTorch (pad, roll, partition, attention, reverse,
roll back, crop) and fastswin's own composition (partition kernel + fused window
attention + reverse), at the Swin-T and SwinV2-T stage shapes. GB/s counts the floor,
4 T C elements forward (q, k, v in, output out), 12 T C forward+backward.

On a GPU: bf16 at the benchmark batch; on CPU: fp32 at batch 2, a smoke test.
"""
import pytest
import torch

from bench_setup import BATCH, DEVICE
from fastswin import ops
from fastswin.benchmark import IMAGE_STAGES, image_attention_bytes, image_attention_inputs

DTYPE = torch.bfloat16 if DEVICE.type == "cuda" else torch.float32
BENCH_BATCH = BATCH if DEVICE.type == "cuda" else 2
STAGES = [s for s in IMAGE_STAGES if s[0] in ("swin_t", "swinv2_t")]
IMPLS = {"eager": "reference", "composed": DEVICE.type, "fastswin": None}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("stage", STAGES, ids=lambda s: f"{s[0]}.s{s[1]}")
def test_shifted_window_attention(run_benchmark, stage, mode, impl):
    model, _, size, channels, heads, window, v2 = stage
    qkv, bias, qkv_bias, logit_scale = image_attention_inputs(size, channels, heads, window, v2, BENCH_BATCH,
                                                              DEVICE, DTYPE)
    shift = window // 2 if size > window else 0

    def attend(x, b):
        return ops.shifted_window_attention(x, heads, window, shift, b, logit_scale=logit_scale, qkv_bias=qkv_bias,
                                            backend=IMPLS[impl])

    info = dict(op="shifted_window_attention", impl=impl, mode=mode, model=model, dtype=str(DTYPE))
    if mode == "fwd":
        run_benchmark(lambda: attend(qkv, bias), image_attention_bytes(qkv, mode), **info)
        return
    leaves = (qkv.requires_grad_(), bias.requires_grad_())
    grad = torch.randn(*qkv.shape[:3], channels, device=DEVICE, dtype=DTYPE)
    run_benchmark(lambda: torch.autograd.grad(attend(*leaves), leaves, grad), image_attention_bytes(qkv, mode),
                  **info)
