"""Window partition / reverse of video maps (B, T, H, W, C): exact equality with the
reference (torchvision's video Swin semantics, tests/test_reference_3d.py), forward and
backward, through every backend that can run here. The CPU kernel runs the index math
(csrc/window_index.h) that the CUDA kernel runs."""
import itertools

import pytest
import torch

from helpers import FLOAT_DTYPES, random_tensor, versions
from fastswin import ops, reference
from fastswin._extension import HAS_C

# (B, T, H, W, C, window, shift)
CASES = [
    (2, 8, 14, 14, 8, (4, 7, 7), (2, 3, 3)),   # divisible, video Swin's shift at a smaller window
    (1, 5, 13, 17, 5, (2, 7, 7), (1, 3, 3)),   # padding in every dim
    (2, 3, 7, 9, 4, (2, 3, 4), (1, 0, 2)),     # non-cubic window, a shift in two dims
    (1, 4, 6, 5, 3, (8, 7, 7), (0, 0, 0)),     # one (padded) window covers the map
    (2, 6, 8, 8, 3, (3, 4, 4), (5, 7, 9)),     # shifts past the window (mod the padded size)
    (2, 1, 9, 9, 3, (1, 3, 3), (0, 1, 1)),     # one frame: a 2D map as video
]
CASE_IDS = [f"{b}x{t}x{h}x{w}x{c}-w{'x'.join(map(str, ws))}-s{'x'.join(map(str, ss))}"
            for b, t, h, w, c, ws, ss in CASES]
SHIFT_SUBSETS = list(itertools.product((0, 1), (0, 2), (0, 3)))


def backends_for(device):
    return ["auto", "reference"] + ([device.type] if HAS_C else [])


def check_round_trip(x, window, shift, device):
    expected = reference.window_partition(x, window, shift)
    for backend in backends_for(device):
        windows = ops.window_partition_3d(x, window, shift, backend=backend)
        assert torch.equal(windows, expected), backend
        assert torch.equal(ops.window_reverse_3d(windows, window, x.shape[1:4], shift, backend=backend),
                           x.contiguous()), backend


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_partition_and_reverse_match_reference(case, dtype, device, poisoned_outputs):
    B, T, H, W, C, window, shift = case
    check_round_trip(random_tensor((B, T, H, W, C), dtype, device, generator_seed=hash(case) % 2**31), window,
                     shift, device)


@pytest.mark.parametrize("shift", SHIFT_SUBSETS, ids=str)
def test_shift_in_any_subset_of_the_dims(shift, device, poisoned_outputs):
    check_round_trip(random_tensor((2, 5, 9, 11, 3), torch.float32, device, generator_seed=1), (2, 4, 5), shift,
                     device)


@pytest.mark.parametrize("case", CASES[:3], ids=CASE_IDS[:3])
def test_gradients_match_reference(case, device, poisoned_outputs):
    B, T, H, W, C, window, shift = case
    x = random_tensor((B, T, H, W, C), torch.float32, device, generator_seed=2)
    windows_shape = reference.window_partition(x, window, shift).shape
    grad_windows = random_tensor(windows_shape, torch.float32, device, generator_seed=3)
    grad_map = random_tensor(x.shape, torch.float32, device, generator_seed=4)

    def grads(backend):
        x_in = x.clone().requires_grad_()
        w_in = random_tensor(windows_shape, torch.float32, device, generator_seed=5).requires_grad_()
        ops.window_partition_3d(x_in, window, shift, backend=backend).backward(grad_windows)
        ops.window_reverse_3d(w_in, window, (T, H, W), shift, backend=backend).backward(grad_map)
        return x_in.grad, w_in.grad

    want = grads("reference")
    for backend in backends_for(device):
        got = grads(backend)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), backend


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_strided_inputs(dtype, device, poisoned_outputs):
    x = random_tensor((2, 5, 13, 18, 6), dtype, device, generator_seed=6)
    window, shift = (2, 7, 6), (1, 3, 2)
    wide = torch.zeros(*x.shape[:4], 2 * x.shape[4], dtype=dtype, device=device)
    wide[..., ::2] = x
    padded = torch.zeros(2, 6, 14, 19, 7, dtype=dtype, device=device)
    padded[:, 1:, 1:, 1:, 1:] = x
    views = {"channel-strided": wide[..., ::2], "th-transposed": x.transpose(1, 2).contiguous().transpose(1, 2),
             "offset-slice": padded[:, 1:, 1:, 1:, 1:]}
    for name, view in views.items():
        check_round_trip(view, window, shift, device)


def test_many_windows(device):
    """More images and windows than a 65,535 grid dimension holds."""
    x = random_tensor((70000, 1, 2, 2, 2), torch.float32, device, generator_seed=7)
    for backend in backends_for(device):
        windows = ops.window_partition_3d(x, 1, 0, backend=backend)
        assert torch.equal(windows, x.reshape(-1, 1, 1, 1, 2)), backend
        assert torch.equal(ops.window_reverse_3d(windows, 1, (1, 2, 2), backend=backend), x), backend


@versions
@pytest.mark.skipif(not HAS_C, reason="the compiled ops need the extension")
def test_opcheck(device):
    x = random_tensor((2, 3, 7, 9, 4), torch.float32, device, generator_seed=8)
    torch.library.opcheck(torch.ops.fastswin.window_partition_3d.default, (x, [2, 3, 4], [1, 1, 2]))
    windows = ops.window_partition_3d(x, (2, 3, 4), (1, 1, 2))
    torch.library.opcheck(torch.ops.fastswin.window_reverse_3d.default, (windows, [2, 3, 4], [3, 7, 9], [1, 1, 2]))


@versions
@pytest.mark.parametrize("call, message", [
    (lambda x: ops.window_partition_3d(x[0], 7), "must be \\(B, T, H, W, C\\)"),
    (lambda x: ops.window_partition_3d(x, (7, 7)), "int or 3 ints"),
    (lambda x: ops.window_partition_3d(x, (2, 0, 7)), "window_size must be positive"),
    (lambda x: ops.window_partition_3d(x, 7, (0, -1, 0)), "shift_size must be >= 0"),
    (lambda x: ops.window_reverse_3d(x, 7, (4, 14, 14)), "windows are \\(4, 14, 14\\)"),
    (lambda x: ops.window_reverse_3d(torch.zeros(5, 2, 7, 7, 3), (2, 7, 7), (4, 14, 14)), "cannot tile"),
    (lambda x: ops.window_reverse_3d(torch.zeros(8, 2, 7, 7, 3), (2, 7, 7), (0, 14, 14)), "must be positive"),
    (lambda x: ops.window_reverse_3d(torch.zeros(8, 2, 7, 7, 3), (2, 7, 7), (4, 14)), "int or 3 ints"),
])
def test_bad_input_raises(call, message):
    x = torch.randn(2, 4, 14, 14, 3)
    with pytest.raises(ValueError, match=message):
        call(x)


@versions
@pytest.mark.skipif(not HAS_C, reason="the compiled ops need the extension")
def test_compile_fullgraph(device):
    torch._dynamo.reset()

    def roundtrip(x):
        return ops.window_reverse_3d(ops.window_partition_3d(x, (2, 7, 7), (1, 3, 3)) * 2, (2, 7, 7), x.shape[1:4],
                                     (1, 3, 3))

    x = random_tensor((2, 3, 14, 13, 4), torch.float32, device, generator_seed=9)
    assert torch.equal(torch.compile(roundtrip, fullgraph=True)(x), 2 * x)
