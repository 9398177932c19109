"""pytest-benchmark set-up: the device under test and synchronized timing.

Run: pytest benchmarks/ [--benchmark-json FILE]; with --benchmark-disable each
case runs once, as a smoke test.
"""
import pytest
import torch

from bench_setup import BATCH, DEVICE


@pytest.fixture
def run_benchmark(benchmark):
    """benchmark(fn) that synchronizes the device inside the timed call and
    records the achieved GB/s for `nbytes` moved."""

    def run(fn, nbytes, **info):
        def timed():
            fn()
            if DEVICE.type == "cuda":
                torch.cuda.synchronize()

        benchmark.extra_info.update(info, device=str(DEVICE), batch=BATCH)
        benchmark(timed)
        if benchmark.stats is not None:  # None under --benchmark-disable
            benchmark.extra_info["gbps"] = nbytes / benchmark.stats.stats.median / 1e9

    return run
