"""Host time of the fused calls, kernels stubbed (pytest-benchmark): each op of
fastswin.bench_host at each Swin-T stage, forward and forward + backward, through
Triton's real launch path on a stand-in driver (fastswin.stand_in_driver).

It needs compiled kernels on a machine without a GPU, in a process of its own:
    pytest benchmarks/test_bench_host_time.py
(with tests/, the interpreter is on, and on a GPU machine the real driver is in use:
skipped; `fastswin bench --host` measures the same, models included).
"""
import os

import pytest
import torch

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available(),
                                reason="host time on the stand-in driver: compiled kernels, no GPU (run alone)")


def _op_calls():
    from fastswin import bench_host, stand_in_driver

    if not stand_in_driver.install():
        pytest.skip("the stand-in driver cannot be installed here")
    return bench_host.op_calls()


@pytest.fixture(scope="module")
def op_calls():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {(case, mode): fn for case, mode, fn in _op_calls()}
    torch.set_num_threads(threads)


@pytest.mark.parametrize("op", ["shifted_window_attention", "window_attention"])
@pytest.mark.parametrize("stage", [1, 2, 3, 4])
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
def test_host_time(benchmark, op_calls, op, stage, mode):
    benchmark.extra_info.update(op=op, stage=stage, mode=mode, unit="host time, kernels stubbed")
    benchmark(op_calls[f"{op} swin_t.s{stage}", mode])
