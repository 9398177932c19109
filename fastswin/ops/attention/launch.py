"""Plain launchers of the attention kernels, `window_attention_forward` and
`window_attention_backward`, for the registered ops, tests and benchmarks: they
allocate the outputs and build each kernel's arguments by name (kernel_args), so a
call site cannot pass strides in the wrong order. Inputs are assumed valid (see
fastswin.ops.attention.checks).
"""
import contextlib
import math
from typing import NamedTuple, Optional, Tuple

import torch

from fastswin.ops._triton import triton
from fastswin.ops.attention.backward_kernel import window_attention_bwd_kernel
from fastswin.ops.attention.forward_kernel import window_attention_fwd_kernel
from fastswin.ops.attention.image_index import padding_rows
from fastswin.ops.attention.query_grad_kernel import window_attention_bwd_query_kernel
from fastswin.ops.attention.policy import (accumulator, backward_constexprs, common_constexprs, device_arch,
                                           dot_precision, layout_constexprs, tile_config, windows_per_program)


class ImageLayout(NamedTuple):
    """The tensors given to the launchers are (B, heads, T * H * W, d) views of
    un-partitioned (B, [T,] H, W, .) maps, attended in (shifted) windows; see image_index.

    sizes, window, shift: (H, W) or (T, H, W), a window of depth 2 or more (the custom op
    folds a depth-1 window's time into the batch); shift is the one applied (no
    adjustment here), 0 <= shift < window; fill: the (3C,) qkv bias that padding tokens
    read, or None for zeros."""
    sizes: Tuple[int, ...]
    window: Tuple[int, ...]
    shift: Tuple[int, ...]
    timm_order: bool
    fill: Optional[torch.Tensor]

    @property
    def padded(self) -> bool:
        return any(size % win for size, win in zip(self.sizes, self.window))

    @property
    def reads_fill(self) -> bool:
        """Padding tokens read the fill: compiled in only where the map has padding."""
        return self.fill is not None and self.padded


# ----------------------------------------------------------------------------- kernel arguments


# The (B, heads, rows, d) tensors of the kernels, by pointer argument: the prefix of
# their (batch, head, row) stride arguments.
_STRIDED = {"Q": "stride_q", "K": "stride_k", "V": "stride_v", "OUT": "stride_o", "DOUT": "stride_do",
            "DQ": "stride_dq", "DK": "stride_dk", "DV": "stride_dv"}


def _strided(**tensors: torch.Tensor) -> dict:
    """Each (B, heads, rows, d) tensor as a pointer argument and its batch, head and row
    strides, under the kernel's names (Q=q gives Q, stride_qb, stride_qh, stride_qn)."""
    args = {}
    for name, t in tensors.items():
        prefix = _STRIDED[name]
        args[name] = t
        args[prefix + "b"], args[prefix + "h"], args[prefix + "n"] = t.stride()[:3]
    return args


class _Layout(NamedTuple):
    """What the kernels take of a layout: windows, tokens per window, the scalar
    arguments that place a window's tokens, and the compile-time ones."""
    windows: int
    n: int
    args: dict
    constexprs: dict


def _as_3d(sizes: Tuple[int, ...], fill: int) -> Tuple[int, ...]:
    return (fill,) * (3 - len(sizes)) + tuple(sizes)


def _layout(q: torch.Tensor, image: Optional[ImageLayout]) -> _Layout:
    if image is None:
        args = dict(depth=1, height=1, width=1, windows_w=1, windows_per_image=1, shift_t=0, shift_h=0, shift_w=0,
                    channels_per_part=0)
        return _Layout(q.shape[0], q.shape[2], args, layout_constexprs())
    if not len(image.sizes) == len(image.window) == len(image.shift) or image.window[:-2] == (1,):
        raise ValueError(f"fastswin: an image layout takes (h, w) or (t, h, w) sizes, window and shift, a 3D window "
                         f"at least 2 deep, got {image.sizes}, {image.window}, {image.shift}")
    (t, h, w), window, (st, sh, sw) = _as_3d(image.sizes, 1), _as_3d(image.window, 1), _as_3d(image.shift, 0)
    counts = [-(-size // win) for size, win in zip((t, h, w), window)]
    args = dict(depth=t, height=h, width=w, windows_w=counts[2], windows_per_image=math.prod(counts),
                shift_t=st, shift_h=sh, shift_w=sw, channels_per_part=q.shape[1] * q.shape[3])
    # The orders differ only where there is padding: one kernel serves both elsewhere.
    constexprs = layout_constexprs(image.window, True, image.timm_order and image.padded, image.padded,
                                   image.reads_fill)
    return _Layout(q.shape[0] * math.prod(counts), math.prod(window), args,
                   {**constexprs, "HAS_MASK": any(image.shift)})


def _operands(q: torch.Tensor, layout: _Layout, bias, mask, logit_scale, image: Optional[ImageLayout],
              scale: float) -> dict:
    """What both kernels take besides their own tensors: bias, mask, logit_scale and fill
    (a stand-in pointer, never read, where absent), the layout and the compile-time
    arguments."""
    d = q.shape[3]
    cfg = tile_config(layout.n, d, q.dtype, device_arch(q.device))
    constexprs = common_constexprs(cfg, d, bias is not None, mask is not None, logit_scale is not None,
                                   dot_precision(q.dtype, q.device), q.dtype)
    # The layout's constexprs override the common ones (HAS_MASK: the image layout's shift).
    # The small operands are read as contiguous arrays: a strided one costs a copy of a few KB.
    return dict(BIAS=q if bias is None else bias.contiguous(), MASK=q if mask is None else mask.contiguous(),
                # (heads, 1, 1) -> (heads,)
                LOGIT_SCALE=q if logit_scale is None else logit_scale.reshape(-1).contiguous(),
                FILL=image.fill.contiguous() if image is not None and image.reads_fill else q,
                heads=q.shape[1], mask_windows=1 if mask is None else mask.shape[0], scale=scale,
                **layout.args, **{**constexprs, **layout.constexprs})


def _launch(kernel, grid: tuple, args: dict, options: dict, device: torch.device) -> None:
    """kernel[grid](**args) on device's current stream, with every argument named."""
    names = set(kernel.arg_names)
    if args.keys() != names:
        missing, unknown = names - args.keys(), args.keys() - names
        raise TypeError(f"{kernel.__name__}: arguments missing {sorted(missing)}, unknown {sorted(unknown)}")
    with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
        kernel[grid](**args, **options)


# ----------------------------------------------------------------------------- launchers


def _unit_last_stride(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def bshd_empty(q: torch.Tensor) -> torch.Tensor:
    """(B_, heads, N, d) view of a contiguous (B_, N, heads, d) buffer, so that the
    caller's `.transpose(1, 2).reshape(B_, N, C)` is free."""
    B_, heads, n, d = q.shape
    return q.new_empty(B_, n, heads, d).transpose(1, 2)


def window_attention_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                             bias: Optional[torch.Tensor], mask: Optional[torch.Tensor],
                             scale: float, logit_scale: Optional[torch.Tensor] = None,
                             image: Optional[ImageLayout] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward kernel.

    q, k, v: (B_, heads, N, d), any strides with unit last stride; bias (heads, N, N)
    and mask (nW, N, N), any float type (copied if not contiguous), or None. Inputs
    are assumed valid (see `window_attention`). logit_scale: (heads, 1, 1), any float
    type, for Swin-V2 cosine attention (scale is then ignored), or None for v1.

    image: q, k, v are (B, heads, T * H * W, d) views of (B, [T,] H, W, .) maps
    (ImageLayout), mask is None (the shift mask comes from the layout).

    Returns out (B_, heads, N, d) (a view of a contiguous (B_, N, heads, d) buffer;
    with image, (B, heads, T * H * W, d), a view of a contiguous (B, [T,] H, W, C) map) and
    lse (windows, heads, N), contiguous, fp32 (fp64 for fp64 inputs).
    """
    q, k, v = _unit_last_stride(q), _unit_last_stride(k), _unit_last_stride(v)
    heads = q.shape[1]
    layout = _layout(q, image)
    out = bshd_empty(q)
    lse = torch.empty(layout.windows, heads, layout.n, device=q.device, dtype=accumulator(q.dtype))
    args = dict(**_strided(Q=q, K=k, V=v, OUT=out), LSE=lse,
                **_operands(q, layout, bias, mask, logit_scale, image, scale))
    options = tile_config(layout.n, q.shape[3], q.dtype, device_arch(q.device)).forward_launch
    _launch(window_attention_fwd_kernel, (layout.windows * heads,), args, options, q.device)
    return out, lse


def window_attention_backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                              out: torch.Tensor, lse: torch.Tensor, bias: Optional[torch.Tensor],
                              mask: Optional[torch.Tensor], scale: float, bias_grad: bool,
                              deterministic: Optional[bool] = None, group_size: Optional[int] = None,
                              logit_scale: Optional[torch.Tensor] = None, logit_scale_grad: bool = False,
                              image: Optional[ImageLayout] = None, fill_grad: bool = False,
                              grads: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None) -> tuple:
    """Launch the backward kernels: the key pass, and for windows of several tiles the
    query pass.

    grad_out: (B_, heads, N, d), any strides with unit last stride; q, k, v, bias,
    mask, scale, logit_scale as given to the forward; out and lse (contiguous) as it
    returned. bias_grad: compute dbias (needs bias). logit_scale_grad: compute
    dlogit_scale (needs logit_scale). deterministic: sum per-program dbias and
    dlogit_scale partials with torch instead of atomics (default:
    torch.are_deterministic_algorithms_enabled()). group_size: windows per program
    (default: windows_per_program()).

    Returns dq, dk, dv (B_, heads, N, d), views of contiguous (B_, N, heads, d)
    buffers, and dbias (heads, N, N) in bias's dtype, or None without bias_grad;
    given logit_scale, a fifth item: dlogit_scale in logit_scale's shape and dtype,
    or None without logit_scale_grad.

    image: as for the forward (grad_out and out in the same layout as q). fill_grad:
    compute the gradient of image.fill, returned as a last item, (3C,) in fill's dtype
    (None without fill_grad). grads: preallocated dq, dk, dv to write (e.g. views of one
    packed d(qkv) map); every real row is written.
    """
    q, k, v = _unit_last_stride(q), _unit_last_stride(k), _unit_last_stride(v)
    grad_out, out = _unit_last_stride(grad_out), _unit_last_stride(out)
    heads = q.shape[1]
    layout = _layout(q, image)
    if deterministic is None:
        deterministic = torch.are_deterministic_algorithms_enabled()
    cfg = tile_config(layout.n, q.shape[3], q.dtype, device_arch(q.device), image is not None,
                      logit_scale is not None, image is not None and image.padded,
                      image is not None and len(image.window) == 3)
    # dbias and dlogit_scale are summed over each program's group of windows: the fused
    # backward's key-pass programs, or the split one's query-pass programs, a program a
    # (group, strip of query_rows queries): strips times as many, so larger groups.
    strips = 1 if cfg.fused_backward else triton.cdiv(layout.n, cfg.query_rows)
    key_group = group_size or windows_per_program(layout.windows, heads)
    sum_group = group_size or windows_per_program(layout.windows, heads * strips)
    key_groups, sum_groups = triton.cdiv(layout.windows, key_group), triton.cdiv(layout.windows, sum_group)
    dbias = _slots(q, sum_groups if bias_grad else 1, (heads, layout.n, layout.n),
                   atomic=bias_grad and not deterministic)
    scale_grad = logit_scale is not None and logit_scale_grad
    # Without dlogit_scale, dbias's buffer stands in as a pointer never written.
    dscale = (_slots(q, sum_groups * strips, (heads,), atomic=not deterministic) if scale_grad
              else _Slots(dbias.buffer, False))
    dq, dk, dv = grads if grads is not None else (bshd_empty(q), bshd_empty(q), bshd_empty(q))
    # d(fill): the padding keys' dK and values' dV, a row per padding token, summed here;
    # its q part stays zero (padding queries pass no gradient), as does all of it where
    # the map has no padding (the kernel then skips it).
    fill_grad = fill_grad and image is not None and image.fill is not None
    pad_grad = fill_grad and image.reads_fill
    dpad = _padding_grads(dk, dv, image) if pad_grad else dbias.buffer  # else a stand-in, never written
    operands = dict(**_strided(Q=q, K=k, V=v, OUT=out, DOUT=grad_out, DQ=dq), LSE=lse, DBIAS=dbias.buffer,
                    stride_dbias_slot=dbias.stride, DLOGIT_SCALE=dscale.buffer, stride_dscale_slot=dscale.stride,
                    windows=layout.windows, **_operands(q, layout, bias, mask, logit_scale, image, scale))
    sums = dict(BIAS_GRAD=bias_grad, ATOMIC_DBIAS=dbias.atomic, SCALE_GRAD=scale_grad, ATOMIC_DSCALE=dscale.atomic)
    key_constexprs, query_constexprs = backward_constexprs(cfg, sums)
    args = {**operands, **_strided(DK=dk, DV=dv), **key_constexprs, "windows_per_program": key_group,
            "DPAD": dpad, "stride_dpad_b": dpad.stride(0), "FILL_GRAD": pad_grad,
            "ROW_ALIGN": row_alignment(dk, dv, dpad.unflatten(-1, (2 * heads, -1))) if pad_grad else 1}
    _launch(window_attention_bwd_kernel, (key_groups, heads), args, cfg.backward_launch, q.device)
    if query_constexprs is not None:
        _launch(window_attention_bwd_query_kernel, (sum_groups * strips, heads),
                {**operands, **query_constexprs, "windows_per_program": sum_group,
                 **_key_block_scratch(q, lse, cfg.key_blocks > 1, stand_in=dbias.buffer)},
                cfg.query_launch, q.device)
    result = (dq, dk, dv, dbias.buffer.sum(0).to(bias.dtype) if bias_grad else None)
    if logit_scale is not None:
        result += (dscale.buffer.sum(0).reshape(logit_scale.shape).to(logit_scale.dtype) if scale_grad else None,)
    if image is not None:
        dfill = None
        if fill_grad:
            dfill = _fill_grad(dpad, image.fill) if pad_grad else torch.zeros_like(image.fill)
        result += (dfill,)
    return result


class _Slots(NamedTuple):
    """Where the backward programs sum dbias or dlogit_scale: (slots, ...) of the
    accumulator type, one slot that every program adds into atomically (atomic: slot
    stride 0), or a slot per program, summed by the launcher."""
    buffer: torch.Tensor
    atomic: bool

    @property
    def stride(self) -> int:
        return 0 if self.atomic else self.buffer.stride(0)


def _slots(q: torch.Tensor, programs: int, shape: Tuple[int, ...], atomic: bool) -> _Slots:
    """Slots for programs; zeroed where the kernels add into them, else every slot is
    overwritten."""
    allocate = torch.zeros if atomic else torch.empty
    return _Slots(allocate(1 if atomic else programs, *shape, device=q.device, dtype=accumulator(q.dtype)), atomic)


def _key_block_scratch(q: torch.Tensor, lse: torch.Tensor, split: bool, stand_in: torch.Tensor) -> dict:
    """Where the query pass keeps what spans its key blocks (split: there are several):
    dQ summed over them (windows, heads, N, d) and the renormalized lse (lse's shape),
    both of the accumulator type; else stand-ins, never touched."""
    if not split:
        return dict(DQ_ACC=stand_in, ROW_LSE=stand_in)
    windows, heads, n = lse.shape
    return dict(DQ_ACC=torch.empty(windows, heads, n, q.shape[3], device=q.device, dtype=lse.dtype),
                ROW_LSE=torch.empty_like(lse))


def _padding_grads(dk: torch.Tensor, dv: torch.Tensor, image: ImageLayout) -> torch.Tensor:
    """Zeroed (B, padding rows, 2C) rows where the backward stores the padding tokens' dK
    and dV (rows of real tokens stay 0)."""
    return dk.new_zeros(dk.shape[0], padding_rows(image.sizes, image.window),
                        2 * dk.shape[1] * dk.shape[3])


def row_alignment(*tensors: torch.Tensor) -> int:
    """Bytes, a power of two up to 16, that the start of every (.., row, :) of these
    tensors is aligned to: their addresses and strides but the last."""
    offsets = [t.data_ptr() for t in tensors] + [s * t.element_size() for t in tensors for s in t.stride()[:-1]]
    return math.gcd(16, *offsets)


def _fill_grad(dpad: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """d(fill) (3C,) from the padding tokens' dK and dV (B, padding rows, 2C)."""
    return torch.cat([fill.new_zeros(fill.numel() - dpad.shape[-1]),
                      dpad.sum((0, 1), dtype=accumulator(dpad.dtype)).to(fill.dtype)])
