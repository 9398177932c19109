"""`fastswin bench --host`: host time, the Python, dispatch and launch work a call costs
before the GPU gets it, measured without a GPU.

Triton's real launch path runs on a stand-in driver (stand_in_driver: its binder, its
cache, its C launcher, a driver whose calls return at once), so fastswin's fused calls
cost their host time alone. Rows:

- each fused op at each Swin-T stage (batch 1, fp16): the image layout
  (shifted_window_attention, the op a patched model runs) and the window layout
  (window_attention), a forward and a forward + backward;
- a timm Swin-T inference and training step, patched against timm's own, with compute
  made small: Swin-T's depths, heads and windows at 12 channels a stage-1 token (head_dim
  4), batch 1, one CPU thread, at 224 px (Swin-T's maps) and 112 px (a quarter of the
  tokens), so that each aten op costs little more than its dispatch, as a GPU's host pays
  it, and the fused kernels nothing. What compute is left (timm's roll, pad and partition
  copies; the bias gathers both pay) weighs more at 224 px: its ratios flatter fastswin,
  112 px's less so (before the host path was rebuilt, 112 px measured patched steps at
  0.98x / 1.05x timm's, as the 2026-12-04 GPU run found them).

Each time is the best of several runs of the mean over many calls (host time moves
+-20% with load; compare rows of one run). GPU machines' hosts run this Python more
slowly (~2.5x in the 2026-12-04 H200 run): the ratios carry over, the microseconds do not.
"""
import time
from typing import Callable, List, NamedTuple, Optional, Tuple

import torch

from fastswin import ops, stand_in_driver
from fastswin.optional import require

# Swin-T's stages: (stage, map size, channels, heads); windows of 7, shift 3 where the map
# has more than one window (timm's rule).
SWIN_T_STAGES = [(1, 56, 96, 3), (2, 28, 192, 6), (3, 14, 384, 12), (4, 7, 768, 24)]
WINDOW = 7
MODEL = "swin_tiny_patch4_window7_224"
MODEL_WIDTH = 12  # channels a stage-1 token in the model step (Swin-T's 96 / 8)
MODEL_SIZES = (224, 112)  # px


class HostRow(NamedTuple):
    case: str
    mode: str                  # fwd, fwd+bwd, infer, train
    fastswin_us: float
    library_us: Optional[float] = None  # the library's own (model rows)

    @property
    def ratio(self) -> Optional[float]:
        return None if self.library_us is None else self.fastswin_us / self.library_us


def best_mean_us(fn: Callable[[], None], calls: int, runs: int = 7) -> float:
    """The best of `runs` means over `calls` calls, in microseconds (after one warm-up run)."""
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls * 1e6)
    return min(times)


def _leaves(*tensors):
    return [t.requires_grad_() for t in tensors]


def _forward_backward(call: Callable[[], torch.Tensor], leaves: List[torch.Tensor]) -> Callable[[], None]:
    """One training step's share of a call: its forward and backward, gradients reset as an
    optimizer's zero_grad(set_to_none=True) does."""
    grad = torch.randn_like(call())

    def step():
        for leaf in leaves:
            leaf.grad = None
        call().backward(grad)

    return step


def op_rows(calls: int = 300) -> List[HostRow]:
    """Each fused op at each Swin-T stage, forward and forward + backward."""
    return [HostRow(case, mode, best_mean_us(fn, calls)) for case, mode, fn in op_calls()]


def op_calls() -> List[Tuple[str, str, Callable[[], None]]]:
    """(case, mode, what is timed) of each fused op at each Swin-T stage: a forward
    without gradients and a forward + backward (stand_in_driver installed)."""
    calls = []
    for stage, size, channels, heads in SWIN_T_STAGES:
        shift = WINDOW // 2 if size > WINDOW else 0
        qkv, bias, fill = _leaves(torch.randn(1, size, size, 3 * channels, dtype=torch.float16),
                                  torch.randn(heads, WINDOW ** 2, WINDOW ** 2), torch.randn(3 * channels))

        def image(qkv=qkv, bias=bias, fill=fill, heads=heads, shift=shift):
            return ops.shifted_window_attention(qkv, heads, WINDOW, shift, bias, qkv_bias=fill, order="timm",
                                                backend="triton")

        windows = (size // WINDOW) ** 2
        # Leaves in the layout of the gradients the kernels write, so that autograd copies
        # nothing into theirs: what is timed is the op's own host time.
        q, k, v = _leaves(*(torch.randn(windows, WINDOW ** 2, heads, channels // heads,
                                        dtype=torch.float16).transpose(1, 2) for _ in range(3)))
        mask = torch.zeros(windows, WINDOW ** 2, WINDOW ** 2) if shift else None

        def window(q=q, k=k, v=v, bias=bias, mask=mask):
            return ops.window_attention(q, k, v, bias, mask, backend="triton")

        for name, call, leaves in (("shifted_window_attention", image, [qkv, bias, fill]),
                                   ("window_attention", window, [q, k, v, bias])):
            case = f"{name} swin_t.s{stage}"
            calls += [(case, "fwd", _without_gradients(call)), (case, "fwd+bwd", _forward_backward(call, leaves))]
    return calls


def _without_gradients(call: Callable[[], torch.Tensor]) -> Callable[[], None]:
    def forward():
        with torch.no_grad():
            call()

    return forward


def model_rows(calls: int = 20) -> List[HostRow]:
    """A timm Swin-T inference and training step, patched and timm's own (see the module
    docstring for the compute made negligible)."""
    import fastswin

    timm = require("timm", "the model rows of fastswin bench --host")
    rows = []
    for size in MODEL_SIZES:
        torch.manual_seed(0)
        library = timm.create_model(MODEL, embed_dim=MODEL_WIDTH, img_size=size)
        patched = timm.create_model(MODEL, embed_dim=MODEL_WIDTH, img_size=size)
        fastswin.patch(patched, backend="triton")
        x = torch.randn(1, 3, size, size)
        for mode in ("infer", "train"):
            times = [best_mean_us(_model_step(model, x, mode), calls) for model in (patched, library)]
            rows.append(HostRow(f"timm swin_t, {size} px", mode, *times))
    return rows


def _model_step(model: torch.nn.Module, x: torch.Tensor, mode: str) -> Callable[[], None]:
    def infer():
        with torch.no_grad():
            model(x)

    def train():
        model.zero_grad(set_to_none=True)
        model(x).float().sum().backward()

    return infer if mode == "infer" else train


def run(models: bool = True) -> List[HostRow]:
    """Every row, on the stand-in driver; RuntimeError where it cannot be installed."""
    if not stand_in_driver.install():
        raise RuntimeError("fastswin bench --host: the stand-in driver cannot be installed here (Triton missing, "
                           "TRITON_INTERPRET=1, or no C compiler)")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return op_rows() + (model_rows() if models else [])
    finally:
        torch.set_num_threads(threads)


def format_rows(rows: List[HostRow]) -> str:
    header = f"{'case':40} {'mode':8} {'fastswin us':>12} {'library us':>11} {'ratio':>6}"
    lines = [header, "-" * len(header)]
    for r in rows:
        library = "-" if r.library_us is None else f"{r.library_us:11.0f}"
        ratio = "-" if r.ratio is None else f"{r.ratio:5.2f}x"
        lines.append(f"{r.case:40} {r.mode:8} {r.fastswin_us:12.1f} {library:>11} {ratio:>6}")
    return "\n".join(lines)
