"""fastswin.patch on 3D Swins: torchvision's video Swin (ShiftedWindowAttention3d) and
MONAI's SwinUNETR with spatial_dims=3. Every block replaced; outputs and every
parameter's gradient equal to the library's own forward (float64, eval and train, drop
path on, the same seed), with the library's window rule kept: windows and shifts shrunk
where the map is no larger than the window, the bias sliced for the shrunk window."""
import pytest
import torch

from helpers import KERNEL_DEVICE, long, random_tensor, versions
from patch_checks import assert_patch_matches, randomized
import fastswin

video = pytest.importorskip("torchvision.models.video.swin_transformer")
pytestmark = pytest.mark.usefixtures("fastswin_path_on_cpu")  # conftest.py


def video_swin(window=(8, 7, 7)):
    """Clips of 20 x 40 x 40, patch (2, 4, 4): a 10 x 10 x 10 token map (padded and shifted
    in every dim), then 10 x 5 x 5 (the window shrinks to (8, 5, 5), shifted in time only);
    heads (2, 4) of 8 channels."""
    torch.manual_seed(0)
    model = video.SwinTransformer3d(patch_size=[2, 4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2],
                                    window_size=list(window), stochastic_depth_prob=0.2, num_classes=5)
    return randomized(model).double()


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_patched_video_swin_matches_torchvision(train):
    model = video_swin().train(train)
    x = random_tensor((2, 3, 20, 40, 40), torch.float64, "cpu", 1)
    assert_patch_matches(model, x, 4, "torchvision ShiftedWindowAttention3d")


@long
def test_patched_video_swin_on_the_fused_kernels():
    """The Triton kernels forced (compiled on a GPU, interpreted here), at windows of
    2 x 3 x 3 to keep the interpreter quick (clips of 10 x 28 x 28: 5 x 7 x 7 and 5 x 4 x 4
    token maps, padded and shifted in every dim); fp64 in the interpreter, fp32 on a GPU."""
    dtype = torch.float64 if KERNEL_DEVICE == "cpu" else torch.float32
    model = video_swin(window=(2, 3, 3)).to(KERNEL_DEVICE, dtype).train()
    x = random_tensor((1, 3, 10, 28, 28), dtype, KERNEL_DEVICE, 2)
    assert_patch_matches(model, x, 4, "torchvision ShiftedWindowAttention3d", backend="triton",
                         tolerance=1e-7 if dtype == torch.float64 else 1e-4)


def test_video_swin_is_reported_on_the_fused_kernels():
    model = video.swin3d_t().to(KERNEL_DEVICE)  # windows 8 x 7 x 7: N = 392, head_dim 32
    report = fastswin.patch(model, backend="triton", strict=True)
    assert len(report.replaced) == 12 and not report.not_replaced  # depths (2, 2, 6, 2)
    assert all(e.fused and e.runs.startswith("the fused Triton kernels") for e in report.replaced)


@versions
def test_patched_video_swin_compiles_fullgraph_without_recompiles():
    """aot_eager traces the forward graph like inductor does, without compiling C++ on CPU;
    a second batch size makes the batch dimension dynamic, a third must not recompile."""
    torch._dynamo.reset()
    model = video_swin().float().eval()
    fastswin.patch(model)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        for batch, recompile_is_error in ((1, False), (2, False), (3, True)):
            x = random_tensor((batch, 3, 20, 40, 40), torch.float32, "cpu", batch)
            with torch._dynamo.config.patch(error_on_recompile=recompile_is_error):
                torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)


nets = pytest.importorskip("monai.networks.nets", reason="MONAI is not installed")


@pytest.mark.parametrize("kwargs, train", [({}, False), ({}, True), (dict(use_v2=True), True),
                                           (dict(use_checkpoint=True), True)],
                         ids=["v1-eval", "v1-train", "v2-train", "checkpoint-train"])
def test_patched_3d_swin_unetr_matches_monai(kwargs, train):
    """64 x 32 x 32 volumes, patch 2: 32 x 16 x 16 and 16 x 8 x 8 token maps with window 7
    (padded, shifted), then 8 x 4 x 4 (the window shrinks to 7 x 4 x 4, shifted in depth
    only) and 4 x 2 x 2 (no shift); MONAI's default feature_size 24 and heads: head_dim 8."""
    torch.manual_seed(0)
    model = nets.SwinUNETR(in_channels=1, out_channels=2, depths=(2, 2, 2, 2), feature_size=24, spatial_dims=3,
                           dropout_path_rate=0.2, **kwargs)
    model = randomized(model).double().train(train)
    x = random_tensor((1, 1, 64, 32, 32), torch.float64, "cpu", 3)
    assert_patch_matches(model, x, 8, "monai SwinTransformerBlock", tolerance=1e-9)


def test_video_swin_runs_its_own_forward_on_unshifted_maps_on_cpu_in_auto_mode(monkeypatch):
    """Auto mode on CPU: clips of 16 x 28 x 28 make maps of one window each (8 x 7 x 7, then
    8 x 4 x 4: 392 and 128 tokens, no shift), where the fused kernels measured slower than
    the reference without gradients too (ops.attention.checks.CPU_PLAIN_MAP): torchvision's
    forward runs them. A forced backend still runs the kernels."""
    from fastswin import ops
    from fastswin._extension import HAS_C

    model = video_swin().float().eval()
    x = random_tensor((1, 3, 16, 28, 28), torch.float32, "cpu", 5)
    with torch.no_grad():
        want = model(x)
    calls = []
    real = ops.shifted_window_attention
    monkeypatch.setattr(ops, "shifted_window_attention", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    monkeypatch.delenv("FASTSWIN_BACKEND")
    fastswin.patch(model)
    with torch.no_grad():
        torch.testing.assert_close(model(x), want)
        assert not calls
        if HAS_C:
            fastswin.patch(model, backend="cpu")
            torch.testing.assert_close(model(x), want, rtol=1e-4, atol=1e-4)
            assert len(calls) == 4


def test_video_swin_trains_on_its_own_forward_on_cpu_in_auto_mode(monkeypatch):
    """Auto mode on CPU: the video Swin's fp32 training step through the fused kernels
    measured slower than torchvision's (integrations.torchvision.VIDEO_CPU_TRAINING), so
    with gradients it runs torchvision's forward; without them the fused kernels."""
    from fastswin import ops
    from fastswin._extension import HAS_C

    model = video_swin().float().eval()  # eval: no drop path; the parameters need gradients
    x = random_tensor((1, 3, 20, 40, 40), torch.float32, "cpu", 4)
    want = model(x)
    calls = []
    real = ops.shifted_window_attention
    monkeypatch.setattr(ops, "shifted_window_attention", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    monkeypatch.delenv("FASTSWIN_BACKEND")
    report = fastswin.patch(model)
    torch.testing.assert_close(model(x), want)
    assert not calls
    with torch.no_grad():
        torch.testing.assert_close(model(x), want, rtol=1e-4, atol=1e-4)
    assert len(calls) == 4 * HAS_C
    if HAS_C:
        assert {e.runs for e in report.replaced} == {
            "the fused C++ CPU kernels (cpu, float32); with gradients the library's own forward (CPU, auto mode)"}
