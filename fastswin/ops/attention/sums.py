"""Where the backward programs put their sums over windows, dbias and dlogit_scale: added
atomically into one slot (stride 0) shared by every program, or stored in the program's
own slot (deterministic: the launcher sums the slots).
"""
from fastswin.ops._triton import tl, triton


@triton.jit
def put_bias_grads(ptr, rows, keys, N_CTX: tl.constexpr, ATOMIC: tl.constexpr, value):
    """ptr[rows, keys] (+)= value inside the (N, N) dbias of one head."""
    inside = (rows[:, None] < N_CTX) & (keys[None, :] < N_CTX)
    offsets = rows[:, None] * N_CTX + keys[None, :]
    if ATOMIC:
        tl.atomic_add(ptr + offsets, value, mask=inside, sem="relaxed")
    else:
        tl.store(ptr + offsets, value, mask=inside)


@triton.jit
def put_scale_grad(ptr, value, ATOMIC: tl.constexpr):
    """ptr[0] (+)= value: one head's dlogit_scale."""
    if ATOMIC:
        tl.atomic_add(ptr, value, sem="relaxed")
    else:
        tl.store(ptr, value)
