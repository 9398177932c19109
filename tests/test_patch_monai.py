"""fastswin.patch on MONAI's SwinUNETR (2D; its default feature_size 24 gives head_dim 8):
every 2D Swin block replaced, outputs and gradients equal to MONAI's forward (float64)
in eval and train, with use_v2 and with gradient checkpointing, including the stage
whose map is smaller than the window (MONAI's shrunk window and sliced bias). 3D:
test_patch_video.py."""
import pytest
import torch

from helpers import random_tensor
import fastswin

nets = pytest.importorskip("monai.networks.nets", reason="MONAI is not installed")
pytestmark = pytest.mark.usefixtures("fastswin_path_on_cpu")  # conftest.py

DEPTHS = (2, 2, 2, 2)


def unetr(**kwargs):
    """64x64 images, patch 2: 32, 16, 8 and 4 token maps with window 7 (padded, shifted,
    then shrunk to 4x4 without a shift)."""
    torch.manual_seed(0)
    model = nets.SwinUNETR(in_channels=1, out_channels=2, depths=DEPTHS, spatial_dims=2, **kwargs)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.double()


def output_and_grads(model, x):
    model.zero_grad()
    out = model(x)
    out.square().mean().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("kwargs", [{}, dict(use_v2=True), dict(use_checkpoint=True)], ids=["v1", "v2", "checkpoint"])
def test_patched_matches_monai(kwargs, train):
    model = unetr(**kwargs).train(train)
    x = random_tensor((2, 1, 64, 64), torch.float64, "cpu", 4)
    want_out, want_grads = output_and_grads(model, x)
    report = fastswin.patch(model)
    assert len(report.replaced) == sum(DEPTHS) and not report.not_replaced
    assert {e.kind for e in report.replaced} == {"monai SwinTransformerBlock"}
    got_out, got_grads = output_and_grads(model, x)
    torch.testing.assert_close(got_out, want_out, rtol=1e-9, atol=1e-10)
    assert got_grads.keys() == want_grads.keys()
    for key in want_grads:
        torch.testing.assert_close(got_grads[key], want_grads[key], rtol=1e-8, atol=1e-10, msg=key)
    assert len(fastswin.unpatch(model).replaced) == sum(DEPTHS)

