"""Swin-V2's scaled cosine attention on tiles: the per-head multiplier of q k^T, the
L2 normalization of q and k rows as they are loaded, and its chain rule (math in
fastswin.ops.attention's docstring). Each helper is the identity, or v1's scale,
when COSINE is off, so the v1 kernels compile without any of it.
"""
from fastswin.ops._triton import tl, triton


@triton.jit
def normalized(x, COSINE: tl.constexpr, ACC: tl.constexpr):
    """COSINE: (x / max(||x||, eps) per row, in x's dtype, and ||x||); else (x, a stand-in).

    Zero (padded) rows stay zero."""
    if COSINE:
        x_acc = x.to(ACC)
        norm = tl.sqrt(tl.sum(x_acc * x_acc, 1))
        return (x_acc / tl.maximum(norm, tl.full((), 1e-12, ACC))[:, None]).to(x.dtype), norm
    else:
        return x, tl.sum(tl.zeros((x.shape[0], 1), ACC), 1)


@triton.jit
def through_normalize(grad, x_hat, norm, COSINE: tl.constexpr, ACC: tl.constexpr):
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
def scale_grad_rows(dq_hat, q_hat, ACC: tl.constexpr):
    """Row sums q^_i . dq^_i = sum over j of dS_ij * s_h q^_i . k^_j, given the complete
    dq^ = s_h dS k^ of a block of queries: what dlogit_scale sums (divided by the
    clamp's d s_h / d logit_scale = s_h), without another (query, key) tile."""
    return tl.sum(dq_hat * q_hat.to(ACC), 1)


@triton.jit
def head_scale(scale, LOGIT_SCALE, h, COSINE: tl.constexpr, ACC: tl.constexpr):
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
