"""The host path of the fused ops: what one eager call costs, counted exactly.

Each forward and forward + backward of each fused op launches a named number of Triton
kernels and runs a named set of other aten ops (allocations, memsets, copies, reductions;
views are free and not counted), each against the budget below: a change that adds one
fails here. The budgets also hold that the eager path dispatches no registered custom op
(a fastswin:: op would be counted) and never syncs (no _local_scalar_dense / item).
Kernels are not run (the launches are counted instead), so these run the same anywhere.

Then Triton's real launch path, on a stand-in driver in a child process
(host_path_child.py): a repeated call launches the compiled kernels directly, with the
arguments Triton's own JIT entry gave them, and where the direct call is not known to be
safe (DIRECT_VERSIONS) every launch takes the JIT entry.
"""
import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from helpers import versions
from fastswin import ops
from fastswin.ops.launcher import KernelLaunch

pytestmark = versions  # helpers.py
HERE = Path(__file__).parent


class _AtenOps(TorchDispatchMode):
    """Counts the aten (and custom) ops that reach the device, views left out."""

    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.counts[str(func.overloadpacket).removeprefix("aten.")] += 1
        return func(*args, **(kwargs or {}))


def _maps(size, video=False, padded_fill=False, cosine=False):
    """A shifted_window_attention call and its leaves: Swin-T-like heads (3 x 16)."""
    heads, window = 3, ((2, 4, 4) if video else (7, 7))
    n = 32 if video else 49
    qkv = torch.randn(2, *((4,) if video else ()), *size, 3 * heads * 16, requires_grad=True)
    bias = torch.randn(heads, n, n, requires_grad=True)
    fill = torch.randn(qkv.shape[-1], requires_grad=True) if padded_fill else None
    scale = torch.zeros(heads, 1, 1, requires_grad=True) if cosine else None
    shift = tuple(w // 2 for w in window)
    leaves = [t for t in (qkv, bias, fill, scale) if t is not None]
    return leaves, lambda: ops.shifted_window_attention(qkv, heads, window, shift, bias, logit_scale=scale,
                                                        qkv_bias=fill, order="timm", backend="triton")


def _windows(cosine=False):
    # Leaves in the layout of the gradients the kernels write (autograd copies others into theirs).
    q, k, v = (torch.randn(8, 49, 3, 16).transpose(1, 2).requires_grad_() for _ in range(3))
    bias, mask = torch.randn(3, 49, 49, requires_grad=True), torch.randn(4, 49, 49)
    if cosine:
        scale = torch.zeros(3, 1, 1, requires_grad=True)
        return [q, k, v, bias, scale], lambda: ops.cosine_window_attention(q, k, v, scale, bias, mask,
                                                                           backend="triton")
    return [q, k, v, bias], lambda: ops.window_attention(q, k, v, bias, mask, backend="triton")


FWD, BWD, QUERY = "window_attention_fwd_kernel", "window_attention_bwd_kernel", "window_attention_bwd_query_kernel"

# (case, with gradients) -> (Triton launches, other aten ops). Forward: the output and lse.
# Backward: d(qkv) (or dq, dk, dv), dbias's one atomic slot (zeroed), and on a padded map
# with a fill the padding rows' dK, dV (zeroed), their sum and d(fill) (zeros for its q part).
BUDGETS = {
    ("image", False): ([FWD], {"new_empty": 1, "empty": 1}),
    ("image", True): ([FWD, BWD], {"new_empty": 1, "empty": 2, "zeros": 1}),
    ("image, padded, fill, v2", False): ([FWD], {"new_empty": 1, "empty": 1}),
    ("image, padded, fill, v2", True): ([FWD, BWD, QUERY],
                                        {"new_empty": 1, "empty": 2, "zeros": 2, "new_zeros": 2, "sum": 1, "cat": 1}),
    ("video", False): ([FWD], {"new_empty": 1, "empty": 1}),
    ("video", True): ([FWD, BWD], {"new_empty": 1, "empty": 2, "zeros": 1}),
    ("windows", False): ([FWD], {"new_empty": 1, "empty": 1}),
    ("windows", True): ([FWD, BWD], {"new_empty": 4, "empty": 1, "zeros": 1}),
    ("windows, v2", True): ([FWD, BWD], {"new_empty": 4, "empty": 1, "zeros": 2}),
}
CASES = {"image": lambda: _maps((14, 14)), "image, padded, fill, v2": lambda: _maps((12, 15), padded_fill=True,
                                                                                      cosine=True),
         "video": lambda: _maps((8, 8), video=True), "windows": _windows, "windows, v2": lambda: _windows(True)}


def count(case: str, training: bool, monkeypatch):
    """(Triton launches, other aten ops) of the second of two calls (the first plans)."""
    launches = []
    monkeypatch.setattr(KernelLaunch, "__call__", lambda self, tensors: launches.append(self.kernel.__name__))
    leaves, call = CASES[case]()
    grad = None
    for _ in range(2):
        for leaf in leaves:
            leaf.grad = None
        launches.clear()
        with torch.set_grad_enabled(training), _AtenOps() as counted:
            out = call()
            if training:
                if grad is None:
                    with torch.utils._python_dispatch._disable_current_modes():
                        grad = torch.randn_like(out)
                out.backward(grad)
    return launches, dict(counted.counts)


@pytest.mark.parametrize("case, training", list(BUDGETS), ids=[f"{c}-{'fwd+bwd' if t else 'fwd'}" for c, t in BUDGETS])
def test_a_call_launches_and_allocates_within_its_budget(case, training, monkeypatch):
    assert count(case, training, monkeypatch) == BUDGETS[case, training]


def test_the_count_sees_an_added_allocation_and_launch(monkeypatch):
    """The check can fail: one more allocation, or one more launch, changes the count."""
    from fastswin.ops.attention import eager

    run_forward = eager.run_forward
    monkeypatch.setattr(eager, "run_forward", lambda plan, *args: torch.empty(1) is None or run_forward(plan, *args))
    launches, aten = count("image", False, monkeypatch)
    assert launches == BUDGETS["image", False][0] and aten != BUDGETS["image", False][1]

    def twice(plan, *args):
        run_forward(plan, *args)
        return run_forward(plan, *args)

    monkeypatch.setattr(eager, "run_forward", twice)
    assert count("image", False, monkeypatch)[0] != BUDGETS["image", False][0]


def _child(*flags: str) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, str(HERE / "host_path_child.py"), *flags], capture_output=True,
                            text=True, timeout=600, env=env, cwd=HERE.parent)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads(result.stdout.strip().splitlines()[-1])
    if "skipped" in results:
        pytest.skip(results["skipped"])
    return results


def test_a_repeated_call_launches_the_compiled_kernels_directly():
    """The second call of each op takes no JIT entry, and its launches give Triton's
    launcher exactly what the first call's JIT entry gave it."""
    for case, result in _child().items():
        first, second = result["calls"]
        assert result["jit"][0] == len(first) >= 2 and result["jit"][1] == 0, case
        assert second == first, case


def test_an_unknown_triton_launches_through_the_jit_entry():
    for case, result in _child("--no-direct").items():
        first, second = result["calls"]
        assert result["jit"] == [len(first), len(second)] and second == first, case


def test_addresses_are_those_of_the_views():
    """The image layout passes compiled kernels the addresses of qkv's k and v channels
    (launcher.Address) where the interpreter takes the views themselves: the same."""
    from fastswin.ops.attention.eager import _parts

    for dtype in (torch.float16, torch.float32):
        qkv = torch.randn(2, 5, 7, 3 * 24, dtype=dtype)[:, :, 1:]  # strided (unit last stride, as the op makes it)
        views, addresses = _parts(qkv, 24, views=True), _parts(qkv, 24, views=False)
        assert [t.data_ptr() for t in views] == [a.data_ptr() for a in addresses]
        assert all(a.dtype == dtype for a in addresses)


@pytest.mark.parametrize("case", list(CASES))
def test_a_kept_call_holds_no_tensor(case, monkeypatch):
    """The calls and plans kept per signature hold no caller's tensor (an activation kept
    alive by a plan would be a leak the size of a step's)."""
    import gc
    import weakref

    monkeypatch.setattr(KernelLaunch, "__call__", lambda self, tensors: None)
    leaves, call = CASES[case]()
    out = call()
    out.backward(torch.ones_like(out))
    refs = [weakref.ref(t) for t in leaves + [out]]
    del leaves, call, out
    gc.collect()
    assert all(ref() is None for ref in refs)
