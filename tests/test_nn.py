"""fastswin.nn layers against timm 1.0's: same state dicts (strict), same outputs
and gradients in float64, on padded, non-square and single-window maps."""
import pytest
import torch

from helpers import INTERPRETED, KERNEL_DEVICE, random_tensor
import fastswin.nn as fnn
from fastswin.nn.functional import window_attention_map

timm_v1 = pytest.importorskip("timm.models.swin_transformer")
timm_v2 = pytest.importorskip("timm.models.swin_transformer_v2")

# (H, W, input_resolution, window, shift, always_partition)
BLOCK_CASES = [
    (14, 14, (14, 14), 7, 3, False),  # divisible
    (15, 13, (15, 13), 7, 3, False),  # padded both ways
    (9, 12, (9, 12), (4, 5), (2, 1), False),  # non-square window and shift
    (7, 7, (7, 7), 7, 3, False),      # one window: timm drops the shift
    (7, 9, (7, 9), 7, 3, True),       # always_partition: timm keeps the shift on a one-window dimension
    (10, 6, (14, 14), 7, 3, False),   # input smaller than built for (dynamic size)
    (2, 9, (14, 14), 7, 3, False),    # and a map shorter than the shift timm keeps
]


def randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter random (timm zero-initializes some: biases, v2 post-norms)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype) * 0.2 + (p.dim() == 1) * 0.1)
    return module


def timm_and_fastswin_blocks(v2, case, **kwargs):
    _, _, resolution, window, shift, always = case
    args = dict(dim=16, input_resolution=resolution, num_heads=2, window_size=window, shift_size=shift,
                always_partition=always, **kwargs)
    theirs = (timm_v2.SwinTransformerV2Block if v2 else timm_v1.SwinTransformerBlock)(dynamic_mask=True, **args)
    ours = (fnn.SwinTransformerBlockV2 if v2 else fnn.SwinTransformerBlock)(**args)
    theirs = randomize(theirs, seed=1).double()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return theirs, ours.double()


def outputs_and_grads(module, x, grad):
    module.zero_grad()
    x = x.clone().requires_grad_()
    out = module(x)
    out.backward(grad)
    return out.detach(), x.grad, {n: p.grad for n, p in module.named_parameters()}


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
@pytest.mark.parametrize("case", BLOCK_CASES, ids=str)
def test_block_matches_timm(v2, case):
    theirs, ours = timm_and_fastswin_blocks(v2, case)
    assert (ours.window_size, ours.shift_size) == (tuple(theirs.window_size), tuple(theirs.shift_size))
    H, W = case[:2]
    x = random_tensor((2, H, W, 16), torch.float64, "cpu", 2)
    grad = random_tensor((2, H, W, 16), torch.float64, "cpu", 3)
    want_out, want_dx, want_grads = outputs_and_grads(theirs, x, grad)
    got_out, got_dx, got_grads = outputs_and_grads(ours, x, grad)
    torch.testing.assert_close(got_out, want_out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got_dx, want_dx, rtol=1e-10, atol=1e-10)
    assert got_grads.keys() == want_grads.keys()
    for name in want_grads:
        torch.testing.assert_close(got_grads[name], want_grads[name], rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
@pytest.mark.parametrize("case", BLOCK_CASES, ids=str)
def test_block_runs_the_fused_op(v2, case, monkeypatch):
    """Every case goes through fastswin.ops (a shift timm keeps on a one-window dimension
    too: always_shift), not an unfused composition."""
    calls = []
    import fastswin.nn.functional as functional
    real = functional.ops.shifted_window_attention
    monkeypatch.setattr(functional.ops, "shifted_window_attention",
                        lambda *a, **k: calls.append((k["order"], k["always_shift"])) or real(*a, **k))
    _, ours = timm_and_fastswin_blocks(v2, case)
    ours(random_tensor((1, *case[:2], 16), torch.float64, "cpu", 4))
    assert calls == [("timm", True)]


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
@pytest.mark.parametrize("case", BLOCK_CASES[4:], ids=["always_partition", "dynamic_size", "shorter_than_shift"])
def test_kept_shift_on_the_fused_kernels_matches_timm(v2, case):
    """The Triton kernels (compiled on a GPU, interpreted here) shift and mask a dimension
    the padded map fills with one window where timm does: outputs and every gradient."""
    theirs, ours = timm_and_fastswin_blocks(v2, case)
    dtype = torch.float64 if INTERPRETED else torch.float32
    ours.to(KERNEL_DEVICE, dtype).backend = "triton"
    x = random_tensor((2, *case[:2], 16), torch.float64, "cpu", 12)
    grad = random_tensor((2, *case[:2], 16), torch.float64, "cpu", 13)
    want_out, want_dx, want_grads = outputs_and_grads(theirs, x, grad)
    got_out, got_dx, got_grads = outputs_and_grads(ours, x.to(KERNEL_DEVICE, dtype), grad.to(KERNEL_DEVICE, dtype))
    tolerance = dict(rtol=1e-7, atol=1e-7) if INTERPRETED else dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_out.cpu().double(), want_out, **tolerance)
    torch.testing.assert_close(got_dx.cpu().double(), want_dx, **tolerance)
    for name in want_grads:
        torch.testing.assert_close(got_grads[name].cpu().double(), want_grads[name], **tolerance, msg=name)


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_attention_dropout(v2):
    """attn_drop applies in training only (unfused path); in eval the block equals timm's."""
    theirs, ours = timm_and_fastswin_blocks(v2, BLOCK_CASES[1], attn_drop=0.5)
    x = random_tensor((2, 15, 13, 16), torch.float64, "cpu", 5)
    theirs.eval()
    ours.eval()
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-10, atol=1e-10)
    ours.train()
    torch.manual_seed(0)
    dropped = ours(x)
    assert torch.isfinite(dropped).all()
    assert not torch.allclose(dropped, theirs(x))


@pytest.mark.parametrize("merge", ["v1", "v2"])
@pytest.mark.parametrize("size", [(8, 8), (7, 10), (5, 3)])
def test_patch_merging_matches_timm(merge, size):
    theirs_cls, ours_cls = {"v1": (timm_v1.PatchMerging, fnn.PatchMerging),
                            "v2": (timm_v2.PatchMerging, fnn.PatchMergingV2)}[merge]
    theirs = randomize(theirs_cls(dim=8), seed=6).double()
    ours = ours_cls(dim=8).double()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = random_tensor((2, *size, 8), torch.float64, "cpu", 7)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-12, atol=1e-12)
    assert ours(x).shape == (2, (size[0] + 1) // 2, (size[1] + 1) // 2, 16)


def test_v2_bias_cache():
    """Cached in eval without autograd; recomputed after an in-place parameter change or train()."""
    attn = randomize(fnn.WindowAttentionV2(16, window_size=4, num_heads=2), seed=8).eval()
    with torch.no_grad():
        first = attn.relative_position_bias()
        assert attn.relative_position_bias() is first
        attn.cpb_mlp[2].weight.mul_(2)  # e.g. an optimizer step
        second = attn.relative_position_bias()
        assert second is not first and not torch.allclose(second, first)
        torch.testing.assert_close(second, attn._compute_bias())
    attn.train()
    assert attn._bias_cache is None
    assert attn.relative_position_bias().requires_grad  # never cached (nor detached) with autograd on


def test_v2_set_input_size_matches_timm():
    case = (16, 16, (16, 16), 4, 2, False)
    theirs, ours = timm_and_fastswin_blocks(True, case)
    theirs.set_input_size((16, 16), (8, 8))
    ours.set_input_size((16, 16), (8, 8))
    assert (ours.window_size, ours.shift_size) == ((8, 8), (4, 4)) == (theirs.window_size, theirs.shift_size)
    x = random_tensor((1, 16, 16, 16), torch.float64, "cpu", 9)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-10, atol=1e-10)


@pytest.mark.filterwarnings("ignore::UserWarning")  # from timm's own table interpolation
def test_v1_set_input_size_resamples_the_bias_table():
    case = (16, 16, (16, 16), 4, 2, False)
    theirs, ours = timm_and_fastswin_blocks(False, case)
    table = ours.attn.relative_position_bias_table.detach().clone()
    ours.set_input_size((16, 16), (4, 4))  # same window: nothing changes
    assert torch.equal(ours.attn.relative_position_bias_table, table)
    ours.set_input_size((16, 16), (8, 8))
    theirs.set_input_size((16, 16), (8, 8))
    assert ours.attn.relative_position_bias_table.shape == theirs.attn.relative_position_bias_table.shape == (225, 2)
    assert (ours.window_size, ours.shift_size) == ((8, 8), (4, 4)) == (theirs.window_size, theirs.shift_size)
    # timm resamples with its own interpolation; with timm's table the outputs match exactly
    ours.attn.relative_position_bias_table.data.copy_(theirs.attn.relative_position_bias_table)
    x = random_tensor((1, 16, 16, 16), torch.float64, "cpu", 13)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("order", ["timm", "torchvision"])
def test_kept_shift_composition_matches_torchvision_order(order):
    """The dropout path without dropout and window_attention_map equal the op (both orders)."""
    qkv = random_tensor((2, 13, 10, 24), torch.float64, "cpu", 10)
    bias = random_tensor((2, 16, 16), torch.float64, "cpu", 11)
    qkv_bias = random_tensor((24,), torch.float64, "cpu", 12)
    from fastswin import ops
    want = ops.shifted_window_attention(qkv, 2, 4, 2, bias, qkv_bias=qkv_bias, order=order, backend="reference")
    from fastswin.nn import functional
    got = functional._unfused(qkv, 2, (4, 4), (2, 2), bias, None, qkv_bias, order, 0.0)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    got = window_attention_map(qkv, 2, (4, 4), (2, 2), bias=bias, qkv_bias=qkv_bias, order=order)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
