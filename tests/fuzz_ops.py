"""Random and degenerate inputs for every op on every backend that runs here.

Each case draws sizes that are often 0, 1, or not a multiple of the window, windows and
shifts of every kind (negative, as large as the map or larger, floats, pairs, triples,
numpy integers, strings), wrong ranks, wrong dtypes, strided views and mismatched bias,
mask, logit scale and qkv bias. Every backend must either give the reference's result
or raise ValueError (a forced backend that cannot run: BackendError); anything else, a
crash or a hang, is a defect.

Run by tests/test_fuzz.py in a child process (a crash must not take pytest with it):
    python tests/fuzz_ops.py SEED COUNT PROGRESS_FILE
prints one line per defect and writes each case's description to PROGRESS_FILE before
running it, so a case that kills the process is named.
"""
import os
import random
import sys
import traceback

if __name__ == "__main__":
    os.environ.setdefault("TRITON_INTERPRET", "1")  # CPU tensors through the Triton kernels

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fastswin import BackendError, ops  # noqa: E402
from fastswin._extension import HAS_C  # noqa: E402

BACKENDS = ["reference", "triton", None] + (["cpu"] if HAS_C else [])
PROCESS_BACKENDS = ["reference", None] + (["cpu"] if HAS_C else [])


class Draw(random.Random):
    """The random source of the cases; `chaos` is the chance of each corruption (wrong
    shape, wrong dtype): 0 for half of the cases, so that valid inputs get compared too."""
    chaos = 0.0

    def corrupt(self) -> bool:
        return self.random() < self.chaos


def size(rng: random.Random, small=(0, 1, 2, 3, 4, 5, 7, 9)) -> int:
    return rng.choice(small)


def window_arg(rng: random.Random):
    """A window or shift argument: mostly valid, sometimes anything."""
    if rng.random() > 0.1 + rng.chaos:
        return rng.choice([1, 2, 3, 4, 5, 7, (1, 4), (2, 3), (3, 1), (5, 7)])
    return rng.choice([0, -1, np.int64(3), 7.0, (3, 3, 3), (2,), "7", None, True, (2, -1), (np.int32(2), 3)])


def video_window_arg(rng: random.Random):
    """window_arg for video maps: small 3D windows (the interpreter's time), sometimes anything."""
    if rng.random() > 0.15 + rng.chaos:
        return rng.choice([1, 2, 3, (2, 3, 2), (1, 4, 3), (3, 2, 2), (2, 1, 1)])
    return rng.choice([0, -1, (3, 3), (2,), (2, -1, 1), (2, 2, 2, 2), 7.0, "3", None, True, (np.int64(2), 3, 2)])


def video_shift_arg(rng: random.Random, window):
    """shift_arg for video windows: valid per dim (0 <= s < w) mostly, up to w + 1 sometimes."""
    if isinstance(window, tuple) and all(type(w) is int and w > 0 for w in window) and rng.random() < 0.7:
        return tuple(rng.randrange(0, w + (2 if rng.corrupt() else 0)) for w in window)
    return shift_arg(rng, window)


def shift_arg(rng: random.Random, window):
    kind = rng.random()
    if kind < 0.3:
        return 0
    if kind < 0.7 and isinstance(window, int) and window > 0:
        return rng.randrange(0, window + 2)  # window and window + 1 are invalid
    return window_arg(rng)


def tensor(rng: random.Random, shape, dtype=torch.float32):
    """Random values; sometimes a strided view of a larger tensor, sometimes another dtype."""
    if rng.corrupt():
        dtype = rng.choice([torch.float64, torch.float16, torch.int64, torch.bool])
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    if rng.random() < 0.3 and len(shape) > 0:
        base = torch.randn(*shape[:-1], 2 * shape[-1] + 1, generator=g)
        values = base[..., 1::2]
    else:
        values = torch.randn(tuple(shape), generator=g)
    return values.to(dtype)


def maybe_wrong_shape(rng: random.Random, shape):
    if rng.corrupt():
        shape = list(shape)
        if rng.random() < 0.5 and shape:
            shape.pop(rng.randrange(len(shape)))
        else:
            shape[rng.randrange(len(shape))] += 1
    return tuple(shape)


def partition_case(rng):
    window, = (window_arg(rng),)
    shift = shift_arg(rng, window)
    x = tensor(rng, maybe_wrong_shape(rng, (size(rng, (0, 1, 2)), size(rng), size(rng), size(rng, (0, 1, 3, 8)))))
    return f"window_partition(x{tuple(x.shape)} {x.dtype}, {window!r}, {shift!r})", PROCESS_BACKENDS, (
        lambda backend: ops.window_partition(x, window, shift, backend=backend))


def reverse_case(rng):
    window = window_arg(rng)
    shift = shift_arg(rng, window)
    h, w = size(rng), size(rng)
    pair = (window, window) if type(window) is int else window
    wh, ww = pair if isinstance(pair, tuple) and len(pair) == 2 and all(type(v) is int for v in pair) else (2, 2)
    count = size(rng, (0, 1, 2, 4, 9))
    windows = tensor(rng, maybe_wrong_shape(rng, (count, max(wh, 0), max(ww, 0), size(rng, (1, 3)))))
    return f"window_reverse(windows{tuple(windows.shape)}, {window!r}, {h}, {w}, {shift!r})", PROCESS_BACKENDS, (
        lambda backend: ops.window_reverse(windows, window, h, w, shift, backend=backend))


def attention_operands(rng):
    B_, heads, n, d = size(rng, (0, 1, 2, 4)), size(rng, (0, 1, 2)), size(rng, (0, 1, 4, 9)), rng.choice([0, 1, 8, 16, 16, 32])
    q, k, v = (tensor(rng, maybe_wrong_shape(rng, (B_, heads, n, d))) for _ in range(3))
    bias = None if rng.random() < 0.3 else tensor(rng, maybe_wrong_shape(rng, (heads, n, n)))
    nW = rng.choice([1, 2, 3] if rng.corrupt() else [w for w in (1, 2, 4) if B_ % w == 0])
    mask = None if rng.random() < 0.5 else tensor(rng, maybe_wrong_shape(rng, (nW, n, n)))
    return (q, k, v, bias, mask), (heads,)


def describe(tensors):
    return ", ".join("None" if t is None else f"{tuple(t.shape)} {str(t.dtype)[6:]}" for t in tensors)


def window_attention_case(rng):
    operands, _ = attention_operands(rng)
    return f"window_attention({describe(operands)})", BACKENDS, (
        lambda backend: ops.window_attention(*operands, backend=backend))


def cosine_case(rng):
    (q, k, v, bias, mask), (heads,) = attention_operands(rng)
    logit_scale = tensor(rng, maybe_wrong_shape(rng, (heads, 1, 1)))
    if rng.corrupt():
        logit_scale = rng.choice([torch.tensor(2.0), 1.5, None])
    scale_text = describe([logit_scale]) if isinstance(logit_scale, torch.Tensor) else repr(logit_scale)
    return f"cosine_window_attention({describe((q, k, v))}, scale {scale_text}, {describe((bias, mask))})", \
        BACKENDS, lambda backend: ops.cosine_window_attention(q, k, v, logit_scale, bias, mask, backend=backend)


def shifted_case(rng):
    """A 2D map, or a video map (B, T, H, W, 3C) with mostly 3D windows."""
    heads = rng.choice([1, 2, 3] + [0, -1] * rng.corrupt())
    C = heads * rng.choice([1, 4, 16]) if heads > 0 else 4
    video = rng.random() < 0.3
    window = video_window_arg(rng) if video else window_arg(rng)
    shift = video_shift_arg(rng, window) if video else shift_arg(rng, window)
    spatial = (size(rng, (0, 1, 2, 3, 5)),) * video + (size(rng), size(rng))
    qkv = tensor(rng, maybe_wrong_shape(rng, (size(rng, (0, 1, 2)), *spatial, 3 * C)))
    if isinstance(window, int) and window > 0:
        n = window ** len(spatial)
    else:
        n = int(np.prod(window)) if isinstance(window, tuple) and all(type(v) is int and v > 0 for v in window) else 4
    bias = None if rng.random() < 0.3 else tensor(rng, maybe_wrong_shape(rng, (max(heads, 1), n, n)))
    qkv_bias = None if rng.random() < 0.5 else tensor(rng, maybe_wrong_shape(rng, (3 * C,)))
    logit_scale = None if rng.random() < 0.6 else tensor(rng, maybe_wrong_shape(rng, (max(heads, 1), 1, 1)))
    order = rng.choice(["torchvision", "timm", "timm", "bogus"]) if rng.random() < 0.5 else "torchvision"
    always_shift = rng.random() < 0.3  # timm's / MaskFormer's rule: shifts of one-window dims kept
    text = (f"shifted_window_attention(qkv{tuple(qkv.shape)} {qkv.dtype}, {heads}, {window!r}, {shift!r}, "
            f"{describe((bias, qkv_bias, logit_scale))}, {order}, always_shift={always_shift})")
    return text, BACKENDS, lambda backend: ops.shifted_window_attention(
        qkv, heads, window, shift, bias, logit_scale=logit_scale, qkv_bias=qkv_bias, order=order,
        always_shift=always_shift, backend=backend)


CASES = [partition_case, reverse_case, window_attention_case, cosine_case, shifted_case]


def outcome(run, backend):
    """The result, or the exception's type for the accepted refusals; raises on a defect."""
    try:
        return run(backend)
    except (ValueError, BackendError) as error:
        return type(error)


def check(text, backends, run) -> list:
    """Defects of one case: an unexpected exception, or a result that differs from the reference's."""
    defects, expected = [], None
    for backend in backends:
        try:
            got = outcome(run, backend)
        except Exception:
            defects.append(f"{text} backend={backend}: {traceback.format_exc(limit=-3).strip().splitlines()[-1]}")
            continue
        if backend == "reference":
            expected = got
        elif isinstance(got, torch.Tensor) and isinstance(expected, torch.Tensor):
            if got.shape != expected.shape or not torch.allclose(got.double(), expected.double(), atol=2e-2,
                                                                  rtol=2e-2, equal_nan=True):
                defects.append(f"{text} backend={backend}: differs from the reference")
        elif isinstance(got, torch.Tensor) and expected is ValueError:
            defects.append(f"{text} backend={backend}: ran where the reference raised ValueError")
    return defects


def main(seed: int, count: int, progress: str) -> int:
    rng = Draw(seed)
    defects = 0
    for index in range(count):
        rng.chaos = rng.choice([0.0, 0.15])
        text, backends, run = rng.choice(CASES)(rng)
        with open(progress, "w") as f:
            f.write(f"seed {seed} case {index}: {text}\n")
        for line in check(text, backends, run):
            print(line, flush=True)
            defects += 1
    return 1 if defects else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))
