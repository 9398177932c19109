"""Swin-V1 window attention, fused: Triton forward and backward kernels.

Math, for window b and head h (N tokens of d channels; nW mask windows):

    S   = scale * Q K^T + bias[h] + mask[b % nW]           (N, N)
    P   = softmax(S, dim=-1)            O = P V            (N, d)
    lse = logsumexp(S, dim=-1)                             (N,), saved for backward

Backward, given dO (P recomputed from the saved lse, never stored):

    P  = exp(S - lse)                   dV = P^T dO
    dP = dO V^T                         D  = rowsum(dO * O)  (= rowsum(P * dP))
    dS = P * (dP - D)                   (gradient w.r.t. S)
    dQ = scale * dS K                   dK = scale * dS^T Q
    dbias[h] = sum over windows b of dS

A window never leaves the chip: N (a compile-time constant, <= 256) is cut
into tiles of BLOCK queries by BLOCK keys (see tile_config). A window of one
tile (Swin's 7x7 and 8x8 at head_dim 32) gets every gradient in one pass;
otherwise the kernels loop over (query, key) tile pairs, with online softmax
forward and a second backward pass for dQ. Softmax statistics and every
accumulation are fp32 (fp64 for fp64 inputs, which only the interpreter runs,
for gradcheck).

Swin-V2's scaled cosine attention runs through the same kernels behind the
compile-time switch COSINE. With q^ = q / max(||q||, eps), k^ likewise
(eps = 1e-12, as F.normalize), and the per-head multiplier
s_h = exp(min(logit_scale[h], log 100)):

    S   = s_h * q^ k^T + bias[h] + mask[b % nW]
    dq^ = s_h * dS k^                   dk^ = s_h * dS^T q^
    dq  = (dq^ - q^ (q^ . dq^)) / ||q||   (dq^ / eps where ||q|| < eps, as F.normalize)
    dlogit_scale[h] = sum over b, i, j of dS * s_h q^ k^T   (0 where the clamp is active,
                      at the bound too, as torch.clamp)

q and k tiles are normalized in registers as they are loaded (the norms come
from the tile rows: a whole row of d channels is one tile row); s_h is read
from the logit_scale pointer in the kernel. So the cosine path is the v1 path
on normalized tiles with scale = s_h, plus the normalization's chain rule where
dQ and dK are stored and a per-program sum for dlogit_scale (one atomic add per
program, or a slot per program in deterministic mode, like dbias).

Layers, in order: kernels, plain launchers (`window_attention_forward`,
`window_attention_backward`, for tests and benchmarks), the registered custom
ops `fastswin::window_attention_triton` (+ `_backward`; a logit_scale switches
them to cosine attention) with fake and autograd implementations, and the
public `window_attention` and `cosine_window_attention`.
"""
import contextlib
import math
from typing import NamedTuple, Optional, Tuple

import torch


from fastswin import reference
from fastswin.backends import requested_backend, select_backend, triton_reason
from fastswin.ops._triton import tl, triton
from fastswin.ops.image_layout import padding_rows, token_regions, token_rows

MAX_TOKENS = 256
HEAD_DIM_RANGE = (16, 128)
GPU_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# Backward programs: aim for about this many, so that a GPU is full while each
# program's dbias is reduced over several windows before it is written.
TARGET_BACKWARD_PROGRAMS = 1024
MAX_WINDOWS_PER_PROGRAM = 64


# ----------------------------------------------------------------------------- kernels


@triton.jit
def _load_tile(ptr, stride_row, rows, cols, n_rows: tl.constexpr, n_cols: tl.constexpr):
    """ptr[rows, cols] with unit column stride; zero outside (n_rows, n_cols)."""
    inside = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    return tl.load(ptr + rows[:, None] * stride_row + cols[None, :], mask=inside, other=0.0)


@triton.jit
def _store_tile(ptr, stride_row, rows, cols, n_rows: tl.constexpr, n_cols: tl.constexpr, value):
    """ptr[rows, cols] = value (cast to ptr's type) inside (n_rows, n_cols)."""
    inside = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    tl.store(ptr + rows[:, None] * stride_row + cols[None, :], value.to(ptr.dtype.element_ty), mask=inside)


@triton.jit
def _tokens(window, tokens, height, width, windows_w, shift_h, shift_w, N_CTX: tl.constexpr,
            IMAGE: tl.constexpr, WIN_H: tl.constexpr, WIN_W: tl.constexpr, TIMM_ORDER: tl.constexpr,
            PADDED: tl.constexpr):
    """Where a block of a window's tokens lives: (row index in its tensor, whether the row
    is real).

    Window layout: rows of the (B_, heads, N, d) tensors, real inside the window. IMAGE:
    rows of the (B, heads, H * W, d) view of the un-partitioned map, real unless padding,
    which gets a row of its own in a separate buffer (fastswin.ops.image_layout.token_rows)."""
    in_window = tokens < N_CTX
    if IMAGE:
        row, real = token_rows(window, tokens, height, width, windows_w, shift_h, shift_w,
                               WIN_H, WIN_W, TIMM_ORDER, PADDED)
        return row.to(tl.int64), in_window & real
    else:
        return tokens, in_window


@triton.jit
def _load_rows(ptr, stride_row, index, real, cols, n_cols: tl.constexpr):
    """ptr[index, cols] for real rows, zero elsewhere and past n_cols."""
    inside = real[:, None] & (cols[None, :] < n_cols)
    return tl.load(ptr + index[:, None] * stride_row + cols[None, :], mask=inside, other=0.0)


@triton.jit
def _store_rows(ptr, stride_row, index, real, cols, n_cols: tl.constexpr, value):
    """ptr[index, cols] = value (cast to ptr's type) for real rows."""
    inside = real[:, None] & (cols[None, :] < n_cols)
    tl.store(ptr + index[:, None] * stride_row + cols[None, :], value.to(ptr.dtype.element_ty), mask=inside)


@triton.jit
def _store_key_rows(ptr, stride_row, pad_ptr, pad_stride, index, real, tokens, cols, N_CTX: tl.constexpr,
                    n_cols: tl.constexpr, PADDING: tl.constexpr, ROW_ALIGN: tl.constexpr, value):
    """_store_rows, and with PADDING the window's padding rows too, to pad_ptr[index, cols]
    (their gradient for d(qkv_bias)): one store, so that value's layout is converted once.
    ROW_ALIGN: bytes both row starts are aligned to (the launcher checks), which the
    select hides from the compiler (without it the store splits into 2-byte stores)."""
    if PADDING:
        rows = tl.multiple_of(tl.where(real, ptr + index * stride_row, pad_ptr + index * pad_stride), ROW_ALIGN)
        inside = (tokens[:, None] < N_CTX) & (cols[None, :] < n_cols)
        tl.store(rows[:, None] + cols[None, :], value.to(ptr.dtype.element_ty), mask=inside)
    else:
        _store_rows(ptr, stride_row, index, real, cols, n_cols, value)


@triton.jit
def _load_filled(ptr, stride_row, index, real, tokens, fill_ptr, cols, N_CTX: tl.constexpr,
                 HEAD_DIM: tl.constexpr, HAS_FILL: tl.constexpr):
    """Rows of k or v: real rows from ptr, padding tokens of the window from fill_ptr
    (the qkv Linear's output for a zero token: its bias), or zero without HAS_FILL."""
    x = _load_rows(ptr, stride_row, index, real, cols, HEAD_DIM)
    if HAS_FILL:
        padding = (tokens < N_CTX) & (real == 0)
        fill = tl.load(fill_ptr + cols, mask=cols < HEAD_DIM, other=0.0)
        x = tl.where(padding[:, None], fill[None, :].to(x.dtype), x)
    return x


@triton.jit
def _key_block(K, V, stride_kn, stride_vn, k_fill, v_fill, keys, channels, window, height, width, windows_w,
               shift_h, shift_w, N_CTX: tl.constexpr, HEAD_DIM: tl.constexpr, COSINE: tl.constexpr,
               ACC: tl.constexpr, IMAGE: tl.constexpr, WIN_H: tl.constexpr, WIN_W: tl.constexpr,
               TIMM_ORDER: tl.constexpr, PADDED: tl.constexpr, HAS_FILL: tl.constexpr):
    """A block of keys and values as every pass reads it: (k, ||k|| under COSINE, v, the
    keys' row index, whether they are real rows)."""
    k_index, k_real = _tokens(window, keys, height, width, windows_w, shift_h, shift_w, N_CTX,
                              IMAGE, WIN_H, WIN_W, TIMM_ORDER, PADDED)
    k, k_norm = _normalized(_load_filled(K, stride_kn, k_index, k_real, keys, k_fill, channels, N_CTX,
                                         HEAD_DIM, HAS_FILL), COSINE, ACC)
    v = _load_filled(V, stride_vn, k_index, k_real, keys, v_fill, channels, N_CTX, HEAD_DIM, HAS_FILL)
    return k, k_norm, v, k_index, k_real


@triton.jit
def _load_pairs(ptr, rows, keys, N_CTX: tl.constexpr, ACC: tl.constexpr):
    """ptr[rows, keys] of a contiguous (N, N) bias or mask as ACC, zero outside the window.

    With N a constant the addresses are fixed offsets, which keeps registers low.
    """
    return _load_tile(ptr, N_CTX, rows, keys, N_CTX, N_CTX).to(ACC)


@triton.jit
def _additive(bias_ptr, mask_ptr, rows, keys, window, windows_w, windows_per_image, shift_h, shift_w,
              N_CTX: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr, IMAGE: tl.constexpr,
              WIN_H: tl.constexpr, WIN_W: tl.constexpr, ACC: tl.constexpr):
    """What is added to scale * q k^T on one (query, key) tile: (a tile, the rows' and
    the keys' shift-mask region codes); bias_ptr and mask_ptr point at this head's bias
    and this window's mask.

    The tile holds the bias and the window layout's mask tensor. The image layout's
    mask is -100 between tokens of different regions (token_regions); it is applied
    to the logits by _logits, in their own layout, rather than built as a tile here
    (which cost a 64 x 64 fp32 layout conversion and, in the sm_90 cosine backward,
    spills). Without it the codes are zeros and that step folds away."""
    additive = tl.zeros((rows.shape[0], keys.shape[0]), ACC)
    if HAS_BIAS:
        additive += _load_pairs(bias_ptr, rows, keys, N_CTX, ACC)
    if HAS_MASK and not IMAGE:
        additive += _load_pairs(mask_ptr, rows, keys, N_CTX, ACC)
    if HAS_MASK and IMAGE:
        return (additive, token_regions(window, rows, windows_w, windows_per_image, shift_h, shift_w, WIN_H, WIN_W),
                token_regions(window, keys, windows_w, windows_per_image, shift_h, shift_w, WIN_H, WIN_W))
    else:
        return additive, tl.zeros_like(rows), tl.zeros_like(keys)


@triton.jit
def _normalized(x, COSINE: tl.constexpr, ACC: tl.constexpr):
    """COSINE: (x / max(||x||, eps) per row, in x's dtype, and ||x||); else (x, a stand-in).

    Zero (padded) rows stay zero."""
    if COSINE:
        x_acc = x.to(ACC)
        norm = tl.sqrt(tl.sum(x_acc * x_acc, 1))
        return (x_acc / tl.maximum(norm, tl.full((), 1e-12, ACC))[:, None]).to(x.dtype), norm
    else:
        return x, tl.sum(tl.zeros((x.shape[0], 1), ACC), 1)


@triton.jit
def _through_normalize(grad, x_hat, norm, COSINE: tl.constexpr, ACC: tl.constexpr):
    """COSINE: the gradient w.r.t. x of x^ = x / max(||x||, eps) given grad = dL/dx^
    (F.normalize's autograd: the projection drops where ||x|| < eps, the clamp's
    zero gradient); else grad unchanged."""
    if COSINE:
        eps = tl.full((), 1e-12, ACC)
        x_hat = x_hat.to(ACC)
        along = tl.where(norm >= eps, tl.sum(grad * x_hat, 1), 0.0)
        return (grad - x_hat * along[:, None]) / tl.maximum(norm, eps)[:, None]
    else:
        return grad


@triton.jit
def _scale_grad_rows(dq_hat, q_hat, ACC: tl.constexpr):
    """Row sums q^_i . dq^_i = sum over j of dS_ij * s_h q^_i . k^_j, given the complete
    dq^ = s_h dS k^ of a block of queries: what dlogit_scale sums (divided by the
    clamp's d s_h / d logit_scale = s_h), without another (query, key) tile."""
    return tl.sum(dq_hat * q_hat.to(ACC), 1)


@triton.jit
def _head_scale(scale, LOGIT_SCALE, h, COSINE: tl.constexpr, ACC: tl.constexpr):
    """The multiplier of q k^T: scale (v1), or s_h = exp(min(logit_scale[h], log 100))
    (COSINE); and d s_h / d logit_scale[h] / s_h: 1, or 0 where the clamp is active
    (at logit_scale == the bound too, as torch.clamp's gradient is there)."""
    scale = tl.cast(scale, ACC)  # a Python float reaches here as fp64 under torch.compile
    through = tl.cast(1.0, ACC)
    if COSINE:
        # reference.LOGIT_SCALE_MAX = log(100), rounded to ACC as torch.clamp rounds it.
        bound = tl.full((), 4.605170185988092, ACC)
        log_scale = tl.load(LOGIT_SCALE + h).to(ACC)
        scale = tl.exp(tl.minimum(log_scale, bound))
        through = tl.where(log_scale < bound, through, 0.0)
    return scale, through


@triton.jit
def _logits(q, k, keys, scale, additive, row_region, key_region, N_CTX: tl.constexpr, PRECISION: tl.constexpr,
            ACC: tl.constexpr):
    """S = scale * q k^T + additive, - 100 between regions (see _additive), on one
    (query, key) tile; -inf in padded key columns."""
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION, out_dtype=ACC) * scale + additive
    s = tl.where(row_region[:, None] != key_region[None, :], s - 100.0, s)
    # Padded query rows stay finite (q and the additive terms are zero there), so no NaN arises.
    return tl.where(keys[None, :] < N_CTX, s, float("-inf"))


@triton.jit
def _query_block(Q, O, DO, LSE, stride_qn, stride_on, stride_don, rows, channels, window, height, width,
                 windows_w, shift_h, shift_w, N_CTX: tl.constexpr, HEAD_DIM: tl.constexpr, COSINE: tl.constexpr,
                 ACC: tl.constexpr, IMAGE: tl.constexpr, WIN_H: tl.constexpr, WIN_W: tl.constexpr,
                 TIMM_ORDER: tl.constexpr, PADDED: tl.constexpr):
    """What the backward needs of a block of queries: (q, ||q|| under COSINE, dO, lse,
    D = rowsum(dO * O), the queries' row index, whether they are real rows).

    Padding queries (not real) read zeros: with dO = 0 they pass no gradient."""
    index, real = _tokens(window, rows, height, width, windows_w, shift_h, shift_w, N_CTX,
                          IMAGE, WIN_H, WIN_W, TIMM_ORDER, PADDED)
    q, q_norm = _normalized(_load_rows(Q, stride_qn, index, real, channels, HEAD_DIM), COSINE, ACC)
    do = _load_rows(DO, stride_don, index, real, channels, HEAD_DIM)
    o = _load_rows(O, stride_on, index, real, channels, HEAD_DIM)
    lse = tl.load(LSE + rows, mask=rows < N_CTX, other=0.0).to(ACC)
    return q, q_norm, do, lse, tl.sum(do.to(ACC) * o.to(ACC), 1), index, real


@triton.jit
def _score_grads(q, k, v, do, lse, delta, keys, scale, additive, row_region, key_region, N_CTX: tl.constexpr,
                 PRECISION: tl.constexpr, ACC: tl.constexpr):
    """P = exp(S - lse) and dS = P * (dO V^T - D) on one (query, key) tile."""
    p = tl.exp(_logits(q, k, keys, scale, additive, row_region, key_region, N_CTX, PRECISION, ACC) - lse[:, None])
    dp = tl.dot(do, tl.trans(v), input_precision=PRECISION, out_dtype=ACC)
    return p, p * (dp - delta[:, None])


@triton.jit
def _window_attention_fwd_kernel(
        Q, K, V, BIAS, MASK, LOGIT_SCALE, FILL, OUT, LSE,
        stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
        stride_ob, stride_oh, stride_on, heads, mask_windows, scale,
        height, width, windows_w, windows_per_image, shift_h, shift_w, channels_per_part,
        N_CTX: tl.constexpr, HEAD_DIM: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr,
        COSINE: tl.constexpr, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
        ACC: tl.constexpr, IMAGE: tl.constexpr, WIN_H: tl.constexpr, WIN_W: tl.constexpr,
        TIMM_ORDER: tl.constexpr, PADDED: tl.constexpr, HAS_FILL: tl.constexpr):
    """One program per (window b, head h): O[b, h] = softmax(S) V and lse[b, h] = logsumexp(S).

    Per query block, an online softmax over key blocks (one block when N <= BLOCK).
    LSE is contiguous (B_, heads, N). COSINE: q and k tiles normalized as loaded,
    scale = s_h from LOGIT_SCALE (heads,), contiguous.

    IMAGE: Q, K, V, OUT are (B, heads, H * W, d) views of the un-partitioned maps and
    window b is window b % windows_per_image of image b // windows_per_image: rows are
    read from and written to their pixels (_tokens), padding keys and values read FILL
    (the qkv bias: k at channels_per_part + h * d, v at 2 * channels_per_part + h * d),
    the mask comes from the tokens' regions (HAS_MASK) and padding queries are not
    written.
    """
    pid = tl.program_id(0).to(tl.int64)
    b = pid // heads
    h = pid % heads
    scale, through = _head_scale(scale, LOGIT_SCALE, h, COSINE, ACC)
    image = b // windows_per_image if IMAGE else b
    window = (b % windows_per_image).to(tl.int32)
    Q += image * stride_qb + h * stride_qh
    K += image * stride_kb + h * stride_kh
    V += image * stride_vb + h * stride_vh
    OUT += image * stride_ob + h * stride_oh
    LSE += pid * N_CTX
    k_fill = FILL + channels_per_part + h * HEAD_DIM
    v_fill = k_fill + channels_per_part
    bias_ptr = BIAS + h * N_CTX * N_CTX
    mask_ptr = MASK + (b % mask_windows) * N_CTX * N_CTX
    channels = tl.arange(0, BLOCK_D)
    for query_start in range(0, N_CTX, BLOCK):
        rows = query_start + tl.arange(0, BLOCK)
        q_index, q_real = _tokens(window, rows, height, width, windows_w, shift_h, shift_w, N_CTX,
                                    IMAGE, WIN_H, WIN_W, TIMM_ORDER, PADDED)
        # Padding queries' outputs are never written, so they need no fill.
        q, q_norm = _normalized(_load_rows(Q, stride_qn, q_index, q_real, channels, HEAD_DIM), COSINE, ACC)
        row_max = tl.full((BLOCK,), float("-inf"), ACC)
        row_sum = tl.zeros((BLOCK,), ACC)
        acc = tl.zeros((BLOCK, BLOCK_D), ACC)
        for key_start in range(0, N_CTX, BLOCK):
            keys = key_start + tl.arange(0, BLOCK)
            k, k_norm, v, k_index, k_real = _key_block(
                K, V, stride_kn, stride_vn, k_fill, v_fill, keys, channels, window, height, width,
                windows_w, shift_h, shift_w, N_CTX, HEAD_DIM, COSINE, ACC, IMAGE, WIN_H, WIN_W, TIMM_ORDER, PADDED,
                HAS_FILL)
            additive, row_region, key_region = _additive(
                bias_ptr, mask_ptr, rows, keys, window, windows_w, windows_per_image, shift_h, shift_w, N_CTX,
                HAS_BIAS, HAS_MASK, IMAGE, WIN_H, WIN_W, ACC)
            s = _logits(q, k, keys, scale, additive, row_region, key_region, N_CTX, PRECISION, ACC)
            # Every key block holds at least one real key, so new_max is finite.
            new_max = tl.maximum(row_max, tl.max(s, 1))
            rescale = tl.exp(row_max - new_max)
            p = tl.exp(s - new_max[:, None])
            row_sum = row_sum * rescale + tl.sum(p, 1)
            acc = acc * rescale[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION, out_dtype=ACC)
            row_max = new_max
        _store_rows(OUT, stride_on, q_index, q_real, channels, HEAD_DIM, acc / row_sum[:, None])
        lse = row_max + tl.log(row_sum)
        tl.store(LSE + rows, lse.to(LSE.dtype.element_ty), mask=rows < N_CTX)


@triton.jit
def _window_attention_bwd_kernel(
        Q, K, V, BIAS, MASK, LOGIT_SCALE, FILL, OUT, LSE, DOUT, DQ, DK, DV, DBIAS, DLOGIT_SCALE, DPAD,
        stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
        stride_ob, stride_oh, stride_on, stride_dob, stride_doh, stride_don,
        stride_dqb, stride_dqh, stride_dqn, stride_dkb, stride_dkh, stride_dkn, stride_dvb, stride_dvh, stride_dvn,
        stride_dbias_slot, stride_dscale_slot, stride_dpad_b, windows, heads, mask_windows,
        windows_per_program, scale, height, width, windows_w, windows_per_image, shift_h, shift_w,
        channels_per_part,
        N_CTX: tl.constexpr, HEAD_DIM: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr,
        COSINE: tl.constexpr, BIAS_GRAD: tl.constexpr, ATOMIC_DBIAS: tl.constexpr, SCALE_GRAD: tl.constexpr,
        ATOMIC_DSCALE: tl.constexpr, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
        ACC: tl.constexpr, IMAGE: tl.constexpr, WIN_H: tl.constexpr, WIN_W: tl.constexpr,
        TIMM_ORDER: tl.constexpr, PADDED: tl.constexpr, HAS_FILL: tl.constexpr, FILL_GRAD: tl.constexpr,
        ROW_ALIGN: tl.constexpr):
    """One program per (group of windows_per_program windows, head h): dQ, dK, dV of each
    window, and the group's share of dbias[h] = sum of dS over its windows.

    Per window: key blocks outside, query blocks inside, dK and dV summed in registers.
    One tile (N <= BLOCK): dQ comes out of the same pass, and dS is summed over the
    group in registers, then added atomically into slot 0 of DBIAS (ATOMIC_DBIAS,
    stride_dbias_slot == 0) or stored in the group's own slot (deterministic; the
    caller sums the slots). Several tiles: a second pass, query blocks outside,
    sums dQ; the (N, N) dS sum does not fit in registers, so each tile of dS is
    added in place into the group's own slot (zeroed by the caller, touched by no
    other program: no atomics). DBIAS is ACC-typed (slots, heads, N, N), contiguous.

    COSINE: q and k tiles normalized as loaded, dQ and dK taken through the
    normalization where they are stored. SCALE_GRAD: the group's dlogit_scale[h] =
    sum of dS * s_h q^ k^T = sum of q^ . dq^ over its queries (taken from each
    complete block of dq^, so no (query, key) tile is kept for it), summed in
    registers, then added atomically into DLOGIT_SCALE slot 0 (ATOMIC_DSCALE,
    stride_dscale_slot == 0) or stored in the group's slot. DLOGIT_SCALE is
    ACC-typed (slots, heads), contiguous.

    IMAGE: the tensors are (B, heads, H * W, d) views of the un-partitioned maps, as in
    the forward; dQ, dK, dV of padding tokens are not written there. FILL_GRAD: the
    padding keys' dK and values' dV (what the qkv bias they read receives) are stored
    at their own rows (token_rows) of DPAD, (B, padding rows, 2 * channels_per_part) in
    DK's dtype, k's then v's channels, row stride 2 * channels_per_part: no atomics, no
    registers held across windows; the caller sums it (zeroed: rows of real tokens
    stay 0). ROW_ALIGN: see _store_key_rows.
    """
    group = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1).to(tl.int64)
    scale, through = _head_scale(scale, LOGIT_SCALE, h, COSINE, ACC)
    SINGLE_TILE: tl.constexpr = N_CTX <= BLOCK
    channels = tl.arange(0, BLOCK_D)
    bias_ptr = BIAS + h * N_CTX * N_CTX
    dbias_ptr = DBIAS + group * stride_dbias_slot + h * N_CTX * N_CTX
    dbias = tl.zeros((BLOCK, BLOCK), ACC)
    dscale = tl.zeros((BLOCK,), ACC)
    k_fill = FILL + channels_per_part + h * HEAD_DIM
    v_fill = k_fill + channels_per_part
    # One tile: the bias is the same for every window, so it is loaded once (which
    # also saves the registers its addresses would hold across the window loop).
    # COSINE needs those registers for the normalization's chain rule, IMAGE for the
    # token addressing (sm_80 / sm_90 spill otherwise): they read the bias per window,
    # from L1 / L2.
    HOLD_BIAS: tl.constexpr = SINGLE_TILE and not COSINE and not IMAGE
    bias = tl.zeros((BLOCK, BLOCK), ACC)
    if HOLD_BIAS and HAS_BIAS:
        bias = _load_pairs(bias_ptr, tl.arange(0, BLOCK), tl.arange(0, BLOCK), N_CTX, ACC)
    first = group * windows_per_program
    for b in range(first, tl.minimum(first + windows_per_program, windows)):
        image = b // windows_per_image if IMAGE else b
        window = (b % windows_per_image).to(tl.int32)
        q_ptr = Q + image * stride_qb + h * stride_qh
        k_ptr = K + image * stride_kb + h * stride_kh
        v_ptr = V + image * stride_vb + h * stride_vh
        o_ptr = OUT + image * stride_ob + h * stride_oh
        do_ptr = DOUT + image * stride_dob + h * stride_doh
        dq_ptr = DQ + image * stride_dqb + h * stride_dqh
        lse_ptr = LSE + (b * heads + h) * N_CTX
        mask_ptr = MASK + (b % mask_windows) * N_CTX * N_CTX
        for key_start in range(0, N_CTX, BLOCK):
            keys = key_start + tl.arange(0, BLOCK)
            k, k_norm, v, k_index, k_real = _key_block(
                k_ptr, v_ptr, stride_kn, stride_vn, k_fill, v_fill, keys, channels, window, height, width,
                windows_w, shift_h, shift_w, N_CTX, HEAD_DIM, COSINE, ACC, IMAGE, WIN_H, WIN_W, TIMM_ORDER, PADDED,
                HAS_FILL)
            dk = tl.zeros((BLOCK, BLOCK_D), ACC)
            dv = tl.zeros((BLOCK, BLOCK_D), ACC)
            for query_start in range(0, N_CTX, BLOCK):
                rows = query_start + tl.arange(0, BLOCK)
                q, q_norm, do, lse, delta, q_index, q_real = _query_block(
                    q_ptr, o_ptr, do_ptr, lse_ptr, stride_qn, stride_on, stride_don, rows, channels, window, height,
                    width, windows_w, shift_h, shift_w, N_CTX, HEAD_DIM, COSINE, ACC, IMAGE, WIN_H, WIN_W, TIMM_ORDER,
                    PADDED)
                additive, row_region, key_region = _additive(
                    bias_ptr, mask_ptr, rows, keys, window, windows_w, windows_per_image, shift_h, shift_w, N_CTX,
                    HAS_BIAS and not HOLD_BIAS, HAS_MASK, IMAGE, WIN_H, WIN_W, ACC)
                if HOLD_BIAS:
                    additive += bias
                p, ds = _score_grads(q, k, v, do, lse, delta, keys, scale, additive, row_region, key_region, N_CTX,
                                     PRECISION, ACC)
                dv += tl.dot(tl.trans(p).to(do.dtype), do, input_precision=PRECISION, out_dtype=ACC)
                dk += tl.dot(tl.trans(ds).to(q.dtype), q, input_precision=PRECISION, out_dtype=ACC)
                if SINGLE_TILE:
                    dq = tl.dot(ds.to(k.dtype), k, input_precision=PRECISION, out_dtype=ACC) * scale
                    if SCALE_GRAD:
                        dscale += _scale_grad_rows(dq, q, ACC)
                    _store_rows(dq_ptr, stride_dqn, q_index, q_real, channels, HEAD_DIM,
                                _through_normalize(dq, q, q_norm, COSINE, ACC))
                    if BIAS_GRAD:
                        dbias += ds
                elif BIAS_GRAD:
                    partial = _load_tile(dbias_ptr, N_CTX, rows, keys, N_CTX, N_CTX)
                    _store_tile(dbias_ptr, N_CTX, rows, keys, N_CTX, N_CTX, partial + ds)
            dk = _through_normalize(dk * scale, k, k_norm, COSINE, ACC)
            dpad_ptr = DPAD + image * stride_dpad_b + h * HEAD_DIM
            _store_key_rows(DK + image * stride_dkb + h * stride_dkh, stride_dkn, dpad_ptr, 2 * channels_per_part,
                            k_index, k_real, keys, channels, N_CTX, HEAD_DIM, FILL_GRAD, ROW_ALIGN, dk)
            _store_key_rows(DV + image * stride_dvb + h * stride_dvh, stride_dvn, dpad_ptr + channels_per_part,
                            2 * channels_per_part, k_index, k_real, keys, channels, N_CTX, HEAD_DIM, FILL_GRAD,
                            ROW_ALIGN, dv)
        if not SINGLE_TILE:
            for query_start in range(0, N_CTX, BLOCK):
                rows = query_start + tl.arange(0, BLOCK)
                q, q_norm, do, lse, delta, q_index, q_real = _query_block(
                    q_ptr, o_ptr, do_ptr, lse_ptr, stride_qn, stride_on, stride_don, rows, channels, window, height,
                    width, windows_w, shift_h, shift_w, N_CTX, HEAD_DIM, COSINE, ACC, IMAGE, WIN_H, WIN_W, TIMM_ORDER,
                    PADDED)
                dq = tl.zeros((BLOCK, BLOCK_D), ACC)
                for key_start in range(0, N_CTX, BLOCK):
                    keys = key_start + tl.arange(0, BLOCK)
                    k, k_norm, v, k_index, k_real = _key_block(
                        k_ptr, v_ptr, stride_kn, stride_vn, k_fill, v_fill, keys, channels, window, height, width,
                        windows_w, shift_h, shift_w, N_CTX, HEAD_DIM, COSINE, ACC, IMAGE, WIN_H, WIN_W, TIMM_ORDER,
                        PADDED, HAS_FILL)
                    additive, row_region, key_region = _additive(
                        bias_ptr, mask_ptr, rows, keys, window, windows_w, windows_per_image, shift_h, shift_w, N_CTX,
                        HAS_BIAS, HAS_MASK, IMAGE, WIN_H, WIN_W, ACC)
                    p, ds = _score_grads(q, k, v, do, lse, delta, keys, scale, additive, row_region, key_region,
                                         N_CTX, PRECISION, ACC)
                    dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION, out_dtype=ACC)
                dq *= scale
                if SCALE_GRAD:
                    dscale += _scale_grad_rows(dq, q, ACC)
                _store_rows(dq_ptr, stride_dqn, q_index, q_real, channels, HEAD_DIM,
                            _through_normalize(dq, q, q_norm, COSINE, ACC))
    if SINGLE_TILE and BIAS_GRAD:
        pairs = tl.arange(0, BLOCK)
        inside = (pairs[:, None] < N_CTX) & (pairs[None, :] < N_CTX)
        offsets = pairs[:, None] * N_CTX + pairs[None, :]
        if ATOMIC_DBIAS:
            tl.atomic_add(dbias_ptr + offsets, dbias, mask=inside, sem="relaxed")
        else:
            tl.store(dbias_ptr + offsets, dbias, mask=inside)
    if SCALE_GRAD:
        # d S / d logit_scale[h] = s_h q^ k^T where the clamp passes the gradient, else 0.
        dscale_total = tl.sum(dscale, 0) * through
        dscale_ptr = DLOGIT_SCALE + group * stride_dscale_slot + h
        if ATOMIC_DSCALE:
            tl.atomic_add(dscale_ptr, dscale_total, sem="relaxed")
        else:
            tl.store(dscale_ptr, dscale_total)


# ----------------------------------------------------------------------------- launchers


class TileConfig(NamedTuple):
    """Compile-time tiling of both kernels for windows of n tokens."""
    n: int
    block: int
    block_d: int
    forward_launch: dict
    backward_launch: dict

    @property
    def single_tile(self) -> bool:
        return self.n <= self.block


def tile_config(n: int, head_dim: int, dtype: torch.dtype, arch: int = 90, image: bool = False) -> TileConfig:
    """Tiles and launch options for N tokens of head_dim channels (padded to a power of two)
    on sm_<arch>.

    One tile, N rounded up to a power of two, when N <= 32, or, on sm_90 and newer,
    N <= 64 with rows of at most 64 bytes (Swin's 7x7 and 8x8 windows at head_dim 32
    in fp16 / bf16); else 32 x 32 tiles (144 tokens pad to 160, not 192). The backward
    holds several fp32 tiles at once (P, dS, the dbias sum, the dK and dV sums) and
    runs out of registers first: these choices, without software pipelining and at 8
    warps for 64 x 64 tiles, compile without spills for sm_80 and sm_90 (on sm_80 a
    64 x 64 backward spilled 16 bytes, hence 32 x 32 tiles there; AOT figures:
    benchmarks/PREDICTIONS-window-attention.md, `fastswin compile-report`).
    """
    block_n = max(16, triton.next_power_of_2(n))
    block_d = max(16, triton.next_power_of_2(head_dim))
    narrow_rows = block_d * dtype.itemsize <= 64
    block = block_n if block_n <= 32 or (block_n == 64 and narrow_rows and arch >= 90) else 32
    # sm_80's ptxas spilled the two-stage forward (12 bytes at N = 64, bf16): one stage there.
    return TileConfig(n, block=block, block_d=block_d,
                      forward_launch=dict(num_warps=4, num_stages=2 if arch >= 90 else 1),
                      # The image-layout backward also holds its tokens' addressing: 8 warps.
                      backward_launch=dict(num_warps=8 if block == 64 or image else 4, num_stages=1))


def device_arch(device: torch.device) -> int:
    """sm_<arch> of a CUDA device; the interpreter follows sm_90's choices."""
    if device.type != "cuda":
        return 90
    major, minor = torch.cuda.get_device_capability(device)
    return 10 * major + minor


def _accumulator(dtype: torch.dtype) -> Tuple[torch.dtype, "tl.dtype"]:
    return (torch.float64, tl.float64) if dtype == torch.float64 else (torch.float32, tl.float32)


def _dot_precision(dtype: torch.dtype, device: torch.device) -> str:
    """tf32 for fp32 CUDA inputs when torch allows it; full precision elsewhere
    (the interpreter computes in full precision)."""
    allowed = torch.backends.cuda.matmul.allow_tf32 and dtype == torch.float32
    return "tf32" if allowed and device.type == "cuda" else "ieee"


def _device_guard(device: torch.device):
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _unit_last_stride(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _bshd_empty(q: torch.Tensor) -> torch.Tensor:
    """(B_, heads, N, d) view of a contiguous (B_, N, heads, d) buffer, so that the
    caller's `.transpose(1, 2).reshape(B_, N, C)` is free."""
    B_, heads, n, d = q.shape
    return q.new_empty(B_, n, heads, d).transpose(1, 2)


def _pairs(x: Optional[torch.Tensor], stand_in: torch.Tensor) -> torch.Tensor:
    """A bias or mask as the kernels read it (contiguous); a stand-in pointer, never
    read (HAS_BIAS / HAS_MASK off), when absent."""
    return stand_in if x is None else x.contiguous()


def _constexprs(cfg: TileConfig, head_dim: int, bias: bool, mask: bool, cosine: bool, precision: str,
                acc) -> dict:
    """Compile-time arguments shared by both kernels."""
    return dict(N_CTX=cfg.n, HEAD_DIM=head_dim, HAS_BIAS=bias, HAS_MASK=mask, COSINE=cosine, BLOCK=cfg.block,
                BLOCK_D=cfg.block_d, PRECISION=precision, ACC=acc)


class ImageLayout(NamedTuple):
    """The tensors given to the launchers are (B, heads, H * W, d) views of un-partitioned
    (B, H, W, .) maps, attended in (shifted) windows; see fastswin.ops.image_layout.

    shift is the one applied (no adjustment here), 0 <= shift < window; fill: the (3C,)
    qkv bias that padding tokens read, or None for zeros."""
    height: int
    width: int
    window: Tuple[int, int]
    shift: Tuple[int, int]
    timm_order: bool
    fill: Optional[torch.Tensor]

    @property
    def padded(self) -> bool:
        return self.height % self.window[0] != 0 or self.width % self.window[1] != 0

    @property
    def reads_fill(self) -> bool:
        """Padding tokens read the fill: compiled in only where the map has padding."""
        return self.fill is not None and self.padded


class _Layout(NamedTuple):
    """What the kernels take of a layout: windows, tokens per window, scalar arguments
    (height, width, windows_w, windows_per_image, shift_h, shift_w, channels_per_part)
    and compile-time ones."""
    windows: int
    n: int
    args: tuple
    constexprs: dict


def _layout(q: torch.Tensor, image: Optional[ImageLayout]) -> _Layout:
    if image is None:
        return _Layout(q.shape[0], q.shape[2], (1, 1, 1, 1, 0, 0, 0),
                       dict(IMAGE=False, WIN_H=1, WIN_W=1, TIMM_ORDER=False, PADDED=False, HAS_FILL=False))
    (wh, ww), (sh, sw) = image.window, image.shift
    windows_w = -(-image.width // ww)
    per_image = -(-image.height // wh) * windows_w
    args = (image.height, image.width, windows_w, per_image, sh, sw, q.shape[1] * q.shape[3])
    return _Layout(q.shape[0] * per_image, wh * ww, args,
                   dict(IMAGE=True, WIN_H=wh, WIN_W=ww, TIMM_ORDER=image.timm_order, PADDED=image.padded,
                        HAS_FILL=image.reads_fill,
                        HAS_MASK=sh > 0 or sw > 0))


def _launch_constexprs(q: torch.Tensor, layout: _Layout, bias, mask, logit_scale) -> dict:
    d = q.shape[3]
    common = _constexprs(tile_config(layout.n, d, q.dtype, device_arch(q.device)), d, bias is not None,
                         mask is not None, logit_scale is not None, _dot_precision(q.dtype, q.device),
                         _accumulator(q.dtype)[1])
    return {**common, **layout.constexprs}


def _per_head(logit_scale: Optional[torch.Tensor], stand_in: torch.Tensor) -> torch.Tensor:
    """logit_scale (heads, 1, 1) as the kernels read it, (heads,) contiguous; a stand-in
    pointer, never read (COSINE off), when absent."""
    return stand_in if logit_scale is None else logit_scale.reshape(-1).contiguous()


def window_attention_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                             bias: Optional[torch.Tensor], mask: Optional[torch.Tensor],
                             scale: float, logit_scale: Optional[torch.Tensor] = None,
                             image: Optional[ImageLayout] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward kernel.

    q, k, v: (B_, heads, N, d), any strides with unit last stride; bias (heads, N, N)
    and mask (nW, N, N), any float type (copied if not contiguous), or None. Inputs
    are assumed valid (see `window_attention`). logit_scale: (heads, 1, 1), any float
    type, for Swin-V2 cosine attention (scale is then ignored), or None for v1.

    image: q, k, v are (B, heads, H * W, d) views of (B, H, W, .) maps (ImageLayout),
    mask is None (the shift mask comes from the layout).

    Returns out (B_, heads, N, d) (a view of a contiguous (B_, N, heads, d) buffer;
    with image, (B, heads, H * W, d), a view of a contiguous (B, H, W, C) map) and
    lse (windows, heads, N), contiguous, fp32 (fp64 for fp64 inputs).
    """
    q, k, v = _unit_last_stride(q), _unit_last_stride(k), _unit_last_stride(v)
    heads, d = q.shape[1], q.shape[3]
    layout = _layout(q, image)
    out = _bshd_empty(q)
    lse = torch.empty(layout.windows, heads, layout.n, device=q.device, dtype=_accumulator(q.dtype)[0])
    fill = image.fill if image is not None and image.reads_fill else q
    with _device_guard(q.device):
        _window_attention_fwd_kernel[(layout.windows * heads,)](
            q, k, v, _pairs(bias, q), _pairs(mask, q), _per_head(logit_scale, q), fill, out, lse,
            *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3],
            heads, 1 if mask is None else mask.shape[0], scale, *layout.args,
            **_launch_constexprs(q, layout, bias, mask, logit_scale),
            **tile_config(layout.n, d, q.dtype, device_arch(q.device)).forward_launch)
    return out, lse


def windows_per_program(windows: int, heads: int) -> int:
    """Windows each backward program reduces dbias over (see TARGET_BACKWARD_PROGRAMS)."""
    return max(1, min(MAX_WINDOWS_PER_PROGRAM, windows * heads // TARGET_BACKWARD_PROGRAMS))


def window_attention_backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                              out: torch.Tensor, lse: torch.Tensor, bias: Optional[torch.Tensor],
                              mask: Optional[torch.Tensor], scale: float, bias_grad: bool,
                              deterministic: Optional[bool] = None, group_size: Optional[int] = None,
                              logit_scale: Optional[torch.Tensor] = None, logit_scale_grad: bool = False,
                              image: Optional[ImageLayout] = None, fill_grad: bool = False,
                              grads: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None) -> tuple:
    """Launch the backward kernel.

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
    heads, d = q.shape[1], q.shape[3]
    layout = _layout(q, image)
    B_, n = layout.windows, layout.n
    if deterministic is None:
        deterministic = torch.are_deterministic_algorithms_enabled()
    group_size = group_size or windows_per_program(B_, heads)
    groups = triton.cdiv(B_, group_size)
    cfg = tile_config(n, d, q.dtype, device_arch(q.device), image is not None)
    atomic = bias_grad and cfg.single_tile and not deterministic
    slots = 1 if atomic or not bias_grad else groups
    # Zeroed where the kernel adds into the slots; else every slot is overwritten.
    allocate = torch.zeros if atomic or not cfg.single_tile else torch.empty
    dbias_slots = allocate(slots, heads, n, n, device=q.device, dtype=_accumulator(q.dtype)[0])
    # dlogit_scale: one scalar per program, added atomically or stored in its slot
    # (without it, dbias_slots stands in as a pointer never written).
    scale_grad = logit_scale is not None and logit_scale_grad
    atomic_dscale = scale_grad and not deterministic
    dscale_slots = dbias_slots
    if scale_grad:
        dscale_slots = (torch.zeros if atomic_dscale else torch.empty)(
            1 if atomic_dscale else groups, heads, device=q.device, dtype=_accumulator(q.dtype)[0])
    # d(fill): the padding keys' dK and values' dV, a row per padding token, summed here;
    # its q part stays zero (padding queries pass no gradient), as does all of it where
    # the map has no padding (the kernel then skips it).
    fill_grad = fill_grad and image is not None and image.fill is not None
    reads_fill = image is not None and image.reads_fill
    pad_grad = fill_grad and reads_fill
    dq, dk, dv = grads if grads is not None else (_bshd_empty(q), _bshd_empty(q), _bshd_empty(q))
    dpad = dbias_slots
    row_align = 1
    if pad_grad:
        dpad = dk.new_zeros(q.shape[0], padding_rows(image.height, image.width, image.window), 2 * heads * d)
        row_align = _row_alignment(dk, dv, dpad.unflatten(-1, (2 * heads, d)))
    fill = image.fill if reads_fill else q
    with _device_guard(q.device):
        _window_attention_bwd_kernel[(groups, heads)](
            q, k, v, _pairs(bias, q), _pairs(mask, q), _per_head(logit_scale, q), fill, out, lse, grad_out,
            dq, dk, dv, dbias_slots, dscale_slots, dpad,
            *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3], *grad_out.stride()[:3],
            *dq.stride()[:3], *dk.stride()[:3], *dv.stride()[:3], 0 if atomic else dbias_slots.stride(0),
            0 if atomic_dscale else dscale_slots.stride(0), dpad.stride(0),
            B_, heads, 1 if mask is None else mask.shape[0], group_size, scale, *layout.args,
            BIAS_GRAD=bias_grad, ATOMIC_DBIAS=atomic, SCALE_GRAD=scale_grad, ATOMIC_DSCALE=atomic_dscale,
            FILL_GRAD=pad_grad, ROW_ALIGN=row_align,
            **_launch_constexprs(q, layout, bias, mask, logit_scale), **cfg.backward_launch)
    grads_out = (dq, dk, dv, dbias_slots.sum(0).to(bias.dtype) if bias_grad else None)
    if logit_scale is not None:
        grads_out += (dscale_slots.sum(0).reshape(logit_scale.shape).to(logit_scale.dtype) if scale_grad else None,)
    if image is not None:
        dfill = None
        if fill_grad:
            dfill = _fill_grad(dpad, image.fill) if pad_grad else torch.zeros_like(image.fill)
        grads_out += (dfill,)
    return grads_out


def _row_alignment(*tensors: torch.Tensor) -> int:
    """Bytes, a power of two up to 16, that the start of every (.., row, :) of these
    tensors is aligned to: their addresses and strides but the last."""
    offsets = [t.data_ptr() for t in tensors] + [s * t.element_size() for t in tensors for s in t.stride()[:-1]]
    return math.gcd(16, *offsets)


def _fill_grad(dpad: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """d(fill) (3C,) from the padding tokens' dK and dV (B, padding rows, 2C)."""
    return torch.cat([fill.new_zeros(fill.numel() - dpad.shape[-1]),
                      dpad.sum((0, 1), dtype=_accumulator(dpad.dtype)[0]).to(fill.dtype)])


class KernelSpec(NamedTuple):
    """One kernel as launched for given shapes, in the terms fastswin.aot.compile_kernel takes."""
    fn: object
    signature: dict
    constexprs: dict
    launch: dict
    aligned: Tuple[str, ...]


_TRITON_TYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}


def kernel_specs(n: int, head_dim: int, dtype: torch.dtype, bias: bool = True, mask: bool = True,
                 cosine: bool = False, arch: int = 90, image: bool = False,
                 padded: bool = False) -> Tuple[KernelSpec, KernelSpec]:
    """Forward and backward kernels as launched on a GPU for N tokens, head_dim, dtype
    (fp16, bf16, fp32; bias and mask of that dtype), with atomic dbias, for
    ahead-of-time compile reports (fastswin.aot). cosine: the Swin-V2 kernels (fp32
    logit_scale, atomic dlogit_scale). image: the image-layout kernels of
    shifted_window_attention (square windows of N tokens, torchvision's order); padded:
    on a map with padding (qkv-bias fill and its gradient compiled in)."""
    from fastswin.aot import signature

    cfg = tile_config(n, head_dim, dtype, arch, image)
    window = math.isqrt(n)
    common = {**_constexprs(cfg, head_dim, bias, mask, cosine, "tf32" if dtype == torch.float32 else "ieee",
                            tl.float32),
              **dict(IMAGE=image, WIN_H=window if image else 1, WIN_W=window if image else 1, TIMM_ORDER=False,
                     PADDED=image and padded, HAS_FILL=image and padded)}
    backward = dict(BIAS_GRAD=bias, ATOMIC_DBIAS=cfg.single_tile, SCALE_GRAD=cosine, ATOMIC_DSCALE=cosine,
                    FILL_GRAD=image and padded, ROW_ALIGN=16 if image and padded else 1)
    specs = []
    for fn, extra, launch in (
            (_window_attention_fwd_kernel, {}, cfg.forward_launch),
            (_window_attention_bwd_kernel, backward, cfg.backward_launch)):
        constexprs = {**common, **extra}
        fp32 = ("LSE", "DBIAS", "LOGIT_SCALE", "DLOGIT_SCALE")
        pointers = {name: "*fp32" if name in fp32 else "*" + _TRITON_TYPES[dtype]
                    for name in fn.arg_names if name.isupper() and name not in constexprs}
        # What the JIT sees as 16-divisible in a Swin block (head_dim a multiple of
        # 16): the pointers, the strides of the (.., N, d) tensors and of DPAD, and C.
        aligned = tuple(name for name in fn.arg_names
                        if name in pointers or name == "channels_per_part"
                        or (name.startswith("stride_") and not name.endswith("_slot")))
        specs.append(KernelSpec(fn, signature(fn, pointers, constexprs, floats=("scale",)), constexprs,
                                launch, aligned))
    return tuple(specs)


# ----------------------------------------------------------------------------- registered ops


# One pair of ops for v1 and v2: logit_scale given switches the kernels to cosine attention.
@torch.library.custom_op("fastswin::window_attention_triton", mutates_args=())
def _attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: Optional[torch.Tensor],
                  mask: Optional[torch.Tensor], logit_scale: Optional[torch.Tensor],
                  scale: float) -> Tuple[torch.Tensor, torch.Tensor]:
    return window_attention_forward(q, k, v, bias, mask, scale, logit_scale)


@_attention_op.register_fake
def _(q, k, v, bias, mask, logit_scale, scale):
    B_, heads, n, _ = q.shape
    return _bshd_empty(q), q.new_empty(B_, heads, n, dtype=_accumulator(q.dtype)[0])


@torch.library.custom_op("fastswin::window_attention_triton_backward", mutates_args=())
def _attention_backward_op(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           out: torch.Tensor, lse: torch.Tensor, bias: Optional[torch.Tensor],
                           mask: Optional[torch.Tensor], logit_scale: Optional[torch.Tensor], scale: float,
                           bias_grad: bool, logit_scale_grad: bool,
                           ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    dq, dk, dv, dbias, *dscale = window_attention_backward(
        grad_out, q, k, v, out, lse, bias, mask, scale, bias_grad, logit_scale=logit_scale,
        logit_scale_grad=logit_scale_grad)
    # A custom op cannot return None: empty tensors stand for "no dbias" / "no dlogit_scale".
    return dq, dk, dv, dbias if bias_grad else q.new_empty(0), dscale[0] if logit_scale_grad else q.new_empty(0)


@_attention_backward_op.register_fake
def _(grad_out, q, k, v, out, lse, bias, mask, logit_scale, scale, bias_grad, logit_scale_grad):
    dbias = bias.new_empty(bias.shape) if bias_grad else q.new_empty(0)
    dscale = logit_scale.new_empty(logit_scale.shape) if logit_scale_grad else q.new_empty(0)
    return _bshd_empty(q), _bshd_empty(q), _bshd_empty(q), dbias, dscale


def _setup_context(ctx, inputs, output):
    q, k, v, bias, mask, logit_scale, ctx.scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, bias, mask, logit_scale, out, lse)
    ctx.mark_non_differentiable(lse)


def _backward(ctx, grad_out, _grad_lse):
    q, k, v, bias, mask, logit_scale, out, lse = ctx.saved_tensors
    bias_grad = bias is not None and ctx.needs_input_grad[3]
    scale_grad = logit_scale is not None and ctx.needs_input_grad[5]
    dq, dk, dv, dbias, dscale = _attention_backward_op(grad_out, q, k, v, out, lse, bias, mask, logit_scale,
                                                       ctx.scale, bias_grad, scale_grad)
    return dq, dk, dv, dbias if bias_grad else None, None, dscale if scale_grad else None, None


_attention_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------- public op


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
        backend: "auto" (default: $FASTSWIN_BACKEND or auto), "triton" or "reference".
            The Triton kernels take N <= 256, 16 <= d <= 128, fp16 / bf16 / fp32 CUDA
            tensors (CPU tensors in the Triton interpreter when forced, fp64 too).

    Returns:
        (B_, heads, N, d) in q's dtype; from the Triton backend a view of a
        contiguous (B_, N, heads, d) buffer, so `.transpose(1, 2).reshape(B_, N, C)`
        costs no copy.

    The Triton backward sums the bias gradient over groups of windows in each
    program, then adds the groups atomically, or, under
    torch.use_deterministic_algorithms(True) (and whenever a window spans several
    tiles, see tile_config), sums per-group partials in a fixed order.
    """
    _check_inputs(q, k, v, bias, mask)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    forced = requested_backend(backend) == "triton"
    name = select_backend("window_attention", backend, [
        ("triton", lambda: _triton_reason(q, bias, mask, forced)),
        ("reference", lambda: None),
    ])
    if name == "reference":
        return reference.window_attention(q, k, v, _as_dtype(bias, q.dtype), _as_dtype(mask, q.dtype), scale)
    return _attention_op(q, k, v, bias, mask, None, scale)[0]


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
        backend: "auto" (default: $FASTSWIN_BACKEND or auto), "triton" or "reference";
            the Triton kernels take what `window_attention`'s do.

    Returns:
        (B_, heads, N, d) in q's dtype; from the Triton backend a view of a
        contiguous (B_, N, heads, d) buffer.

    The Triton backward reduces dbias and dlogit_scale inside each program (a group
    of windows of one head) and adds them with one atomic per program, or, under
    torch.use_deterministic_algorithms(True), sums per-program partials in a fixed
    order.
    """
    _check_inputs(q, k, v, bias, mask, "cosine_window_attention")
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
    forced = requested_backend(backend) == "triton"
    name = select_backend("cosine_window_attention", backend, [
        ("triton", lambda: _triton_reason(q, bias, mask, forced)),
        ("reference", lambda: None),
    ])
    if name == "reference":
        return reference.cosine_window_attention(q, k, v, logit_scale.to(q.dtype), _as_dtype(bias, q.dtype),
                                                 _as_dtype(mask, q.dtype))
    return _attention_op(q, k, v, bias, mask, logit_scale, 1.0)[0]


def _as_dtype(x: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    return None if x is None else x.to(dtype)


def _check_inputs(q, k, v, bias, mask, op: str = "window_attention") -> None:
    """ValueError for inputs no backend can run."""
    if q.dim() != 4:
        raise ValueError(f"fastswin.{op}: q must be (B_, heads, N, d), got shape {tuple(q.shape)}")
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"fastswin.{op}: q, k, v must have one shape, got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if not q.dtype.is_floating_point or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"fastswin.{op}: q, k, v must share one float dtype, got {q.dtype}, "
                         f"{k.dtype}, {v.dtype}")
    B_, heads, n, _ = q.shape
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


def _triton_reason(q: torch.Tensor, bias, mask, forced: bool) -> Optional[str]:
    """Why the Triton kernels cannot run these (valid) inputs, or None."""
    return triton_kernels_reason(q.shape[-2], q.shape[-1], q.dtype, q.device, forced)


def triton_kernels_reason(n: int, head_dim: int, dtype: torch.dtype, device: torch.device,
                          forced: bool) -> Optional[str]:
    """Why the attention kernels cannot run windows of n tokens of head_dim channels of
    dtype on device (shared by every op built on them), or None."""
    reason = triton_reason(device, forced, dtype)
    if reason is not None:
        return reason
    if n > MAX_TOKENS:
        return f"windows of N = {n} tokens; the kernels hold a window on chip, N <= {MAX_TOKENS}"
    if not HEAD_DIM_RANGE[0] <= head_dim <= HEAD_DIM_RANGE[1]:
        return f"head_dim {head_dim}; the kernels take {HEAD_DIM_RANGE[0]} to {HEAD_DIM_RANGE[1]}"
    # fp64 only in the interpreter: it is how gradcheck runs through the kernels.
    dtypes = GPU_DTYPES if device.type == "cuda" else GPU_DTYPES + (torch.float64,)
    if dtype not in dtypes:
        return f"dtype {dtype}; the kernels take {', '.join(str(t) for t in dtypes)} on {device.type}"
    return None
