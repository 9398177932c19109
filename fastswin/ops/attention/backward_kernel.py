"""The window attention backward's key pass (math: fastswin.ops.attention): dK and dV;
for windows of one tile also dQ and the sums over windows of dbias and dlogit_scale
(query_grad_kernel computes those for larger windows)."""
from fastswin.ops._triton import tl, triton
from fastswin.ops.attention.cosine import head_scale, through_normalize
from fastswin.ops.attention.scores import additive_terms, query_grads, score_grads, store_query_grads
from fastswin.ops.attention.sums import put_bias_grads, put_scale_grad
from fastswin.ops.attention.tiles import load_pairs, store_key_rows
from fastswin.ops.attention.tokens import key_block, query_block


# Sizes that change with the batch are not specialized on (1, multiples of 16), so a
# model compiles its kernels once for every batch size.
@triton.jit(do_not_specialize=["windows", "windows_per_program"])
def window_attention_bwd_kernel(
        Q, K, V, BIAS, MASK, LOGIT_SCALE, FILL, OUT, LSE, DOUT, DQ, DK, DV, DBIAS, DLOGIT_SCALE, DPAD,
        stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
        stride_ob, stride_oh, stride_on, stride_dob, stride_doh, stride_don,
        stride_dqb, stride_dqh, stride_dqn, stride_dkb, stride_dkh, stride_dkn, stride_dvb, stride_dvh, stride_dvn,
        stride_dbias_slot, stride_dscale_slot, stride_dpad_b, windows, heads, mask_windows,
        windows_per_program, scale, depth, height, width, windows_w, windows_per_image, shift_t, shift_h, shift_w,
        channels_per_part,
        N_CTX: tl.constexpr, HEAD_DIM: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr,
        COSINE: tl.constexpr, BIAS_GRAD: tl.constexpr, ATOMIC_DBIAS: tl.constexpr, SCALE_GRAD: tl.constexpr,
        ATOMIC_DSCALE: tl.constexpr, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
        ACC: tl.constexpr, IMAGE: tl.constexpr, WIN_T: tl.constexpr, WIN_H: tl.constexpr, WIN_W: tl.constexpr,
        TIMM_ORDER: tl.constexpr, PADDED: tl.constexpr, HAS_FILL: tl.constexpr, FILL_GRAD: tl.constexpr,
        ROW_ALIGN: tl.constexpr):
    """One program per (group of windows_per_program windows, head h): dK and dV of each
    window, key blocks outside, query blocks inside, dK and dV summed in registers.

    One tile (N <= BLOCK): dQ comes out of the same pass, and dS is summed over the
    group in registers, then added atomically into slot 0 of DBIAS (ATOMIC_DBIAS,
    stride_dbias_slot == 0) or stored in the group's own slot (deterministic; the
    caller sums the slots). DBIAS is ACC-typed (slots, heads, N, N), contiguous.
    Several tiles: dK and dV only (BIAS_GRAD and SCALE_GRAD off); dQ, dbias and
    dlogit_scale come from window_attention_bwd_query_kernel, which holds a whole row
    strip of dS so that its sum over windows stays on chip.

    COSINE: q and k tiles normalized as loaded, dQ and dK taken through the
    normalization where they are stored. SCALE_GRAD: the group's dlogit_scale[h] =
    sum of dS * s_h q^ k^T = sum of q^ . dq^ over its queries (taken from each
    complete block of dq^, so no (query, key) tile is kept for it), summed in
    registers, then added atomically into DLOGIT_SCALE slot 0 (ATOMIC_DSCALE,
    stride_dscale_slot == 0) or stored in the group's slot. DLOGIT_SCALE is
    ACC-typed (slots, heads), contiguous.

    IMAGE: the tensors are (B, heads, T * H * W, d) views of the un-partitioned maps, as in
    the forward; dQ, dK, dV of padding tokens are not written there. FILL_GRAD: the
    padding keys' dK and values' dV (what the qkv bias they read receives) are stored
    at their own rows (token_rows) of DPAD, (B, padding rows, 2 * channels_per_part) in
    DK's dtype, k's then v's channels, row stride 2 * channels_per_part: no atomics, no
    registers held across windows; the caller sums it (zeroed: rows of real tokens
    stay 0). ROW_ALIGN: see store_key_rows.
    """
    group = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1).to(tl.int64)
    scale, through = head_scale(scale, LOGIT_SCALE, h, COSINE, ACC)
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
        bias = load_pairs(bias_ptr, tl.arange(0, BLOCK), tl.arange(0, BLOCK), N_CTX, ACC)
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
            k, k_norm, v, k_index, k_real = key_block(
                k_ptr, v_ptr, stride_kn, stride_vn, k_fill, v_fill, keys, channels, window, depth, height, width,
                windows_w, shift_t, shift_h, shift_w, N_CTX, HEAD_DIM, COSINE, ACC, IMAGE, WIN_T, WIN_H, WIN_W,
                TIMM_ORDER, PADDED, HAS_FILL)
            dk = tl.zeros((BLOCK, BLOCK_D), ACC)
            dv = tl.zeros((BLOCK, BLOCK_D), ACC)
            for query_start in range(0, N_CTX, BLOCK):
                rows = query_start + tl.arange(0, BLOCK)
                q, q_norm, do, lse, delta, q_index, q_real = query_block(
                    q_ptr, o_ptr, do_ptr, lse_ptr, stride_qn, stride_on, stride_don, rows, channels, window, depth,
                    height, width, windows_w, shift_t, shift_h, shift_w, N_CTX, HEAD_DIM, COSINE, ACC, IMAGE, WIN_T,
                    WIN_H, WIN_W, TIMM_ORDER, PADDED)
                additive, row_region, key_region = additive_terms(
                    bias_ptr, mask_ptr, rows, keys, window, height, windows_w, windows_per_image, shift_t, shift_h,
                    shift_w, N_CTX, HAS_BIAS and not HOLD_BIAS, HAS_MASK, IMAGE, WIN_T, WIN_H, WIN_W, ACC)
                if HOLD_BIAS:
                    additive += bias
                p, ds = score_grads(q, k, v, do, lse, delta, keys, scale, additive, row_region, key_region, N_CTX,
                                    PRECISION, ACC)
                dv += tl.dot(tl.trans(p).to(do.dtype), do, input_precision=PRECISION, out_dtype=ACC)
                dk += tl.dot(tl.trans(ds).to(q.dtype), q, input_precision=PRECISION, out_dtype=ACC)
                if SINGLE_TILE:
                    dscale += store_query_grads(dq_ptr, stride_dqn, q_index, q_real, channels,
                                                query_grads(ds, k, scale, PRECISION, ACC), q, q_norm, HEAD_DIM,
                                                COSINE, SCALE_GRAD, ACC)
                    if BIAS_GRAD:
                        dbias += ds
            dk = through_normalize(dk * scale, k, k_norm, COSINE, ACC)
            dpad_ptr = DPAD + image * stride_dpad_b + h * HEAD_DIM
            store_key_rows(DK + image * stride_dkb + h * stride_dkh, stride_dkn, dpad_ptr, 2 * channels_per_part,
                           k_index, k_real, keys, channels, N_CTX, HEAD_DIM, FILL_GRAD, ROW_ALIGN, dk)
            store_key_rows(DV + image * stride_dvb + h * stride_dvh, stride_dvn, dpad_ptr + channels_per_part,
                           2 * channels_per_part, k_index, k_real, keys, channels, N_CTX, HEAD_DIM, FILL_GRAD,
                           ROW_ALIGN, dv)
    if SINGLE_TILE and BIAS_GRAD:
        put_bias_grads(dbias_ptr, tl.arange(0, BLOCK), tl.arange(0, BLOCK), N_CTX, ATOMIC_DBIAS, dbias)
    if SINGLE_TILE and SCALE_GRAD:
        # d S / d logit_scale[h] = s_h q^ k^T where the clamp passes the gradient, else 0.
        put_scale_grad(DLOGIT_SCALE + group * stride_dscale_slot + h, tl.sum(dscale, 0) * through, ATOMIC_DSCALE)
