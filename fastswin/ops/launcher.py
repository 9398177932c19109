"""One Triton launch, planned once and repeated at little host cost.

`kernel[grid](...)` re-binds and re-specializes every argument on every launch: 29 us
of host time at 49 arguments, 48 us at 79, on Triton 3.6 (benchmarks/
PREDICTIONS-host-time.md). A `KernelLaunch` fixes everything but the tensors once
(the arguments by name, checked against the kernel's, the grid, the options); its
first launch of each pointer alignment goes through Triton's JIT entry, which
compiles and returns the compiled kernel, and later ones call that kernel's launcher
directly with the arguments in the kernel's order (2.6 / 4.9 us), as Triton's own JIT
entry does after its cache lookup. Where that is not safe (a Triton whose launch call
is not known, a profiler's launch hooks installed, the interpreter) every launch
takes the JIT entry.
"""
from typing import Callable, Dict, Optional, Tuple

import torch

from fastswin.ops._triton import triton

# Triton versions whose JITFunction.run launches a compiled kernel as
# compiled.run(grid_x, grid_y, grid_z, stream, compiled.function, compiled.packed_metadata,
# launch_metadata, launch_enter_hook, launch_exit_hook, *args), args in the kernel's order:
# the call `_direct` makes (read from triton/runtime/jit.py of each).
DIRECT_VERSIONS = ("3.6", "3.7", "3.8")

# Stands for a tensor argument in a plan's arguments (a tensor given there does too).
TENSOR = object()


def _is_tensor(value) -> bool:
    return value is TENSOR or isinstance(value, torch.Tensor)


class KernelLaunch:
    """`kernel[grid](**args, **options)` on `device`, with every argument but the tensors
    fixed: call it with the tensors by name (the names given as TENSOR or as a tensor
    in args; strides are arguments of their own, fixed by the plan)."""

    def __init__(self, kernel, grid: Tuple[int, ...], args: dict, options: dict, device: torch.device):
        names = list(kernel.arg_names)
        if args.keys() != set(names):
            missing, unknown = set(names) - args.keys(), args.keys() - set(names)
            raise TypeError(f"{kernel.__name__}: arguments missing {sorted(missing)}, unknown {sorted(unknown)}")
        self.kernel, self.grid, self.options, self.device = kernel, tuple(grid) + (1,) * (3 - len(grid)), options, device
        self.guarded = device.type == "cuda"
        # The interpreter reads tensors' storage: it takes tensors, not addresses (Address).
        self.interpreted = not hasattr(kernel, "device_caches")
        self.args = [None if _is_tensor(args[name]) else args[name] for name in names]
        self.tensors = tuple((i, name) for i, name in enumerate(names) if _is_tensor(args[name]))
        # A compiled kernel's launcher per pointer alignment (Triton specializes on it).
        self._direct: Dict[int, Optional[Callable]] = {}

    def arguments(self, tensors: dict) -> dict:
        """The launch's arguments by name, given its tensors by name."""
        args = self.args.copy()
        for i, name in self.tensors:
            args[i] = tensors[name]
        return dict(zip(self.kernel.arg_names, args))

    def __call__(self, tensors: dict) -> None:
        """Launch with these tensors (by name; only their addresses and dtypes are read)."""
        args = self.args.copy()
        aligned = 0  # a bit per tensor: its address a multiple of 16 (Triton specializes on it)
        for i, name in self.tensors:
            args[i] = t = tensors[name]
            aligned = aligned << 1 | (t.data_ptr() % 16 == 0)
        direct = self._direct.get(aligned)
        if self.guarded and self.device.index != torch.cuda.current_device():
            with torch.cuda.device(self.device):
                return self._launch(args, direct, aligned)
        self._launch(args, direct, aligned)

    def _launch(self, args: list, direct: Optional[Callable], aligned: int) -> None:
        if direct is not None and _hooks_idle():
            direct(args)
            return
        compiled = self.kernel[self.grid](*args, **self.options)
        if aligned not in self._direct:
            self._direct[aligned] = _direct(compiled, self.grid, self.device.index or 0)


def _hooks_idle() -> bool:
    """No launch hook is installed (a profiler's): the direct call passes none. (Triton
    3.6's hooks are None or a function, 3.8's a chain of calls.)"""
    runtime = triton.knobs.runtime
    enter, leave = runtime.launch_enter_hook, runtime.launch_exit_hook
    return (enter is None or not getattr(enter, "calls", True)) and (leave is None or not getattr(leave, "calls", True))


class Address:
    """A pointer argument at a byte offset into a tensor: what a view there would pass to a
    compiled kernel (its address and dtype), without making the view."""
    __slots__ = ("base", "offset", "dtype")

    def __init__(self, base: torch.Tensor, offset: int):
        self.base, self.offset, self.dtype = base, offset, base.dtype

    def data_ptr(self) -> int:
        return self.base.data_ptr() + self.offset


def _direct(compiled, grid: Tuple[int, int, int], device: int) -> Optional[Callable]:
    """A launcher of the compiled kernel that Triton's JIT entry returned, or None where its
    launch call is not known (DIRECT_VERSIONS) or the kernel was interpreted."""
    version = ".".join(triton.__version__.split(".")[:2])
    if version not in DIRECT_VERSIONS or not all(hasattr(compiled, a) for a in ("run", "function", "packed_metadata")):
        return None
    run, function, metadata = compiled.run, compiled.function, compiled.packed_metadata
    get_stream = triton.runtime.driver.active.get_current_stream
    grid_x, grid_y, grid_z = grid

    def launch(args):
        run(grid_x, grid_y, grid_z, get_stream(device), function, metadata, None, None, None, *args)

    return launch
