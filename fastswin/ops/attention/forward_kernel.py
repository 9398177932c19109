"""The window attention forward kernel (math: fastswin.ops.attention)."""
from fastswin.ops._triton import tl, triton
from fastswin.ops.attention.cosine import head_scale, normalized
from fastswin.ops.attention.scores import additive_terms, logits
from fastswin.ops.attention.tiles import load_rows, store_rows
from fastswin.ops.attention.tokens import block_rows, key_block


@triton.jit
def window_attention_fwd_kernel(
        Q, K, V, BIAS, MASK, LOGIT_SCALE, FILL, OUT, LSE,
        stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
        stride_ob, stride_oh, stride_on, heads, mask_windows, scale,
        depth, height, width, windows_w, windows_per_image, shift_t, shift_h, shift_w, channels_per_part,
        N_CTX: tl.constexpr, HEAD_DIM: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr,
        COSINE: tl.constexpr, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
        ACC: tl.constexpr, IMAGE: tl.constexpr, WIN_T: tl.constexpr, WIN_H: tl.constexpr, WIN_W: tl.constexpr,
        TIMM_ORDER: tl.constexpr, PADDED: tl.constexpr, HAS_FILL: tl.constexpr):
    """One program per (window b, head h): O[b, h] = softmax(S) V and lse[b, h] = logsumexp(S).

    Per query block, an online softmax over key blocks (one block when N <= BLOCK).
    LSE is contiguous (B_, heads, N). COSINE: q and k tiles normalized as loaded,
    scale = s_h from LOGIT_SCALE (heads,), contiguous.

    IMAGE: Q, K, V, OUT are (B, heads, T * H * W, d) views of the un-partitioned maps and
    window b is window b % windows_per_image of image b // windows_per_image: rows are
    read from and written to their pixels (block_rows), padding keys and values read FILL
    (the qkv bias: k at channels_per_part + h * d, v at 2 * channels_per_part + h * d),
    the mask comes from the tokens' regions (HAS_MASK) and padding queries are not
    written.
    """
    pid = tl.program_id(0).to(tl.int64)
    b = pid // heads
    h = pid % heads
    scale, through = head_scale(scale, LOGIT_SCALE, h, COSINE, ACC)
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
        q_index, q_real = block_rows(window, rows, depth, height, width, windows_w, shift_t, shift_h, shift_w, N_CTX,
                                     IMAGE, WIN_T, WIN_H, WIN_W, TIMM_ORDER, PADDED)
        # Padding queries' outputs are never written, so they need no fill.
        q, q_norm = normalized(load_rows(Q, stride_qn, q_index, q_real, channels, HEAD_DIM), COSINE, ACC)
        row_max = tl.full((BLOCK,), float("-inf"), ACC)
        row_sum = tl.zeros((BLOCK,), ACC)
        acc = tl.zeros((BLOCK, BLOCK_D), ACC)
        for key_start in range(0, N_CTX, BLOCK):
            keys = key_start + tl.arange(0, BLOCK)
            k, k_norm, v, k_index, k_real = key_block(
                K, V, stride_kn, stride_vn, k_fill, v_fill, keys, channels, window, depth, height, width, windows_w,
                shift_t, shift_h, shift_w, N_CTX, HEAD_DIM, COSINE, ACC, IMAGE, WIN_T, WIN_H, WIN_W, TIMM_ORDER, PADDED,
                HAS_FILL)
            additive, row_region, key_region = additive_terms(
                bias_ptr, mask_ptr, rows, keys, window, height, windows_w, windows_per_image, shift_t, shift_h, shift_w,
                N_CTX, HAS_BIAS, HAS_MASK, IMAGE, WIN_T, WIN_H, WIN_W, ACC)
            s = logits(q, k, keys, scale, additive, row_region, key_region, N_CTX, PRECISION, ACC)
            # Every key block holds at least one real key, so new_max is finite.
            new_max = tl.maximum(row_max, tl.max(s, 1))
            rescale = tl.exp(row_max - new_max)
            p = tl.exp(s - new_max[:, None])
            row_sum = row_sum * rescale + tl.sum(p, 1)
            acc = acc * rescale[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION, out_dtype=ACC)
            row_max = new_max
        store_rows(OUT, stride_on, q_index, q_real, channels, HEAD_DIM, acc / row_sum[:, None])
        lse = row_max + tl.log(row_sum)
        tl.store(LSE + rows, lse.to(LSE.dtype.element_ty), mask=rows < N_CTX)
