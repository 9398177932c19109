"""Auto mode trains through the attention kernels up to AUTO_TRAINING_MAX_TOKENS a window
(their backward is not yet measured faster than eager past it); without gradients, or
with the Triton backend forced, they run at any N they take. Here the kernels' device
check is stubbed to pass, as on a GPU, so that auto's own limit is what decides."""
import pytest
import torch

from fastswin import ops, reference
from fastswin.ops.attention import checks
from fastswin.ops.attention.checks import AUTO_TRAINING_MAX_TOKENS


@pytest.fixture
def kernels_can_run(monkeypatch):
    monkeypatch.setattr(checks, "triton_reason", lambda device, forced, dtype=None: None)


@pytest.mark.parametrize("n", [AUTO_TRAINING_MAX_TOKENS + 1, 576])
def test_auto_keeps_the_eager_backward_past_the_limit(kernels_can_run, n):
    reason = checks.triton_kernels_reason(n, 32, torch.bfloat16, torch.device("cuda"), forced=False, training=True)
    assert f"N = {n} tokens with gradients" in reason and "backend='triton'" in reason


@pytest.mark.parametrize("forced, training, n", [(False, False, 576), (True, True, 576),
                                                 (False, True, AUTO_TRAINING_MAX_TOKENS)])
def test_kernels_run_without_gradients_forced_or_up_to_the_limit(kernels_can_run, forced, training, n):
    assert checks.triton_kernels_reason(n, 32, torch.bfloat16, torch.device("cuda"), forced, training) is None


def test_window_attention_with_gradients_runs_the_reference(kernels_can_run, monkeypatch):
    calls = []
    eager = reference.window_attention
    monkeypatch.setattr(reference, "window_attention", lambda *args: calls.append(1) or eager(*args))
    q, k, v = torch.randn(3, 1, 1, 576, 8, dtype=torch.bfloat16).unbind(0)  # bf16: not the C++ kernels either
    out = ops.window_attention(q.requires_grad_(), k, v, backend="auto")
    out.sum().backward()
    assert calls == [1] and q.grad is not None


@pytest.mark.parametrize("training, runs", [(False, "triton"), (True, "reference")])
def test_map_backend_and_reason_follow_training(kernels_can_run, training, runs):
    """What the patch report and the run-time check see for SwinV2-384's 24 x 24 windows (on
    bf16 CPU tensors with gradients auto's next fused backend, the C++ kernels, is not
    picked either: checks.CPU_TRAINING_LIMIT)."""
    chosen, reason = ops.shifted_window_attention_backend(4, 32, (24, 24), torch.bfloat16, torch.device("cpu"),
                                                          training=training)
    assert chosen == runs
    assert (reason is None) == (not training)
    if training:
        assert "N = 576 tokens with gradients" in reason


@pytest.mark.parametrize("window, trains_fused", [((24, 24), False), ((16, 16), True)], ids=["N576", "N256"])
def test_patch_report_says_what_runs_with_gradients(kernels_can_run, window, trains_fused):
    """A module is reported on the fused kernels (what inference runs) and, past the
    limit, with what calls with gradients run instead."""
    from fastswin.integrations._core import Target, runs_on
    target = Target(kind="test", attr="forward", fused=None, geometry=lambda module: (4, 32, window))
    runs, fused = runs_on(torch.nn.Linear(4, 4, device="meta"), target, None)
    assert fused and runs.startswith("the fused Triton kernels (meta, float32)")
    assert ("with gradients" not in runs) == trains_fused
    if not trains_fused:
        assert runs.endswith("with gradients the reference backend, not fused: windows of N = 576 tokens with "
                             "gradients; auto mode trains through the kernels up to N = 256 until a GPU run measures "
                             "the backward faster than eager there (backend='triton' runs it)")


@pytest.mark.parametrize("size, dtype, fused", [(14, torch.float32, True), (7, torch.float32, False),
                                                (14, torch.bfloat16, False)], ids=["4-windows", "1-window", "bf16"])
def test_cpu_auto_training_picks_the_kernels_where_they_are_faster(monkeypatch, size, dtype, fused):
    """With gradients on CPU, auto runs the fused C++ kernels in fp32 on maps of several
    windows; on a map that is one unshifted window (Swin-T's stage 4: checks.CPU_PLAIN_MAP)
    and in bf16 (checks.CPU_TRAINING_LIMIT) the reference. Without gradients, the kernels."""
    from fastswin._extension import HAS_C
    from fastswin.ops.attention import eager

    calls = []
    kernel = eager.cpu_image_attention_op
    monkeypatch.setattr(eager, "cpu_image_attention_op", lambda *args: calls.append(1) or kernel(*args))
    qkv = torch.randn(1, size, size, 3 * 16, dtype=dtype)
    bias = torch.randn(2, 49, 49, requires_grad=True)
    ops.shifted_window_attention(qkv, 2, 7, 3, bias, backend="auto").sum().backward()
    assert len(calls) == (fused and HAS_C) and bias.grad is not None
    with torch.no_grad():
        ops.shifted_window_attention(qkv, 2, 7, 3, bias.detach(), backend="auto")
    assert len(calls) == (fused and HAS_C) + HAS_C


@pytest.mark.parametrize("size, shift, training, fused", [
    ((4, 4, 8), (0, 0, 0), False, False),  # one window of 128 tokens
    ((4, 4, 4), (0, 0, 0), False, True),   # one window of 64
    ((4, 4, 4), (0, 0, 0), True, False),   # one window, with gradients
    ((4, 4, 16), (0, 0, 0), False, True),  # two unshifted windows of 128 tokens
    ((4, 4, 16), (0, 0, 0), True, False),  # the same with gradients
    ((4, 4, 16), (2, 2, 4), True, True),   # shifted: the kernels fuse the roll and the mask
    ((5, 4, 8), (0, 0, 0), True, True),    # padded: they fuse the padding
], ids=["1x128", "1x64", "1x64-grad", "2x128", "2x128-grad", "shifted-grad", "padded-grad"])
def test_cpu_auto_runs_unshifted_maps_on_the_reference_where_it_is_faster(monkeypatch, size, shift, training, fused):
    """On CPU, auto runs an unshifted map without padding on the reference where the fused
    kernels measured slower (checks.CPU_PLAIN_MAP), window (4, 4, 8) or (4, 4, 4); the
    result is the reference's either way."""
    from fastswin._extension import HAS_C
    from fastswin.ops.attention import eager

    calls = []
    kernel = eager.cpu_image_attention_op
    monkeypatch.setattr(eager, "cpu_image_attention_op", lambda *args: calls.append(1) or kernel(*args))
    window = (4, 4, 4) if size == (4, 4, 4) else (4, 4, 8)
    n = window[0] * window[1] * window[2]
    qkv = torch.randn(1, *size, 3 * 16, dtype=torch.float64)
    bias = torch.randn(2, n, n, dtype=torch.float64, requires_grad=training)
    with torch.set_grad_enabled(training):
        out = ops.shifted_window_attention(qkv, 2, window, shift, bias, backend="auto")
    torch.testing.assert_close(out, reference.shifted_window_attention(qkv, 2, window, shift, bias))
    assert len(calls) == (fused and HAS_C)


def test_plain_map_counts_the_windows_and_tokens_of_unshifted_maps_without_padding():
    assert ops.plain_map((14, 21), (7, 7), (0, 0)) == (6, 49)
    assert ops.plain_map((14, 21), (7, 7), (3, 3)) is None   # shifted
    assert ops.plain_map((15, 14), (7, 7), (0, 0)) is None   # padded
    assert ops.plain_map((7, 7), (7, 7), (3, 3)) == (1, 49)  # one window: no shift applies
    assert ops.plain_map((7, 7), (7, 7), (3, 3), always_shift=True) is None
    assert ops.plain_map((8, 7, 7), (8, 7, 7), (4, 3, 3)) == (1, 392)
