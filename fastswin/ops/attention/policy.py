"""Launch policy of the attention kernels: for a window of N tokens, a head size, a
dtype and an architecture, the tiles, the launch options (warps, stages) and the
compile-time arguments; and how many windows each backward program takes. The
launchers (launch.py) and the ahead-of-time specs (aot_specs.py) both take their
launches from here, so what the compile report measures is what runs.
"""
from typing import NamedTuple, Tuple

import torch

from fastswin.ops._triton import tl, triton

# Backward programs: aim for about this many, so that a GPU is full while each
# program's dbias is reduced over several windows before it is written.
TARGET_BACKWARD_PROGRAMS = 1024
MAX_WINDOWS_PER_PROGRAM = 64


class TileConfig(NamedTuple):
    """Compile-time tiling of both kernels for windows of n tokens."""
    n: int
    block: int
    block_d: int
    forward_launch: dict
    backward_launch: dict

    @property
    def single_tile(self) -> bool:
        return self.n <= self.block


def tile_config(n: int, head_dim: int, dtype: torch.dtype, arch: int = 90, image: bool = False) -> TileConfig:
    """Tiles and launch options for N tokens of head_dim channels (padded to a power of two)
    on sm_<arch>.

    One tile, N rounded up to a power of two, when N <= 32, or, on sm_90 and newer,
    N <= 64 with rows of at most 64 bytes (Swin's 7x7 and 8x8 windows at head_dim 32
    in fp16 / bf16); else 32 x 32 tiles (144 tokens pad to 160, not 192). The backward
    holds several fp32 tiles at once (P, dS, the dbias sum, the dK and dV sums) and
    runs out of registers first: these choices, without software pipelining and at 8
    warps for 64 x 64 tiles, compile without spills for sm_80 and sm_90 (on sm_80 a
    64 x 64 backward spilled 16 bytes, hence 32 x 32 tiles there; AOT figures:
    benchmarks/PREDICTIONS-window-attention.md, `fastswin compile-report`).
    """
    block_n = max(16, triton.next_power_of_2(n))
    block_d = max(16, triton.next_power_of_2(head_dim))
    narrow_rows = block_d * dtype.itemsize <= 64
    block = block_n if block_n <= 32 or (block_n == 64 and narrow_rows and arch >= 90) else 32
    # sm_80's ptxas spilled the two-stage forward (12 bytes at N = 64, bf16): one stage there.
    return TileConfig(n, block=block, block_d=block_d,
                      forward_launch=dict(num_warps=4, num_stages=2 if arch >= 90 else 1),
                      # The image-layout backward also holds its tokens' addressing: 8 warps.
                      backward_launch=dict(num_warps=8 if block == 64 or image else 4, num_stages=1))


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
    allowed = torch.backends.cuda.matmul.allow_tf32 and dtype == torch.float32
    return "tf32" if allowed and device.type == "cuda" else "ieee"


def common_constexprs(cfg: TileConfig, head_dim: int, bias: bool, mask: bool, cosine: bool, precision: str,
                      dtype: torch.dtype) -> dict:
    """Compile-time arguments both kernels take, for inputs of dtype."""
    acc = tl.float64 if accumulator(dtype) == torch.float64 else tl.float32
    return dict(N_CTX=cfg.n, HEAD_DIM=head_dim, HAS_BIAS=bias, HAS_MASK=mask, COSINE=cosine, BLOCK=cfg.block,
                BLOCK_D=cfg.block_d, PRECISION=precision, ACC=acc)


def layout_constexprs(window: Tuple[int, int] = (1, 1), image: bool = False, timm_order: bool = False,
                      padded: bool = False, fill: bool = False) -> dict:
    """Compile-time arguments of the tensors' layout: the window layout by default; image,
    the un-partitioned map with (wh, ww) windows, in timm's order or torchvision's, with
    padding (padded) that reads a fill (fill)."""
    return dict(IMAGE=image, WIN_H=window[0], WIN_W=window[1], TIMM_ORDER=timm_order, PADDED=padded,
                HAS_FILL=fill)
