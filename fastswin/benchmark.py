"""Benchmark harness: timing, device copy bandwidth, and the cases.

Used by `fastswin bench` and by the pytest-benchmark suites in benchmarks/.
Every figure is a median over repeats, measured against baselines in the same
run; on CUDA, timing uses events after a warm-up, so it synchronizes.
"""
import contextlib
import functools
import math
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from fastswin import ops, reference
from fastswin._extension import HAS_C
from fastswin.bench_baselines import attention_baselines, image_baselines
from fastswin.optional import require

WINDOW = 7
SHIFT = 3
HEAD_DIM = 32
# (model, stage, H, W, C) at 224x224 input, window 7.
SWIN_STAGES = [
    (model, stage, 56 >> stage, 56 >> stage, base << stage)
    for model, base in (("swin_t", 96), ("swin_b", 128))
    for stage in range(4)
]
# (model, stage, map size, heads, window): Swin-T/B at 224 (window 7), SwinV2-T at 256 (window 8),
# and SwinV2-T at 256 with window 16 (N = 256) in stages 1-3: stage 4's 8x8 map clamps its
# window to 8, the window-8 model's stage 4.
ATTENTION_STAGES = [
    (model, stage + 1, size >> stage, heads << stage, window)
    for model, size, heads, window, stages in (("swin_t", 56, 3, 7, 4), ("swin_b", 56, 4, 7, 4),
                                               ("swinv2_t", 64, 3, 8, 4), ("swinv2_t_w16", 64, 3, 16, 3))
    for stage in range(stages)
]
# SwinV2-B at 384 px, stage 1: 24 x 24 windows (N = 576) on a 96 x 96 map. GPU plans only
# (on a CPU its eager baseline takes seconds a call); the op benchmarks time the kernels
# there with gradients too, which auto mode leaves to eager until this measures them.
LARGE_WINDOW_STAGES = [("swinv2_b_384", 1, 96, 4, 24)]
MODELS_GPU = ("swin_tiny_patch4_window7_224", "swin_small_patch4_window7_224", "swin_base_patch4_window7_224",
              "swinv2_tiny_window8_256")
# A Swin-T shaped toy that runs in a blink on a CPU.
TINY_MODEL = ("swin_tiny_patch4_window7_224",
              dict(embed_dim=32, depths=(2, 2), num_heads=(2, 4), img_size=64, window_size=4))


@dataclass
class Timing:
    median_ms: float
    p20_ms: float
    p80_ms: float


@dataclass
class Row:
    op: str
    case: str
    mode: str                   # "fwd" / "fwd+bwd" for ops, "infer" / "train" for models
    dtype: str
    baseline: str
    baseline_ms: float
    fastswin_ms: float
    speedup: float              # baseline time / fastswin time
    gbps: Optional[float] = None        # bytes the op must move / fastswin time
    roofline: Optional[float] = None    # gbps / device copy bandwidth measured in the same run
    tflops: Optional[float] = None      # fastswin's arithmetic rate
    images_per_s: Optional[float] = None

    def as_dict(self):
        return asdict(self)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], object], device: torch.device, repeats: int = 20, warmup: int = 3) -> Timing:
    """Median, p20 and p80 of `repeats` timed calls of fn, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    _synchronize(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(times, n=10) if len(times) > 1 else times * 9
    return Timing(statistics.median(times), q[1], q[7])


def copy_bandwidth(device: torch.device, megabytes: int = 256) -> float:
    """Device-to-device copy bandwidth in GB/s, bytes read plus bytes written."""
    n = megabytes * 2**20 // 4
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    timing = measure(lambda: dst.copy_(src), device, repeats=10)
    return 2 * src.nbytes / timing.median_ms / 1e6


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _fwd_bwd(fn: Callable[..., torch.Tensor], leaves: Sequence[torch.Tensor], grad: torch.Tensor):
    def run():
        torch.autograd.grad(fn(*leaves), leaves, grad)
    return run


def _compare(op, case, mode, dtype, fastswin_fn, baselines: Dict[str, Callable], device, repeats,
             nbytes=None, flops=None, bandwidth=None) -> List[Row]:
    """Time fastswin_fn and each baseline in turn; one row per baseline."""
    fast = measure(fastswin_fn, device, repeats).median_ms
    rows = []
    for name, fn in baselines.items():
        base = measure(fn, device, repeats).median_ms
        gbps = nbytes / fast / 1e6 if nbytes else None
        rows.append(Row(op, case, mode, dtype_name(dtype), name, base, fast, base / fast, gbps,
                        gbps / bandwidth if gbps and bandwidth else None, flops / fast / 1e9 if flops else None))
    return rows


# ----------------------------------------------------------------------------- window partition / reverse


def window_process_rows(device: torch.device, dtype: torch.dtype, batch: int, bandwidth: Optional[float],
                        stages=SWIN_STAGES, repeats: int = 20) -> List[Row]:
    """Partition and reverse, forward and forward+backward, fastswin vs eager
    (pad + roll + permute copy), at the Swin stage shapes."""
    rows = []
    for model, stage, H, W, C in stages:
        shift = 0 if H <= WINDOW else SHIFT  # a map of one window is not shifted
        x = torch.randn(batch, H, W, C, device=device, dtype=dtype)
        windows = reference.window_partition(x, (WINDOW, WINDOW), (shift, shift))
        moved = x.nbytes + windows.nbytes
        case = f"{model}.s{stage + 1} {batch}x{H}x{W}x{C}"
        impls = {
            "window_partition": (
                lambda t: reference.window_partition(t, (WINDOW, WINDOW), (shift, shift)),
                lambda t: ops.window_partition(t, WINDOW, shift), x, windows),
            "window_reverse": (
                lambda t: reference.window_reverse(t, (WINDOW, WINDOW), H, W, (shift, shift)),
                lambda t: ops.window_reverse(t, WINDOW, H, W, shift), windows, x),
        }
        for op, (eager, fast, inp, out) in impls.items():
            rows += _compare(op, case, "fwd", dtype, lambda f=fast: f(inp), {"eager": lambda f=eager: f(inp)},
                             device, repeats, moved, bandwidth=bandwidth)
            leaf, grad = inp.detach().clone().requires_grad_(), torch.randn_like(out)
            rows += _compare(op, case, "fwd+bwd", dtype, _fwd_bwd(fast, [leaf], grad),
                             {"eager": _fwd_bwd(eager, [leaf], grad)}, device, repeats, 2 * moved,
                             bandwidth=bandwidth)
    return rows


# ----------------------------------------------------------------------------- window attention


def attention_inputs(size: int, heads: int, window: int, batch: int, device, dtype):
    """q, k, v as views of a packed (B_, N, 3, heads, d) qkv as a Swin block makes them,
    the relative-position bias, and the shift mask (None where the map is one window).
    Returns (qkv, q, k, v, bias, mask)."""
    n = window * window
    windows = batch * (size // window) ** 2
    qkv = torch.randn(windows, n, 3, heads, HEAD_DIM, device=device, dtype=dtype)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    bias = torch.randn(heads, n, n, device=device, dtype=dtype)
    mask = None
    if size > window:
        shift = window // 2
        mask = reference.shift_attention_mask(size, size, (window, window), (shift, shift), device, dtype)
    return qkv, q, k, v, bias, mask


def attention_bytes(q: torch.Tensor, mode: str) -> int:
    """The floor's bytes: forward reads q, k, v and writes out (+ fp32 lse); backward reads
    q, k, v, out, dout, lse and writes dq, dk, dv. bias and mask are small and cached."""
    tile, lse = q.numel() * q.element_size(), q.numel() // q.shape[-1] * 4
    forward = 4 * tile + lse
    return forward if mode == "fwd" else forward + 8 * tile + lse


def attention_flops(q: torch.Tensor, mode: str) -> int:
    """Matmul FLOPs: forward QK^T and PV; backward five such products (2.5x the forward)."""
    B_, heads, n, d = q.shape
    forward = 4 * B_ * heads * n * n * d
    return forward if mode == "fwd" else forward * 7 // 2


def window_attention_rows(device: torch.device, dtype: torch.dtype, batch: int, bandwidth: Optional[float],
                          stages=ATTENTION_STAGES, repeats: int = 20, with_compile: bool = False) -> List[Row]:
    """Window attention (bias + shift mask), forward and forward+backward, fastswin vs the
    baselines of bench_baselines: the eager reference, SDPA, FlexAttention (where it runs)
    and (optionally) torch.compile of the reference."""
    rows = []
    baselines = attention_baselines(device, dtype, with_compile)
    for model, stage, size, heads, window in stages:
        qkv, q, k, v, bias, mask = attention_inputs(size, heads, window, batch, device, dtype)
        case = f"{model}.s{stage} {q.shape[0]}x{heads}x{window * window}x{HEAD_DIM}"
        args = (q, k, v, bias, mask)
        fast = functools.partial(ops.window_attention, backend=kernel_backend(device))
        rows += _compare("window_attention", case, "fwd", dtype, lambda: fast(*args),
                         {name: (lambda f=fn: f(*args)) for name, fn in baselines.items()}, device, repeats,
                         attention_bytes(q, "fwd"), attention_flops(q, "fwd"), bandwidth)
        leaves = [qkv.detach().clone().requires_grad_(), bias.detach().clone().requires_grad_()]
        grad = torch.randn_like(q)

        def through(fn):
            return lambda packed, b: fn(*packed.permute(2, 0, 3, 1, 4), b, mask)

        rows += _compare("window_attention", case, "fwd+bwd", dtype,
                         _fwd_bwd(through(fast), leaves, grad),
                         {name: _fwd_bwd(through(fn), leaves, grad) for name, fn in baselines.items()},
                         device, repeats, attention_bytes(q, "fwd+bwd"), attention_flops(q, "fwd+bwd"), bandwidth)
    return rows


# ----------------------------------------------------------------------------- shifted-window attention on the image layout

# (model, stage, map sizes, channels, heads, window, v2) at the models' native resolution
# (SwinV2-T window 16: stages 1-3, as in ATTENTION_STAGES); sizes and windows are (h, w),
# or (t, h, w) on video maps.
IMAGE_STAGES = [
    (model, stage + 1, (size >> stage,) * 2, channels << stage, heads << stage, (window,) * 2, v2)
    for model, size, channels, heads, window, v2, stages in (
        ("swin_t", 56, 96, 3, 7, False, 4), ("swin_b", 56, 128, 4, 7, False, 4), ("swinv2_t", 64, 96, 3, 8, True, 4),
        ("swinv2_t_w16", 64, 96, 3, 16, True, 3))
    for stage in range(stages)
]
# torchvision's swin3d_t, stage 1 of a 16-frame 224 px clip: 8 x 7 x 7 windows (N = 392).
VIDEO_IMAGE_STAGES = [("swin3d_t", 1, (8, 56, 56), 96, 3, (8, 7, 7), False)]
LARGE_IMAGE_STAGES = [("swinv2_b_384", 1, (96, 96), 128, 4, (24, 24), True)]  # as LARGE_WINDOW_STAGES


def kernel_backend(device: torch.device) -> Optional[str]:
    """The backend the op benchmarks time as fastswin, forced wherever it runs, with
    gradients too (auto trains eagerly past AUTO_TRAINING_MAX_TOKENS on CUDA and always on
    CPU): on CUDA the Triton kernels, on CPU the fused C++ kernels; else auto."""
    if device.type == "cuda":
        return "triton"
    return "cpu" if device.type == "cpu" and HAS_C else None


def image_attention_inputs(sizes: Tuple[int, ...], channels: int, heads: int, window: Tuple[int, ...], v2: bool,
                           batch: int, device, dtype):
    """A block's qkv map (B, *sizes, 3C), its relative-position bias, qkv bias and (v2) logit scale."""
    n = math.prod(window)
    qkv = torch.randn(batch, *sizes, 3 * channels, device=device, dtype=dtype)
    bias = torch.randn(heads, n, n, device=device, dtype=dtype)
    qkv_bias = torch.randn(3 * channels, device=device, dtype=dtype)
    logit_scale = torch.log(10 * torch.ones(heads, 1, 1, device=device)) if v2 else None
    return qkv, bias, qkv_bias, logit_scale


def stage_shift(sizes: Tuple[int, ...], window: Tuple[int, ...]) -> Tuple[int, ...]:
    """Half a window along each dim the map is larger than the window (the models' rule)."""
    return tuple(w // 2 if s > w else 0 for s, w in zip(sizes, window))


def image_attention_bytes(qkv: torch.Tensor, mode: str) -> int:
    """The floor: forward reads q, k, v and writes the output, 4 T C elements; the
    backward reads them and the output gradient and writes d(qkv): 8 T C more."""
    forward = qkv.numel() * qkv.element_size() * 4 // 3
    return forward if mode == "fwd" else 3 * forward


def shifted_window_attention_rows(device: torch.device, dtype: torch.dtype, batch: int,
                                  bandwidth: Optional[float], stages=IMAGE_STAGES, repeats: int = 20,
                                  with_compile: bool = False) -> List[Row]:
    """The attention of a Swin block between its qkv and proj linears: fastswin
    (kernel_backend: the fused image-layout kernels, Triton on CUDA, C++ on CPU) vs
    eager PyTorch (pad, roll, partition, attention, reverse, roll back, crop: the timm /
    torchvision path), on CUDA fastswin's own composition (partition kernel + fused window
    attention + reverse), the eager path with FlexAttention (where it runs) and
    torch.compile of the eager path."""
    rows = []
    for model, stage, sizes, channels, heads, window, v2 in stages:
        qkv, bias, qkv_bias, logit_scale = image_attention_inputs(sizes, channels, heads, window, v2, batch, device,
                                                                  dtype)
        shift = stage_shift(sizes, window)
        case = f"{model}.s{stage} {'x'.join(map(str, (batch, *sizes, channels)))}"
        impls = image_baselines(device, dtype, heads, window, shift, logit_scale, qkv_bias, with_compile)

        def fast(x, b):
            return ops.shifted_window_attention(x, heads, window, shift, b, logit_scale=logit_scale,
                                                qkv_bias=qkv_bias, backend=kernel_backend(device))

        rows += _compare("shifted_window_attention", case, "fwd", dtype, lambda: fast(qkv, bias),
                         {name: (lambda f=fn: f(qkv, bias)) for name, fn in impls.items()}, device, repeats,
                         image_attention_bytes(qkv, "fwd"), bandwidth=bandwidth)
        leaves = [qkv.detach().clone().requires_grad_(), bias.detach().clone().requires_grad_()]
        grad = torch.randn(*qkv.shape[:-1], channels, device=device, dtype=dtype)
        rows += _compare("shifted_window_attention", case, "fwd+bwd", dtype, _fwd_bwd(fast, leaves, grad),
                         {name: _fwd_bwd(fn, leaves, grad) for name, fn in impls.items()}, device, repeats,
                         image_attention_bytes(qkv, "fwd+bwd"), bandwidth=bandwidth)
    return rows


# ----------------------------------------------------------------------------- whole models


def build_timm_model(name: str, device: torch.device, patched: bool, **kwargs) -> torch.nn.Module:
    import fastswin

    timm = require("timm", "the model benchmark")
    model = timm.create_model(name, pretrained=False, **kwargs).to(device)
    if patched:
        report = fastswin.patch(model)
        if not report.complete:
            raise RuntimeError(f"fastswin.patch left modules of {name} unpatched:\n{report}")
    return model


def model_step(model: torch.nn.Module, batch: int, mode: str, device: torch.device) -> Callable[[], None]:
    """One inference forward, or one training step (forward, backward, AdamW), bf16
    autocast on CUDA, on random images of the model's input size."""
    size = model.patch_embed.img_size
    images = torch.randn(batch, 3, *size, device=device)
    labels = torch.randint(0, model.num_classes, (batch,), device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    model.train(mode == "train")
    if mode == "infer":
        def infer():
            with torch.inference_mode(), autocast:
                model(images)
        return infer
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
    return train


def model_rows(device: torch.device, models: Sequence[Tuple[str, dict]], batch: int, modes: Sequence[str],
               repeats: int = 10) -> List[Row]:
    """Images/s of timm eager vs timm + fastswin.patch, per model and mode."""
    rows = []
    dtype = "bf16-autocast" if device.type == "cuda" else "float32"
    for name, kwargs in models:
        for mode in modes:
            timings = {}
            for patched in (False, True):
                torch.manual_seed(0)
                step = model_step(build_timm_model(name, device, patched, **kwargs), batch, mode, device)
                timings[patched] = measure(step, device, repeats, warmup=2).median_ms
            case = f"{name}{' (tiny)' if kwargs else ''} b{batch}"
            rows.append(Row("model", case, mode, dtype, "timm", timings[False], timings[True],
                            timings[False] / timings[True], images_per_s=batch / timings[True] * 1e3))
    return rows
