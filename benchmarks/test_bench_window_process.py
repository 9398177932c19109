"""Window partition / reverse, forward and forward+backward, fastswin vs eager
(pad + roll + permute copy) at the Swin-T and Swin-B stage shapes."""
import pytest
import torch

from bench_setup import BATCH, DEVICE
from fastswin import ops, reference
from fastswin.benchmark import SHIFT, SWIN_STAGES, WINDOW

IMPLS = {
    "eager": (lambda x, s: reference.window_partition(x, (WINDOW, WINDOW), (s, s)),
              lambda w, H, W, s: reference.window_reverse(w, (WINDOW, WINDOW), H, W, (s, s))),
    "fastswin": (lambda x, s: ops.window_partition(x, WINDOW, s),
                 lambda w, H, W, s: ops.window_reverse(w, WINDOW, H, W, s)),
}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("op", ["window_partition", "window_reverse"])
@pytest.mark.parametrize("stage", SWIN_STAGES, ids=lambda s: f"{s[0]}.s{s[1] + 1}")
def test_window_process(run_benchmark, stage, op, mode, impl):
    _, _, H, W, C = stage
    shift = 0 if H <= WINDOW else SHIFT
    partition, reverse = IMPLS[impl]
    x = torch.randn(BATCH, H, W, C, device=DEVICE)
    windows = reference.window_partition(x, (WINDOW, WINDOW), (shift, shift))
    fn, inp, out = ((lambda t: partition(t, shift)), x, windows) if op == "window_partition" else \
        ((lambda t: reverse(t, H, W, shift)), windows, x)
    nbytes = x.nbytes + windows.nbytes
    if mode == "fwd":
        run_benchmark(lambda: fn(inp), nbytes, op=op, impl=impl)
    else:
        leaf, grad = inp.clone().requires_grad_(), torch.randn_like(out)
        run_benchmark(lambda: fn(leaf).backward(grad), 2 * nbytes, op=op, impl=impl)
