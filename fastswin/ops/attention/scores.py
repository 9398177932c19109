"""The logits of one (query, key) tile and their softmax gradient: scale * q k^T plus
the relative-position bias and the shift mask (a tensor in the window layout, token
regions in the image layout); and the queries' gradient once dS covers every key.
"""
from fastswin.ops._triton import tl, triton
from fastswin.ops.attention.cosine import scale_grad_rows, through_normalize
from fastswin.ops.attention.image_index import token_regions
from fastswin.ops.attention.tiles import load_pairs, store_rows


@triton.jit
def additive_terms(bias_ptr, mask_ptr, rows, keys, window, height, windows_w, windows_per_image, shift_t, shift_h,
                   shift_w, N_CTX: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr, IMAGE: tl.constexpr,
                   WIN_T: tl.constexpr, WIN_H: tl.constexpr, WIN_W: tl.constexpr, ACC: tl.constexpr):
    """What is added to scale * q k^T on one (query, key) tile: (a tile, the rows' and
    the keys' shift-mask region codes); bias_ptr and mask_ptr point at this head's bias
    and this window's mask.

    The tile holds the bias and the window layout's mask tensor. The image layout's
    mask is -100 between tokens of different regions (token_regions); it is applied
    to the logits by logits, in their own layout, rather than built as a tile here
    (which cost a 64 x 64 fp32 layout conversion and, in the sm_90 cosine backward,
    spills). Without it the codes are zeros and that step folds away."""
    additive = tl.zeros((rows.shape[0], keys.shape[0]), ACC)
    if HAS_BIAS:
        additive += load_pairs(bias_ptr, rows, keys, N_CTX, ACC)
    if HAS_MASK and not IMAGE:
        additive += load_pairs(mask_ptr, rows, keys, N_CTX, ACC)
    if HAS_MASK and IMAGE:
        return (additive, token_regions(window, rows, height, windows_w, windows_per_image, shift_t, shift_h, shift_w,
                                        WIN_T, WIN_H, WIN_W),
                token_regions(window, keys, height, windows_w, windows_per_image, shift_t, shift_h, shift_w, WIN_T,
                              WIN_H, WIN_W))
    else:
        return additive, tl.zeros_like(rows), tl.zeros_like(keys)


@triton.jit
def logits(q, k, keys, scale, additive, row_region, key_region, N_CTX: tl.constexpr, PRECISION: tl.constexpr,
           ACC: tl.constexpr):
    """S = scale * q k^T + additive, - 100 between regions (see additive_terms), on one
    (query, key) tile; -inf in padded key columns."""
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION, out_dtype=ACC) * scale + additive
    s = tl.where(row_region[:, None] != key_region[None, :], s - 100.0, s)
    # Padded query rows stay finite (q and the additive terms are zero there), so no NaN arises.
    return tl.where(keys[None, :] < N_CTX, s, float("-inf"))


@triton.jit
def score_grads(q, k, v, do, lse, delta, keys, scale, additive, row_region, key_region, N_CTX: tl.constexpr,
                PRECISION: tl.constexpr, ACC: tl.constexpr):
    """P = exp(S - lse) and dS = P * (dO V^T - D) on one (query, key) tile."""
    p = tl.exp(logits(q, k, keys, scale, additive, row_region, key_region, N_CTX, PRECISION, ACC) - lse[:, None])
    dp = tl.dot(do, tl.trans(v), input_precision=PRECISION, out_dtype=ACC)
    return p, p * (dp - delta[:, None])


@triton.jit
def row_score_grads(q, k, v, do, lse, keys, scale, additive, row_region, key_region, N_CTX: tl.constexpr,
                    PRECISION: tl.constexpr, ACC: tl.constexpr):
    """dS = P * (dP - D) of a block of queries against every key, from whole rows as
    softmax's own gradient is: P = exp(S - lse) renormalized to sum 1 (the saved lse
    carries a rounding error as large as the logits, up to 100 in Swin-V2, which P
    would inherit), D = rowsum(P * dP) (rowsum(dO * O) equals it exactly but loses more
    to rounding)."""
    p = tl.exp(logits(q, k, keys, scale, additive, row_region, key_region, N_CTX, PRECISION, ACC) - lse[:, None])
    p = p / tl.sum(p, 1)[:, None]
    dp = tl.dot(do, tl.trans(v), input_precision=PRECISION, out_dtype=ACC)
    return p * (dp - tl.sum(p * dp, 1)[:, None])


@triton.jit
def query_grads(ds, k, scale, PRECISION: tl.constexpr, ACC: tl.constexpr):
    """dQ (of q^ under COSINE) = scale * dS K from one (query, key) tile: the whole dQ where
    dS spans every key, else that key block's share."""
    return tl.dot(ds.to(k.dtype), k, input_precision=PRECISION, out_dtype=ACC) * scale


@triton.jit
def store_query_grads(dq_ptr, stride_dqn, q_index, q_real, channels, dq, q, q_norm, HEAD_DIM: tl.constexpr,
                      COSINE: tl.constexpr, SCALE_GRAD: tl.constexpr, ACC: tl.constexpr):
    """Store the complete dQ of a block of queries (through the normalization under
    COSINE); return its rows' share of dlogit_scale (zeros without SCALE_GRAD)."""
    dscale = tl.zeros((q.shape[0],), ACC)
    if SCALE_GRAD:
        dscale = scale_grad_rows(dq, q, ACC)
    store_rows(dq_ptr, stride_dqn, q_index, q_real, channels, HEAD_DIM, through_normalize(dq, q, q_norm, COSINE, ACC))
    return dscale
