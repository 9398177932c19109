"""Window partition / reverse: exact equality with the reference (torchvision's
semantics), forward and backward, through every backend that can run here."""
import pytest
import torch

from helpers import FLOAT_DTYPES, random_tensor, versions
from fastswin import BackendError, ops, reference
from fastswin._extension import HAS_C

# (B, H, W, C, window, shift)
CASES = [
    (2, 14, 14, 8, (7, 7), (3, 3)),    # divisible, Swin's shift
    (1, 13, 17, 5, (7, 7), (3, 3)),    # odd sizes, padding both ways
    (2, 64, 32, 4, (7, 7), (3, 3)),    # non-square maps
    (2, 32, 64, 4, (7, 7), (3, 3)),
    (1, 15, 20, 6, (7, 9), (3, 4)),    # non-square window, non-uniform shift
    (3, 10, 11, 3, (4, 5), (0, 2)),    # shift along one dim only
    (2, 12, 12, 16, (6, 6), (0, 0)),   # no shift
    (1, 5, 6, 7, (7, 7), (0, 0)),      # one (padded) window covers the map
    (1, 9, 9, 3, (3, 3), (5, 7)),      # shift past the window (taken mod the padded size)
    (2, 14, 7, 4, (7, 7), (0, 0)),     # one window per row: a plain reshape
    (2, 7, 7, 3, (7, 7), (7, 7)),      # a shift of the whole map is none: a plain reshape
]
CASE_IDS = [f"{b}x{h}x{w}x{c}-w{ws[0]}x{ws[1]}-s{ss[0]}x{ss[1]}" for b, h, w, c, ws, ss in CASES]


def backends_for(device):
    compiled = [device.type] if HAS_C else []
    return ["auto"] + compiled


def strided_views(x):
    """Views of the same values with other strides: channels strided, H/W transposed in memory,
    a misaligned slice."""
    B, H, W, C = x.shape
    wide = torch.zeros(B, H, W, 2 * C, dtype=x.dtype, device=x.device)
    wide[..., ::2] = x
    transposed = x.transpose(1, 2).contiguous().transpose(1, 2)
    padded = torch.zeros(B, H + 1, W + 1, C + 1, dtype=x.dtype, device=x.device)
    padded[:, 1:, 1:, 1:] = x
    return {"channel-strided": wide[..., ::2], "hw-transposed": transposed,
            "offset-slice": padded[:, 1:, 1:, 1:]}


@versions
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_partition_and_reverse_match_reference(case, dtype, device, poisoned_outputs):
    B, H, W, C, window, shift = case
    x = random_tensor((B, H, W, C), dtype, device, generator_seed=hash(case) % 2**31)
    expected = reference.window_partition(x, window, shift)
    for backend in backends_for(device):
        windows = ops.window_partition(x, window, shift, backend=backend)
        assert torch.equal(windows, expected), backend
        back = ops.window_reverse(windows, window, H, W, shift, backend=backend)
        assert torch.equal(back, x), backend
        assert torch.equal(back, reference.window_reverse(expected, window, H, W, shift)), backend


@versions
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_gradients_match_reference(case, device, poisoned_outputs):
    B, H, W, C, window, shift = case
    x = random_tensor((B, H, W, C), torch.float32, device, generator_seed=1)
    windows_shape = reference.window_partition(x, window, shift).shape
    grad_windows = random_tensor(windows_shape, torch.float32, device, generator_seed=2)
    grad_map = random_tensor(x.shape, torch.float32, device, generator_seed=3)

    def grads(partition, reverse):
        x_in = x.clone().requires_grad_()
        w_in = random_tensor(windows_shape, torch.float32, device, generator_seed=4).requires_grad_()
        partition(x_in).backward(grad_windows)
        reverse(w_in).backward(grad_map)
        return x_in.grad, w_in.grad

    want = grads(lambda t: reference.window_partition(t, window, shift),
                 lambda t: reference.window_reverse(t, window, H, W, shift))
    for backend in backends_for(device):
        got = grads(lambda t: ops.window_partition(t, window, shift, backend=backend),
                    lambda t: ops.window_reverse(t, window, H, W, shift, backend=backend))
        assert torch.equal(got[0], want[0]), backend
        assert torch.equal(got[1], want[1]), backend


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_strided_inputs(dtype, device, poisoned_outputs):
    x = random_tensor((2, 13, 18, 6), dtype, device, generator_seed=5)
    window, shift = (7, 6), (3, 2)
    expected = reference.window_partition(x, window, shift)
    for name, view in strided_views(x).items():
        for backend in backends_for(device):
            windows = ops.window_partition(view, window, shift, backend=backend)
            assert torch.equal(windows, expected), (name, backend)
    # Strided windows into reverse: a channel slice of a wider window tensor.
    wide = torch.cat([expected, expected.flip(-1)], dim=-1)[..., : x.shape[-1]]
    for backend in backends_for(device):
        assert torch.equal(ops.window_reverse(wide, window, 13, 18, shift, backend=backend), x), backend


def test_many_windows(device):
    """More windows than a 65,535 grid dimension holds."""
    x = random_tensor((70000, 2, 2, 2), torch.float32, device, generator_seed=6)
    for backend in backends_for(device):
        windows = ops.window_partition(x, 1, 0, backend=backend)
        assert torch.equal(windows, x.reshape(-1, 1, 1, 2)), backend
        assert torch.equal(ops.window_reverse(windows, 1, 2, 2, backend=backend), x), backend


def test_int_and_pair_arguments_agree(device):
    x = random_tensor((1, 9, 9, 2), torch.float32, device, generator_seed=7)
    assert torch.equal(ops.window_partition(x, 3, 1), ops.window_partition(x, (3, 3), (1, 1)))


@versions
@pytest.mark.parametrize("call, message", [
    (lambda x: ops.window_partition(x[0], 7), "must be \\(B, H, W, C\\)"),
    (lambda x: ops.window_partition(x, 0), "window_size must be positive"),
    (lambda x: ops.window_partition(x, (7, -1)), "window_size must be positive"),
    (lambda x: ops.window_partition(x, 7, -1), "shift_size must be >= 0"),
    (lambda x: ops.window_partition(x, (7, 7, 7)), "int or a pair"),
    (lambda x: ops.window_reverse(x, 7, 14, 14), "windows are \\(14, 14\\)"),
    (lambda x: ops.window_reverse(x[:3], 7, 14, 14)[0], "windows are"),
    (lambda x: ops.window_reverse(torch.zeros(5, 7, 7, 3), 7, 14, 14), "cannot tile"),
    (lambda x: ops.window_reverse(torch.zeros(4, 7, 7, 3), 7, 0, 14), "must be positive"),
    (lambda x: ops.window_reverse(torch.zeros(1, 0, 0, 3), 0, 5, 9), "window_size must be positive"),
])
def test_bad_input_raises(call, message):
    x = torch.randn(2, 14, 14, 3)
    with pytest.raises(ValueError, match=message):
        call(x)


def test_forced_backend_that_cannot_run_raises(monkeypatch):
    x = torch.randn(1, 7, 7, 2)
    with pytest.raises(BackendError, match="'cuda' cannot run.*cuda tensors"):
        ops.window_partition(x, 7, backend="cuda")
    with pytest.raises(BackendError, match="no 'triton' backend"):
        ops.window_partition(x, 7, backend="triton")
    with pytest.raises(ValueError, match="unknown backend"):
        ops.window_partition(x, 7, backend="fast")
    monkeypatch.setenv("FASTSWIN_BACKEND", "cuda")
    with pytest.raises(BackendError, match="'cuda' cannot run"):
        ops.window_partition(x, 7)
    monkeypatch.setenv("FASTSWIN_BACKEND", "reference")
    assert torch.equal(ops.window_partition(x, 7), x)


@pytest.mark.parametrize("shape", [(0, 14, 14, 8), (1, 0, 14, 8), (1, 14, 0, 8), (1, 0, 7, 8), (2, 14, 14, 0),
                                   (2, 14, 7, 0)],  # the reshape shortcut without channels
                         ids=str)
def test_empty_maps_give_empty_windows(shape, device):
    """A map with a zero size partitions to the reference's empty (or channel-less) windows
    and back, on every backend, rather than killing the process (a modulus by zero)."""
    x = torch.randn(shape, device=device)
    want = reference.window_partition(x, (7, 7), (3, 3))
    for backend in backends_for(device):
        windows = ops.window_partition(x, 7, 3, backend=backend)
        assert windows.shape == want.shape, backend
        assert torch.equal(windows, want), backend
        if shape[1] and shape[2]:
            assert torch.equal(ops.window_reverse(windows, 7, shape[1], shape[2], 3, backend=backend), x), backend


def test_empty_map_through_shifted_window_attention(device):
    qkv = torch.randn(2, 0, 14, 3 * 8, device=device)
    for backend in ("reference", "auto"):
        out = ops.shifted_window_attention(qkv, 2, 7, 3, backend=backend)
        assert out.shape == (2, 0, 14, 8), backend
