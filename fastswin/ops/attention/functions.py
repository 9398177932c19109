"""The public attention functions, each choosing its backend: `window_attention` and
`cosine_window_attention` on windows, `shifted_window_attention` on the image layout.

Backends: "triton", the fused kernels; "cpu", the fused C++ CPU kernels (cpu_ops.py);
both through the registered ops (custom_ops.py) under torch.compile, and in eager mode
through a call object made once per call signature (eager.py), which runs the same
launchers and kernels with less host time; for shifted_window_attention also
"cuda", fastswin's window partition / reverse kernels composed with the window
attention (the fallback where the Triton kernels cannot run on a GPU); and
"reference", the pure PyTorch ops of fastswin.reference.
"""
import functools
import math
import os
from typing import Callable, Optional, Tuple

import torch

from fastswin import reference
from fastswin._extension import compiled_backend_reason
from fastswin import backends
from fastswin.backends import requested_backend, select_backend
from fastswin.ops.arguments import IntPair, as_sizes
from fastswin.ops.attention.checks import (PlainMap, check_logit_scale, check_map, check_windows, cpu_kernels_reason,
                                           map_dims, map_triton_reason, needs_grad, windows_triton_reason)
from fastswin.ops.attention.cpu_ops import cpu_image_attention_op, cpu_window_attention_op
from fastswin.ops.attention.custom_ops import image_attention_op, window_attention_op
from fastswin.ops.attention.eager import ImageCall, WindowCall
from fastswin.ops.attention.policy import reads_tf32, tf32_matmuls
from fastswin.ops.window_process import window_partition, window_partition_3d, window_reverse, window_reverse_3d


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: Optional[torch.Tensor] = None,
                     mask: Optional[torch.Tensor] = None, scale: Optional[float] = None, *,
                     backend: Optional[str] = None) -> torch.Tensor:
    """Swin-V1 window attention: softmax(scale * q k^T + bias + mask[b % nW]) v, per window and head.

    Args:
        q, k, v: (B_, heads, N, d), same shape, dtype and device; any strides (views
            into a packed qkv, `qkv.reshape(B_, N, 3, heads, d).permute(2, 0, 3, 1, 4)`,
            are read in place; only a non-unit last stride costs a copy).
        bias: (heads, N, N) additive relative-position bias, any float dtype,
            differentiable, or None.
        mask: (nW, N, N) additive shift mask, any float dtype, not differentiable, or
            None; window b uses mask[b % nW], so B_ must be a multiple of nW.
        scale: multiplier of q k^T; default d ** -0.5.
        backend: "auto" (default: $FASTSWIN_BACKEND or auto), "triton", "cpu" or
            "reference". The Triton kernels take N <= 1024, 4 <= d <= 256, fp16 / bf16
            / fp32 CUDA tensors (CPU tensors in the Triton interpreter when forced, fp64
            too); auto trains through them up to N = 256
            (checks.AUTO_TRAINING_MAX_TOKENS) and runs them without gradients at any N.
            The C++ CPU kernels take CPU tensors of any size and float dtype; auto runs
            them with gradients in fp32 / fp64 only (checks.CPU_TRAINING_LIMIT).

    Returns:
        (B_, heads, N, d) in q's dtype; from the Triton and CPU kernels a view of a
        contiguous (B_, N, heads, d) buffer, so `.transpose(1, 2).reshape(B_, N, C)`
        costs no copy.

    The Triton backward sums the bias gradient over groups of windows in each
    program, then adds the groups atomically, or, under
    torch.use_deterministic_algorithms(True) (and whenever a window spans several
    tiles, see tile_config), sums per-group partials in a fixed order.
    """
    # (a tensor scale is read for its value: such calls take the checks every time)
    key = None if isinstance(scale, torch.Tensor) else _signature("window_attention", q, k, v, bias, mask, None,
                                                                   scale, backend)
    call = _CALLS.get(key) if key is not None else None  # (under torch.compile, no lookup to guard on)
    if call is None:
        check_windows(q, k, v, bias, mask)
        scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
        call = _remember(key, _window_call(q, k, v, bias, mask, None, scale, backend))
    return call(q, k, v, bias, mask, None)


def cosine_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, logit_scale: torch.Tensor,
                            bias: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None, *,
                            backend: Optional[str] = None) -> torch.Tensor:
    """Swin-V2 scaled cosine window attention, per window and head:
    softmax(cos(q_i, k_j) * exp(min(logit_scale[h], log 100)) + bias + mask[b % nW]) v.

    Args:
        q, k, v: (B_, heads, N, d), as for `window_attention` (strided views read in
            place). q and k are L2-normalized inside the kernels exactly as
            F.normalize(dim=-1) does (x / max(||x||, 1e-12)); no normalized copies.
        logit_scale: (heads, 1, 1), the raw (log-space) parameter, any float dtype,
            differentiable; its gradient is 0 where the clamp at log 100 is active,
            at exactly log 100 (rounded to the kernel's fp32) too, as torch.clamp's.
            The Triton kernels read it in fp32 (fp64 for fp64 inputs).
        bias: (heads, N, N) additive bias (Swin-V2: 16 * sigmoid(cpb_mlp(...))), any
            float dtype, differentiable, or None.
        mask: (nW, N, N) additive shift mask, not differentiable, or None; window b
            uses mask[b % nW].
        backend: "auto" (default: $FASTSWIN_BACKEND or auto), "triton", "cpu" or
            "reference"; the kernels take what `window_attention`'s do.

    Returns:
        (B_, heads, N, d) in q's dtype; from the Triton and CPU kernels a view of a
        contiguous (B_, N, heads, d) buffer.

    The Triton backward reduces dbias and dlogit_scale inside each program (a group
    of windows of one head) and adds them with one atomic per program, or, under
    torch.use_deterministic_algorithms(True), sums per-program partials in a fixed
    order.
    """
    key = _signature("cosine_window_attention", q, k, v, bias, mask, logit_scale, None, backend)
    call = _CALLS.get(key) if key is not None else None  # (under torch.compile, no lookup to guard on)
    if call is None:
        check_windows(q, k, v, bias, mask, "cosine_window_attention")
        check_logit_scale(logit_scale, q)
        call = _remember(key, _window_call(q, k, v, bias, mask, logit_scale, 1.0, backend))
    return call(q, k, v, bias, mask, logit_scale)


# ----------------------------------------------------------------------------- calls per signature

# The call each signature of the eager ops runs (eager.py; a closure over the reference
# elsewhere): made once, after the checks and the backend choice, so that a repeated call
# only looks up its signature. Under torch.compile nothing is kept (dynamo traces the
# choice and the registered ops).
_CALLS: dict = {}
MAX_CALLS = 1024


def _signature(op: str, *args) -> Optional[tuple]:
    """What a call's checks, backend choice and launch plans depend on: its tensors'
    shapes, strides, dtypes, devices and whether they require gradients, its other
    arguments with their types (True is not 1 there, nor 7.0 7), and the state they read
    (grad mode, $FASTSWIN_BACKEND, a stand-in driver; TF32 for fp32 CUDA inputs, the first
    argument's dtype and device). None under torch.compile
    and for arguments other than tensors, None, scalars and tuples of ints (no call is
    kept: they take the checks every time)."""
    if torch.compiler.is_compiling():
        return None
    key = [op, torch.is_grad_enabled(), os.environ.get(backends.ENV_VAR), backends.STAND_IN_DRIVER,
           reads_tf32(args[0]) and tf32_matmuls()]
    for a in args:
        kind = type(a)
        if kind in _TENSORS:
            key.append((a.shape, a.stride(), a.dtype, a.device, a.requires_grad))
        elif kind in _SCALARS:
            key.append((kind, a))
        elif kind is tuple and all(type(x) is int for x in a):
            key.append(a)
        else:
            return None
    return tuple(key)


_TENSORS = (torch.Tensor, torch.nn.Parameter)  # (subclasses take the checks every time)
_SCALARS = (int, float, bool, str, type(None))


def _remember(key: Optional[tuple], call: Callable) -> Callable:
    if key is not None and not torch.compiler.is_compiling():
        if len(_CALLS) >= MAX_CALLS:
            _CALLS.clear()
        _CALLS[key] = call
    return call


def clear_calls() -> None:
    """Forget the calls kept per signature (tests that change what a choice reads)."""
    _CALLS.clear()


def _window_call(q, k, v, bias, mask, logit_scale, scale: float, backend: Optional[str]) -> Callable:
    """The call of the window-layout op for inputs like these (checked), by its backend:
    call(q, k, v, bias, mask, logit_scale) -> (B_, heads, N, d)."""
    op = "window_attention" if logit_scale is None else "cosine_window_attention"
    training = needs_grad(q, k, v, bias, logit_scale)
    name = select_backend(op, backend, _window_backends(q, backend, training))
    if name == "reference":
        if logit_scale is None:
            return lambda q, k, v, bias, mask, _: reference.window_attention(
                q, k, v, _as_dtype(bias, q.dtype), _as_dtype(mask, q.dtype), scale)
        return lambda q, k, v, bias, mask, logit_scale: reference.cosine_window_attention(
            q, k, v, logit_scale.to(q.dtype), _as_dtype(bias, q.dtype), _as_dtype(mask, q.dtype))
    if torch.compiler.is_compiling():
        fused = window_attention_op if name == "triton" else cpu_window_attention_op
        return lambda q, k, v, bias, mask, logit_scale: fused(q, k, v, bias, mask, logit_scale, scale)[0]
    return WindowCall(name, q, k, v, bias, mask, logit_scale, scale, training)


def _window_backends(q: torch.Tensor, backend: Optional[str], training: bool):
    """The window-layout attention's backends in order of preference, each with its can-run check."""
    return [
        ("triton", lambda: windows_triton_reason(q, backend, training)),
        ("cpu", lambda: cpu_kernels_reason(q.device, backend, training, q.dtype)),
        ("reference", lambda: None),
    ]


def _as_dtype(x: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    return None if x is None else x.to(dtype)


def _map_backends(num_heads, head_dim, window_size, dtype, device, backend, training, plain=None):
    """shifted_window_attention's backends in order of preference, each with its can-run
    check; plain: the map's checks.PlainMap where it is unshifted and not padded."""
    return [
        ("triton", lambda: map_triton_reason(num_heads, head_dim, window_size, dtype, device, backend, training)),
        ("cuda", lambda: compiled_backend_reason("cuda", device)),
        ("cpu", lambda: cpu_kernels_reason(device, backend, training, dtype, plain)),
        ("reference", lambda: None),
    ]


def shifted_window_attention_backend(num_heads: int, head_dim: int, window_size: IntPair, dtype: torch.dtype,
                                     device: torch.device, backend: Optional[str] = None, training: bool = False
                                     ) -> Tuple[str, Optional[str]]:
    """Which backend shifted_window_attention runs maps of these sizes on (window_size: an
    int for a square 2D window, (h, w), or (t, h, w) for video maps), by the op's own
    checks, and why the fused Triton kernels do not (None where they do); training: with
    gradients.

    Raises BackendError where a forced backend cannot run them."""
    window_size = as_sizes(window_size, 3 if _is_triple(window_size) else 2, "window_size")
    chosen = select_backend("shifted_window_attention", backend,
                            _map_backends(num_heads, head_dim, window_size, dtype, device, backend, training))
    fused_reason = map_triton_reason(num_heads, head_dim, window_size, dtype, device, "triton")
    if fused_reason is None and chosen != "triton" and requested_backend(backend) == "auto":  # auto's own limit
        fused_reason = map_triton_reason(num_heads, head_dim, window_size, dtype, device, backend, training)
    return chosen, fused_reason


def plain_map(sizes: reference.Sizes, window_size: reference.Sizes, shift_size: reference.Sizes,
              always_shift: bool = False) -> Optional[PlainMap]:
    """A map of spatial `sizes` as shifted_window_attention (same arguments) attends it:
    its windows per image and tokens per window where it is neither shifted nor padded
    (checks.PlainMap: where auto may prefer the reference on CPU), else None."""
    shift = shift_size if always_shift else reference.effective_shifts(sizes, window_size, shift_size)
    if any(shift) or any([size % window for size, window in zip(sizes, window_size)]):  # (lists: dynamo)
        return None
    return PlainMap(math.prod([size // window for size, window in zip(sizes, window_size)]), math.prod(window_size))


def _is_triple(size: IntPair) -> bool:
    return not isinstance(size, int) and len(size) == 3


def _shift_mask(sizes, window_size, shift_size, device, dtype) -> torch.Tensor:
    """reference.region_mask, built once per map size, window and shift in eager mode;
    traced (and constant-folded) under torch.compile."""
    if torch.compiler.is_compiling():
        return reference.region_mask(sizes, window_size, shift_size, device, dtype)
    return _cached_shift_mask(sizes, window_size, shift_size, device, dtype)


@functools.lru_cache(maxsize=64)
def _cached_shift_mask(sizes, window_size, shift_size, device, dtype) -> torch.Tensor:
    with torch.inference_mode(False):  # a normal tensor even when first asked for under inference mode
        return reference.region_mask(sizes, window_size, shift_size, device, dtype)


def shifted_window_attention(qkv: torch.Tensor, num_heads: int, window_size: IntPair, shift_size: IntPair,
                             bias: Optional[torch.Tensor] = None, *, logit_scale: Optional[torch.Tensor] = None,
                             qkv_bias: Optional[torch.Tensor] = None, order: str = "torchvision",
                             always_shift: bool = False, backend: Optional[str] = None) -> torch.Tensor:
    """Shifted-window attention of a (B, H, W, 3C) qkv map, or of a (B, T, H, W, 3C) video
    map in 3D windows, in place of roll, pad, partition, window attention, reverse and
    crop.

    Args:
        qkv: (B, H, W, 3C) or (B, T, H, W, 3C), the qkv Linear applied to the
            un-partitioned map; channels ordered [q | k | v] x heads x head_dim.
        num_heads: heads; head_dim = C / num_heads.
        window_size, shift_size: int or (h, w); for video maps int or (t, h, w). No shift
            along a dimension that the padded map fills with one window (torchvision's
            rule), unless always_shift.
        bias: (heads, N, N) relative-position bias (N = wh * ww, or wt * wh * ww),
            differentiable.
        logit_scale: (heads, 1, 1), the raw Swin-V2 parameter: cosine attention with
            logits scaled by exp(min(logit_scale, log 100)). None: v1 attention with
            scale head_dim^-0.5.
        qkv_bias: (3C,), what padded positions read (the qkv Linear's output for a
            zero token); zeros when None.
        order: "torchvision" (pad, then roll) or "timm" (roll, then pad); they differ
            only on maps that are not multiples of the window.
        always_shift: shift (and mask) along every dimension as given, as timm and
            Hugging Face do with always_partition=True or on maps smaller than built for,
            and MaskFormer always.
        backend: "auto", "triton" (the fused image-layout kernels), "cpu" (the fused
            C++ CPU kernels), "cuda" or "reference" (see the module docstring).

    Returns:
        (B, [T,] H, W, C): the attention output at the original positions, before the
        output projection.
    """
    key = _signature("shifted_window_attention", qkv, num_heads, window_size, shift_size, bias, logit_scale,
                     qkv_bias, order, always_shift, backend)
    call = _CALLS.get(key) if key is not None else None  # (under torch.compile, no lookup to guard on)
    if call is None:
        call = _remember(key, _map_call(qkv, num_heads, window_size, shift_size, bias, logit_scale, qkv_bias, order,
                                        always_shift, backend))
    return call(qkv, bias, logit_scale, qkv_bias)


def _map_call(qkv, num_heads, window_size, shift_size, bias, logit_scale, qkv_bias, order, always_shift,
              backend) -> Callable:
    """The call of shifted_window_attention for inputs like these (checked here), by its
    backend: call(qkv, bias, logit_scale, qkv_bias) -> (B, [T,] H, W, C)."""
    dims = map_dims(qkv)
    window_size, shift_size = as_sizes(window_size, dims, "window_size"), as_sizes(shift_size, dims, "shift_size")
    check_map(qkv, num_heads, window_size, shift_size, bias, logit_scale, qkv_bias, order)

    def on_reference(qkv, bias, logit_scale, qkv_bias):
        return reference.shifted_window_attention(qkv, num_heads, window_size, shift_size, bias, logit_scale,
                                                  qkv_bias, order, always_shift)

    if qkv.numel() == 0:  # an empty map attends to nothing: the reference's empty result
        return on_reference
    sizes = tuple(qkv.shape[1:-1])
    shift = shift_size if always_shift else reference.effective_shifts(sizes, window_size, shift_size)
    training = needs_grad(qkv, bias, logit_scale, qkv_bias)
    chosen = select_backend("shifted_window_attention", backend,
                            _map_backends(num_heads, qkv.shape[-1] // (3 * num_heads), window_size, qkv.dtype,
                                          qkv.device, backend, training,
                                          plain_map(sizes, window_size, shift, always_shift=True)))
    if chosen in ("triton", "cpu"):
        # bias and qkv_bias are read in their own dtype (fp32 parameters under autocast keep
        # their precision) and their gradients come back in it.
        if not torch.compiler.is_compiling():
            return ImageCall(chosen, qkv, bias, logit_scale, qkv_bias, num_heads, window_size, shift,
                             order == "timm", training)
        fused = image_attention_op if chosen == "triton" else cpu_image_attention_op
        return lambda qkv, bias, logit_scale, qkv_bias: fused(qkv, bias, logit_scale, qkv_bias, num_heads,
                                                              list(window_size), list(shift), order == "timm")[0]
    if chosen == "reference":
        return on_reference
    partition, reverse = _window_kernels(dims, chosen)
    return lambda qkv, bias, logit_scale, qkv_bias: reference.compose_shifted_window_attention(
        qkv, num_heads, window_size, shift_size, bias, logit_scale, qkv_bias, order, partition, reverse,
        # cuda names the partition kernels; the attention between them picks its own
        # (auto, not $FASTSWIN_BACKEND, which may name a backend that has no attention).
        attention=lambda q, k, v, bias, mask: window_attention(q, k, v, bias, mask, backend="auto"),
        cosine_attention=reference.cosine_window_attention, attention_mask=_shift_mask, always_shift=always_shift)


def _window_kernels(dims: int, backend: str):
    """fastswin's partition and reverse of maps of dims spatial dims on backend, in the
    signatures compose_shifted_window_attention takes."""
    if dims == 3:
        return (lambda x, w, s: window_partition_3d(x, w, s, backend=backend),
                lambda x, w, sizes, s: window_reverse_3d(x, w, sizes, s, backend=backend))
    return (lambda x, w, s: window_partition(x, w, s, backend=backend),
            lambda x, w, sizes, s: window_reverse(x, w, *sizes, s, backend=backend))
