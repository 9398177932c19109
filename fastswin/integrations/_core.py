"""The machinery shared by the library integrations: what a patch target is,
installing / removing a fused method on one module instance, and the report.

A patch replaces one method (``forward``, or timm's ``_attn``) on the module
*instance* (its ``__dict__``), never on the class: other instances, the
parameters, buffers and state_dict keys are untouched, and removing the
instance attribute restores the class's method exactly.
"""
import types
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn as nn

from fastswin import ops
from fastswin._extension import compiled_backend_reason
from fastswin.backends import BackendError, logger, requested_backend
from fastswin.ops.attention.checks import LOW_PRECISION, plain_map_prefers_reference

# Instance attributes a patch adds all start with PREFIX (none is a parameter, buffer or submodule).
PREFIX = "_fastswin_"
STATE_ATTR = PREFIX + "patch"      # the PatchState of a patched module
BACKEND_ATTR = PREFIX + "backend"  # the backend= given to patch(), read by the fused method
REPORTED_ATTR = PREFIX + "reported"  # (name, fused) as the patch report gave them
WARNED_ATTR = PREFIX + "warned"  # the module's unpredicted fallback was logged
CHECKED_ATTR = PREFIX + "checked"  # the (device, dtype, sizes) last found to run as reported


@dataclass(frozen=True)
class Target:
    """How one kind of module is patched.

    kind: e.g. "timm SwinTransformerBlock"; attr: the method replaced;
    fused: function(self, ...) installed as that method (falls back to the
    class's method where it cannot run); problem: why this instance cannot be
    patched, or None; prepare: per-instance set-up run when patching;
    geometry: the module's (heads, head_dim, window) as it attends now, window (wh, ww)
    or, for video maps, (wt, wh, ww); cpu_training: whether auto mode trains it through
    the fused CPU kernels in fp32 (CPU_FALLBACK), as its fused method asks library_is_faster.
    """
    kind: str
    attr: str
    fused: Callable
    geometry: Callable[[nn.Module], Tuple[int, int, Tuple[int, ...]]]
    problem: Optional[str] = None
    prepare: Optional[Callable[[nn.Module], None]] = None
    cpu_training: bool = True


@dataclass(frozen=True)
class PatchState:
    attr: str
    kind: str


@dataclass
class ModuleEntry:
    name: str    # qualified name in the model ("" for the model itself)
    kind: str
    note: str = ""
    runs: str = ""        # what will run it (replaced modules)
    fused: bool = False   # whether that is a fused path (FUSED_BACKENDS)


@dataclass
class PatchReport:
    """What fastswin.patch / unpatch did.

    replaced: modules patched, each with what will run it (`runs`, `fused`; note says if
        one was patched already).
    not_replaced: Swin modules left as they were, each with the reason.
    fallbacks: conditions under which a patched module runs its original forward.
    reason: why nothing was found to patch, when nothing was.
    """
    model: str
    backend: Optional[str] = None
    replaced: List[ModuleEntry] = field(default_factory=list)
    not_replaced: List[ModuleEntry] = field(default_factory=list)
    fallbacks: List[str] = field(default_factory=list)
    reason: str = ""

    @property
    def complete(self) -> bool:
        """Every Swin attention module found was replaced (each entry's `fused` says
        whether the fused kernels will run it)."""
        return bool(self.replaced) and not self.not_replaced

    def __str__(self) -> str:
        fused = sum(entry.fused for entry in self.replaced)
        lines = [f"fastswin: {len(self.replaced)} module(s) of {self.model} patched ({fused} on the fused "
                 f"kernels here), {len(self.not_replaced)} left as they were (backend={self.backend or 'auto'})"]
        lines += [f"  replaced  {e.name or '<model>'} ({e.kind}){': ' + e.note if e.note else ''}"
                  + (f" -> {e.runs}" if e.runs else "") for e in self.replaced]
        lines += [f"  kept      {e.name or '<model>'} ({e.kind}): {e.note}" for e in self.not_replaced]
        lines += [f"  falls back to the original forward when {f}" for f in self.fallbacks]
        if self.reason:
            lines.append(f"  {self.reason}")
        return "\n".join(lines)


# fastswin must never make a model slower than its library. On CPU, patched Swin-T inference
# on the fused C++ attention (2-core AMD EPYC; timm, torchvision and Hugging Face; batch 8
# and 1, fp32 and bf16 autocast) measured 1.05-1.23x the library's forward (1.08-1.31x
# timm's on a 2-core Intel Xeon), and an fp32 training step 1.34-1.37x the library's on the
# Xeon (1.05-1.13x with denormals flushed in the library too), but a timm training step in
# bf16 autocast 0.96x there (ops.attention.checks.CPU_TRAINING_LIMIT), and torchvision's
# video Swin's fp32 step 0.86x (MONAI's SwinUNETR 1.40x): auto mode runs the library's own
# forward for CPU inputs that need gradients in bf16 / fp16 (autocast's dtype where it is
# on) or, where a target says so (Target.cpu_training), in any dtype, where the op would
# run its reference on an unshifted map without padding (ops.attention.checks.CPU_PLAIN_MAP:
# the library's forward is that computation, and measured faster than the reference), and
# where the C++ extension is not built. A forced backend runs.
CPU_FALLBACK = ("the input is on the CPU, no backend is forced and the library's own forward is faster: with "
                "gradients in bf16 / fp16 (in any dtype for torchvision's video Swin), and on unshifted maps without "
                "padding where the fused kernels measured slower (one window, or windows of more than 64 tokens)")


# The backends of shifted_window_attention that run fused kernels.
FUSED_BACKENDS = ("triton", "cpu")


def library_is_faster(module: nn.Module, x: torch.Tensor, attended: Optional[Tuple[tuple, tuple, tuple]] = None,
                      cpu_training: bool = True) -> bool:
    """Whether the patched `module` runs its original forward on `x` (CPU_FALLBACK);
    attended: the (sizes, window, shift) of the map it attends, as ops.plain_map takes
    them (read on CPU only: GPU calls skip the work); cpu_training: its target's
    (Target.cpu_training)."""
    if x.device.type != "cpu" or requested_backend(module.__dict__.get(BACKEND_ATTR)) != "auto":
        return False
    if compiled_backend_reason("cpu", x.device) is not None:
        return True
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in module.parameters()))
    if attended is not None and plain_map_prefers_reference(ops.plain_map(*attended), needs_grad):
        return True
    return needs_grad and (not cpu_training or _attention_dtype(x) in LOW_PRECISION)


def _attention_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the attention sees for an input x of a CPU model: autocast's where it is on."""
    return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype


def runs_on(module: nn.Module, target: Target, backend: Optional[str]) -> Tuple[str, bool]:
    """What will run the patched `module` on its parameters' device and dtype (under
    autocast the op sees the autocast dtype), by the op's own checks, and whether that is
    the fused path; where calls with gradients run something else (auto mode's training
    limit), the text says what."""
    param = next(module.parameters(), None)
    device, dtype = (param.device, param.dtype) if param is not None else (torch.device("cpu"), torch.float32)
    where = f"({device.type}, {str(dtype).replace('torch.', '')})"
    if device.type == "cpu" and requested_backend(backend) == "auto":  # library_is_faster
        if compiled_backend_reason("cpu", device) is not None:
            return "the library's own forward (CPU, auto mode; fastswin's C++ extension is not built)", False
        which = "in bf16 / fp16 " if target.cpu_training else ""
        return f"the fused C++ CPU kernels {where}; with gradients {which}the library's own forward (CPU, auto mode)", True
    heads, head_dim, window = target.geometry(module)
    try:
        chosen, reason = ops.shifted_window_attention_backend(heads, head_dim, window, dtype, device, backend)
    except BackendError as error:
        return f"nothing: {error}", False
    if chosen == "cpu":  # every size, with gradients too
        return f"the fused C++ CPU kernels {where}", True
    if chosen != "triton":
        return f"the {chosen} backend, not fused: {reason}", False
    runs = f"the fused Triton kernels {where}"
    trains, why = ops.shifted_window_attention_backend(heads, head_dim, window, dtype, device, backend, training=True)
    return runs + ("" if trains == "triton" else f"; with gradients the {trains} backend, not fused: {why}"), True


def warn_if_unpredicted(module: nn.Module, qkv: torch.Tensor, num_heads: int, window) -> None:
    """Log one warning per module when the report said it runs the fused kernels but this
    call will not (a device, dtype or window size the report did not see)."""
    name, fused = module.__dict__.get(REPORTED_ATTR, ("", False))
    if not fused or WARNED_ATTR in module.__dict__ or torch.compiler.is_compiling():
        return
    # Checked once per device, dtype and map shape, not on every forward (calls with
    # gradients past auto's training limit run as the report said).
    key = (qkv.device, qkv.dtype, qkv.shape, window)
    if module.__dict__.get(CHECKED_ATTR) == key:
        return
    module.__dict__[CHECKED_ATTR] = key
    head_dim = qkv.shape[-1] // (3 * num_heads)
    try:
        chosen, reason = ops.shifted_window_attention_backend(num_heads, head_dim, window, qkv.dtype, qkv.device,
                                                              module.__dict__.get(BACKEND_ATTR))
    except BackendError as error:  # the op raises it in a moment
        chosen, reason = "nothing", str(error)
    if chosen not in FUSED_BACKENDS:
        module.__dict__[WARNED_ATTR] = True
        logger.warning("fastswin: %s was reported on the fused kernels but runs %s: %s (%s, %s, window %s)",
                       name or "<model>", chosen, reason, qkv.device, qkv.dtype, tuple(window))


def instance_override_problem(module: nn.Module, attr: str) -> Optional[str]:
    """Why `attr` cannot be replaced: something other than fastswin already overrides it on the instance."""
    if attr in module.__dict__ and not hasattr(module, STATE_ATTR):
        return f"its {attr} is already overridden on the instance (by another patch); fastswin leaves it"
    return None


def class_override_problem(module: nn.Module, attr: str, library_cls: type) -> Optional[str]:
    """Why a subclass cannot be patched: it redefines a method whose semantics fastswin reproduces."""
    if getattr(type(module), attr) is not getattr(library_cls, attr):
        return f"{type(module).__qualname__} overrides {library_cls.__qualname__}.{attr}; its semantics are unknown"
    return None


def install(module: nn.Module, target: Target, backend: Optional[str], entry: ModuleEntry) -> bool:
    """Patch one module; returns False when it was patched already (its backend and
    reported path are updated)."""
    already = hasattr(module, STATE_ATTR)
    module.__dict__[BACKEND_ATTR] = backend
    module.__dict__[REPORTED_ATTR] = (entry.name, entry.fused)
    module.__dict__.pop(WARNED_ATTR, None)
    module.__dict__.pop(CHECKED_ATTR, None)
    if not already:
        if target.prepare is not None:
            target.prepare(module)
        module.__dict__[target.attr] = types.MethodType(target.fused, module)
        module.__dict__[STATE_ATTR] = PatchState(target.attr, target.kind)
    return not already


def remove(module: nn.Module) -> Optional[PatchState]:
    """Undo install(); returns the state removed, None when the module was not patched."""
    state = module.__dict__.get(STATE_ATTR)
    if state is not None:
        del module.__dict__[state.attr]
        for key in [k for k in module.__dict__ if k.startswith(PREFIX)]:
            del module.__dict__[key]
    return state


def original(module: nn.Module, attr: str) -> Callable:
    """The class's (unpatched) method bound to `module`."""
    return getattr(type(module), attr).__get__(module)


def dedupe(items) -> List:
    return list(dict.fromkeys(items))
