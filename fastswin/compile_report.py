"""`fastswin compile-report`: per-kernel resources without a GPU.

Compiles every Triton kernel at the Swin attention shapes for the asked
architectures (fastswin.aot) and reads the CUDA extension's kernels from the
built fastswin._C with cuobjdump: registers, shared memory, local memory and
stack (spills), and whether tensor-core instructions are present.
"""
import itertools
import math
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

import torch

# (N, head_dim): Swin's 7x7 and SwinV2's 8x8, 12x12 and 16x16 windows, head_dim 32 ...
SWIN_ATTENTION_SHAPES = ((49, 32), (64, 32), (144, 32), (256, 32))
# ... and the other windows and head sizes Swin models run, in bf16 only (fp16 compiles
# alike): SwinV2-384's 24x24 windows and 32x32, video Swin's 8x7x7 and SwinUNETR's 7x7x7
# (head_dim 8; 3D windows in the image layouts), Swin2SR's head_dim 30 and heads of 64 channels.
WIDER_ATTENTION_SHAPES = ((576, 32), (1024, 32), (392, 32), (343, 8), (64, 30), (49, 64))
TRITON_DTYPES = (torch.float16, torch.bfloat16)


@dataclass
class ResourceRow:
    source: str                  # "triton" or "cuda-ext"
    kernel: str
    config: str                  # shape / dtype / launch, or the template arguments
    arch: int
    registers: int
    shared: int
    local: int
    stack: int
    tensor_cores: Optional[bool]  # None where the kernel has no matrix math
    known_spill: int = 0          # stack bytes tolerated (KNOWN_SPILLS)

    @property
    def spills(self) -> bool:
        return self.local > 0 or self.stack > 0

    @property
    def new_spill(self) -> bool:
        """A spill beyond the known bound: what fails the report."""
        return self.local > 0 or self.stack > self.known_spill


def parse_archs(text: str) -> Tuple[int, ...]:
    """"sm_80,sm_90" or "80,90" -> (80, 90)."""
    archs = tuple(int(a.strip().removeprefix("sm_")) for a in text.split(",") if a.strip())
    if not archs or any(a < 70 for a in archs):
        raise ValueError(f"fastswin: --arch takes e.g. sm_80,sm_90, got {text!r}")
    return archs


# The kernels' layouts, as kernel_specs takes them: windows (window_attention), and maps
# (shifted_window_attention) without and with padding (qkv-bias fill and its gradient).
LAYOUTS = {"window": dict(image=False), "image": dict(image=True), "padded": dict(image=True, padded=True)}

# Spills not yet removed, held to a bound so that they cannot grow unnoticed:
# {(layout, arch, N): stack bytes}, for every kernel of that layout, arch and N (every
# kernel, v1 and v2, both dtypes). None today, on Triton 3.6 or 3.8.
KNOWN_SPILLS = {}


def report_cases(quick: bool = False) -> List[Tuple[Tuple[int, int], torch.dtype]]:
    """((N, head_dim), dtype) pairs the report compiles: SWIN_ATTENTION_SHAPES in
    TRITON_DTYPES, WIDER_ATTENTION_SHAPES in bf16; quick: Swin's 7x7 windows only."""
    if quick:
        return [(SWIN_ATTENTION_SHAPES[0], dtype) for dtype in TRITON_DTYPES]
    return ([(shape, dtype) for shape in SWIN_ATTENTION_SHAPES for dtype in TRITON_DTYPES]
            + [(shape, torch.bfloat16) for shape in WIDER_ATTENTION_SHAPES])


# The image layouts' windows of N tokens that are not square: video Swin's and SwinUNETR's 3D ones.
VIDEO_WINDOWS = {392: (8, 7, 7), 343: (7, 7, 7)}


def image_window(n: int) -> Optional[Tuple[int, ...]]:
    """The window of n tokens the report compiles the image layouts for: a square one,
    a video one (VIDEO_WINDOWS), or None (window layout only)."""
    root = math.isqrt(n)
    return (root, root) if root * root == n else VIDEO_WINDOWS.get(n)


def triton_rows(archs: Iterable[int], cases: Sequence[Tuple[Tuple[int, int], torch.dtype]]) -> List[ResourceRow]:
    """The attention kernels, v1 and v2 (cosine), in each of LAYOUTS, as launched for each
    ((N, head_dim), dtype) of cases (report_cases)."""
    from fastswin.aot import CompileJob, compile_kernels
    from fastswin.ops.attention.aot_specs import kernel_specs

    jobs, labels = [], []
    for arch, ((n, head_dim), dtype), cosine, layout in itertools.product(archs, cases, (False, True), LAYOUTS):
        window = image_window(n)
        if LAYOUTS[layout]["image"] and window is None:
            continue
        for spec in kernel_specs(n, head_dim, dtype, cosine=cosine, arch=arch, window=window, **LAYOUTS[layout]):
            jobs.append(CompileJob(spec.fn, spec.signature, spec.constexprs, arch, aligned=spec.aligned, **spec.launch))
            labels.append((spec.fn.__name__.strip("_"), f"{layout} {'v2' if cosine else 'v1'} N={n}"
                           f"{_video_tag(window)} d={head_dim} {str(dtype).removeprefix('torch.')}",
                           KNOWN_SPILLS.get((layout, arch, n), 0)))
    return [ResourceRow("triton", name, f"{config} w{r.num_warps} s{r.num_stages}", r.arch, r.registers, r.shared,
                        r.local, r.stack, r.tensor_cores, known_spill=known)
            for (name, config, known), r in zip(labels, compile_kernels(jobs))]


def _video_tag(window: Optional[Tuple[int, ...]]) -> str:
    return "(3D)" if window is not None and len(window) == 3 else ""


def _short_name(mangled: str) -> Tuple[str, str]:
    """(kernel, template arguments) of a mangled CUDA kernel name, via c++filt when present."""
    if not shutil.which("c++filt"):
        return mangled, ""
    name = subprocess.run(["c++filt", mangled], capture_output=True, text=True, check=True).stdout.strip()
    name = re.sub(r"\b[\w:]*\(anonymous namespace\)::|\bfastswin::", "", name)
    match = re.match(r"(?:void )?(\w+)<(.*)>\(", name)
    return (match.group(1), match.group(2)) if match else (name, "")


def extension_rows(archs: Iterable[int]) -> List[ResourceRow]:
    """Kernels of the built fastswin._C for the given archs (none if built without CUDA)."""
    from fastswin._extension import HAS_CUDA_KERNELS
    from fastswin.aot import cuda_tool

    if not HAS_CUDA_KERNELS:
        return []
    import fastswin._C

    tool = cuda_tool("cuobjdump")
    if tool is None:
        raise FileNotFoundError("cuobjdump not found (neither in the Triton wheel nor on PATH)")
    text = subprocess.run([tool, "--dump-resource-usage", fastswin._C.__file__], capture_output=True, text=True,
                          check=True).stdout
    rows, arch = [], None
    wanted = set(archs)
    for line in text.splitlines():
        if m := re.match(r"\s*arch = sm_(\d+)", line):
            arch = int(m.group(1))
        elif m := re.match(r"\s*Function (\S+):", line):
            kernel, config = _short_name(m.group(1))
        elif (m := re.match(r"\s*REG:\d+", line)) and arch in wanted:
            usage = {k: int(v) for k, v in re.findall(r"(\w+):(\d+)", line)}
            rows.append(ResourceRow("cuda-ext", kernel, config, arch, usage["REG"], usage["SHARED"],
                                    usage["LOCAL"], usage.get("STACK", 0), None))
    return rows


def format_rows(rows: Sequence[ResourceRow]) -> str:
    header = f"{'source':8} {'kernel':30} {'config':42} {'arch':>5} {'regs':>5} {'shared':>7} {'local':>6} " \
             f"{'stack':>6} {'TC':>4}"
    lines = [header, "-" * len(header)]
    for r in rows:
        tc = "-" if r.tensor_cores is None else ("yes" if r.tensor_cores else "NO")
        lines.append(f"{r.source:8} {r.kernel[:30]:30} {r.config[:42]:42} {'sm_' + str(r.arch):>5} {r.registers:5d} "
                     f"{r.shared:7d} {r.local:6d} {r.stack:6d} {tc:>4}"
                     + ("  SPILLS" if r.new_spill else "  known spill" if r.spills else ""))
    return "\n".join(lines)
