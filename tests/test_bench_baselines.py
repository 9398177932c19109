"""The FlexAttention baselines of the benchmarks compute what the reference computes.

Run with flex_attention uncompiled (its math path, on CPU): the score_mod and the
composition around it are what is checked here; compiling them is Inductor's part, and
on a GPU `fastswin bench` first probes that the compiled one runs.
"""
import math
import warnings

import pytest
import torch

from fastswin import bench_baselines, reference

TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def eager_flex():
    """flex_attention without torch.compile, or a skip saying why it cannot run here."""
    try:
        from torch.nn.attention.flex_attention import flex_attention
    except ImportError as error:
        pytest.skip(f"torch {torch.__version__} has no FlexAttention: {error}")

    def attend(*args, **kwargs):
        with warnings.catch_warnings():  # "called without torch.compile": meant here
            warnings.simplefilter("ignore", UserWarning)
            return flex_attention(*args, **kwargs)

    try:
        attend(*torch.randn(3, 1, 1, 16, 16).unbind(0))
    except Exception as error:
        pytest.skip(f"eager FlexAttention cannot run on CPU with torch {torch.__version__}: "
                    f"{type(error).__name__}: {error}")
    return attend


def window_inputs(windows=8, heads=2, window=7, map_size=14):
    """q, k, v (B_, heads, N, d), bias and the shift mask of a map_size x map_size map (nW = 4)."""
    torch.manual_seed(0)
    n = window * window
    q, k, v = torch.randn(3, windows, heads, n, 16).unbind(0)
    bias = torch.randn(heads, n, n, requires_grad=True)
    mask = reference.shift_attention_mask(map_size, map_size, (window, window), (window // 2,) * 2)
    return q, k, v, bias, mask


@pytest.mark.parametrize("shifted", [True, False], ids=["mask", "no-mask"])
def test_flex_window_attention_is_the_reference(eager_flex, shifted):
    q, k, v, bias, mask = window_inputs()
    mask = mask if shifted else None
    out = bench_baselines.flex_window_attention(q, k, v, bias, mask, attend=eager_flex)
    expected = reference.window_attention(q, k, v, bias, mask)
    torch.testing.assert_close(out, expected, **TOL)
    grad = torch.randn_like(out)
    torch.testing.assert_close(torch.autograd.grad(out, bias, grad)[0],
                               torch.autograd.grad(expected, bias, grad)[0], **TOL)


def test_flex_cosine_window_attention_is_the_reference(eager_flex):
    q, k, v, bias, mask = window_inputs()
    logit_scale = torch.log(torch.tensor([10.0, 200.0])).view(2, 1, 1)  # the second one clamped at 100
    out = bench_baselines.flex_cosine_window_attention(q, k, v, logit_scale, bias, mask, attend=eager_flex)
    torch.testing.assert_close(out, reference.cosine_window_attention(q, k, v, logit_scale, bias, mask), **TOL)


@pytest.mark.parametrize("sizes, window, shift", [((10, 9), (4, 4), (2, 2)), ((5, 6, 7), (2, 3, 4), (1, 1, 2))],
                         ids=["2d", "3d"])
@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_flex_shifted_window_attention_is_the_reference(eager_flex, v2, sizes, window, shift):
    """Padded, shifted maps (a video map in 3D windows too): the composition around flex is the eager one."""
    torch.manual_seed(0)
    heads, n = 2, math.prod(window)
    qkv = torch.randn(2, *sizes, 3 * heads * 16)
    bias = torch.randn(heads, n, n)
    qkv_bias = torch.randn(qkv.shape[-1])
    logit_scale = torch.log(10 * torch.ones(heads, 1, 1)) if v2 else None
    out = bench_baselines.flex_shifted_window_attention(qkv, heads, window, shift, bias, logit_scale, qkv_bias,
                                                        attend=eager_flex)
    expected = reference.shifted_window_attention(qkv, heads, window, shift, bias, logit_scale, qkv_bias)
    torch.testing.assert_close(out, expected, **TOL)


def test_no_flex_baseline_on_cpu(caplog):
    """The bench leaves flex out where it is not compiled, saying why at DEBUG level (the
    compiled baselines asked for), and without asking for the compiled baselines."""
    cpu = torch.device("cpu")
    assert bench_baselines.flex_unavailable(cpu, torch.float32)
    assert set(bench_baselines.attention_baselines(cpu, torch.float32, with_compile=False)) == {"eager", "sdpa"}
    with caplog.at_level("DEBUG", logger="fastswin"):
        baselines = bench_baselines.attention_baselines(cpu, torch.float32, with_compile=True)
    assert set(baselines) == {"eager", "sdpa", "compile"}
    assert "no FlexAttention baseline" in caplog.text
