"""What the attention ops accept: ValueError for inputs that no backend can run, and
the Triton backend's can-run checks (None, or why the kernels cannot run valid inputs).
"""
import math
from typing import NamedTuple, Optional

import torch

from fastswin._extension import compiled_backend_reason
from fastswin.backends import requested_backend, triton_reason
from fastswin.ops.arguments import check_window

MAX_TOKENS = 1024  # 32 x 32 windows
HEAD_DIM_RANGE = (4, 256)
GPU_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# Auto mode trains through the kernels up to this many tokens a window. Past it the
# backward is bound by re-reads and per-score work, predicted at 0.8-1.6x eager's time on
# an H200 (benchmarks/PREDICTIONS-large-windows.md), not yet measured: until a GPU run
# shows it faster, auto keeps the library's eager path for training there (the forward,
# predicted 4-8x faster than eager, runs fused whenever no gradient is needed).
AUTO_TRAINING_MAX_TOKENS = 256


def triton_kernels_reason(n: int, head_dim: int, dtype: torch.dtype, device: torch.device,
                          forced: bool, training: bool = False) -> Optional[str]:
    """Why the attention kernels cannot run windows of n tokens of head_dim channels of
    dtype on device (shared by every op built on them), or None. training: gradients
    will flow back through the call."""
    reason = triton_reason(device, forced, dtype)
    if reason is not None:
        return reason
    if n > MAX_TOKENS:
        return f"windows of N = {n} tokens; the kernels take N <= {MAX_TOKENS}"
    if training and not forced and n > AUTO_TRAINING_MAX_TOKENS:
        return (f"windows of N = {n} tokens with gradients; auto mode trains through the kernels up to "
                f"N = {AUTO_TRAINING_MAX_TOKENS} until a GPU run measures the backward faster than eager there "
                f"(backend='triton' runs it)")
    if not HEAD_DIM_RANGE[0] <= head_dim <= HEAD_DIM_RANGE[1]:
        return f"head_dim {head_dim}; the kernels take {HEAD_DIM_RANGE[0]} to {HEAD_DIM_RANGE[1]}"
    # fp64 only in the interpreter: it is how gradcheck runs through the kernels.
    dtypes = GPU_DTYPES if device.type == "cuda" else GPU_DTYPES + (torch.float64,)
    if dtype not in dtypes:
        return f"dtype {dtype}; the kernels take {', '.join(str(t) for t in dtypes)} on {device.type}"
    return None


# ----------------------------------------------------------------------------- window layout


def check_windows(q, k, v, bias, mask, op: str = "window_attention") -> None:
    """ValueError for window-layout inputs no backend can run."""
    if q.dim() != 4:
        raise ValueError(f"fastswin.{op}: q must be (B_, heads, N, d), got shape {tuple(q.shape)}")
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"fastswin.{op}: q, k, v must have one shape, got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if not q.dtype.is_floating_point or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"fastswin.{op}: q, k, v must share one float dtype, got {q.dtype}, "
                         f"{k.dtype}, {v.dtype}")
    B_, heads, n, d = q.shape
    if d == 0:
        raise ValueError(f"fastswin.{op}: q, k, v must have a head_dim of at least 1, got shape {tuple(q.shape)}")
    named = {"q": q, "k": k, "v": v, "bias": bias, "mask": mask}
    devices = {name: t.device for name, t in named.items() if t is not None}
    if len(set(devices.values())) > 1:
        raise ValueError(f"fastswin.{op}: all tensors must be on one device, got {devices}")
    if bias is not None and (tuple(bias.shape) != (heads, n, n) or not bias.dtype.is_floating_point):
        raise ValueError(f"fastswin.{op}: bias must be a float (heads, N, N) = {(heads, n, n)} "
                         f"tensor, got {bias.dtype} {tuple(bias.shape)}")
    if mask is not None:
        if mask.dim() != 3 or tuple(mask.shape[1:]) != (n, n) or not mask.dtype.is_floating_point:
            raise ValueError(f"fastswin.{op}: mask must be a float (nW, N, N) tensor with N = {n}, "
                             f"got {mask.dtype} {tuple(mask.shape)}")
        if mask.shape[0] == 0 or B_ % mask.shape[0]:
            raise ValueError(f"fastswin.{op}: B_ = {B_} windows is not a multiple of the mask's "
                             f"nW = {mask.shape[0]}")


def check_logit_scale(logit_scale, q: torch.Tensor) -> None:
    """ValueError unless logit_scale is a float (heads, 1, 1) tensor on q's device."""
    heads = q.shape[1]
    if (not isinstance(logit_scale, torch.Tensor) or tuple(logit_scale.shape) != (heads, 1, 1)
            or not logit_scale.dtype.is_floating_point):
        got = (f"{logit_scale.dtype} {tuple(logit_scale.shape)}" if isinstance(logit_scale, torch.Tensor)
               else type(logit_scale).__name__)
        raise ValueError(f"fastswin.cosine_window_attention: logit_scale must be a float (heads, 1, 1) = "
                         f"{(heads, 1, 1)} tensor, got {got}")
    if logit_scale.device != q.device:
        raise ValueError(f"fastswin.cosine_window_attention: all tensors must be on one device, got "
                         f"q on {q.device}, logit_scale on {logit_scale.device}")


def needs_grad(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether autograd will differentiate a call on these tensors."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def windows_triton_reason(q: torch.Tensor, backend: Optional[str], training: bool = False) -> Optional[str]:
    """Why the Triton kernels cannot run these (valid) window-layout inputs, or None."""
    forced = requested_backend(backend) == "triton"
    return triton_kernels_reason(q.shape[-2], q.shape[-1], q.dtype, q.device, forced, training)


# ----------------------------------------------------------------------------- image layout


def map_dims(qkv) -> int:
    """The spatial dims of a qkv map, 2 or 3; ValueError for anything but (B, H, W, 3C)
    and (B, T, H, W, 3C)."""
    if qkv.dim() not in (4, 5) or qkv.shape[-1] % 3:
        raise ValueError(f"fastswin.shifted_window_attention: qkv must be (B, H, W, 3C) or (B, T, H, W, 3C), got "
                         f"{tuple(qkv.shape)}")
    return qkv.dim() - 2


def check_map(qkv, num_heads, window_size, shift_size, bias, logit_scale, qkv_bias, order) -> None:
    """ValueError for image-layout inputs no backend can run (sizes already tuples of one
    entry per spatial dim)."""
    map_dims(qkv)
    if not qkv.dtype.is_floating_point:
        raise ValueError(f"fastswin.shifted_window_attention: qkv must be a float tensor, got {qkv.dtype}")
    C = qkv.shape[-1] // 3
    if num_heads < 1 or C % num_heads:
        raise ValueError(f"fastswin.shifted_window_attention: C={C} is not divisible by num_heads={num_heads}")
    check_window(window_size, shift_size, "shifted_window_attention")
    if any(shift >= window for shift, window in zip(shift_size, window_size)):
        # As timm requires; the shift mask's regions are defined for 0 <= shift < window only.
        raise ValueError(f"fastswin.shifted_window_attention: shift_size must be smaller than window_size, got "
                         f"shift {shift_size}, window {window_size}")
    if order not in ("torchvision", "timm"):
        raise ValueError(f"fastswin.shifted_window_attention: order must be 'torchvision' or 'timm', got {order!r}")
    N = math.prod(window_size)
    expected = {"bias": (bias, (num_heads, N, N)), "logit_scale": (logit_scale, (num_heads, 1, 1)),
                "qkv_bias": (qkv_bias, (3 * C,))}
    for name, (tensor, shape) in expected.items():
        if tensor is None:
            continue
        if tuple(tensor.shape) != shape or not tensor.dtype.is_floating_point:
            raise ValueError(f"fastswin.shifted_window_attention: {name} must be a float {shape} tensor, got "
                             f"{tensor.dtype} {tuple(tensor.shape)}")
        if tensor.device != qkv.device:
            raise ValueError(f"fastswin.shifted_window_attention: {name} is on {tensor.device}, qkv on {qkv.device}")


def map_triton_reason(num_heads: int, head_dim: int, window_size, dtype: torch.dtype, device: torch.device,
                      backend: Optional[str], training: bool = False) -> Optional[str]:
    """Why the image-layout kernels cannot run maps of these (valid) sizes, or None."""
    forced = requested_backend(backend) == "triton"
    return triton_kernels_reason(math.prod(window_size), head_dim, dtype, device, forced, training)


# Measured, Swin-T at batch 8 on a 2-core Intel Xeon (interleaved medians), a patched
# training step through the fused CPU kernels against the library's own: fp32 1.34x timm,
# 1.35x torchvision, 1.37x Hugging Face; with denormals flushed in the library too (as a
# CPU without denormal penalties runs it) 1.13x, 1.05x, 1.10x. In bf16 autocast 0.96x
# timm (its bf16 matmuls run on the matrix units; the kernels compute in fp32), 1.34x
# Hugging Face. (A 2-core AMD EPYC measured the fp32 step at 0.98x timm's, before the
# products' memory broadcasts, attention_tiles.h.)
CPU_TRAINING_LIMIT = ("with gradients on bf16 / fp16 inputs auto does not pick the fused CPU kernels: they compute "
                      "in fp32, and a patched timm training step in bf16 autocast measured 0.96x timm's; "
                      "backend='cpu' forces them")
LOW_PRECISION = (torch.bfloat16, torch.float16)


class PlainMap(NamedTuple):
    """An unshifted map without padding, as the CPU auto choice weighs it: its windows per
    image and tokens per window."""
    windows: int
    tokens: int


# Measured on the same Xeon, the fused CPU kernels against the reference on unshifted maps
# without padding (interleaved medians): one window, forward + backward 0.61-0.88x at 64-392
# tokens (Swin-T's stage 4, 49 tokens: 0.81-1.08x) and forward 0.62-0.83x at 98-392 tokens
# (1.07-1.3x at 49, 1.08-1.22x at 64); torchvision swin3d_t's unshifted windows of 392
# tokens, forward + backward 0.57x (4 windows) and 1.07x (16). Where the map is shifted
# the kernels fuse the roll and the mask: 3-5.8x.
CPU_PLAIN_TOKENS = 64
CPU_PLAIN_MAP = ("auto runs an unshifted map without padding on the reference where the fused CPU kernels measured "
                 "slower: with gradients one window or windows of more than 64 tokens, without them one window of "
                 "more than 64 tokens (no roll, mask or padding to fuse there)")


def plain_map_prefers_reference(plain: Optional[PlainMap], training: bool) -> bool:
    """Whether an unshifted map without padding (None: any other map) runs faster on the
    reference than on the fused CPU kernels (CPU_PLAIN_MAP)."""
    if plain is None:
        return False
    large = plain.tokens > CPU_PLAIN_TOKENS
    return (training and (plain.windows == 1 or large)) or (plain.windows == 1 and large)


def cpu_kernels_reason(device: torch.device, backend: Optional[str], training: bool = False,
                       dtype: torch.dtype = torch.float32, plain: Optional[PlainMap] = None) -> Optional[str]:
    """Why the fused C++ CPU kernels (either layout) do not run these inputs, or None: they
    run CPU tensors of any size; in auto mode, with gradients only in fp32 / fp64
    (CPU_TRAINING_LIMIT), and on the image layout not where an unshifted map without
    padding (plain) runs faster on the reference (CPU_PLAIN_MAP)."""
    reason = compiled_backend_reason("cpu", device)
    if reason is None and requested_backend(backend) == "auto":
        if training and dtype in LOW_PRECISION:
            return CPU_TRAINING_LIMIT
        if plain_map_prefers_reference(plain, training):
            return CPU_PLAIN_MAP
    return reason
