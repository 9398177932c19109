"""Launch policy of the attention kernels: for a window of N tokens, a head size, a
dtype and an architecture, the tiles, the launch options (warps, stages) and the
compile-time arguments; and how many windows each backward program takes. The
launchers (launch.py) and the ahead-of-time specs (aot_specs.py) both take their
launches from here, so what the compile report measures is what runs.
"""
import functools
from typing import NamedTuple, Optional, Tuple

import torch

from fastswin.ops._triton import tl, triton

# Backward programs: aim for about this many, so that a GPU is full while each
# program's dbias is reduced over several windows before it is written.
TARGET_BACKWARD_PROGRAMS = 1024
MAX_WINDOWS_PER_PROGRAM = 64


# The backward's split passes (windows the fused backward does not take): the key pass
# walks KEY_BLOCK x KEY_BLOCK tiles, the query pass strips of QUERY_ROWS queries by every
# key (16: the smallest tl.dot). Both need under 200 registers at the Swin shapes.
KEY_BLOCK = 16
QUERY_ROWS = 16
# The query pass holds a block of keys and values in registers: at most this many bytes
# of each (256 keys of 32 fp16 / bf16 channels, Swin's 16 x 16 windows), so wider heads
# and larger windows take several key blocks (key_blocks).
QUERY_KEY_BYTES = 16 * 1024
# ... and at most this many keys: its (16, keys) tiles of logits and dS stay in registers.
# Half as many where the (N, N) bias rows are not 16-byte aligned (N not a multiple of
# 4: scalar loads, an address each; sm_80 spilled 8-32 bytes at N = 343), and on padded
# maps past 256 tokens (their padding tests: 248-255 registers at N = 1024, sm_80, 3.6);
# half again in 3D windows of a video map (three coordinates a key: 240-254 registers at
# N = 392 and 343, 3.8).
MAX_QUERY_KEYS = 256
# ... and channels in blocks of at least 32: with 16 (head_dim <= 16), ptxas spills
# 1-4 KB there at 255 registers, with 32 it needs about 210 (N = 343-576).
MIN_QUERY_BLOCK_D = 32
# ptxas's own register budget trades spills for occupancy (seen: 96 registers and 8 bytes
# of stack where 124 suffice); the backward kernels, and the forward of heads of 64
# channels and more, ask for what they need instead.
MAX_REGISTERS = 255


class TileConfig(NamedTuple):
    """Compile-time tiling of the kernels for windows of n tokens: the forward's (query,
    key) tiles of block x block; the backward fused in one pass over one block x block
    tile (fused_backward), or split into a key pass over key_block x key_block tiles and
    a query pass over strips of query_rows queries by blocks of block_keys keys (every key
    when key_blocks is 1)."""
    n: int
    block: int
    block_d: int
    fused_backward: bool
    block_keys: int
    query_block_d: int
    forward_launch: dict
    backward_launch: dict
    query_launch: dict
    key_block: int = KEY_BLOCK
    query_rows: int = QUERY_ROWS

    @property
    def key_blocks(self) -> int:
        """Key blocks of the query pass: with more than one, it carries each strip's dQ
        across them in a scratch buffer of the accumulator type (launch.window_attention_backward)."""
        return -(-self.n // self.block_keys)


@functools.lru_cache(maxsize=None)  # every launch asks: 20-30 us of host time each, on a GPU's critical path
def tile_config(n: int, head_dim: int, dtype: torch.dtype, arch: int = 90, image: bool = False,
                cosine: bool = False, padded: bool = False, video: bool = False) -> TileConfig:
    """Tiles and launch options for N tokens of head_dim channels (padded to a power of two)
    on sm_<arch>, for the window layout or the image layout (image; padded: a map with
    padding; video: 3D windows of a video map), Swin-V1 or V2 (cosine).

    Forward: one tile, N rounded up to a power of two, when N <= 32, or, on sm_90 and
    newer, N <= 64 with rows of at most 64 bytes (Swin's 7x7 and 8x8 windows at head_dim
    32 in fp16 / bf16); else 32 x 32 tiles (144 tokens pad to 160, not 192).

    Backward: windows of one forward tile run the fused backward (every gradient from
    one pass, dbias summed in registers: the fewest bytes), except on the image layout's
    cosine or padded maps at 64 x 64, which need more than 255 registers there (Triton
    3.6 spills 16-88 bytes); those and every larger window run the split backward,
    whose passes need under 220 registers (the query pass takes keys in blocks of at
    most MAX_QUERY_KEYS and QUERY_KEY_BYTES of k, channels in blocks of at least
    MIN_QUERY_BLOCK_D). Heads wider than 128 channels run the split backward at any N.
    AOT figures: `fastswin compile-report`, benchmarks/PREDICTIONS-backward.md and
    PREDICTIONS-large-windows.md. The result is shared between calls: read it, do not
    change its launch dicts.
    """
    block_n = max(16, triton.next_power_of_2(n))
    block_d = max(16, triton.next_power_of_2(head_dim))
    narrow_rows = block_d * dtype.itemsize <= 64
    block = block_n if block_n <= 32 or (block_n == 64 and narrow_rows and arch >= 90) else 32
    fused = n <= block and block_d <= 128 and (block <= 32 or not (image and (cosine or padded)))
    query_block_d = max(MIN_QUERY_BLOCK_D, block_d)
    halve = n % 4 != 0 or (padded and n > MAX_QUERY_KEYS)
    max_keys = MAX_QUERY_KEYS // 2 ** (halve + (image and video))
    # fp64 runs only in the interpreter (gradcheck): tiled as fp32 is.
    element = min(dtype.itemsize, 4)
    block_keys = _query_key_block(n, min(block_n, max_keys, max(16, QUERY_KEY_BYTES // (query_block_d * element))))
    backward = dict(num_stages=1, maxnreg=MAX_REGISTERS)
    return TileConfig(n, block=block, block_d=block_d, fused_backward=fused, block_keys=block_keys,
                      query_block_d=query_block_d,
                      forward_launch=_forward_launch(block_d, arch),
                      # The fused image-layout backward also holds its tokens' addressing: 8 warps.
                      backward_launch=dict(backward, num_warps=8 if fused and (block == 64 or image) else 4),
                      query_launch=dict(backward, num_warps=8))


def _query_key_block(n: int, cap: int) -> int:
    """The query pass's key block: cap, or half of it where that pads n to fewer keys
    (N = 576: 5 blocks of 128, 640 keys, not 3 of 256, 768)."""
    return min((cap, cap // 2) if cap >= 32 else (cap,), key=lambda block: -(-n // block) * block)


def _forward_launch(block_d: int, arch: int) -> dict:
    """Warps and stages of the forward. sm_80's ptxas spilled the two-stage forward (12
    bytes at N = 64, bf16): one stage there. Heads of 256 channels: 8 warps, one stage
    (4 warps spill 8-330 bytes on sm_90); from 64 channels, the registers asked for."""
    wide = block_d >= 256
    launch = dict(num_warps=8 if wide else 4, num_stages=2 if arch >= 90 and not wide else 1)
    return dict(launch, maxnreg=MAX_REGISTERS) if block_d >= 64 else launch


def device_arch(device: torch.device) -> int:
    """sm_<arch> of a CUDA device; the interpreter follows sm_90's choices."""
    if device.type != "cuda":
        return 90
    major, minor = torch.cuda.get_device_capability(device)
    return 10 * major + minor


def windows_per_program(windows: int, heads: int) -> int:
    """Windows each backward program reduces dbias over (see TARGET_BACKWARD_PROGRAMS)."""
    return max(1, min(MAX_WINDOWS_PER_PROGRAM, windows * heads // TARGET_BACKWARD_PROGRAMS))


def accumulator(dtype: torch.dtype) -> torch.dtype:
    """The kernels' accumulation type for inputs of dtype, also that of the saved lse and
    of the dbias / dlogit_scale partial sums: fp32 (fp64 for fp64 inputs, which only
    the interpreter runs, for gradcheck)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def dot_precision(dtype: torch.dtype, device: torch.device) -> str:
    """tf32 for fp32 CUDA inputs when torch allows it; full precision elsewhere
    (the interpreter computes in full precision)."""
    allowed = dtype == torch.float32 and tf32_matmuls()
    return "tf32" if allowed and device.type == "cuda" else "ieee"


def reads_tf32(x: torch.Tensor) -> bool:
    """Whether the kernels' precision for inputs like x depends on the TF32 setting (fp32
    on CUDA: dot_precision)."""
    return isinstance(x, torch.Tensor) and x.dtype is torch.float32 and x.is_cuda


def tf32_matmuls() -> bool:
    """Whether torch lets fp32 CUDA matmuls run in TF32: its fp32_precision setting where
    torch has one (reading allow_tf32 raises once that is set), else allow_tf32."""
    matmul = torch.backends.cuda.matmul
    precision = getattr(matmul, "fp32_precision", None)
    if precision is None:
        return matmul.allow_tf32
    if precision == "none":  # the backends' shared setting decides
        precision = getattr(torch.backends, "fp32_precision", "none")
    return precision == "tf32"


def common_constexprs(cfg: TileConfig, head_dim: int, bias: bool, mask: bool, cosine: bool, precision: str,
                      dtype: torch.dtype) -> dict:
    """Compile-time arguments both kernels take, for inputs of dtype."""
    acc = tl.float64 if accumulator(dtype) == torch.float64 else tl.float32
    return dict(N_CTX=cfg.n, HEAD_DIM=head_dim, HAS_BIAS=bias, HAS_MASK=mask, COSINE=cosine, BLOCK=cfg.block,
                BLOCK_D=cfg.block_d, PRECISION=precision, ACC=acc)


def backward_constexprs(cfg: TileConfig, sums: dict) -> Tuple[dict, Optional[dict]]:
    """Compile-time arguments of the backward's key pass and, where the backward is split,
    of its query pass (else None), given the switches of the sums over windows (BIAS_GRAD,
    ATOMIC_DBIAS, SCALE_GRAD, ATOMIC_DSCALE): the fused key pass takes the sums, the split
    one leaves them to the query pass."""
    if cfg.fused_backward:
        return dict(sums, BLOCK=cfg.block), None
    return (dict(sums, BIAS_GRAD=False, SCALE_GRAD=False, BLOCK=cfg.key_block),
            dict(sums, BLOCK=cfg.query_rows, BLOCK_KEYS=cfg.block_keys, BLOCK_D=cfg.query_block_d))


def layout_constexprs(window: Tuple[int, ...] = (1, 1), image: bool = False, timm_order: bool = False,
                      padded: bool = False, fill: bool = False) -> dict:
    """Compile-time arguments of the tensors' layout: the window layout by default; image,
    the un-partitioned map with (wh, ww) or (wt, wh, ww) windows, in timm's order or
    torchvision's, with padding (padded) that reads a fill (fill). Windows of depth 1
    compile as 2D ones (the caller folds a video map's time into its batch)."""
    win_t, win_h, win_w = (1,) * (3 - len(window)) + tuple(window)
    return dict(IMAGE=image, WIN_T=win_t, WIN_H=win_h, WIN_W=win_w, TIMM_ORDER=timm_order, PADDED=padded,
                HAS_FILL=fill)
