"""`fastswin profile`: a torch.profiler run of a (patched) Swin model.

Prints the top kernels by device time (self CPU time on a CPU run) and the
share of fastswin's attention and partition kernels against GEMMs and the
rest; writes a Chrome/Perfetto trace.
"""
import contextlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch

from fastswin.optional import require

# Event-name patterns, tried in order: the first that matches names the category.
CATEGORIES = (
    ("fastswin attention", r"window_attention|shifted_window_attention"),
    ("fastswin partition", r"gather_rows_kernel|window_partition|window_reverse"),
    ("gemm", r"gemm|matmul|\baten::(addmm|mm|bmm|linear)\b|cutlass|xmma|cublas|sm\d+_"),
)


@dataclass
class KernelTime:
    name: str
    calls: int
    time_us: float
    category: str


def categorize(name: str) -> str:
    for category, pattern in CATEGORIES:
        if re.search(pattern, name, re.I):
            return category
    return "other"


def build_model(name: str, img_size: Optional[int], patch: bool, backend: Optional[str]) -> torch.nn.Module:
    timm = require("timm", "fastswin profile")
    kwargs = {"img_size": img_size} if img_size else {}
    model = timm.create_model(name, pretrained=False, **kwargs)
    if patch:
        import fastswin

        fastswin.patch(model, backend=backend)
    return model


def _step(model, images, train: bool, optimizer) -> None:
    if train:
        optimizer.zero_grad(set_to_none=True)
        model(images).float().logsumexp(-1).mean().backward()
        optimizer.step()
    else:
        with torch.no_grad():
            model(images)


def kernel_times(prof, device: torch.device) -> List[KernelTime]:
    """Self time per event name: device kernels on CUDA, operators on CPU."""
    rows = []
    for event in prof.key_averages():
        time_us = event.self_device_time_total if device.type == "cuda" else event.self_cpu_time_total
        if time_us > 0 and (device.type == "cpu" or event.device_type == torch.autograd.DeviceType.CUDA):
            rows.append(KernelTime(event.key, event.count, time_us, categorize(event.key)))
    return sorted(rows, key=lambda r: -r.time_us)


def category_shares(rows: List[KernelTime]) -> Dict[str, float]:
    total = sum(r.time_us for r in rows) or 1.0
    shares = {name: 0.0 for name, _ in CATEGORIES} | {"other": 0.0}
    for r in rows:
        shares[r.category] += r.time_us / total
    return shares


def run_profile(model_name: str, batch: int, steps: int, mode: str, out: Path, nvtx: bool = False,
                img_size: Optional[int] = None, patch: bool = True, backend: Optional[str] = None):
    """Profile `steps` steps after one warm-up step; returns (rows, shares, trace path)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(model_name, img_size, patch, backend).to(device).train(mode == "train")
    size = img_size or model.default_cfg["input_size"][-1]
    images = torch.randn(batch, 3, size, size, device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4) if mode == "train" else None
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with autocast:
        _step(model, images, mode == "train", optimizer)  # warm-up: compilation and allocator
        ranges = torch.autograd.profiler.emit_nvtx(record_shapes=True) if nvtx else contextlib.nullcontext()
        with torch.profiler.profile(activities=activities) as prof, ranges:
            for _ in range(steps):
                _step(model, images, mode == "train", optimizer)
            if device.type == "cuda":
                torch.cuda.synchronize()
    out.mkdir(parents=True, exist_ok=True)
    trace = out / "trace.json"
    prof.export_chrome_trace(str(trace))
    rows = kernel_times(prof, device)
    return rows, category_shares(rows), trace


def format_report(rows: List[KernelTime], shares: Dict[str, float], top: int = 15) -> str:
    lines = [f"{'kernel':70} {'calls':>6} {'time ms':>9} {'share':>6}  category"]
    total = sum(r.time_us for r in rows) or 1.0
    for r in rows[:top]:
        lines.append(f"{r.name[:70]:70} {r.calls:6d} {r.time_us / 1e3:9.3f} {r.time_us / total:6.1%}  {r.category}")
    lines.append("")
    lines += [f"{name:20} {share:6.1%}" for name, share in shares.items()]
    return "\n".join(lines)
