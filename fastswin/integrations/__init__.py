"""In-place patching of timm, torchvision, Hugging Face and MONAI Swin models onto
fastswin's fused shifted-window attention.

    report = fastswin.patch(model)      # every Swin block of the model, in place
    print(report)                       # what was replaced, what was not and why
    fastswin.unpatch(model)             # back to the library's own forward

Outputs and gradients match the library's forward up to rounding in eval and
in training. Attention dropout is not fused: a patched module runs the
library's forward when it is active. Element-wise dropouts after the output
projection (timm's proj_drop, torchvision's dropout, HF's hidden dropout) run
on the cropped map rather than on padded windows: the same distribution, other
random draws than the library's. On CPU inputs in auto mode a patched module
runs fastswin's fused C++ CPU attention for inference and fp32 training (both
measured faster than the libraries') and the library's forward for training in
bf16 / fp16 (autocast included: a timm step measured slower) and for torchvision's
video Swin's training (measured slower; `_core.CPU_FALLBACK`);
a forced backend (`backend=` or $FASTSWIN_BACKEND) runs fastswin's path either way.

Each library lives in its own module (timm.py, torchvision.py,
transformers.py) and is consulted only when that library is already imported
(a model of that library exists only then): nothing here imports timm,
torchvision or transformers by itself.
"""
import importlib
import sys
from typing import Iterator, Optional, Tuple

import torch.nn as nn

from fastswin.backends import BackendError, requested_backend
from fastswin.integrations._core import (CPU_FALLBACK, ModuleEntry, PatchReport, STATE_ATTR, dedupe, install,
                                         instance_override_problem, remove, runs_on)

# library (top-level package) -> fastswin integration module
INTEGRATIONS = {"timm": "fastswin.integrations.timm",
                "torchvision": "fastswin.integrations.torchvision",
                "transformers": "fastswin.integrations.transformers",
                "monai": "fastswin.integrations.monai"}

RECOGNIZED = ("timm SwinTransformerBlock / SwinTransformerV2Block, torchvision ShiftedWindowAttention(V2), "
              "transformers SwinLayer / Swinv2Layer and their copies, MONAI SwinUNETR's SwinTransformerBlock (2D)")

__all__ = ["patch", "unpatch", "PatchReport", "ModuleEntry"]


def _loaded_integrations() -> Iterator:
    for library, module_name in INTEGRATIONS.items():
        if library in sys.modules:
            yield importlib.import_module(module_name)


def _targets(model: nn.Module) -> Iterator[Tuple[str, nn.Module, object, object]]:
    """(name, module, Target, integration) for every module some integration recognizes."""
    integrations = list(_loaded_integrations())
    for name, module in model.named_modules():
        for integration in integrations:
            target = integration.match(module)
            if target is not None:
                yield name, module, target, integration
                break


def patch(model: nn.Module, *, backend: Optional[str] = None, strict: bool = False) -> PatchReport:
    """Run every Swin window attention of `model` through fastswin's fused path, in place.

    Recognized: timm SwinTransformer / SwinTransformerV2 blocks, torchvision
    ShiftedWindowAttention(V2), Hugging Face SwinLayer / Swinv2Layer and the layers
    copied from them (Donut, MaskFormer, CLAP audio, Swin2SR), MONAI SwinUNETR's 2D
    blocks. Parameters,
    buffers and state_dict keys are untouched; outputs and gradients match the
    library's own forward (up to floating-point rounding). Idempotent: patching
    again only updates the backend.

    Args:
        model: any nn.Module containing such modules (or one of them).
        backend: fastswin backend of the fused op ("auto", "cuda", "cpu", "reference";
            None: $FASTSWIN_BACKEND, else auto), checked here and chosen at each call.
        strict: raise BackendError, changing nothing, unless every Swin module found
            will run fused kernels (Triton, or C++ on CPU) on its parameters' device and dtype.

    Returns:
        PatchReport: the modules replaced, each with what will run it on its
        parameters' device and dtype (the op's own checks), those left (with why), and
        the run-time conditions under which a patched module falls back to its
        original forward.
    """
    if backend is not None:
        requested_backend(backend)  # an unknown name fails now, not at the first forward
    report = PatchReport(model=type(model).__name__, backend=backend)
    planned, fallbacks = [], []
    for name, module, target, integration in _targets(model):
        problem = target.problem or instance_override_problem(module, target.attr)
        if problem:
            report.not_replaced.append(ModuleEntry(name, target.kind, problem))
            continue
        runs, fused = runs_on(module, target, backend)
        planned.append((ModuleEntry(name, target.kind, runs=runs, fused=fused), module, target))
        fallbacks += integration.FALLBACKS
    unfused = [f"  {e.name} ({e.kind}): {e.note}" for e in report.not_replaced]
    unfused += [f"  {e.name} ({e.kind}) would run {e.runs}" for e, _, _ in planned if not e.fused]
    if strict and unfused:
        raise BackendError("fastswin.patch(strict=True): these Swin modules would not run the fused kernels, "
                           "so nothing was patched:\n" + "\n".join(unfused))
    for entry, module, target in planned:
        if not install(module, target, backend, entry):
            entry.note = "already patched; backend updated"
        report.replaced.append(entry)
    report.fallbacks = dedupe(fallbacks + [CPU_FALLBACK] * bool(report.replaced))
    _explain_nothing_found(model, report)
    return report


def _explain_nothing_found(model: nn.Module, report: PatchReport) -> None:
    if report.replaced or report.not_replaced:
        return
    from fastswin.nn.blocks import _SwinBlockBase  # fastswin's own blocks are fused already
    if any(isinstance(m, _SwinBlockBase) for m in model.modules()):
        report.reason = "fastswin.nn blocks run the fused path already (set their .backend to choose a backend)"
        return
    libraries = [library for library in INTEGRATIONS if library in sys.modules]
    report.reason = (f"no module fastswin can patch in {type(model).__name__}: it recognizes {RECOGNIZED} "
                     f"(libraries imported: {', '.join(libraries) or 'none'}); nothing was changed")


def unpatch(model: nn.Module) -> PatchReport:
    """Undo patch(): every patched module of `model` runs its library's forward again.

    Returns a PatchReport whose `replaced` lists the modules restored.
    """
    report = PatchReport(model=type(model).__name__)
    for name, module in model.named_modules():
        if hasattr(module, STATE_ATTR):
            state = remove(module)
            report.replaced.append(ModuleEntry(name, state.kind, "restored"))
    if not report.replaced:
        report.reason = "no module of this model was patched by fastswin"
    return report
