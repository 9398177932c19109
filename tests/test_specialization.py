"""A model compiles its attention kernels once, whatever its batch size and whichever
library's order it follows: the launches' specialization keys, as Triton computes them
(1 and multiples of 16 get their own variants unless an argument opts out), do not
change with the batch, nor between the orders on maps without padding."""
import pytest
import torch
from triton.backends.compiler import BaseBackend
from triton.runtime.jit import native_specialize_impl

from helpers import compiled_only, versions
from fastswin.ops.attention import launch
from fastswin.ops.attention.launch import ImageLayout, window_attention_backward, window_attention_forward
from fastswin.ops.launcher import KernelLaunch

pytestmark = versions  # helpers.py


def not_specialized(kernel):
    """The kernel's do_not_specialize names (compiled or interpreted)."""
    names = getattr(kernel, "kwargs", {}).get("do_not_specialize")
    if names is None:
        names = [kernel.arg_names[i] if isinstance(i, int) else i for i in getattr(kernel, "do_not_specialize", [])]
    return set(names or ())


def specialization_key(kernel, args: dict, skip=None):
    """What Triton keys a launch's compiled variant on: each argument's type and
    specialization (constexprs by value); skip: the names not specialized on (default:
    the kernel's own)."""
    skip = not_specialized(kernel) if skip is None else skip
    key = []
    for name in kernel.arg_names:
        value = args[name]
        if isinstance(value, (bool, str, torch.dtype)) or not isinstance(value, (int, float, torch.Tensor)):
            key.append((name, "constexpr", str(value)))
        else:
            key.append((name,) + tuple(native_specialize_impl(BaseBackend, value, False, name not in skip, True)))
    return tuple(key)


def launch_keys(monkeypatch, batch: int, timm_order: bool, height: int = 56, width: int = 56):
    """Specialization keys of the forward and backward launches of a Swin-T stage-1
    block (7x7 windows, shift 3, head_dim 16 here) at batch, without running them."""
    keys = []
    monkeypatch.setattr(KernelLaunch, "__call__",
                        lambda self, tensors: keys.append(specialization_key(self.kernel, self.arguments(tensors))))
    heads, d = 3, 16
    qkv = torch.empty(batch, height, width, 3 * heads * d, dtype=torch.float16)
    q, k, v = qkv.reshape(batch, height * width, 3, heads, d).permute(2, 0, 3, 1, 4)
    image = ImageLayout((height, width), (7, 7), (3, 3), timm_order, torch.zeros(3 * heads * d))
    bias = torch.zeros(heads, 49, 49)
    out, lse = window_attention_forward(q, k, v, bias, None, d ** -0.5, image=image)
    window_attention_backward(out, q, k, v, out, lse, bias, None, d ** -0.5, True, image=image, fill_grad=True)
    return keys


@pytest.mark.parametrize("height, width", [(56, 56), (54, 60)], ids=["unpadded", "padded"])
def test_one_variant_for_every_batch_size(monkeypatch, height, width):
    first = launch_keys(monkeypatch, 1, True, height, width)
    assert len(first) >= 2  # forward, backward key pass (and query pass where the backward is split)
    for batch in (2, 3, 8, 128):
        assert launch_keys(monkeypatch, batch, True, height, width) == first, f"batch {batch} compiles anew"


def test_orders_share_kernels_without_padding(monkeypatch):
    assert launch_keys(monkeypatch, 8, True) == launch_keys(monkeypatch, 8, False)
    assert launch_keys(monkeypatch, 8, True, 54, 60) != launch_keys(monkeypatch, 8, False, 54, 60)


def test_the_key_sees_specialization():
    """The check can fail: an argument left to Triton's specialization changes the key."""
    kernel = launch.window_attention_bwd_kernel
    args = {name: 0 for name in kernel.arg_names}
    one, many = dict(args, windows=1), dict(args, windows=128)
    assert specialization_key(kernel, one) == specialization_key(kernel, many)
    assert specialization_key(kernel, one, skip=set()) != specialization_key(kernel, many, skip=set())


@compiled_only
def test_kernel_caches_do_not_grow_with_the_batch():
    """On a GPU: after batch 1, batches 2, 3, 8 and 128 compile nothing new."""
    from fastswin import ops
    from fastswin.ops.attention.query_grad_kernel import window_attention_bwd_query_kernel

    kernels = (launch.window_attention_fwd_kernel, launch.window_attention_bwd_kernel,
               window_attention_bwd_query_kernel)

    def compiled():
        return [sum(len(cache[0]) for cache in kernel.device_caches.values()) for kernel in kernels]

    def step(batch, height):  # padded 54 x 60 maps with a cosine: every kernel runs
        qkv = torch.randn(batch, height, 60, 3 * 3 * 32, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        bias = torch.randn(3, 49, 49, device="cuda", requires_grad=True)
        logit_scale = torch.zeros(3, 1, 1, device="cuda", requires_grad=True)
        out = ops.shifted_window_attention(qkv, 3, 7, 3, bias, logit_scale=logit_scale, backend="triton")
        out.sum().backward()

    step(1, 54)
    first = compiled()
    for batch in (2, 3, 8, 128):
        step(batch, 54)
    assert compiled() == first
