"""Window partition and reverse with cyclic shift and padding, of (B, H, W, C) maps and
(B, T, H, W, C) video maps (window_partition_3d / window_reverse_3d).

Math (torchvision's order, see fastswin.reference): partition pads a
(B, H, W, C) map bottom/right to multiples of the window, rolls it by
(-sh, -sw) and cuts it into (B * nW, wh, ww, C) windows; reverse merges the
windows, rolls by (+sh, +sw) and crops to (H, W). Each is the other's adjoint,
so the backward of one is the other.

Kernels: csrc/window_process.cpp (CPU) and csrc/window_process_cuda.cu (CUDA),
one pass each, registered as torch.ops.fastswin.window_partition /
window_reverse; the autograd formulas and fake (meta) implementations are
registered here.
"""
import math
from typing import Optional, Sequence, Tuple

import torch

from fastswin import reference
from fastswin._extension import HAS_C, compiled_backend_reason
from fastswin.backends import select_backend
from fastswin.ops.arguments import IntPair, as_pair, as_sizes, check_window


def _is_reshape(height: int, width: int, window_size: Tuple[int, int], shift_size: Tuple[int, int]) -> bool:
    """Whether the windows are a plain reshape of the map: no padding, no effective
    shift, and one window per row (e.g. Swin's last stage, a 7x7 map in 7x7 windows)."""
    return (height > 0 and height % window_size[0] == 0 and width == window_size[1]
            and shift_size[0] % height == 0 and shift_size[1] % width == 0)


def _choose(op: str, device: torch.device, backend: Optional[str]) -> str:
    return select_backend(op, backend, [
        ("cuda", lambda: compiled_backend_reason("cuda", device)),
        ("cpu", lambda: compiled_backend_reason("cpu", device)),
        ("reference", lambda: None),
    ])


def window_partition(x: torch.Tensor, window_size: IntPair, shift_size: IntPair = 0, *,
                     backend: Optional[str] = None) -> torch.Tensor:
    """Cut a feature map into (shifted) windows.

    Args:
        x: (B, H, W, C), any strides, any dtype.
        window_size: int or (wh, ww).
        shift_size: int or (sh, sw) >= 0; the map is rolled by (-sh, -sw).
        backend: "auto" (default: $FASTSWIN_BACKEND or auto), "cuda", "cpu" or "reference".

    Returns:
        (B * nW, wh, ww, C), nW = ceil(H / wh) * ceil(W / ww); padded positions are
        zero. A fresh contiguous tensor, except where the windows are a plain reshape
        of x (no padding or shift, one window per row): then x.reshape(...).
    """
    window_size, shift_size = as_pair(window_size, "window_size"), as_pair(shift_size, "shift_size")
    if x.dim() != 4:
        raise ValueError(f"fastswin.window_partition: x must be (B, H, W, C), got shape {tuple(x.shape)}")
    check_window(window_size, shift_size, "window_partition")
    chosen = _choose("window_partition", x.device, backend)
    if _is_reshape(x.shape[1], x.shape[2], window_size, shift_size):  # no -1 below: C may be 0
        return x.reshape(x.shape[0] * x.shape[1] // window_size[0], *window_size, x.shape[3])
    if chosen == "reference":
        return reference.window_partition(x, window_size, shift_size)
    return torch.ops.fastswin.window_partition(x, window_size, shift_size)


def window_reverse(windows: torch.Tensor, window_size: IntPair, height: int, width: int,
                   shift_size: IntPair = 0, *, backend: Optional[str] = None) -> torch.Tensor:
    """Merge windows back into a feature map: the inverse of window_partition.

    Args:
        windows: (B * nW, wh, ww, C), any strides, any dtype.
        window_size: int or (wh, ww).
        height, width: H and W of the map before padding.
        shift_size: int or (sh, sw) >= 0; the merged map is rolled by (+sh, +sw).
        backend: as for window_partition.

    Returns:
        (B, H, W, C): a fresh contiguous tensor, or windows.reshape(...) where
        window_partition would be a reshape.
    """
    window_size, shift_size = as_pair(window_size, "window_size"), as_pair(shift_size, "shift_size")
    check_window(window_size, shift_size, "window_reverse")
    _check_reverse_args(windows, window_size, (height, width), "window_reverse")
    chosen = _choose("window_reverse", windows.device, backend)
    if _is_reshape(height, width, window_size, shift_size):
        return windows.reshape(windows.shape[0] * window_size[0] // height, height, width, windows.shape[3])
    if chosen == "reference":
        return reference.window_reverse(windows, window_size, height, width, shift_size)
    return torch.ops.fastswin.window_reverse(windows, window_size, height, width, shift_size)


def window_partition_3d(x: torch.Tensor, window_size: IntPair, shift_size: IntPair = 0, *,
                        backend: Optional[str] = None) -> torch.Tensor:
    """Cut a video feature map into (shifted) 3D windows, as torchvision's video Swin does.

    Args:
        x: (B, T, H, W, C), any strides, any dtype.
        window_size: int or (wt, wh, ww).
        shift_size: int or (st, sh, sw) >= 0; the map is rolled by (-st, -sh, -sw).
        backend: as for window_partition.

    Returns:
        (B * nW, wt, wh, ww, C), nW = ceil(T / wt) * ceil(H / wh) * ceil(W / ww), a fresh
        contiguous tensor; padded positions (end of each dim) are zero.
    """
    window_size, shift_size = as_sizes(window_size, 3, "window_size"), as_sizes(shift_size, 3, "shift_size")
    if x.dim() != 5:
        raise ValueError(f"fastswin.window_partition_3d: x must be (B, T, H, W, C), got shape {tuple(x.shape)}")
    check_window(window_size, shift_size, "window_partition_3d")
    if _choose("window_partition_3d", x.device, backend) == "reference":
        return reference.window_partition(x, window_size, shift_size)
    return torch.ops.fastswin.window_partition_3d(x, window_size, shift_size)


def window_reverse_3d(windows: torch.Tensor, window_size: IntPair, size: Sequence[int], shift_size: IntPair = 0,
                      *, backend: Optional[str] = None) -> torch.Tensor:
    """Merge 3D windows back into a video feature map: the inverse of window_partition_3d.

    Args:
        windows: (B * nW, wt, wh, ww, C), any strides, any dtype.
        window_size: int or (wt, wh, ww).
        size: (T, H, W) of the map before padding.
        shift_size: int or (st, sh, sw) >= 0; the merged map is rolled by (+st, +sh, +sw).
        backend: as for window_partition.

    Returns:
        (B, T, H, W, C), a fresh contiguous tensor.
    """
    window_size, shift_size = as_sizes(window_size, 3, "window_size"), as_sizes(shift_size, 3, "shift_size")
    size = as_sizes(size, 3, "size")
    check_window(window_size, shift_size, "window_reverse_3d")
    _check_reverse_args(windows, window_size, size, "window_reverse_3d")
    if _choose("window_reverse_3d", windows.device, backend) == "reference":
        return reference.merge_windows(windows, window_size, size, shift_size)
    return torch.ops.fastswin.window_reverse_3d(windows, window_size, size, shift_size)


def _check_reverse_args(windows: torch.Tensor, window_size: Tuple[int, ...], sizes: Tuple[int, ...],
                        op: str) -> None:
    layout, names = ("(B*nW, wh, ww, C)", "H and W") if len(sizes) == 2 else ("(B*nW, wt, wh, ww, C)", "T, H and W")
    if windows.dim() != len(sizes) + 2:
        raise ValueError(f"fastswin.{op}: windows must be {layout}, got shape {tuple(windows.shape)}")
    if min(sizes) < 1:
        raise ValueError(f"fastswin.{op}: {names} must be positive, got {sizes}")
    if tuple(windows.shape[1:-1]) != window_size:
        raise ValueError(f"fastswin.{op}: windows are {tuple(windows.shape[1:-1])} but window_size is {window_size}")
    per_image = math.prod([-(-size // window) for size, window in zip(sizes, window_size)])
    if windows.shape[0] % per_image:
        raise ValueError(f"fastswin.{op}: {windows.shape[0]} windows cannot tile a "
                         f"{'x'.join(map(str, sizes))} map ({per_image} windows per image)")


def _register() -> None:
    """Fake implementations and autograd of the compiled ops."""

    @torch.library.register_fake("fastswin::window_partition")
    def _(x, window_size, shift_size):
        B, H, W, C = x.shape
        Hp, Wp = reference.padded_size(H, W, window_size)
        return x.new_empty(B * (Hp // window_size[0]) * (Wp // window_size[1]), *window_size, C)

    @torch.library.register_fake("fastswin::window_reverse")
    def _(windows, window_size, height, width, shift_size):
        Hp, Wp = reference.padded_size(height, width, window_size)
        per_image = (Hp // window_size[0]) * (Wp // window_size[1])
        return windows.new_empty(windows.shape[0] // per_image, height, width, windows.shape[3])

    def partition_context(ctx, inputs, output):
        x, ctx.window_size, ctx.shift_size = inputs
        ctx.height, ctx.width = x.shape[1], x.shape[2]

    def partition_backward(ctx, grad):
        return torch.ops.fastswin.window_reverse(
            grad, ctx.window_size, ctx.height, ctx.width, ctx.shift_size), None, None

    def reverse_context(ctx, inputs, output):
        _, ctx.window_size, _, _, ctx.shift_size = inputs

    def reverse_backward(ctx, grad):
        return torch.ops.fastswin.window_partition(grad, ctx.window_size, ctx.shift_size), None, None, None, None

    torch.library.register_autograd("fastswin::window_partition", partition_backward,
                                    setup_context=partition_context)
    torch.library.register_autograd("fastswin::window_reverse", reverse_backward,
                                    setup_context=reverse_context)
    _register_3d()


def _register_3d() -> None:
    """Fake implementations and autograd of the 3D ops (video maps)."""

    @torch.library.register_fake("fastswin::window_partition_3d")
    def _(x, window_size, shift_size):
        counts = [p // w for p, w in zip(reference.padded_sizes(x.shape[1:4], window_size), window_size)]
        return x.new_empty(x.shape[0] * math.prod(counts), *window_size, x.shape[4])

    @torch.library.register_fake("fastswin::window_reverse_3d")
    def _(windows, window_size, size, shift_size):
        per_image = math.prod([p // w for p, w in zip(reference.padded_sizes(size, window_size), window_size)])
        return windows.new_empty(windows.shape[0] // per_image, *size, windows.shape[4])

    def partition_context(ctx, inputs, output):
        x, ctx.window_size, ctx.shift_size = inputs
        ctx.size = list(x.shape[1:4])

    def partition_backward(ctx, grad):
        return torch.ops.fastswin.window_reverse_3d(grad, ctx.window_size, ctx.size, ctx.shift_size), None, None

    def reverse_context(ctx, inputs, output):
        _, ctx.window_size, _, ctx.shift_size = inputs

    def reverse_backward(ctx, grad):
        return torch.ops.fastswin.window_partition_3d(grad, ctx.window_size, ctx.shift_size), None, None, None

    torch.library.register_autograd("fastswin::window_partition_3d", partition_backward,
                                    setup_context=partition_context)
    torch.library.register_autograd("fastswin::window_reverse_3d", reverse_backward,
                                    setup_context=reverse_context)


if HAS_C:
    _register()
