"""The backward's query pass for windows of several tiles (math: fastswin.ops.attention):
dQ, and the sums over windows of dbias and dlogit_scale, kept on chip."""
from fastswin.ops._triton import tl, triton
from fastswin.ops.attention.cosine import head_scale, normalized
from fastswin.ops.attention.scores import (additive_terms, logits, query_grads, row_score_grads, score_grads,
                                           store_query_grads)
from fastswin.ops.attention.sums import put_bias_grads, put_scale_grad
from fastswin.ops.attention.tiles import load_rows, load_tile, store_tile
from fastswin.ops.attention.tokens import block_rows, key_block, load_filled, query_block


@triton.jit(do_not_specialize=["windows", "windows_per_program"])
def window_attention_bwd_query_kernel(
        Q, K, V, BIAS, MASK, LOGIT_SCALE, FILL, OUT, LSE, DOUT, DQ, DQ_ACC, ROW_LSE, DBIAS, DLOGIT_SCALE, stride_qb,
        stride_qh, stride_qn, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn, stride_ob, stride_oh,
        stride_on, stride_dob, stride_doh, stride_don, stride_dqb, stride_dqh, stride_dqn, stride_dbias_slot,
        stride_dscale_slot, windows, heads, mask_windows, windows_per_program, scale, depth, height, width, windows_w,
        windows_per_image, shift_t, shift_h, shift_w, channels_per_part, N_CTX: tl.constexpr, HEAD_DIM: tl.constexpr,
        HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr, COSINE: tl.constexpr, BIAS_GRAD: tl.constexpr,
        ATOMIC_DBIAS: tl.constexpr, SCALE_GRAD: tl.constexpr, ATOMIC_DSCALE: tl.constexpr, BLOCK: tl.constexpr,
        BLOCK_KEYS: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr,
        IMAGE: tl.constexpr, WIN_T: tl.constexpr, WIN_H: tl.constexpr, WIN_W: tl.constexpr, TIMM_ORDER: tl.constexpr,
        PADDED: tl.constexpr, HAS_FILL: tl.constexpr):
    """One program per (group of windows_per_program windows, block of BLOCK queries, head
    h): for each block of BLOCK_KEYS keys, for each window of the group, the block's dS
    against those keys, so that the (BLOCK, BLOCK_KEYS) tile of dbias[h] is summed over
    the group in registers and written once, into the group's slot of DBIAS (rows of
    other blocks belong to other programs: no read-modify-write) or added atomically
    into slot 0 (ATOMIC_DBIAS). dlogit_scale likewise (SCALE_GRAD), a slot a program
    (the index along the grid's first axis). The key pass (window_attention_bwd_kernel)
    computes dK and dV of the same windows.

    One key block (BLOCK_KEYS >= N): dS from whole rows (row_score_grads) and dQ stored
    at once. Several: dS = P * (dP - D), with P = exp(S - lse') renormalized as
    row_score_grads does, through lse' = lse + log(rowsum(exp(S - lse))) from a first
    sweep over the keys (ROW_LSE, like LSE, the program's own rows); each window's dQ
    summed over the key blocks in DQ_ACC, the program's own rows of an ACC-typed
    contiguous (windows, heads, N, HEAD_DIM) scratch buffer, then stored from the last
    block. The key blocks are the outer loop because dbias, (BLOCK, N) per program, is
    far larger than dQ, (BLOCK, d) per window.

    Arguments as for window_attention_bwd_kernel; the grid's first axis is group-major,
    so that the programs reading one window's keys run side by side (L2).
    """
    blocks: tl.constexpr = (N_CTX + BLOCK - 1) // BLOCK
    SPLIT_KEYS: tl.constexpr = BLOCK_KEYS < N_CTX
    pid = tl.program_id(0).to(tl.int64)
    group = pid // blocks
    rows = (pid % blocks).to(tl.int32) * BLOCK + tl.arange(0, BLOCK)
    h = tl.program_id(1).to(tl.int64)
    scale, through = head_scale(scale, LOGIT_SCALE, h, COSINE, ACC)
    channels = tl.arange(0, BLOCK_D)
    bias_ptr = BIAS + h * N_CTX * N_CTX
    k_fill = FILL + channels_per_part + h * HEAD_DIM
    v_fill = k_fill + channels_per_part
    dscale = tl.zeros((BLOCK,), ACC)
    first = group * windows_per_program
    if SPLIT_KEYS:
        for b in range(first, tl.minimum(first + windows_per_program, windows)):
            image = b // windows_per_image if IMAGE else b
            _renormalize_lse(Q + image * stride_qb + h * stride_qh, K + image * stride_kb + h * stride_kh, bias_ptr,
                             MASK + (b % mask_windows) * N_CTX * N_CTX, LSE + (b * heads + h) * N_CTX,
                             ROW_LSE + (b * heads + h) * N_CTX, stride_qn, stride_kn, k_fill, rows, channels,
                             (b % windows_per_image).to(tl.int32), scale, depth, height, width, windows_w,
                             windows_per_image, shift_t, shift_h, shift_w, N_CTX, HEAD_DIM, HAS_BIAS, HAS_MASK, COSINE,
                             BLOCK_KEYS, PRECISION, ACC, IMAGE, WIN_T, WIN_H, WIN_W, TIMM_ORDER, PADDED, HAS_FILL)
    lse_base = ROW_LSE if SPLIT_KEYS else LSE
    for key_start in range(0, N_CTX, BLOCK_KEYS):
        if SPLIT_KEYS:
            # ROW_LSE (the sweep) and DQ_ACC (the last key block) are read back by threads
            # other than those that stored them: a CTA barrier makes the stores visible.
            tl.debug_barrier()
        keys = key_start + tl.arange(0, BLOCK_KEYS)
        dbias = tl.zeros((BLOCK, BLOCK_KEYS), ACC)
        for b in range(first, tl.minimum(first + windows_per_program, windows)):
            image = b // windows_per_image if IMAGE else b
            window = (b % windows_per_image).to(tl.int32)
            q, q_norm, do, lse, delta, q_index, q_real = query_block(
                Q + image * stride_qb + h * stride_qh, OUT + image * stride_ob + h * stride_oh,
                DOUT + image * stride_dob + h * stride_doh, lse_base + (b * heads + h) * N_CTX, stride_qn, stride_on,
                stride_don, rows, channels, window, depth, height, width, windows_w, shift_t, shift_h, shift_w, N_CTX,
                HEAD_DIM, COSINE, ACC, IMAGE, WIN_T, WIN_H, WIN_W, TIMM_ORDER, PADDED)
            k, k_norm, v, k_index, k_real = key_block(
                K + image * stride_kb + h * stride_kh, V + image * stride_vb + h * stride_vh, stride_kn, stride_vn,
                k_fill, v_fill, keys, channels, window, depth, height, width, windows_w, shift_t, shift_h, shift_w,
                N_CTX, HEAD_DIM, COSINE, ACC, IMAGE, WIN_T, WIN_H, WIN_W, TIMM_ORDER, PADDED, HAS_FILL)
            additive, row_region, key_region = additive_terms(
                bias_ptr, MASK + (b % mask_windows) * N_CTX * N_CTX, rows, keys, window, height, windows_w,
                windows_per_image, shift_t, shift_h, shift_w, N_CTX, HAS_BIAS, HAS_MASK, IMAGE, WIN_T, WIN_H, WIN_W,
                ACC)
            dq_ptr = DQ + image * stride_dqb + h * stride_dqh
            if SPLIT_KEYS:
                _, ds = score_grads(q, k, v, do, lse, delta, keys, scale, additive, row_region, key_region, N_CTX,
                                    PRECISION, ACC)
                dq = query_grads(ds, k, scale, PRECISION, ACC)
                partial_ptr = DQ_ACC + (b * heads + h) * N_CTX * HEAD_DIM
                if key_start > 0:
                    dq += load_tile(partial_ptr, HEAD_DIM, rows, channels, N_CTX, HEAD_DIM).to(ACC)
                if key_start + BLOCK_KEYS < N_CTX:
                    store_tile(partial_ptr, HEAD_DIM, rows, channels, N_CTX, HEAD_DIM, dq)
                else:
                    dscale += store_query_grads(dq_ptr, stride_dqn, q_index, q_real, channels, dq, q, q_norm,
                                                HEAD_DIM, COSINE, SCALE_GRAD, ACC)
            else:
                ds = row_score_grads(q, k, v, do, lse, keys, scale, additive, row_region, key_region, N_CTX,
                                     PRECISION, ACC)
                dscale += store_query_grads(dq_ptr, stride_dqn, q_index, q_real, channels,
                                            query_grads(ds, k, scale, PRECISION, ACC), q, q_norm, HEAD_DIM,
                                            COSINE, SCALE_GRAD, ACC)
            if BIAS_GRAD:
                dbias += ds
        if BIAS_GRAD:
            put_bias_grads(DBIAS + group * stride_dbias_slot + h * N_CTX * N_CTX, rows, keys, N_CTX, ATOMIC_DBIAS,
                           dbias)
    if SCALE_GRAD:
        # d S / d logit_scale[h] = s_h q^ k^T where the clamp passes the gradient, else 0.
        put_scale_grad(DLOGIT_SCALE + pid * stride_dscale_slot + h, tl.sum(dscale, 0) * through, ATOMIC_DSCALE)


@triton.jit
def _renormalize_lse(q_ptr, k_ptr, bias_ptr, mask_ptr, lse_ptr, out_ptr, stride_qn, stride_kn, k_fill, rows, channels,
                     window, scale, depth, height, width, windows_w, windows_per_image, shift_t, shift_h, shift_w,
                     N_CTX: tl.constexpr, HEAD_DIM: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr,
                     COSINE: tl.constexpr, BLOCK_KEYS: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr,
                     IMAGE: tl.constexpr, WIN_T: tl.constexpr, WIN_H: tl.constexpr, WIN_W: tl.constexpr,
                     TIMM_ORDER: tl.constexpr, PADDED: tl.constexpr, HAS_FILL: tl.constexpr):
    """out[rows] = lse + log(sum over every key of exp(S - lse)) for one window's block of
    queries: the lse against which this pass's own logits give rows of P that sum to 1."""
    q_index, q_real = block_rows(window, rows, depth, height, width, windows_w, shift_t, shift_h, shift_w, N_CTX,
                                 IMAGE, WIN_T, WIN_H, WIN_W, TIMM_ORDER, PADDED)
    q, q_norm = normalized(load_rows(q_ptr, stride_qn, q_index, q_real, channels, HEAD_DIM), COSINE, ACC)
    lse = tl.load(lse_ptr + rows, mask=rows < N_CTX, other=0.0).to(ACC)
    total = tl.zeros((rows.shape[0],), ACC)
    for key_start in range(0, N_CTX, BLOCK_KEYS):
        keys = key_start + tl.arange(0, BLOCK_KEYS)
        k_index, k_real = block_rows(window, keys, depth, height, width, windows_w, shift_t, shift_h, shift_w, N_CTX,
                                     IMAGE, WIN_T, WIN_H, WIN_W, TIMM_ORDER, PADDED)
        k, k_norm = normalized(load_filled(k_ptr, stride_kn, k_index, k_real, keys, k_fill, channels, N_CTX, HEAD_DIM,
                                      HAS_FILL), COSINE, ACC)
        additive, row_region, key_region = additive_terms(
            bias_ptr, mask_ptr, rows, keys, window, height, windows_w, windows_per_image, shift_t, shift_h, shift_w,
            N_CTX, HAS_BIAS, HAS_MASK, IMAGE, WIN_T, WIN_H, WIN_W, ACC)
        s = logits(q, k, keys, scale, additive, row_region, key_region, N_CTX, PRECISION, ACC)
        total += tl.sum(tl.exp(s - lse[:, None]), 1)
    tl.store(out_ptr + rows, lse + tl.log(total), mask=rows < N_CTX)
