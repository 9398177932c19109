"""Window attention, fused: Triton kernels for Swin-V1 attention and Swin-V2 scaled
cosine attention, on windows or straight on the image layout.

The files, bottom to top (each imports only those above it in this list):

    tiles.py            @jit  loads and stores of tiles and rows
    image_index.py      @jit  image layout: token -> pixel, padding slot, shift-mask region
    cosine.py           @jit  Swin-V2: q/k normalization, its chain rule, the head's scale
    tokens.py           @jit  the blocks of queries and keys each pass reads
    scores.py           @jit  logits of a tile (bias, mask), their softmax gradient, dQ
    sums.py             @jit  the backward's sums over windows: dbias, dlogit_scale
    forward_kernel.py   @jit  the forward kernel
    backward_kernel.py  @jit  the backward's key pass (and everything for one-tile windows)
    query_grad_kernel.py @jit the backward's query pass for larger windows
    policy.py           tile choice, launch options, compile-time arguments, windows per program
    launch.py           launch plans (kernel arguments built by name, ../launcher.py) and their runs
    maps.py             the image layout's q, k, v and output views
    aot_specs.py        the kernels as launched, for ahead-of-time compile reports
    custom_ops.py       the registered torch.library ops: fakes and autograd (torch.compile)
    cpu_ops.py          the C++ CPU kernels' ops, sharing those fakes and autograd
    eager.py            the eager calls: plans per call signature, plain autograd.Functions
    checks.py           input validation and the Triton backend's can-run checks
    functions.py        the public functions, their backend choice, the calls kept per signature

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

A window never leaves the chip: N (a compile-time constant, <= 1024) is cut
into tiles of BLOCK queries by BLOCK keys (policy.tile_config); d (4 to 256, any
size) is padded to a power of two by masked loads. A window of one tile (Swin's
7x7 and 8x8 at head_dim 32) gets every gradient in one pass; otherwise the
forward loops over (query, key) tile pairs with an online softmax, and the
backward runs two kernels as FlashAttention-2 does: a key pass (dK, dV) and a
query pass (dQ) whose programs hold a strip of queries against a block of keys
(every key up to 256 keys of 32 channels, policy.MAX_QUERY_KEYS), so that dbias,
summed over windows, stays on chip. Against every key, D = rowsum(P * dP) comes
from whole rows; against a block of keys (windows past 16x16 at head_dim 32, and
sooner for wider heads, fp32 and N not a multiple of 4), a first sweep
renormalizes lse over this pass's own logits, so that the rows of P it
recomputes sum to 1 as the rows of the forward's P do, and dQ is summed over
the key blocks in a scratch buffer of the accumulator type. Softmax statistics and every
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

The image layout (shifted_window_attention) runs the same kernels behind the
compile-time switch IMAGE: each program reads its window's q, k, v rows straight
from the (B, H, W, 3C) map at the pixels its tokens come from (wrap-around and
padding computed on the fly, image_index), takes the shift mask from the tokens'
regions, and writes its output rows, and in the backward d(qkv), to their pixels:
no rolled, padded or partitioned copy, no mask tensor. Video maps (B, T, H, W, 3C)
in 3D windows run the same code with a window depth WIN_T > 1 (up to 8 regions a
window, of 27); 2D windows compile with WIN_T = 1, their time dim folded away.
"""
