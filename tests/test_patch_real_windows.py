"""fastswin.patch at the windows and head dims the real models run: every model family
outside timm / torchvision 2D / HF Swin, and timm's SwinV2-384 window, with the default
backend and with the fused kernels forced (compiled on a GPU, interpreted here): outputs
and every parameter's gradient equal to the library's own forward in training, drop
path on.

Maps are as small as keeps the real window padded or shifted. In the interpreter the
windows of N = 343, 392 and 576 check the forward only: their backward takes 20-30 s a
window-head there (over 10 minutes for the three models). Their gradients are checked at
op level at these windows (test_shifted_window_attention_3d.py, the large-window cases of
test_shifted_window_attention.py) and through the whole models at small 3D windows
(test_patch_video.py). MaskFormer checks its forward only too: its layer is Donut's, whose
gradients are checked, less the window clamp. Compiled, every model checks every gradient."""
import pytest
import torch

from helpers import INTERPRETED, KERNEL_DEVICE, long, random_tensor
from patch_checks import assert_patch_matches, randomized

pytestmark = pytest.mark.usefixtures("fastswin_path_on_cpu")  # conftest.py

NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def video_swin():
    """N = 392 (8 x 7 x 7), head_dim 8: a 9 x 7 x 7 map, two windows in time, shifted by 4."""
    from torchvision.models.video.swin_transformer import SwinTransformer3d
    model = SwinTransformer3d(patch_size=[2, 4, 4], embed_dim=8, depths=[2], num_heads=[1], window_size=[8, 7, 7],
                              stochastic_depth_prob=0.2, num_classes=5)
    return model, (1, 3, 18, 28, 28), 2, "torchvision ShiftedWindowAttention3d"


def monai_encoder(spatial_dims):
    """SwinUNETR's encoder. 3D: N = 343 (7 x 7 x 7) on an 8 x 7 x 7 map (two windows in depth,
    shifted by 3), then 4^3 (shrunk window, sliced bias) and smaller. 2D: N = 49 on 8 x 15
    (padded, shifted), then 4 x 8 (the window shrinks to 4 x 7). head_dim 8 (MONAI's default
    feature_size 24 over 3 heads)."""
    from monai.networks.nets.swin_unetr import SwinTransformer
    model = SwinTransformer(in_chans=1, embed_dim=8, window_size=(7,) * spatial_dims, patch_size=(2,) * spatial_dims,
                            depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), drop_path_rate=0.2, spatial_dims=spatial_dims)
    return model, (1, 1, 16, 14, 14) if spatial_dims == 3 else (1, 1, 16, 30), 8, "monai SwinTransformerBlock"


def hugging_face(name):
    """Donut: N = 100 (window 10), MaskFormer: N = 144 (window 12), head_dim 16, on a
    15 x 15 map (padded, shifted), then MaskFormer's 8 x 8; CLAP: N = 64 at its head_dim 24 (16 x 16, then 8 x 8
    unshifted); Swin2SR: N = 64 at its head_dim 30 (16 x 24 pixels, shifted)."""
    import transformers as hf
    if name == "clap":
        config = hf.ClapAudioConfig(spec_size=64, num_mel_bins=16, patch_size=4, depths=[2, 2], window_size=8,
                                    num_attention_heads=[1, 2], hidden_size=48, patch_embeds_hidden_size=24,
                                    projection_dim=16, enable_fusion=False, drop_path_rate=0.2, **NO_DROPOUT)
        return hf.ClapAudioModel(config), (1, 1, 64, 16), 4, "transformers ClapAudioLayer"
    if name == "swin2sr":
        config = hf.Swin2SRConfig(image_size=16, embed_dim=30, depths=[2, 2], num_heads=[1, 1], window_size=8,
                                  upscale=2, drop_path_rate=0.2, **NO_DROPOUT)
        return hf.Swin2SRModel(config), (1, 3, 16, 24), 4, "transformers Swin2SRLayer"
    if name == "donut":  # one stage: Donut builds its bias for the configured window, then clamps it
        config = hf.DonutSwinConfig(image_size=60, embed_dim=16, depths=[2], num_heads=[1], window_size=10,
                                    drop_path_rate=0.2, **NO_DROPOUT)
        return hf.DonutSwinModel(config), (1, 3, 60, 60), 2, "transformers DonutSwinLayer"
    # MaskFormer's 8 x 8 stage 2 is padded to one window and still shifted by 6 (always_shift)
    config = hf.MaskFormerSwinConfig(image_size=60, embed_dim=16, depths=[2, 2], num_heads=[1, 2], window_size=12,
                                     drop_path_rate=0.2, **NO_DROPOUT)
    return hf.MaskFormerSwinModel(config), (1, 3, 60, 60), 4, "transformers MaskFormerSwinLayer"


def timm_swinv2_384_window():
    """N = 576 (SwinV2-384's 24 x 24 window) on a 24 x 24 map, head_dim 16."""
    timm = pytest.importorskip("timm")
    model = timm.create_model("swinv2_tiny_window8_256", embed_dim=16, depths=(2,), num_heads=(1,), window_size=24,
                              img_size=96, num_classes=5, drop_path_rate=0.2)
    return model, (1, 3, 96, 96), 2, "timm SwinTransformerV2Block"


MODELS = {  # name: (library, build, the interpreter checks gradients)
    "torchvision-video-N392": ("torchvision", video_swin, False),
    "monai-3d-N343": ("monai", lambda: monai_encoder(3), False),
    "monai-2d-N49": ("monai", lambda: monai_encoder(2), True),
    "donut-N100": ("transformers", lambda: hugging_face("donut"), True),
    "maskformer-N144": ("transformers", lambda: hugging_face("maskformer"), False),  # Donut's layer, unclamped
    "clap-N64-d24": ("transformers", lambda: hugging_face("clap"), True),
    "swin2sr-N64-d30": ("transformers", lambda: hugging_face("swin2sr"), True),
    "timm-v2-N576": ("timm", timm_swinv2_384_window, False),
}


@long
@pytest.mark.parametrize("backend", [None, "triton"], ids=["default", "triton"])
@pytest.mark.parametrize("name", list(MODELS))
def test_patched_model_matches_the_library(name, backend):
    """The default backend (fastswin's CPU path here, in float64; the fused kernels on a
    GPU) and the fused kernels forced."""
    library, build, interpreter_grads = MODELS[name]
    pytest.importorskip(library)
    torch.manual_seed(0)
    model, shape, blocks, kind = build()
    fused_here = backend == "triton" or KERNEL_DEVICE == "cuda"
    device = KERNEL_DEVICE if fused_here else "cpu"
    # fp64 on the CPU; fp32 compiled (the bar: rel 1e-4)
    dtype = torch.float64 if device == "cpu" else torch.float32
    model = randomized(model).to(device, dtype).train()
    x = random_tensor(shape, dtype, device, 5)
    tolerance = 1e-4 if device == "cuda" else 1e-7 if fused_here else 1e-9
    assert_patch_matches(model, x, blocks, kind, backend=backend, tolerance=tolerance,
                         grads=interpreter_grads or not (fused_here and INTERPRETED))
