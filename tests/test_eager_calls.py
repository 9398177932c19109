"""What the eager path keeps per call signature (functions._signature, eager.py) must not
change a result: maps whose dims do not merge into views, a scale given as a tensor,
PyTorch's new TF32 setting, a timm block first run under inference mode, double backward."""
import pytest
import torch

from helpers import KERNEL_DEVICE, versions
from fastswin import ops, reference

pytestmark = versions  # helpers.py


def _grads(fn, qkv, bias, grad):
    qkv, bias = qkv.detach().requires_grad_(), bias.detach().requires_grad_()
    out = fn(qkv, bias)
    out.backward(grad)
    return out.detach(), qkv.grad, bias.grad


@pytest.mark.parametrize("video", [False, True], ids=["2d", "video-folded"])
def test_maps_whose_dims_do_not_merge_are_read_as_they_are(video):
    """A cropped map (its spatial dims, or batch and time, do not merge into a view) and a
    cropped output gradient: the kernels get a copy, forward and backward."""
    heads, C = 2, 32
    sizes, window, shift = ((3, 7, 7), (1, 4, 4), (0, 2, 2)) if video else ((7, 7), (4, 4), (2, 2))
    crop = (slice(None), slice(0, 3)) if video else (slice(None), slice(0, 7), slice(0, 7))
    big = (2, 4, 7, 7) if video else (1, 8, 8)
    qkv = torch.randn(*big, 3 * C, dtype=torch.float64, device=KERNEL_DEVICE)[crop]
    grad = torch.randn(*big, C, dtype=torch.float64, device=KERNEL_DEVICE)[crop]
    bias = torch.randn(heads, 16, 16, dtype=torch.float64, device=KERNEL_DEVICE)
    assert qkv.shape[1:-1] == sizes
    for _ in range(2):  # planned, then kept
        got = _grads(lambda x, b: ops.shifted_window_attention(x, heads, window, shift, b, backend="triton"),
                     qkv, bias, grad)
        want = _grads(lambda x, b: reference.shifted_window_attention(x, heads, window, shift, b), qkv, bias, grad)
        for name, g, w in zip(("out", "dqkv", "dbias"), got, want):
            torch.testing.assert_close(g, w, msg=lambda text, name=name: f"{name}: {text}")


def test_a_tensor_scale_is_read_every_call():
    q, k, v = (torch.randn(2, 2, 16, 8) for _ in range(3))
    for scale in (0.1, 2.0):
        got = ops.window_attention(q, k, v, scale=torch.tensor(scale))
        torch.testing.assert_close(got, ops.window_attention(q, k, v, scale=scale))


def test_the_new_tf32_setting_is_read():
    """Once torch's fp32_precision is set, reading allow_tf32 raises: the ops read the new one."""
    matmul = torch.backends.cuda.matmul
    if not hasattr(matmul, "fp32_precision"):
        pytest.skip("this torch has no fp32_precision setting")
    before = matmul.fp32_precision
    q = torch.randn(2, 2, 16, 8)
    from fastswin.ops.attention.policy import tf32_matmuls

    try:
        matmul.fp32_precision = "ieee"
        assert not tf32_matmuls()
        matmul.fp32_precision = "tf32"
        assert tf32_matmuls()
        torch.testing.assert_close(ops.window_attention(q, q, q), reference.window_attention(q, q, q, None, None,
                                                                                             8 ** -0.5))
    finally:
        matmul.fp32_precision = before


def test_a_timm_block_first_run_under_inference_mode_trains(fastswin_path_on_cpu):
    """The patched block's bias index, first made under inference mode, is saved by a later
    training step's backward (an inference tensor cannot be)."""
    timm = pytest.importorskip("timm")
    import fastswin

    torch.manual_seed(0)
    model = timm.create_model("swin_tiny_patch4_window7_224", img_size=56, depths=(1, 1), embed_dim=16,
                              num_heads=(1, 2), num_classes=4)
    library = timm.create_model("swin_tiny_patch4_window7_224", img_size=56, depths=(1, 1), embed_dim=16,
                                num_heads=(1, 2), num_classes=4)
    library.load_state_dict(model.state_dict())
    fastswin.patch(model)
    x = torch.randn(2, 3, 56, 56)
    with torch.inference_mode():
        model(x)
    model(x).sum().backward()
    library(x).sum().backward()
    table = "layers.0.blocks.0.attn.relative_position_bias_table"
    torch.testing.assert_close(model.get_parameter(table).grad, library.get_parameter(table).grad)


def test_double_backward_is_an_error_not_a_detached_gradient():
    from fastswin._extension import HAS_C

    if not HAS_C:
        pytest.skip("the fused CPU kernels are not built")
    qkv = torch.randn(2, 8, 8, 3 * 16, requires_grad=True)
    out = ops.shifted_window_attention(qkv, 2, 4, 2, backend="cpu")
    (grad,) = torch.autograd.grad(out.pow(2).sum(), qkv, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad.pow(2).sum().backward()
