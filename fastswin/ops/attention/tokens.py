"""Which rows a block of a window's tokens are, and the blocks of queries and keys
that every kernel pass reads: in the window layout (rows of (B_, heads, N, d)
tensors) or the image layout (pixels of the un-partitioned map, image_index).
"""
from fastswin.ops._triton import tl, triton
from fastswin.ops.attention.cosine import normalized
from fastswin.ops.attention.image_index import token_rows
from fastswin.ops.attention.tiles import load_rows


@triton.jit
def block_rows(window, tokens, depth, height, width, windows_w, shift_t, shift_h, shift_w, N_CTX: tl.constexpr,
               IMAGE: tl.constexpr, WIN_T: tl.constexpr, WIN_H: tl.constexpr, WIN_W: tl.constexpr,
               TIMM_ORDER: tl.constexpr, PADDED: tl.constexpr):
    """Where a block of a window's tokens lives: (row index in its tensor, whether the row
    is real).

    Window layout: rows of the (B_, heads, N, d) tensors, real inside the window. IMAGE:
    rows of the (B, heads, T * H * W, d) view of the un-partitioned map, real unless padding,
    which gets a row of its own in a separate buffer (image_index.token_rows)."""
    in_window = tokens < N_CTX
    if IMAGE:
        row, real = token_rows(window, tokens, depth, height, width, windows_w, shift_t, shift_h, shift_w,
                               WIN_T, WIN_H, WIN_W, TIMM_ORDER, PADDED)
        return row.to(tl.int64), in_window & real
    else:
        return tokens, in_window


@triton.jit
def load_filled(ptr, stride_row, index, real, tokens, fill_ptr, cols, N_CTX: tl.constexpr,
                HEAD_DIM: tl.constexpr, HAS_FILL: tl.constexpr):
    """Rows of k or v: real rows from ptr, padding tokens of the window from fill_ptr
    (the qkv Linear's output for a zero token: its bias), or zero without HAS_FILL."""
    x = load_rows(ptr, stride_row, index, real, cols, HEAD_DIM)
    if HAS_FILL:
        padding = (tokens < N_CTX) & (real == 0)
        fill = tl.load(fill_ptr + cols, mask=cols < HEAD_DIM, other=0.0)
        x = tl.where(padding[:, None], fill[None, :].to(x.dtype), x)
    return x


@triton.jit
def key_block(K, V, stride_kn, stride_vn, k_fill, v_fill, keys, channels, window, depth, height, width, windows_w,
              shift_t, shift_h, shift_w, N_CTX: tl.constexpr, HEAD_DIM: tl.constexpr, COSINE: tl.constexpr,
              ACC: tl.constexpr, IMAGE: tl.constexpr, WIN_T: tl.constexpr, WIN_H: tl.constexpr, WIN_W: tl.constexpr,
              TIMM_ORDER: tl.constexpr, PADDED: tl.constexpr, HAS_FILL: tl.constexpr):
    """A block of keys and values as every pass reads it: (k, ||k|| under COSINE, v, the
    keys' row index, whether they are real rows)."""
    k_index, k_real = block_rows(window, keys, depth, height, width, windows_w, shift_t, shift_h, shift_w, N_CTX,
                                 IMAGE, WIN_T, WIN_H, WIN_W, TIMM_ORDER, PADDED)
    k, k_norm = normalized(load_filled(K, stride_kn, k_index, k_real, keys, k_fill, channels, N_CTX,
                                       HEAD_DIM, HAS_FILL), COSINE, ACC)
    v = load_filled(V, stride_vn, k_index, k_real, keys, v_fill, channels, N_CTX, HEAD_DIM, HAS_FILL)
    return k, k_norm, v, k_index, k_real


@triton.jit
def query_block(Q, O, DO, LSE, stride_qn, stride_on, stride_don, rows, channels, window, depth, height, width,
                windows_w, shift_t, shift_h, shift_w, N_CTX: tl.constexpr, HEAD_DIM: tl.constexpr, COSINE: tl.constexpr,
                ACC: tl.constexpr, IMAGE: tl.constexpr, WIN_T: tl.constexpr, WIN_H: tl.constexpr, WIN_W: tl.constexpr,
                TIMM_ORDER: tl.constexpr, PADDED: tl.constexpr):
    """What the backward needs of a block of queries: (q, ||q|| under COSINE, dO, lse,
    D = rowsum(dO * O), the queries' row index, whether they are real rows).

    Padding queries (not real) read zeros: with dO = 0 they pass no gradient."""
    index, real = block_rows(window, rows, depth, height, width, windows_w, shift_t, shift_h, shift_w, N_CTX,
                             IMAGE, WIN_T, WIN_H, WIN_W, TIMM_ORDER, PADDED)
    q, q_norm = normalized(load_rows(Q, stride_qn, index, real, channels, HEAD_DIM), COSINE, ACC)
    do = load_rows(DO, stride_don, index, real, channels, HEAD_DIM)
    o = load_rows(O, stride_on, index, real, channels, HEAD_DIM)
    lse = tl.load(LSE + rows, mask=rows < N_CTX, other=0.0).to(ACC)
    return q, q_norm, do, lse, tl.sum(do.to(ACC) * o.to(ACC), 1), index, real
