"""Whole-model throughput: timm eager vs timm + fastswin.patch, inference and a
training step (forward + backward + AdamW step), bf16 autocast on CUDA.

CUDA: Swin-T, Swin-S, Swin-B (224) and SwinV2-T (window 8, 256) at the
benchmark batch. CPU: a tiny Swin-T configuration at batch 2, a smoke test.
Each result records images/s in extra_info.
"""
import contextlib

import pytest
import torch
import torch.nn.functional as F

from bench_setup import BATCH, DEVICE
import fastswin

timm = pytest.importorskip("timm")

ON_CUDA = DEVICE.type == "cuda"
if ON_CUDA:
    MODELS = {name: {} for name in ("swin_tiny_patch4_window7_224", "swin_small_patch4_window7_224",
                                    "swin_base_patch4_window7_224", "swinv2_tiny_window8_256")}
    MODEL_BATCH = BATCH
else:
    MODELS = {"swin_tiny_patch4_window7_224": dict(embed_dim=32, depths=(2, 2), num_heads=(2, 4), img_size=64,
                                                   window_size=4)}
    MODEL_BATCH = 2


def autocast():
    return torch.autocast("cuda", dtype=torch.bfloat16) if ON_CUDA else contextlib.nullcontext()


def inference_step(model, x, _):
    with torch.inference_mode(), autocast():
        model(x)


def make_training_step(model):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(_, x, y):
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    return step


@pytest.mark.parametrize("impl", ["timm", "timm+fastswin"])
@pytest.mark.parametrize("mode", ["inference", "train"])
@pytest.mark.parametrize("name", list(MODELS))
def test_model_throughput(benchmark, name, mode, impl):
    model = timm.create_model(name, **MODELS[name]).to(DEVICE)
    if impl == "timm+fastswin":
        report = fastswin.patch(model)
        assert report.complete, str(report)
    model.train(mode == "train")
    size = model.patch_embed.img_size
    x = torch.randn(MODEL_BATCH, 3, *size, device=DEVICE)
    y = torch.randint(0, model.num_classes, (MODEL_BATCH,), device=DEVICE)
    step = inference_step if mode == "inference" else make_training_step(model)

    def timed():
        step(model, x, y)
        if ON_CUDA:
            torch.cuda.synchronize()

    for _ in range(3 if ON_CUDA else 1):  # warm-up: allocator, cuDNN / cuBLAS heuristics
        timed()
    benchmark.extra_info.update(model=name, mode=mode, impl=impl, device=str(DEVICE), batch=MODEL_BATCH,
                                bf16_autocast=ON_CUDA)
    benchmark(timed)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["images_per_s"] = MODEL_BATCH / benchmark.stats.stats.median
