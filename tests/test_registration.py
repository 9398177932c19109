"""The compiled ops are proper torch.library ops: schema, fake (meta) kernels and
autograd pass opcheck, and torch.compile traces through them without graph breaks."""
import pytest
import torch

from helpers import random_tensor, versions
from fastswin import ops
from fastswin._extension import HAS_C

pytestmark = [versions, pytest.mark.skipif(not HAS_C, reason="fastswin._C is not built")]


@pytest.mark.parametrize("shift", [(0, 0), (3, 2)])
def test_opcheck(device, shift):
    x = random_tensor((2, 13, 10, 4), torch.float32, device, generator_seed=0).requires_grad_()
    torch.library.opcheck(torch.ops.fastswin.window_partition.default, (x, [7, 5], list(shift)))
    windows = random_tensor((2 * 2 * 2, 7, 5, 4), torch.float32, device, generator_seed=1).requires_grad_()
    torch.library.opcheck(torch.ops.fastswin.window_reverse.default, (windows, [7, 5], 13, 10, list(shift)))


def test_compile_fullgraph_no_recompile_on_batch(device):
    torch._dynamo.reset()

    def roundtrip(x):
        windows = ops.window_partition(x, 7, 3)
        return ops.window_reverse(windows * 2, 7, x.shape[1], x.shape[2], 3)

    compiled = torch.compile(roundtrip, fullgraph=True, dynamic=None)
    with torch._dynamo.config.patch(error_on_recompile=False):
        for batch in (2, 3):
            x = random_tensor((batch, 14, 14, 8), torch.float32, device, generator_seed=batch)
            assert torch.equal(compiled(x), 2 * x)
    # After the dynamic-batch recompile above, further batch sizes must reuse the graph.
    with torch._dynamo.config.patch(error_on_recompile=True):
        x = random_tensor((5, 14, 14, 8), torch.float32, device, generator_seed=5)
        assert torch.equal(compiled(x), 2 * x)
