"""Launch plans of the attention kernels and their runs.

A plan (plan_forward, plan_backward) holds everything a call signature fixes: the
layout, the tiles, the grid, every argument but the tensors, built by name (_strided,
_operands), so a call site cannot pass strides in the wrong order, and the buffers the
backward sums into. run_forward / run_backward allocate the outputs and launch a plan
(ops/launcher.py). The eager calls (eager.py) keep their plans; the plain launchers
`window_attention_forward` and `window_attention_backward` plan and run in one go, for
the registered ops, tests and benchmarks. Inputs are assumed valid (see
fastswin.ops.attention.checks).
"""
import functools
import math
from typing import Callable, NamedTuple, Optional, Tuple

import torch

from fastswin.ops._triton import triton
from fastswin.ops.launcher import TENSOR, KernelLaunch
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
    """Each (B, heads, rows, d) tensor as a pointer argument (TENSOR: a plan holds no
    tensor) and its batch, head and row strides, under the kernel's names (Q=q gives Q,
    stride_qb, stride_qh, stride_qn)."""
    args = {}
    for name, t in tensors.items():
        prefix = _STRIDED[name]
        args[name] = TENSOR
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
    (a stand-in pointer, never read, where absent: _small_operands), the layout and the
    compile-time arguments."""
    d = q.shape[3]
    cfg = tile_config(layout.n, d, q.dtype, device_arch(q.device))
    constexprs = common_constexprs(cfg, d, bias is not None, mask is not None, logit_scale is not None,
                                   dot_precision(q.dtype, q.device), q.dtype)
    # The layout's constexprs override the common ones (HAS_MASK: the image layout's shift).
    return dict(BIAS=TENSOR, MASK=TENSOR, LOGIT_SCALE=TENSOR, FILL=TENSOR, heads=q.shape[1],
                mask_windows=1 if mask is None else mask.shape[0], scale=scale,
                **layout.args, **{**constexprs, **layout.constexprs})


def _small_operands(tensors: dict, stand_in: torch.Tensor, bias, mask, logit_scale, fill) -> dict:
    """tensors with bias, mask, logit_scale ((heads, 1, 1): its (heads,) array) and fill
    as the kernels read them: contiguous arrays (a strided one costs a copy of a few KB),
    stand_in where absent (never read)."""
    tensors["BIAS"] = stand_in if bias is None else _contiguous(bias)
    tensors["MASK"] = stand_in if mask is None else _contiguous(mask)
    tensors["LOGIT_SCALE"] = stand_in if logit_scale is None else _contiguous(logit_scale)
    tensors["FILL"] = stand_in if fill is None else _contiguous(fill)
    return tensors


def _contiguous(x: torch.Tensor) -> torch.Tensor:
    return x if x.is_contiguous() else x.contiguous()


# ----------------------------------------------------------------------------- launchers


def _unit_last_stride(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _bshd_meta(q: torch.Tensor) -> torch.Tensor:
    """A meta tensor of bshd_empty(q)'s shape and strides (for plans)."""
    B_, heads, n, d = q.shape
    return torch.empty(B_, n, heads, d, device="meta", dtype=q.dtype).transpose(1, 2)


def bshd_empty(q: torch.Tensor) -> torch.Tensor:
    """(B_, heads, N, d) view of a contiguous (B_, N, heads, d) buffer, so that the
    caller's `.transpose(1, 2).reshape(B_, N, C)` is free."""
    B_, heads, n, d = q.shape
    return q.new_empty(B_, n, heads, d).transpose(1, 2)


class ForwardPlan(NamedTuple):
    """The forward of one signature (q, k, v's shapes, strides, dtype and device, the
    operands present, the layout): its launch and the lse it returns."""
    launch: KernelLaunch
    lse_shape: Tuple[int, int, int]
    lse_dtype: torch.dtype
    reads_fill: bool


def plan_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: Optional[torch.Tensor],
                 mask: Optional[torch.Tensor], scale: float, logit_scale: Optional[torch.Tensor] = None,
                 image: Optional[ImageLayout] = None) -> ForwardPlan:
    """The forward's plan for tensors like these (read for their shapes, strides, dtype
    and device only; q, k, v with unit last stride). run_forward launches it."""
    heads = q.shape[1]
    layout = _layout(q, image)
    out = _bshd_meta(q)  # the strides run_forward's output has
    args = dict(**_strided(Q=q, K=k, V=v, OUT=out), LSE=TENSOR,
                **_operands(q, layout, bias, mask, logit_scale, image, scale))
    options = tile_config(layout.n, q.shape[3], q.dtype, device_arch(q.device)).forward_launch
    launch = KernelLaunch(window_attention_fwd_kernel, (layout.windows * heads,), args, options, q.device)
    return ForwardPlan(launch, (layout.windows, heads, layout.n), accumulator(q.dtype),
                       image is not None and image.reads_fill)


def run_forward(plan: ForwardPlan, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                bias: Optional[torch.Tensor], mask: Optional[torch.Tensor], logit_scale: Optional[torch.Tensor],
                fill: Optional[torch.Tensor]) -> torch.Tensor:
    """Launch the forward of plan, writing out, and return lse. q, k, v and out: tensors
    at the addresses of those planned, of their dtype (views of them or the tensors they
    view: their strides are the plan's); bias, mask, logit_scale and fill as given to
    window_attention_forward."""
    lse = torch.empty(plan.lse_shape, device=q.device, dtype=plan.lse_dtype)
    plan.launch(_small_operands(dict(Q=q, K=k, V=v, OUT=out, LSE=lse), q, bias, mask, logit_scale,
                                fill if plan.reads_fill else None))
    return lse


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
    plan = plan_forward(q, k, v, bias, mask, scale, logit_scale, image)
    out = bshd_empty(q)
    return out, run_forward(plan, q, k, v, out, bias, mask, logit_scale, None if image is None else image.fill)


class BackwardPlan(NamedTuple):
    """The backward of one signature: its launches (the key pass; the query pass where
    the backward is split, else None) and the buffers it sums into."""
    key_pass: Callable[[int], KernelLaunch]  # by ROW_ALIGN (1 without d(fill))
    query_pass: Optional[KernelLaunch]
    dbias: Optional[Tuple[int, ...]]   # the dbias slots' shape, None without dbias
    dscale: Optional[Tuple[int, ...]]  # the dlogit_scale slots' shape, None without it
    atomic: bool                       # slots summed atomically (zeroed first, one slot)
    scratch: Optional[Tuple[int, ...]]  # the query pass's dQ over key blocks, None when not split
    padding: Optional[Tuple[int, int, int]]  # the padding tokens' dK, dV rows, None without d(fill)
    row_strides: int                   # what the strides of dK, dV and those rows align them to (bytes)


def plan_backward(grad_out: torch.Tensor, q: torch.Tensor, out: torch.Tensor, bias: Optional[torch.Tensor],
                  mask: Optional[torch.Tensor], scale: float, bias_grad: bool, deterministic: bool,
                  group_size: Optional[int] = None, logit_scale: Optional[torch.Tensor] = None,
                  logit_scale_grad: bool = False, image: Optional[ImageLayout] = None, fill_grad: bool = False,
                  k: Optional[torch.Tensor] = None, v: Optional[torch.Tensor] = None,
                  grads: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None) -> BackwardPlan:
    """The backward's plan for tensors like these (as plan_forward: shapes, strides, dtype
    and device; k, v like q and grads like bshd_empty(q) where not given)."""
    k, v = q if k is None else k, q if v is None else v
    heads = q.shape[1]
    layout = _layout(q, image)
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
    atomic = not deterministic
    scale_grad = logit_scale is not None and logit_scale_grad
    slots = lambda programs, shape: (1 if atomic else programs, *shape)  # noqa: E731
    dbias = slots(sum_groups, (heads, layout.n, layout.n)) if bias_grad else None
    dscale = slots(sum_groups * strips, (heads,)) if scale_grad else None
    like_q = _bshd_meta(q)
    dq, dk, dv = grads if grads is not None else (like_q, like_q, like_q)
    # d(fill): the padding keys' dK and values' dV, a row per padding token, summed by
    # run_backward; its q part stays zero (padding queries pass no gradient), as does all
    # of it where the map has no padding (the kernel then skips it).
    fill_grad = fill_grad and image is not None and image.fill is not None
    pad_grad = fill_grad and image.reads_fill
    padding = (q.shape[0], padding_rows(image.sizes, image.window), 2 * heads * q.shape[3]) if pad_grad else None
    es = q.element_size()
    row_strides = math.gcd(16, *[s * es for t in (dk, dv) for s in t.stride()[:-1]],
                           *([padding[1] * padding[2] * es, q.shape[3] * es] if pad_grad else []))
    operands = dict(**_strided(Q=q, K=k, V=v, OUT=out, DOUT=grad_out, DQ=dq), LSE=TENSOR, DBIAS=TENSOR,
                    stride_dbias_slot=_slot_stride(dbias, atomic), DLOGIT_SCALE=TENSOR,
                    stride_dscale_slot=_slot_stride(dscale, atomic), windows=layout.windows,
                    **_operands(q, layout, bias, mask, logit_scale, image, scale))
    sums = dict(BIAS_GRAD=bias_grad, ATOMIC_DBIAS=bias_grad and atomic, SCALE_GRAD=scale_grad,
                ATOMIC_DSCALE=scale_grad and atomic)
    key_constexprs, query_constexprs = backward_constexprs(cfg, sums)
    args = {**operands, **_strided(DK=dk, DV=dv), **key_constexprs, "windows_per_program": key_group,
            "DPAD": TENSOR, "stride_dpad_b": padding[1] * padding[2] if pad_grad else 0, "FILL_GRAD": pad_grad}

    device, options = q.device, cfg.backward_launch

    @functools.lru_cache(maxsize=None)
    def key_pass(row_align: int) -> KernelLaunch:  # ROW_ALIGN: of the padding rows' dK, dV, dpad (run_backward)
        return KernelLaunch(window_attention_bwd_kernel, (key_groups, heads), dict(args, ROW_ALIGN=row_align),
                            options, device)

    query_pass = scratch = None
    if query_constexprs is not None:
        query_pass = KernelLaunch(window_attention_bwd_query_kernel, (sum_groups * strips, heads),
                                  {**operands, **query_constexprs, "windows_per_program": sum_group,
                                   "DQ_ACC": TENSOR, "ROW_LSE": TENSOR}, cfg.query_launch, q.device)
        scratch = (layout.windows, heads, layout.n, q.shape[3]) if cfg.key_blocks > 1 else None
    return BackwardPlan(key_pass, query_pass, dbias, dscale, atomic, scratch, padding, row_strides)


def run_backward(plan: BackwardPlan, grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 out: torch.Tensor, lse: torch.Tensor, dq: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor,
                 bias: Optional[torch.Tensor], mask: Optional[torch.Tensor], logit_scale: Optional[torch.Tensor],
                 fill: Optional[torch.Tensor]) -> tuple:
    """Launch the backward of plan, writing dq, dk and dv, and return (dbias,
    dlogit_scale, dfill), None where not asked for (dfill: also where no padded token
    reads the fill). Tensors as for run_forward: at the planned addresses (grad_out, q, k,
    v, out, dq, dk, dv); bias, mask, logit_scale and fill as given to the forward."""
    acc = lse.dtype
    dbias = _slot_buffer(plan.dbias, plan.atomic, q, acc)
    dscale = _slot_buffer(plan.dscale, plan.atomic, q, acc)
    row_align, dpad = 1, lse  # without d(fill): a stand-in, never written
    if plan.padding is not None:
        dpad = q.new_zeros(plan.padding)
        row_align = math.gcd(plan.row_strides, dk.data_ptr(), dv.data_ptr(), dpad.data_ptr())
    tensors = _small_operands(dict(Q=q, K=k, V=v, OUT=out, DOUT=grad_out, DQ=dq, LSE=lse,
                                   DBIAS=lse if dbias is None else dbias, DLOGIT_SCALE=lse if dscale is None else dscale),
                              q, bias, mask, logit_scale, fill if plan.padding is not None else None)
    plan.key_pass(row_align)(dict(tensors, DK=dk, DV=dv, DPAD=dpad))
    if plan.query_pass is not None:
        tensors["DQ_ACC"], tensors["ROW_LSE"] = ((q.new_empty(plan.scratch, dtype=acc), torch.empty_like(lse))
                                                 if plan.scratch is not None else (lse, lse))
        plan.query_pass(tensors)
    dfill = None if plan.padding is None else _fill_grad(dpad, fill)
    return (_summed(dbias, plan.atomic, None if bias is None else bias.dtype),
            _summed(dscale, plan.atomic, None if logit_scale is None else logit_scale.dtype,
                    None if logit_scale is None else logit_scale.shape), dfill)


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
    (None without fill_grad or where no padded token reads the fill: its gradient is
    zero). grads: preallocated dq, dk, dv to write (e.g. views of one packed d(qkv)
    map); every real row is written.
    """
    q, k, v = _unit_last_stride(q), _unit_last_stride(k), _unit_last_stride(v)
    grad_out, out = _unit_last_stride(grad_out), _unit_last_stride(out)
    if deterministic is None:
        deterministic = torch.are_deterministic_algorithms_enabled()
    plan = plan_backward(grad_out, q, out, bias, mask, scale, bias_grad, deterministic, group_size, logit_scale,
                         logit_scale_grad, image, fill_grad, k, v, grads)
    dq, dk, dv = grads if grads is not None else (bshd_empty(q), bshd_empty(q), bshd_empty(q))
    dbias, dscale, dfill = run_backward(plan, grad_out, q, k, v, out, lse, dq, dk, dv, bias, mask, logit_scale,
                                        None if image is None else image.fill)
    result = (dq, dk, dv, dbias)
    if logit_scale is not None:
        result += (dscale,)
    if image is not None:
        result += (dfill,)
    return result


def _slot_stride(shape: Optional[Tuple[int, ...]], atomic: bool) -> int:
    """The slot stride of dbias / dlogit_scale slots: 0 where every program adds into one."""
    return 0 if shape is None or atomic else math.prod(shape[1:])


def _slot_buffer(shape: Optional[Tuple[int, ...]], atomic: bool, q: torch.Tensor,
                 dtype: torch.dtype) -> Optional[torch.Tensor]:
    """Slots of the accumulator type: zeroed where the kernels add into them (one slot,
    allocated without its slot dim), else every slot is overwritten."""
    if shape is None:
        return None
    if atomic:
        return torch.zeros(shape[1:], device=q.device, dtype=dtype)
    return torch.empty(shape, device=q.device, dtype=dtype)


def _summed(slots: Optional[torch.Tensor], atomic: bool, dtype: Optional[torch.dtype],
            shape: Optional[torch.Size] = None) -> Optional[torch.Tensor]:
    """The sum over slots, in dtype and shape (the one atomic slot is the sum already)."""
    if slots is None:
        return None
    total = slots if atomic else slots.sum(0)
    if shape is not None:
        total = total.view(shape)
    return total if total.dtype == dtype else total.to(dtype)


def row_alignment(*tensors: torch.Tensor) -> int:
    """Bytes, a power of two up to 16, that the start of every (.., row, :) of these
    tensors is aligned to: their addresses and strides but the last."""
    offsets = [t.data_ptr() for t in tensors] + [s * t.element_size() for t in tensors for s in t.stride()[:-1]]
    return math.gcd(16, *offsets)


def _fill_grad(dpad: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """d(fill) (3C,) from the padding tokens' dK and dV (B, padding rows, 2C)."""
    return torch.cat([fill.new_zeros(fill.numel() - dpad.shape[-1]),
                      dpad.sum((0, 1), dtype=accumulator(dpad.dtype)).to(fill.dtype)])
