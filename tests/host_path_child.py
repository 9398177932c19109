"""Triton's real launch path on a stand-in driver (fastswin.stand_in_driver), in a process of
its own (the test process interprets the kernels): each fused op called twice, recording
every argument Triton's launcher receives and how many launches took Triton's JIT entry.

Run by tests/test_host_path.py:
    python tests/host_path_child.py [--no-direct]
prints one JSON object: {case: {"calls": [[launch, ...] per call], "jit": [JIT launches per
call]}}, a launch being the launcher's arguments after the stream (tensors as
"tensor:DTYPE", so two calls on fresh outputs compare equal).
"""
import json
import sys
import warnings

import torch

from fastswin import ops, stand_in_driver

warnings.filterwarnings("ignore", message="CUDA initialization")  # the stand-in driver's


def record():
    """Wrap Triton's launcher and its JIT entry: (launches, jit) lists filled as they run."""
    from triton.backends.nvidia.driver import CudaLauncher
    from triton.runtime.jit import JITFunction

    launches, jit = [], []
    launcher, entry = CudaLauncher.__call__, JITFunction.run

    def launched(self, grid_x, grid_y, grid_z, stream, function, *args):
        launches.append([grid_x, grid_y, grid_z] + [_plain(a) for a in args[4:]])  # after the hooks
        return launcher(self, grid_x, grid_y, grid_z, stream, function, *args)

    def entered(self, *args, **kwargs):
        jit.append(1)
        return entry(self, *args, **kwargs)

    CudaLauncher.__call__, JITFunction.run = launched, entered
    return launches, jit


def _plain(value):
    if hasattr(value, "data_ptr"):
        return f"tensor:{value.dtype}"
    return value if isinstance(value, (int, float, bool, str, type(None))) else str(value)


def cases():
    """Every kernel: the image layout unpadded and padded (with a fill), v1 and v2, a
    video map, and the window layout with a mask."""
    def image(size, logit_scale=False, video=False):
        heads, window = 3, ((2, 4, 4) if video else (7, 7))
        n = 32 if video else 49
        qkv = torch.randn(2, *((4,) if video else ()), *size, 3 * heads * 16, dtype=torch.float16, requires_grad=True)
        bias = torch.randn(heads, n, n, requires_grad=True)
        fill = torch.randn(qkv.shape[-1], dtype=torch.float16, requires_grad=True)
        scale = torch.zeros(heads, 1, 1, requires_grad=True) if logit_scale else None
        shift = tuple(w // 2 for w in window)
        return lambda: ops.shifted_window_attention(qkv, heads, window, shift, bias, logit_scale=scale,
                                                    qkv_bias=fill, order="timm", backend="triton")

    def windows():
        q, k, v = (torch.randn(8, 3, 49, 32, dtype=torch.float16, requires_grad=True) for _ in range(3))
        bias, mask = torch.randn(3, 49, 49, requires_grad=True), torch.randn(4, 49, 49)
        return lambda: ops.window_attention(q, k, v, bias, mask, backend="triton")

    return {"image": image((14, 14)), "image padded v2": image((12, 15), logit_scale=True),
            "video": image((8, 8), video=True), "windows": windows()}


def main(direct: bool) -> dict:
    if not stand_in_driver.install():
        return {"skipped": "no stand-in driver here"}
    from fastswin.ops import launcher
    if not direct:
        launcher.DIRECT_VERSIONS = ()
    launches, jit = record()
    results = {}
    for name, call in cases().items():
        calls, counts = [], []
        for _ in range(2):
            del launches[:], jit[:]
            out = call()
            out.backward(torch.ones_like(out))
            calls.append(list(launches))
            counts.append(len(jit))
        results[name] = {"calls": calls, "jit": counts}
    return results


if __name__ == "__main__":
    print(json.dumps(main(direct="--no-direct" not in sys.argv)))
