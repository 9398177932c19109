"""The baselines fastswin's attention benchmarks are timed against, in the same run.

Window layout (q, k, v of shape (B_, heads, N, d), bias (heads, N, N), shift mask (nW, N, N)):
  eager    the reference composition (matmul, + bias + mask, softmax, matmul);
  sdpa     F.scaled_dot_product_attention with bias + mask as one (B_, heads, N, N) attn_mask;
  flex     FlexAttention, compiled, the bias and mask added in a score_mod (no (B_, heads, N, N)
           tensor in memory), on CUDA only;
  compile  torch.compile of the reference.
flex and compile are the compiled baselines: timed with with_compile only (a compile
per shape, dtype and mode costs seconds).
Image layout ((B, H, W, 3C) qkv map): the same attentions inside the eager pad / roll /
partition ... reverse composition, and fastswin's own composed backend (CUDA).
"""
import functools
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F

from fastswin import ops, reference
from fastswin.backends import logger

# Every (shape, dtype, grad) case compiles flex_attention anew (static shapes: its fastest
# kernels). Past dynamo's default limit of 8 it would quietly run the unfused eager path.
FLEX_RECOMPILE_LIMIT = 512


def sdpa_attention(q, k, v, bias, mask):
    """PyTorch SDPA with bias + mask as one (B_, heads, N, N) attn_mask: how a user would call it."""
    attn_mask = bias.expand(q.shape[0], *bias.shape)
    if mask is not None:
        nW = mask.shape[0]
        attn_mask = (attn_mask.view(-1, nW, *bias.shape) + mask[None, :, None]).flatten(0, 1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)


# ----------------------------------------------------------------------------- FlexAttention


@functools.lru_cache(maxsize=None)
def compiled_flex_attention() -> Callable:
    """torch.compile(flex_attention), as its docs require for a fused kernel, with room for
    one compile per benchmark case."""
    from torch.nn.attention.flex_attention import flex_attention

    compiled = torch.compile(flex_attention, dynamic=False)

    def attend(*args, **kwargs):
        with torch._dynamo.config.patch(recompile_limit=FLEX_RECOMPILE_LIMIT):
            return compiled(*args, **kwargs)
    return attend


def swin_score_mod(bias: Optional[torch.Tensor], mask: Optional[torch.Tensor],
                   head_scale: Optional[torch.Tensor] = None) -> Callable:
    """score_mod of a Swin window: [head_scale[h] *] score + bias[h, q, kv] + mask[b % nW, q, kv]."""
    nW = 1 if mask is None else mask.shape[0]

    def score_mod(score, b, h, q_idx, kv_idx):
        if head_scale is not None:
            score = score * head_scale[h]
        if bias is not None:
            score = score + bias[h, q_idx, kv_idx]
        if mask is not None:
            score = score + mask[b % nW, q_idx, kv_idx]
        return score
    return score_mod


def flex_window_attention(q, k, v, bias, mask, attend: Optional[Callable] = None):
    """Swin v1 window attention as FlexAttention (its default scale is Swin's, d^-0.5).
    attend: the flex_attention to call (default: the compiled one)."""
    attend = attend or compiled_flex_attention()
    return attend(q, k, v, score_mod=swin_score_mod(bias, mask))


def flex_cosine_window_attention(q, k, v, logit_scale, bias, mask, attend: Optional[Callable] = None):
    """Swin v2 cosine attention as FlexAttention: q and k normalized outside it, its scale
    off, the clamped exp(logit_scale) of each head multiplying the cosine in the score_mod."""
    attend = attend or compiled_flex_attention()
    head_scale = torch.clamp(logit_scale, max=reference.LOGIT_SCALE_MAX).exp().flatten()
    return attend(F.normalize(q, dim=-1), F.normalize(k, dim=-1), v, scale=1.0,
                  score_mod=swin_score_mod(bias, mask, head_scale))


def flex_shifted_window_attention(qkv, heads: int, window: reference.Sizes, shift: reference.Sizes, bias,
                                  logit_scale=None, qkv_bias=None, attend: Optional[Callable] = None):
    """The eager image-layout composition (pad, roll, partition, attention, reverse, roll
    back, crop; torchvision's order) with FlexAttention as the attention. window, shift:
    (h, w), or (t, h, w) on video maps."""
    return reference.compose_shifted_window_attention(
        qkv, heads, window, shift, bias, logit_scale, qkv_bias, "torchvision",
        partition=reference.window_partition, reverse=reference.merge_windows,
        attention=functools.partial(flex_window_attention, attend=attend),
        cosine_attention=functools.partial(flex_cosine_window_attention, attend=attend))


def _flex_probe(device: torch.device, dtype: torch.dtype) -> None:
    """Compiled flex forward and backward, bias gradient and shift mask included, at a tiny shape."""
    q, k, v, bias = (torch.randn(*shape, device=device, dtype=dtype, requires_grad=True)
                     for shape in [(2, 2, 49, 32)] * 3 + [(2, 49, 49)])
    mask = reference.shift_attention_mask(14, 7, (7, 7), (3, 3), device, dtype)  # two windows
    out = flex_window_attention(q, k, v, bias, mask)
    torch.autograd.grad(out.sum(), (q, bias))


@functools.lru_cache(maxsize=None)
def flex_unavailable(device: torch.device, dtype: torch.dtype) -> Optional[str]:
    """Why compiled FlexAttention cannot be a baseline on this device and dtype; None when it can."""
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except ImportError:
        return f"torch {torch.__version__} has no torch.nn.attention.flex_attention"
    if device.type != "cuda":
        # Uncompiled flex is the unfused path, no baseline; compiled on CPU it has no backward.
        return f"FlexAttention is timed compiled on CUDA only, not on {device.type} (no backward there)"
    try:
        _flex_probe(device, dtype)
    except Exception as error:  # an Inductor or Triton failure must not end the benchmark
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return f"compiled flex_attention fails on {device} in {dtype}: {type(error).__name__}: {detail}"
    return None


def with_flex(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether to time the flex baseline here; says why not in a DEBUG log."""
    reason = flex_unavailable(device, dtype)
    if reason:
        logger.debug("bench: no FlexAttention baseline: %s", reason)
    return reason is None


# ----------------------------------------------------------------------------- baselines by section


def attention_baselines(device: torch.device, dtype: torch.dtype, with_compile: bool) -> Dict[str, Callable]:
    """Window-layout baselines, each called as fn(q, k, v, bias, mask)."""
    baselines = {"eager": reference.window_attention, "sdpa": sdpa_attention}
    if with_compile and with_flex(device, dtype):
        baselines["flex"] = flex_window_attention
    if with_compile:
        baselines["compile"] = torch.compile(reference.window_attention)
    return baselines


def image_baselines(device: torch.device, dtype: torch.dtype, heads: int, window: reference.Sizes,
                    shift: reference.Sizes,
                    logit_scale, qkv_bias, with_compile: bool) -> Dict[str, Callable]:
    """Image-layout baselines, each called as fn(qkv, bias): the eager reference path, on
    CUDA fastswin's composed backend (partition kernel + fused window attention +
    reverse), the eager path with FlexAttention, and torch.compile of the eager path."""
    def backend(name):
        return lambda x, b: ops.shifted_window_attention(x, heads, window, shift, b, logit_scale=logit_scale,
                                                         qkv_bias=qkv_bias, backend=name)

    baselines = {"eager": backend("reference")}
    if device.type == "cuda":
        baselines["composed"] = backend("cuda")
    if with_compile and with_flex(device, dtype):
        baselines["flex"] = lambda x, b: flex_shifted_window_attention(x, heads, window, shift, b, logit_scale,
                                                                       qkv_bias)
    if with_compile:
        baselines["compile"] = torch.compile(lambda x, b: reference.shifted_window_attention(
            x, heads, window, shift, b, logit_scale, qkv_bias))
    return baselines
