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
