"""Helpers shared by the tests (fixtures live in conftest.py)."""
import os

import pytest
import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
FLOAT_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]

# Where the Triton kernels are tested: CUDA tensors and compiled kernels on a GPU; CPU
# tensors in the Triton interpreter without one (conftest.py sets TRITON_INTERPRET then,
# or on a GPU machine with FASTSWIN_TEST_INTERPRET=1).
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
KERNEL_DEVICE = "cpu" if INTERPRETED else "cuda"
# The dtypes the kernels are compared with PyTorch in; bf16 compiled only (the
# interpreter computes it wrongly).
KERNEL_DTYPES = [torch.float32, torch.float16] + ([] if INTERPRETED else [torch.bfloat16])
KERNEL_DTYPE_IDS = ["fp32", "fp16", "bf16"][:len(KERNEL_DTYPES)]
# fp64 runs only in the interpreter (the kernels' gradcheck path); GPU-sized cases only compiled.
interpreter_only = pytest.mark.skipif(not INTERPRETED, reason="fp64 kernels run in the Triton interpreter only")
compiled_only = pytest.mark.skipif(INTERPRETED, reason="too slow for the Triton interpreter; runs on a GPU")


def random_tensor(shape, dtype, device, generator_seed):
    """Fresh random values (never zeros), drawn in float64 and rounded to dtype."""
    g = torch.Generator().manual_seed(generator_seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)


def spawn_gloo_workers(worker, tmp_path, nprocs, *args):
    """Run worker(rank, nprocs, init_file, *args) in nprocs processes (a gloo group set up
    from init_file). Retried once, on a fresh init file, when a worker dies by a signal:
    gloo has aborted a worker at teardown, rarely, after its work was done ('terminate
    called without an active exception'; once in about 30 runs here, once in CI). A Python
    error in a worker, or a second crash, fails the test."""
    import warnings
    from torch.multiprocessing.spawn import ProcessExitedException

    for attempt in range(2):
        init_file = str(tmp_path / f"init{attempt}")
        try:
            torch.multiprocessing.spawn(worker, args=(nprocs, init_file, *args), nprocs=nprocs)
            return
        except ProcessExitedException as error:
            if error.signal_name is None or attempt:
                raise
            warnings.warn(f"a gloo worker died by {error.signal_name}; running the workers again")


# What the second stack of CI (torch 2.11 + Triton 3.6, the GPU machine's versions) runs:
# tests, or parameters (pytest.param(..., marks=versions)), of what can differ between
# versions. conftest.py registers the marker.
versions = pytest.mark.versions
# Tests minutes long in the interpreter, run first (conftest.py).
long = pytest.mark.long
