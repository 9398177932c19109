"""fastswin.patch on the Hugging Face models whose layers copy Swin's: Donut
(DonutSwinLayer), MaskFormer (MaskFormerSwinLayer: never clamps its window, always
shifts), CLAP's audio encoder (ClapAudioLayer) and Swin2SR (Swin2SRLayer, Swinv2's):
every layer replaced, outputs and gradients equal to the library's forward (float64),
state dict untouched, exact restore."""
import pytest
import torch

from helpers import random_tensor
import fastswin

hf = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("fastswin_path_on_cpu")  # conftest.py

NO_DROPOUT = dict(drop_path_rate=0.0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
SMALL = dict(embed_dim=16, depths=[2, 2], window_size=4, **NO_DROPOUT)


def donut():
    # 40x56 pixels: 10x14 then 5x7 token maps, padded windows; stage 2 clamps nothing
    config = hf.DonutSwinConfig(image_size=[40, 56], num_heads=[2, 4], **SMALL)
    return hf.DonutSwinModel(config), dict(pixel_values=(1, 3, 40, 56))


def maskformer():
    # 60x60: 15x15 then 8x8 maps; MaskFormer shifts the 8x8 map's every other layer too
    config = hf.MaskFormerSwinConfig(image_size=60, num_heads=[2, 4], **SMALL)
    return hf.MaskFormerSwinModel(config), dict(pixel_values=(2, 3, 60, 60))


def maskformer_small_map():
    # 12x12: 3x3 then 2x2 maps, smaller than the window: padded to one window, and still shifted
    config = hf.MaskFormerSwinConfig(image_size=12, num_heads=[2, 4], **SMALL)
    return hf.MaskFormerSwinModel(config), dict(pixel_values=(1, 3, 12, 12))


def clap():
    config = hf.ClapAudioConfig(spec_size=64, num_mel_bins=16, patch_size=4, depths=[2, 2], window_size=4,
                                num_attention_heads=[2, 4], hidden_size=64, patch_embeds_hidden_size=32,
                                projection_dim=16, enable_fusion=False, **NO_DROPOUT)
    return hf.ClapAudioModel(config), dict(input_features=(2, 1, 64, 16))


def swin2sr():
    # Swin2SR attends maps padded to the window by the model: 16x20 pixels, 4x5 windows
    config = hf.Swin2SRConfig(image_size=16, embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=4,
                              upscale=2, **NO_DROPOUT)
    return hf.Swin2SRModel(config), dict(pixel_values=(1, 3, 16, 20))


MODELS = {"donut": (donut, "DonutSwinLayer"), "maskformer": (maskformer, "MaskFormerSwinLayer"),
          "maskformer-small-map": (maskformer_small_map, "MaskFormerSwinLayer"), "clap": (clap, "ClapAudioLayer"),
          "swin2sr": (swin2sr, "Swin2SRLayer")}


def build(name):
    torch.manual_seed(0)
    model, shapes = MODELS[name][0]()
    with torch.no_grad():  # random biases and bias tables (libraries zero-initialize some)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    inputs = {key: random_tensor(shape, torch.float64, "cpu", 3) for key, shape in shapes.items()}
    return model.double(), inputs


def output_and_grads(model, inputs):
    model.zero_grad()
    out = model(**inputs).last_hidden_state
    out.square().mean().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", list(MODELS))
def test_patched_matches_library(name, train):
    model, inputs = build(name)
    model.train(train)
    layers = [n for n, m in model.named_modules() if type(m).__name__ == MODELS[name][1]]
    params = {k: v.clone() for k, v in model.named_parameters()}
    keys = list(model.state_dict())
    want_out, want_grads = output_and_grads(model, inputs)
    report = fastswin.patch(model)
    assert [e.name for e in report.replaced] == layers and len(layers) == 4 and not report.not_replaced
    assert all(e.kind.startswith(f"transformers {MODELS[name][1]}") for e in report.replaced)
    got_out, got_grads = output_and_grads(model, inputs)
    torch.testing.assert_close(got_out, want_out, rtol=1e-9, atol=1e-10)
    assert got_grads.keys() == want_grads.keys()
    for key in want_grads:
        torch.testing.assert_close(got_grads[key], want_grads[key], rtol=1e-8, atol=1e-10, msg=key)
    # the state dict's keys and the parameters are untouched (CLAP's BatchNorm statistics move in training)
    assert list(model.state_dict()) == keys and all(torch.equal(v, params[k]) for k, v in model.named_parameters())
    assert len(fastswin.unpatch(model).replaced) == 4
    assert torch.equal(output_and_grads(model, inputs)[0], want_out)
