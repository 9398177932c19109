"""Micro-benchmark harness: timing, device copy bandwidth, and the op cases.

Used by `fastswin bench` and by the pytest-benchmark suites in benchmarks/.
Every figure is a median over repeats, measured against baselines in the same
run; on CUDA, timing uses events after a warm-up, so it synchronizes.
"""
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, List, Optional

import torch

from fastswin import ops, reference

# (model, stage, H, W, C) at 224x224 input, window 7.
SWIN_STAGES = [
    (model, stage, 56 >> stage, 56 >> stage, base << stage)
    for model, base in (("swin_t", 96), ("swin_b", 128))
    for stage in range(4)
]
WINDOW = 7
SHIFT = 3


@dataclass
class Timing:
    median_ms: float
    p20_ms: float
    p80_ms: float


@dataclass
class Row:
    op: str
    case: str
    mode: str           # "fwd" or "fwd+bwd"
    dtype: str
    baseline: str
    baseline_ms: float
    fastswin_ms: float
    speedup: float      # baseline time / fastswin time
    gbps: float         # bytes the op must move / fastswin time
    roofline: Optional[float]  # gbps / measured device copy bandwidth

    def as_dict(self):
        return asdict(self)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], object], device: torch.device, repeats: int = 20, warmup: int = 3) -> Timing:
    """Median, p20 and p80 of `repeats` timed calls of fn, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    _synchronize(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(times, n=10) if len(times) > 1 else times * 9
    return Timing(statistics.median(times), q[1], q[7])


def copy_bandwidth(device: torch.device, megabytes: int = 256) -> float:
    """Device-to-device copy bandwidth in GB/s, bytes read plus bytes written."""
    n = megabytes * 2**20 // 4
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    timing = measure(lambda: dst.copy_(src), device, repeats=10)
    return 2 * src.nbytes / timing.median_ms / 1e6


def _fwd_bwd(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, grad: torch.Tensor):
    def run():
        x.grad = None
        fn(x).backward(grad)
    return run


def window_process_rows(device: torch.device, dtype: torch.dtype, batch: int, bandwidth: Optional[float],
                        stages=SWIN_STAGES, repeats: int = 20) -> List[Row]:
    """Partition and reverse, forward and forward+backward, fastswin vs eager
    (pad + roll + permute copy), at the Swin stage shapes."""
    rows = []
    for model, stage, H, W, C in stages:
        shift = 0 if H <= WINDOW else SHIFT  # a map of one window is not shifted
        x = torch.randn(batch, H, W, C, device=device, dtype=dtype)
        windows = reference.window_partition(x, (WINDOW, WINDOW), (shift, shift))
        moved = (x.nbytes + windows.nbytes)
        case = f"{model}.s{stage + 1} {batch}x{H}x{W}x{C}"
        impls = {
            "window_partition": (
                lambda t: reference.window_partition(t, (WINDOW, WINDOW), (shift, shift)),
                lambda t: ops.window_partition(t, WINDOW, shift), x, windows),
            "window_reverse": (
                lambda t: reference.window_reverse(t, (WINDOW, WINDOW), H, W, (shift, shift)),
                lambda t: ops.window_reverse(t, WINDOW, H, W, shift), windows, x),
        }
        for op, (eager, fast, inp, out) in impls.items():
            for mode in ("fwd", "fwd+bwd"):
                if mode == "fwd":
                    eager_run, fast_run, factor = (lambda f=eager: f(inp)), (lambda f=fast: f(inp)), 1
                else:
                    leaf = inp.detach().clone().requires_grad_()
                    grad = torch.randn_like(out)
                    eager_run, fast_run, factor = _fwd_bwd(eager, leaf, grad), _fwd_bwd(fast, leaf, grad), 2
                base_t = measure(eager_run, device, repeats)
                fast_t = measure(fast_run, device, repeats)
                gbps = factor * moved / fast_t.median_ms / 1e6
                rows.append(Row(op, case, mode, str(dtype).replace("torch.", ""), "eager", base_t.median_ms,
                                fast_t.median_ms, base_t.median_ms / fast_t.median_ms, gbps,
                                gbps / bandwidth if bandwidth else None))
    return rows
