"""Test set-up shared by every test.

The Triton kernels are tested compiled, on CUDA tensors, on a GPU machine, and in
the interpreter on CPU tensors without one (or with FASTSWIN_TEST_INTERPRET=1):
helpers.KERNEL_DEVICE. The interpreter is read when a kernel is decorated, so it is
set here, before fastswin is imported.
"""
import os

import torch

if not torch.cuda.is_available() or os.environ.get("FASTSWIN_TEST_INTERPRET") == "1":
    os.environ["TRITON_INTERPRET"] = "1"

# Under pytest-xdist (-n N) the workers share the cores: each takes its share of torch
# threads, so that no worker's threads wait on another's.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

import pytest  # noqa: E402

from helpers import DEVICES, INTERPRETED  # noqa: E402


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def fresh_calls():
    """Each test chooses its backends anew: the calls the ops keep per signature (made
    after their checks and choice) are forgotten, as a test may change what a choice reads."""
    from fastswin.ops.attention.functions import clear_calls

    clear_calls()


@pytest.fixture
def fastswin_path_on_cpu(monkeypatch):
    """Auto mode keeps a patched model's library forward on CPU inputs that need gradients
    (faster there): the patch tests force fastswin's CPU path so that they compare it with
    the library's in training too."""
    from fastswin._extension import HAS_C

    monkeypatch.setenv("FASTSWIN_BACKEND", "cpu" if HAS_C else "reference")


@pytest.fixture
def poisoned_outputs():
    """Fill every tensor torch allocates uninitialized (torch.empty, at::empty in the
    kernels) with NaN, so an output element a kernel forgets to write shows up."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    yield
    torch.use_deterministic_algorithms(before)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "versions: a test of what can differ between torch / Triton versions (the Triton kernels in "
        "the interpreter, registered ops, autograd, torch.compile, the C++ extension's bindings); the second "
        "stack of CI (.ci/gpu-stack: torch 2.11 + Triton 3.6) runs only these (pytest -m versions)")
    config.addinivalue_line(
        "markers", "long: minutes long in the Triton interpreter; run first, so that pytest-xdist's workers "
        "(-n auto --maxschedchunk 1: a test at a time) end together rather than one waiting on another")


def pytest_collection_modifyitems(config, items):
    """The long tests first (a stable sort: the order is otherwise pytest's). Then
    FASTSWIN_TEST_GPU_ONLY=1 (benchmarks/gpu_validate.sh, where device minutes are few)
    keeps only what runs on the GPU: the tests of the cuda device parameter and, in the
    files that test kernels on helpers.KERNEL_DEVICE, those without a device parameter.
    CPU CI runs the rest."""
    if INTERPRETED:
        items.sort(key=lambda item: item.get_closest_marker("long") is None)
    if os.environ.get("FASTSWIN_TEST_GPU_ONLY") != "1" or INTERPRETED:
        return
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        device = callspec.params.get("device") if callspec else None
        on_gpu = str(device) == "cuda" if device is not None else hasattr(item.module, "KERNEL_DEVICE")
        (keep if on_gpu else drop).append(item)
    config.hook.pytest_deselected(items=drop)
    items[:] = keep
