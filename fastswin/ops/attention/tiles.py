"""Loads and stores of the attention kernels' tiles: a block of rows of a (.., rows, d)
tensor (unit column stride), by row number or by an index of rows that may be absent.
"""
from fastswin.ops._triton import tl, triton


@triton.jit
def load_tile(ptr, stride_row, rows, cols, n_rows: tl.constexpr, n_cols: tl.constexpr):
    """ptr[rows, cols] with unit column stride; zero outside (n_rows, n_cols)."""
    inside = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    return tl.load(ptr + rows[:, None] * stride_row + cols[None, :], mask=inside, other=0.0)


@triton.jit
def store_tile(ptr, stride_row, rows, cols, n_rows: tl.constexpr, n_cols: tl.constexpr, value):
    """ptr[rows, cols] = value (cast to ptr's type) inside (n_rows, n_cols)."""
    inside = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    tl.store(ptr + rows[:, None] * stride_row + cols[None, :], value.to(ptr.dtype.element_ty), mask=inside)


@triton.jit
def load_rows(ptr, stride_row, index, real, cols, n_cols: tl.constexpr):
    """ptr[index, cols] for real rows, zero elsewhere and past n_cols."""
    inside = real[:, None] & (cols[None, :] < n_cols)
    return tl.load(ptr + index[:, None] * stride_row + cols[None, :], mask=inside, other=0.0)


@triton.jit
def store_rows(ptr, stride_row, index, real, cols, n_cols: tl.constexpr, value):
    """ptr[index, cols] = value (cast to ptr's type) for real rows."""
    inside = real[:, None] & (cols[None, :] < n_cols)
    tl.store(ptr + index[:, None] * stride_row + cols[None, :], value.to(ptr.dtype.element_ty), mask=inside)


@triton.jit
def store_key_rows(ptr, stride_row, pad_ptr, pad_stride, index, real, tokens, cols, N_CTX: tl.constexpr,
                   n_cols: tl.constexpr, PADDING: tl.constexpr, ROW_ALIGN: tl.constexpr, value):
    """store_rows, and with PADDING the window's padding rows too, to pad_ptr[index, cols]
    (their gradient for d(qkv_bias)): one store, so that value's layout is converted once.
    ROW_ALIGN: bytes both row starts are aligned to (the launcher checks), which the
    select hides from the compiler (without it the store splits into 2-byte stores)."""
    if PADDING:
        rows = tl.multiple_of(tl.where(real, ptr + index * stride_row, pad_ptr + index * pad_stride), ROW_ALIGN)
        inside = (tokens[:, None] < N_CTX) & (cols[None, :] < n_cols)
        tl.store(rows[:, None] + cols[None, :], value.to(ptr.dtype.element_ty), mask=inside)
    else:
        store_rows(ptr, stride_row, index, real, cols, n_cols, value)


@triton.jit
def load_pairs(ptr, rows, keys, N_CTX: tl.constexpr, ACC: tl.constexpr):
    """ptr[rows, keys] of a contiguous (N, N) bias or mask as ACC, zero outside the window.

    With N a constant the addresses are fixed offsets, which keeps registers low.
    """
    return load_tile(ptr, N_CTX, rows, keys, N_CTX, N_CTX).to(ACC)
