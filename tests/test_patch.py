"""fastswin.patch / unpatch on tiny random timm, torchvision and Hugging Face
Swin v1 / v2 models: same outputs and gradients as the library's own forward
(float64), state dicts untouched, exact restore, idempotence, the report,
run-time fallbacks, torch.compile, autocast, DDP and a short training run."""
import os

import pytest
import torch
import torch.nn as nn

from helpers import random_tensor, spawn_gloo_workers, versions
import fastswin
from fastswin.integrations._core import CPU_FALLBACK, PREFIX

timm = pytest.importorskip("timm")
tv = pytest.importorskip("torchvision.models.swin_transformer")
hf = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("fastswin_path_on_cpu")  # conftest.py

IMG = 60  # 15x15 then 8x8 token maps with window 4: padded windows in stage 1
MODELS = [(library, version) for library in ("timm", "torchvision", "transformers") for version in ("v1", "v2")]
NUM_BLOCKS = 4


def build(library: str, version: str, attn_drop: float = 0.0, hf_attention: str = "sdpa") -> nn.Module:
    """A tiny random model (embed 32, depths (2, 2), heads (2, 4), window 4, 10 classes, no drop path).

    hf_attention: transformers' attention implementation of Swin-V1 in 5.x. Its "eager"
    one runs softmax in float32 whatever the input dtype; "sdpa" keeps float64.
    """
    torch.manual_seed(0)
    if library == "timm":
        name = "swin_tiny_patch4_window7_224" if version == "v1" else "swinv2_tiny_window8_256"
        model = timm.create_model(name, embed_dim=32, depths=(2, 2), num_heads=(2, 4), window_size=4,
                                  img_size=IMG, num_classes=10, drop_path_rate=0.0, attn_drop_rate=attn_drop)
    elif library == "torchvision":
        extra = {} if version == "v1" else dict(block=tv.SwinTransformerBlockV2, downsample_layer=tv.PatchMergingV2)
        model = tv.SwinTransformer(patch_size=[4, 4], embed_dim=32, depths=[2, 2], num_heads=[2, 4],
                                   window_size=[4, 4], num_classes=10, stochastic_depth_prob=0.0,
                                   attention_dropout=attn_drop, **extra)
    else:
        config_cls, model_cls = ((hf.SwinConfig, hf.SwinForImageClassification) if version == "v1"
                                 else (hf.Swinv2Config, hf.Swinv2ForImageClassification))
        config = config_cls(image_size=IMG, embed_dim=32, depths=[2, 2], num_heads=[2, 4], window_size=4,
                            num_labels=10, drop_path_rate=0.0, hidden_dropout_prob=0.0,
                            attention_probs_dropout_prob=attn_drop)
        if version == "v1":  # Swinv2 has its own attention code only
            config._attn_implementation = hf_attention
        model = model_cls(config)
    with torch.no_grad():  # libraries zero-initialize biases, HF its bias tables: randomize everything
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def logits(model: nn.Module, x: torch.Tensor, **kwargs) -> torch.Tensor:
    out = model(x, **kwargs)
    return out if torch.is_tensor(out) else out.logits


def outputs_and_grads(model, x):
    model.zero_grad()
    out = logits(model, x)
    out.square().mean().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def patched_modules(model):
    return [m for m in model.modules() if hasattr(m, PREFIX + "patch")]


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("library,version", MODELS)
def test_patched_matches_library(library, version, train):
    model = build(library, version).double().train(train)
    x = random_tensor((2, 3, IMG, IMG), torch.float64, "cpu", 1)
    want_out, want_grads = outputs_and_grads(model, x)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    report = fastswin.patch(model)
    assert len(report.replaced) == NUM_BLOCKS and report.complete, str(report)
    got_out, got_grads = outputs_and_grads(model, x)
    torch.testing.assert_close(got_out, want_out, rtol=1e-10, atol=1e-12)
    assert got_grads.keys() == want_grads.keys()
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-9, atol=1e-12, msg=name)
    after = model.state_dict()
    assert list(after) == list(state)
    assert all(torch.equal(after[k], v) for k, v in state.items())


@pytest.mark.parametrize("library,version", MODELS)
def test_unpatch_restores_and_patch_is_idempotent(library, version):
    model = build(library, version).eval()
    x = random_tensor((1, 3, IMG, IMG), torch.float32, "cpu", 2)
    with torch.no_grad():
        want = logits(model, x)
        fastswin.patch(model, backend="reference")
        again = fastswin.patch(model)
        assert [e.note for e in again.replaced] == ["already patched; backend updated"] * NUM_BLOCKS
        assert len(patched_modules(model)) == NUM_BLOCKS
        assert all(getattr(m, PREFIX + "backend") is None for m in patched_modules(model))
        patched = logits(model, x)
        restored = fastswin.unpatch(model)
        assert len(restored.replaced) == NUM_BLOCKS
        assert not any(k.startswith(PREFIX) or k in ("forward", "_attn") for m in model.modules() for k in vars(m))
        torch.testing.assert_close(patched, want, rtol=1e-5, atol=1e-5)
        assert torch.equal(logits(model, x), want)
        assert fastswin.unpatch(model).reason == "no module of this model was patched by fastswin"


# The module each library's patch replaces a method of.
PATCHED_CLASSES = {"timm": ("SwinTransformerBlock", "SwinTransformerV2Block"),
                   "torchvision": ("ShiftedWindowAttention", "ShiftedWindowAttentionV2"),
                   "transformers": ("SwinLayer", "Swinv2Layer")}


@pytest.mark.parametrize("library", ["timm", "torchvision", "transformers"])
def test_deepcopy_of_a_patched_model(library):
    import copy
    model = build(library, "v2").eval()
    fastswin.patch(model)
    clone = copy.deepcopy(model)
    patched = patched_modules(clone)
    assert len(patched) == NUM_BLOCKS
    assert all(getattr(m, getattr(m, PREFIX + "patch").attr).__self__ is m for m in patched)  # bound to the copy
    x = random_tensor((1, 3, IMG, IMG), torch.float32, "cpu", 10)
    with torch.no_grad():
        assert torch.equal(logits(clone, x), logits(model, x))


@pytest.mark.parametrize("library,version", MODELS)
def test_report(library, version):
    model = build(library, version)
    report = fastswin.patch(model)
    expected = [name for name, m in model.named_modules()
                if type(m).__module__.startswith(library) and type(m).__name__ in PATCHED_CLASSES[library]]
    assert [e.name for e in report.replaced] == expected and len(expected) == NUM_BLOCKS
    assert all(entry.kind.startswith(library) for entry in report.replaced)
    assert len(report.fallbacks) == 2 and library in report.fallbacks[0] and report.fallbacks[1] == CPU_FALLBACK
    assert f"{NUM_BLOCKS} module(s)" in str(report) and not report.not_replaced and not report.reason


def test_unsupported_model_is_reported_and_left_alone():
    model = nn.Sequential(nn.Linear(4, 4), nn.GELU())
    report = fastswin.patch(model)
    assert not report.replaced and not report.complete
    assert "no module fastswin can patch in Sequential" in report.reason
    assert not patched_modules(model)
    fused = fastswin.models.create_model("swin_tiny_patch4_window7_224", embed_dim=16, depths=(2,), num_heads=(2,))
    assert "already" in fastswin.patch(fused).reason


def test_unknown_semantics_are_skipped_with_a_reason():
    """A subclass redefining the replaced method, or an instance already patched by someone else."""
    model = build("timm", "v1")
    blocks = [m for m in model.modules() if isinstance(m, timm.models.swin_transformer.SwinTransformerBlock)]

    class CustomBlock(timm.models.swin_transformer.SwinTransformerBlock):
        def _attn(self, x):
            return 2 * super()._attn(x)

    blocks[0].__class__ = CustomBlock
    blocks[1]._attn = lambda x: x
    report = fastswin.patch(model)
    assert len(report.replaced) == NUM_BLOCKS - 2 and not report.complete
    reasons = [e.note for e in report.not_replaced]
    assert "CustomBlock overrides SwinTransformerBlock._attn" in reasons[0]
    assert "already overridden on the instance" in reasons[1]
    assert "kept" in str(report)


@pytest.mark.parametrize("library", ["timm", "torchvision", "transformers"])
def test_attention_dropout_in_training_falls_back(library):
    """The fused op has no attention dropout: the library's forward runs, with the same random stream."""
    model = build(library, "v1", attn_drop=0.3).train()
    x = random_tensor((2, 3, IMG, IMG), torch.float32, "cpu", 3)
    torch.manual_seed(1)
    want = logits(model, x)
    fastswin.patch(model)
    torch.manual_seed(1)
    assert torch.equal(logits(model, x), want)
    model.eval()  # without dropout the fused path runs again
    with torch.no_grad():
        fused = logits(model, x)
        fastswin.unpatch(model)
        torch.testing.assert_close(fused, logits(model, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_transformers_attention_weights_fall_back(version):
    model = build("transformers", version, hf_attention="eager").eval()  # eager returns the weights
    x = random_tensor((1, 3, IMG, IMG), torch.float32, "cpu", 4)
    with torch.no_grad():
        want = model(x, output_attentions=True).attentions
        fastswin.patch(model)
        got = model(x, output_attentions=True).attentions
    assert want and len(got) == len(want)
    for g, w in zip(got, want):
        assert torch.equal(g, w)


def test_transformers_always_partition_keeps_the_shift():
    """HF's always_partition rolls and masks even a map that is one window tall (the op's always_shift)."""
    model = build("transformers", "v1").double().eval()
    layer = model.swin.encoder.layers[0].blocks[1]
    assert (layer.window_size, layer.shift_size) == (4, 2)
    hidden = random_tensor((2, 3 * 9, 32), torch.float64, "cpu", 5)
    want = layer(hidden, (3, 9), always_partition=True)[0]
    fastswin.patch(model)
    torch.testing.assert_close(layer(hidden, (3, 9), always_partition=True)[0], want, rtol=1e-10, atol=1e-12)


def test_backend_reaches_the_fused_op():
    model = build("timm", "v1")
    with pytest.raises(ValueError, match="unknown backend"):
        fastswin.patch(model, backend="nope")
    fastswin.patch(model, backend="cuda")
    with pytest.raises(fastswin.BackendError, match="cuda"):
        model(random_tensor((1, 3, IMG, IMG), torch.float32, "cpu", 6))


@pytest.mark.parametrize("library", ["timm", "torchvision", "transformers"])
def test_auto_mode_on_cpu_fuses_all_but_low_precision_training(library, monkeypatch):
    """Never slower than the library: on CPU inputs auto mode runs the fused C++ kernels
    for inference and fp32 training (each measured faster than every library's) and the
    library's own forward for training in bf16 autocast (fastswin's op is not called)."""
    from fastswin import ops
    from fastswin._extension import HAS_C

    model = build(library, "v1").eval()
    x = random_tensor((1, 3, IMG, IMG), torch.float32, "cpu", 11)
    with torch.no_grad():
        want = logits(model, x)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        want_bf16 = logits(model, x)
    calls = []
    real = ops.shifted_window_attention
    monkeypatch.setattr(ops, "shifted_window_attention", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    monkeypatch.delenv("FASTSWIN_BACKEND")
    report = fastswin.patch(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the parameters need gradients
        torch.testing.assert_close(logits(model, x).detach(), want_bf16)
    assert not calls
    torch.testing.assert_close(logits(model, x).detach(), want, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(logits(model, x), want, rtol=1e-4, atol=1e-4)
    assert len(calls) == 2 * len(report.replaced) * HAS_C and all(e.fused == HAS_C for e in report.replaced)
    assert CPU_FALLBACK in report.fallbacks and CPU_FALLBACK in str(report)


@versions
@pytest.mark.parametrize("library,version", [("timm", "v1"), ("timm", "v2"), ("torchvision", "v2"),
                                             ("transformers", "v1")])
def test_compile_fullgraph_no_recompile_on_batch(library, version):
    """aot_eager traces forward and backward graphs like inductor does, without compiling C++ on CPU."""
    torch._dynamo.reset()
    model = build(library, version).eval()
    fastswin.patch(model)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad(), torch._dynamo.config.patch(error_on_recompile=False):
        for batch in (2, 3):  # the second batch size makes the batch dimension dynamic
            x = random_tensor((batch, 3, IMG, IMG), torch.float32, "cpu", batch)
            torch.testing.assert_close(logits(compiled, x), logits(model, x), rtol=1e-5, atol=1e-5)
    with torch.no_grad(), torch._dynamo.config.patch(error_on_recompile=True):
        x = random_tensor((5, 3, IMG, IMG), torch.float32, "cpu", 5)
        torch.testing.assert_close(logits(compiled, x), logits(model, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("library,version", MODELS)
def test_bf16_autocast_on_cpu(library, version):
    model = build(library, version).eval()
    x = random_tensor((2, 3, IMG, IMG), torch.float32, "cpu", 7)
    with torch.no_grad():
        want = logits(model, x)
        fastswin.patch(model)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = logits(model, x)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, rtol=0.05, atol=0.05)  # bf16 keeps 8 bits of mantissa


def _ddp_worker(rank, world, init_file, x, y, out_dir):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    model = build("timm", "v2").double()
    fastswin.patch(model)
    ddp = nn.parallel.DistributedDataParallel(model)
    shard = slice(rank * len(x) // world, (rank + 1) * len(x) // world)
    nn.functional.cross_entropy(ddp(x[shard]), y[shard]).backward()
    if rank == 0:
        torch.save({n: p.grad for n, p in model.named_parameters()}, os.path.join(out_dir, "grads.pt"))
    dist.barrier()  # no rank tears gloo down while the other still talks
    dist.destroy_process_group()


def test_ddp_two_processes_match_single_process(tmp_path):
    x = random_tensor((4, 3, IMG, IMG), torch.float64, "cpu", 8)
    y = torch.tensor([1, 3, 5, 7])
    spawn_gloo_workers(_ddp_worker, tmp_path, 2, x, y, str(tmp_path))
    model = build("timm", "v2").double()
    nn.functional.cross_entropy(model(x), y).backward()  # unpatched, whole batch
    ddp_grads = torch.load(tmp_path / "grads.pt")
    for name, p in model.named_parameters():
        torch.testing.assert_close(ddp_grads[name], p.grad, rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize("library,version", [("timm", "v1"), ("torchvision", "v2"), ("transformers", "v1")])
def test_training_follows_the_unpatched_loss_curve(library, version):
    x = random_tensor((4, 3, IMG, IMG), torch.float32, "cpu", 9)
    y = torch.tensor([0, 2, 4, 6])

    def losses(patch):
        model = build(library, version).train()
        if patch:
            fastswin.patch(model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        curve = []
        for _ in range(10):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(logits(model, x), y)
            loss.backward()
            optimizer.step()
            curve.append(loss.item())
        return curve

    want = losses(patch=False)
    assert want[-1] < want[0]
    torch.testing.assert_close(losses(patch=True), want, rtol=1e-4, atol=1e-5)
