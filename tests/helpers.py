"""Helpers shared by the tests (fixtures live in conftest.py)."""
import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
FLOAT_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def random_tensor(shape, dtype, device, generator_seed):
    """Fresh random values (never zeros), drawn in float64 and rounded to dtype."""
    g = torch.Generator().manual_seed(generator_seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
