"""The attention kernels as a GPU launch compiles them, for ahead-of-time compile
reports (fastswin.aot, `fastswin compile-report`, tests/test_aot.py): signatures,
compile-time arguments and launch options from the same policy the launchers use.
"""
import math
from typing import NamedTuple, Optional, Tuple

import torch

from fastswin.aot import signature
from fastswin.ops.attention.backward_kernel import window_attention_bwd_kernel
from fastswin.ops.attention.forward_kernel import window_attention_fwd_kernel
from fastswin.ops.attention.policy import backward_constexprs, common_constexprs, layout_constexprs, tile_config
from fastswin.ops.attention.query_grad_kernel import window_attention_bwd_query_kernel


class KernelSpec(NamedTuple):
    """One kernel as launched for given shapes, in the terms fastswin.aot.compile_kernel takes."""
    fn: object
    signature: dict
    constexprs: dict
    launch: dict
    aligned: Tuple[str, ...]


_TRITON_TYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
# Pointers of the accumulator type whatever the inputs' (fp32 at these dtypes), and the
# parameters a model keeps in fp32 under autocast (the bias and the qkv bias).
_FP32_POINTERS = ("LSE", "DQ_ACC", "ROW_LSE", "DBIAS", "LOGIT_SCALE", "DLOGIT_SCALE", "BIAS", "FILL")


def kernel_specs(n: int, head_dim: int, dtype: torch.dtype, bias: bool = True, mask: bool = True,
                 cosine: bool = False, arch: int = 90, image: bool = False, padded: bool = False,
                 window: Optional[Tuple[int, ...]] = None) -> Tuple[KernelSpec, ...]:
    """The kernels as launched on a GPU for N tokens, head_dim, dtype (fp16, bf16, fp32;
    mask of that dtype, bias and qkv bias fp32 as a model's parameters under autocast),
    with atomic dbias: the forward, the backward's key pass and, where the backward is
    split, its query pass. cosine: the Swin-V2 kernels (fp32 logit_scale, atomic
    dlogit_scale). image: the image-layout kernels of shifted_window_attention (windows
    `window` of N tokens, (h, w) or (t, h, w); square ones by default; torchvision's
    order); padded: on a map with padding (qkv-bias fill and its gradient compiled in)."""
    if image and window is None:
        window = (math.isqrt(n),) * 2
    cfg = tile_config(n, head_dim, dtype, arch, image, cosine, image and padded, image and len(window) == 3)
    padded = image and padded
    common = {**common_constexprs(cfg, head_dim, bias, mask, cosine, "tf32" if dtype == torch.float32 else "ieee",
                                  dtype),
              **layout_constexprs(window if image else (1, 1), image, False, padded, padded)}
    sums = dict(BIAS_GRAD=bias, ATOMIC_DBIAS=True, SCALE_GRAD=cosine, ATOMIC_DSCALE=cosine)
    key_constexprs, query_constexprs = backward_constexprs(cfg, sums)
    launches = [(window_attention_fwd_kernel, {}, cfg.forward_launch),
                (window_attention_bwd_kernel, dict(key_constexprs, FILL_GRAD=padded, ROW_ALIGN=16 if padded else 1),
                 cfg.backward_launch)]
    if query_constexprs is not None:
        launches.append((window_attention_bwd_query_kernel, query_constexprs, cfg.query_launch))
    return tuple(_spec(fn, {**common, **extra}, launch, dtype) for fn, extra, launch in launches)


def _spec(fn, constexprs: dict, launch: dict, dtype: torch.dtype) -> KernelSpec:
    pointers = {name: "*fp32" if name in _FP32_POINTERS else "*" + _TRITON_TYPES[dtype]
                for name in fn.arg_names if name.isupper() and name not in constexprs}
    # What the JIT sees as 16-divisible in a Swin block (head_dim a multiple of 16): the
    # pointers, the strides of the (.., N, d) tensors and of DPAD, and C.
    aligned = tuple(name for name in fn.arg_names
                    if name in pointers or name == "channels_per_part"
                    or (name.startswith("stride_") and not name.endswith("_slot")))
    return KernelSpec(fn, signature(fn, pointers, constexprs, floats=("scale",)), constexprs, launch, aligned)
