"""The backward's query pass for windows of several tiles (math: fastswin.ops.attention):
dQ, and the sums over windows of dbias and dlogit_scale, kept on chip."""
from fastswin.ops._triton import tl, triton
from fastswin.ops.attention.cosine import head_scale
from fastswin.ops.attention.scores import additive_terms, row_score_grads, store_query_grads
from fastswin.ops.attention.sums import put_bias_grads, put_scale_grad
from fastswin.ops.attention.tokens import key_block, query_block


@triton.jit(do_not_specialize=["windows", "windows_per_program"])
def window_attention_bwd_query_kernel(
        Q, K, V, BIAS, MASK, LOGIT_SCALE, FILL, OUT, LSE, DOUT, DQ, DBIAS, DLOGIT_SCALE,
        stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
        stride_ob, stride_oh, stride_on, stride_dob, stride_doh, stride_don, stride_dqb, stride_dqh, stride_dqn,
        stride_dbias_slot, stride_dscale_slot, windows, heads, mask_windows, windows_per_program, scale,
        height, width, windows_w, windows_per_image, shift_h, shift_w, channels_per_part,
        N_CTX: tl.constexpr, HEAD_DIM: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr,
        COSINE: tl.constexpr, BIAS_GRAD: tl.constexpr, ATOMIC_DBIAS: tl.constexpr, SCALE_GRAD: tl.constexpr,
        ATOMIC_DSCALE: tl.constexpr, BLOCK: tl.constexpr, BLOCK_KEYS: tl.constexpr, BLOCK_D: tl.constexpr,
        PRECISION: tl.constexpr, ACC: tl.constexpr, IMAGE: tl.constexpr, WIN_H: tl.constexpr,
        WIN_W: tl.constexpr, TIMM_ORDER: tl.constexpr, PADDED: tl.constexpr, HAS_FILL: tl.constexpr):
    """One program per (group of windows_per_program windows, block of BLOCK queries, head
    h): for each window of the group, the block's dQ against all of the window's keys at
    once (BLOCK_KEYS >= N), so that dS of the block's (BLOCK, N) strip of dbias[h] is
    summed over the group in registers and written once, into the group's slot of DBIAS
    (rows of other blocks belong to other programs: no read-modify-write) or added
    atomically into slot 0 (ATOMIC_DBIAS). dlogit_scale likewise (SCALE_GRAD), a slot a
    program (the index along the grid's first axis). The key pass
    (window_attention_bwd_kernel) computes dK and dV of the same windows.

    Arguments as for window_attention_bwd_kernel; the grid's first axis is group-major,
    so that the programs reading one window's keys run side by side (L2).
    """
    blocks: tl.constexpr = (N_CTX + BLOCK - 1) // BLOCK
    pid = tl.program_id(0).to(tl.int64)
    group = pid // blocks
    rows = (pid % blocks).to(tl.int32) * BLOCK + tl.arange(0, BLOCK)
    h = tl.program_id(1).to(tl.int64)
    scale, through = head_scale(scale, LOGIT_SCALE, h, COSINE, ACC)
    keys = tl.arange(0, BLOCK_KEYS)
    channels = tl.arange(0, BLOCK_D)
    bias_ptr = BIAS + h * N_CTX * N_CTX
    k_fill = FILL + channels_per_part + h * HEAD_DIM
    v_fill = k_fill + channels_per_part
    dbias = tl.zeros((BLOCK, BLOCK_KEYS), ACC)
    dscale = tl.zeros((BLOCK,), ACC)
    first = group * windows_per_program
    for b in range(first, tl.minimum(first + windows_per_program, windows)):
        image = b // windows_per_image if IMAGE else b
        window = (b % windows_per_image).to(tl.int32)
        q, q_norm, do, lse, _, q_index, q_real = query_block(
            Q + image * stride_qb + h * stride_qh, OUT + image * stride_ob + h * stride_oh,
            DOUT + image * stride_dob + h * stride_doh, LSE + (b * heads + h) * N_CTX, stride_qn, stride_on,
            stride_don, rows, channels, window, height, width, windows_w, shift_h, shift_w, N_CTX, HEAD_DIM, COSINE,
            ACC, IMAGE, WIN_H, WIN_W, TIMM_ORDER, PADDED)
        k, k_norm, v, k_index, k_real = key_block(
            K + image * stride_kb + h * stride_kh, V + image * stride_vb + h * stride_vh, stride_kn, stride_vn,
            k_fill, v_fill, keys, channels, window, height, width, windows_w, shift_h, shift_w, N_CTX, HEAD_DIM,
            COSINE, ACC, IMAGE, WIN_H, WIN_W, TIMM_ORDER, PADDED, HAS_FILL)
        additive, row_region, key_region = additive_terms(
            bias_ptr, MASK + (b % mask_windows) * N_CTX * N_CTX, rows, keys, window, windows_w, windows_per_image,
            shift_h, shift_w, N_CTX, HAS_BIAS, HAS_MASK, IMAGE, WIN_H, WIN_W, ACC)
        ds = row_score_grads(q, k, v, do, lse, keys, scale, additive, row_region, key_region, N_CTX, PRECISION, ACC)
        dscale += store_query_grads(DQ + image * stride_dqb + h * stride_dqh, stride_dqn, q_index, q_real, channels,
                                    ds, k, q, q_norm, scale, HEAD_DIM, COSINE, SCALE_GRAD, PRECISION, ACC)
        if BIAS_GRAD:
            dbias += ds
    if BIAS_GRAD:
        put_bias_grads(DBIAS + group * stride_dbias_slot + h * N_CTX * N_CTX, rows, keys, N_CTX, ATOMIC_DBIAS, dbias)
    if SCALE_GRAD:
        # d S / d logit_scale[h] = s_h q^ k^T where the clamp passes the gradient, else 0.
        put_scale_grad(DLOGIT_SCALE + pid * stride_dscale_slot + h, tl.sum(dscale, 0) * through, ATOMIC_DSCALE)
