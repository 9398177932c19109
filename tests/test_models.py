"""fastswin.models against timm 1.0: every registered name builds timm's
configuration (same state-dict keys and shapes), small configurations load
timm state dicts strictly and give the same outputs, features and gradients,
and local checkpoints load in timm's and the official format."""
import re

import pytest
import torch

from helpers import random_tensor, versions
from fastswin import models

timm = pytest.importorskip("timm")

# Small overrides of the registered configurations, so CPU tests stay fast.
TINY = dict(embed_dim=16, depths=(2, 2), num_heads=(2, 4), window_size=4, num_classes=7, drop_path_rate=0.0)
TINY_NAMES = ["swin_tiny_patch4_window7_224", "swinv2_tiny_window8_256",
              "swinv2_base_window12to16_192to256"]  # the last: v2 with pretrained_window_sizes


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype) * 0.1 + (p.dim() == 1) * 0.1)
    return model


def tiny_kwargs(name, img_size=60, **overrides):
    kwargs = {**TINY, "img_size": img_size, **overrides}
    if any(models.MODEL_CONFIGS[name][1].get("pretrained_window_sizes", ())):
        kwargs.setdefault("pretrained_window_sizes", (6, 3))  # one per stage of the tiny model
    return kwargs


def timm_and_fastswin(name, img_size=60, **overrides):
    kwargs = tiny_kwargs(name, img_size, **overrides)
    theirs = randomize(timm.create_model(name, **kwargs), seed=0).double()
    ours = models.create_model(name, **kwargs).double()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return theirs, ours


@pytest.mark.parametrize("name", models.list_models())
def test_every_name_builds_timms_configuration(name):
    with torch.device("meta"):
        theirs = timm.create_model(name)
        ours = models.create_model(name)
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(ours) == shapes(theirs)
    assert ours.patch_embed.img_size == theirs.patch_embed.img_size
    assert ours.num_classes == theirs.num_classes
    assert [b.window_size for b in ours.modules() if hasattr(b, "shift_size")] == \
           [b.window_size for b in theirs.modules() if hasattr(b, "shift_size")]


def test_timm_registers_no_other_swin_names():
    names = {n for n in timm.list_models("swin*") if not n.startswith("swinv2_cr")}
    assert names == set(models.list_models())


@pytest.mark.parametrize("name", TINY_NAMES)
def test_outputs_features_and_gradients_match_timm(name):
    theirs, ours = timm_and_fastswin(name)
    x = random_tensor((2, 3, 60, 60), torch.float64, "cpu", 1)  # 15x15 then 8x8 maps: padded windows
    logits = []
    for model in (theirs, ours):
        model.zero_grad()
        out = model(x)
        out.square().sum().backward()
        logits.append(out)
    torch.testing.assert_close(logits[1], logits[0], rtol=1e-10, atol=1e-10)
    want_grads = dict(theirs.named_parameters())
    for n, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, want_grads[n].grad, rtol=1e-9, atol=1e-10, msg=n)
    with torch.no_grad():
        want_final, want = theirs.forward_intermediates(x, indices=2, norm=True)
        got_final, got = ours.forward_intermediates(x, indices=2, norm=True)
        torch.testing.assert_close(got_final, want_final, rtol=1e-10, atol=1e-10)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(ours.forward_head(ours.forward_features(x), pre_logits=True),
                                   theirs.forward_head(theirs.forward_features(x), pre_logits=True))


def test_features_only_and_stop_early():
    _, ours = timm_and_fastswin("swin_tiny_patch4_window7_224")
    x = random_tensor((1, 3, 60, 44), torch.float64, "cpu", 2)
    features = ours.forward_intermediates(x, indices=[0, -1], intermediates_only=True, output_fmt="NHWC")
    assert [f.shape for f in features] == [(1, 15, 11, 16), (1, 8, 6, 32)]
    first = ours.forward_intermediates(x, indices=[0], stop_early=True, intermediates_only=True)
    torch.testing.assert_close(first[0], features[0].permute(0, 3, 1, 2))


@pytest.mark.parametrize("name", TINY_NAMES[:2])
def test_any_multiple_of_the_patch_size(name):
    """Other input sizes than img_size run and match timm's dynamic-size model."""
    theirs, ours = timm_and_fastswin(name, img_size=56, strict_img_size=False)
    x = random_tensor((2, 3, 72, 40), torch.float64, "cpu", 3)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        ours(x[..., :39])


def test_per_stage_windows():
    name = "swin_s3_tiny_224"
    # a pair of ints is one (h, w) window for every stage (timm's rule); pairs of pairs are per stage
    theirs, ours = timm_and_fastswin(name, img_size=64, window_size=((4, 4), (8, 4)))
    x = random_tensor((1, 3, 64, 64), torch.float64, "cpu", 4)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-10, atol=1e-10)
    assert [s.blocks[1].window_size for s in ours.layers] == [(4, 4), (8, 4)]
    assert [s.blocks[1].shift_size for s in ours.layers] == [(2, 2), (0, 2)]


def to_official_format(state_dict):
    """timm state dict -> microsoft/Swin-Transformer layout (the inverse of fastswin's converter)."""
    official = {}
    for key, value in state_dict.items():
        key = re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
        official[key.replace("head.fc.", "head.")] = value
    official["layers.0.blocks.1.attn_mask"] = torch.zeros(1)  # derived buffers the original saves
    official["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(1, dtype=torch.long)
    return {"model": official}


@pytest.mark.parametrize("layout", ["timm", "official"])
@pytest.mark.parametrize("name", TINY_NAMES[:2])
def test_pretrained_from_local_file(name, layout, tmp_path):
    theirs, _ = timm_and_fastswin(name)
    state = theirs.state_dict() if layout == "timm" else to_official_format(theirs.state_dict())
    path = tmp_path / "checkpoint.pth"
    torch.save(state, path)
    ours = models.create_model(name, pretrained=path, dtype=torch.float64, **tiny_kwargs(name))
    x = random_tensor((1, 3, 60, 60), torch.float64, "cpu", 5)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-10, atol=1e-10)


def test_pretrained_errors(tmp_path):
    with pytest.raises(ValueError, match="local checkpoint"):
        models.create_model("swin_tiny_patch4_window7_224", pretrained=True)
    with pytest.raises(ValueError, match="unknown model"):
        models.create_model("swin_huge")
    wrong = tmp_path / "wrong.pth"
    torch.save({"head.fc.weight": torch.zeros(1)}, wrong)
    with pytest.raises(RuntimeError, match="Missing key"):
        models.create_model("swin_tiny_patch4_window7_224", pretrained=wrong, **TINY)


@versions
def test_compile_fullgraph_no_recompile_on_batch():
    """fastswin models trace whole (aot_eager: forward and backward graphs, no C++ build on CPU)."""
    torch._dynamo.reset()
    model = models.create_model("swinv2_tiny_window8_256", **tiny_kwargs("swinv2_tiny_window8_256")).eval()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad(), torch._dynamo.config.patch(error_on_recompile=False):
        for batch in (2, 3):
            x = random_tensor((batch, 3, 60, 60), torch.float32, "cpu", batch)
            torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)
    with torch.no_grad(), torch._dynamo.config.patch(error_on_recompile=True):
        x = random_tensor((4, 3, 60, 60), torch.float32, "cpu", 4)
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)
