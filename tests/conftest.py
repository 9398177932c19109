"""Test set-up shared by every test.

The Triton kernels are tested in the interpreter on CPU tensors: always without
a GPU, and on a GPU machine when FASTSWIN_TEST_INTERPRET=1 (the GPU validation
runs the suite so, then checks the compiled kernels on the GPU with `fastswin
check`). The interpreter is read when a kernel is decorated, so it is set here,
before fastswin is imported.
"""
import os

import torch

if not torch.cuda.is_available() or os.environ.get("FASTSWIN_TEST_INTERPRET") == "1":
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from helpers import DEVICES  # noqa: E402


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture
def poisoned_outputs():
    """Fill every tensor torch allocates uninitialized (torch.empty, at::empty in the
    kernels) with NaN, so an output element a kernel forgets to write shows up."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    yield
    torch.use_deterministic_algorithms(before)
