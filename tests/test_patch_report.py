"""The patch report tells, per module, what will run it on its parameters' device and
dtype (by the op's own checks), and patch(strict=True) refuses, changing nothing, when
a Swin module would not run the fused kernels; a run-time fallback the report did not
predict logs one warning per module."""
import logging

import pytest
import torch

from helpers import KERNEL_DEVICE
import fastswin
from fastswin.integrations import _core
from fastswin.integrations._core import PREFIX

timm = pytest.importorskip("timm")


def tiny_timm(embed_dim: int):
    """Window 4 (N = 16), heads (2, 4): head_dim embed_dim / 2."""
    torch.manual_seed(0)
    return timm.create_model("swin_tiny_patch4_window7_224", embed_dim=embed_dim, depths=(2, 2), num_heads=(2, 4),
                             img_size=64, window_size=4, num_classes=10)


def patched(model):
    return [m for m in model.modules() if any(k.startswith(PREFIX) for k in vars(m))]


def test_cpu_auto_mode_reports_the_fused_kernels_and_the_library_low_precision_training():
    from fastswin._extension import HAS_C

    model = tiny_timm(32)
    report = fastswin.patch(model, backend="auto")
    runs = ("the fused C++ CPU kernels (cpu, float32); with gradients in bf16 / fp16 the library's own forward "
            "(CPU, auto mode)"
            if HAS_C else "the library's own forward (CPU, auto mode; fastswin's C++ extension is not built)")
    assert {e.runs for e in report.replaced} == {runs}
    assert all(e.fused == HAS_C for e in report.replaced)
    assert f"4 module(s) of SwinTransformer patched ({4 * HAS_C} on the fused kernels here)" in str(report)


def test_fused_kernels_reported_where_they_run():
    """head_dim 16, N = 16: the Triton kernels (compiled on a GPU, interpreted here)."""
    model = tiny_timm(32).to(KERNEL_DEVICE)
    report = fastswin.patch(model, backend="triton", strict=True)
    assert all(e.fused and e.runs.startswith("the fused Triton kernels") for e in report.replaced)
    assert len(report.replaced) == 4


def test_a_size_the_kernels_cannot_run_is_reported_and_strict_refuses():
    model = tiny_timm(4).to(KERNEL_DEVICE)  # head_dim 2: below the kernels' range
    with pytest.raises(fastswin.BackendError, match="would not run the fused kernels") as refused:
        fastswin.patch(model, backend="triton", strict=True)
    assert str(refused.value).count("head_dim 2") == 4
    assert not patched(model)  # strict changed nothing
    report = fastswin.patch(model, backend="triton")
    assert len(report.replaced) == 4 and all(not e.fused and "head_dim 2" in e.runs for e in report.replaced)


def test_an_unpredicted_fallback_is_logged_once_per_module(caplog, monkeypatch):
    """A module reported on the fused kernels whose op then picks another backend (as for a
    device or dtype the report did not see; simulated here, where the interpreter runs any
    map it is given) logs one warning naming it; the calls the report predicted log nothing."""
    model = tiny_timm(32).to(KERNEL_DEVICE).eval()
    fastswin.patch(model, backend="triton", strict=True)
    block = model.layers[0].blocks[1]  # window 4, shift 2
    with caplog.at_level(logging.WARNING, logger="fastswin"), torch.no_grad():
        model(torch.randn(1, 3, 64, 64, device=KERNEL_DEVICE))
        block._attn(torch.randn(1, 3, 3, 32, device=KERNEL_DEVICE))  # a map smaller than the window, shifted: fused
        assert not caplog.records
        monkeypatch.setattr(_core.ops, "shifted_window_attention_backend",
                            lambda *args, **kwargs: ("cuda", "a device the report did not see"))
        other = torch.randn(1, 5, 5, 32, device=KERNEL_DEVICE)  # a new map size: checked again
        block._attn(other)
        block._attn(other)
    (record,) = caplog.records
    message = record.getMessage()
    assert "layers.0.blocks.1 was reported on the fused kernels but runs cuda: a device the report" in message
