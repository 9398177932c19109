"""What `fastswin bench` measures: the cases, sizes and baselines of a run, chosen for the
device found and the size asked for.

  quick    one stage per op, one model, few repeats: a smoke test (seconds);
  default  the main job, sized to finish in about 3 minutes on a 2-core CPU and 2 on a GPU:
           the first stage of every model family's attention (the largest maps, where the
           time goes), every partition / reverse stage of Swin-T, Swin-T as a model, and on
           a GPU every attention stage, SwinV2-B-384's 24 x 24 windows, bf16 and
           torch.compile / FlexAttention at Swin-T stage 1;
  full     every stage, model and dtype, the compiled baselines everywhere (tens of minutes).
Command-line options (--batch, --dtype, --stages, --model, --mode) override the choice.
"""
from dataclasses import dataclass, field
from typing import List, Sequence, Set, Tuple

import torch

from fastswin import benchmark

SIZES = ("quick", "default", "full")


@dataclass
class BenchPlan:
    dtypes: List[torch.dtype]
    batch: int                       # op benchmarks
    repeats: int
    process_stages: list             # benchmark.SWIN_STAGES entries
    attention_stages: list           # benchmark.ATTENTION_STAGES entries
    image_stages: list               # benchmark.IMAGE_STAGES entries
    models: List[Tuple[str, dict]]   # timm name, create_model kwargs
    model_batch: int
    model_repeats: int
    modes: Sequence[str] = ("infer", "train")
    compile_stages: Set[str] = field(default_factory=set)  # stage names timed against the compiled baselines


def stage_name(stage) -> str:
    """model.sN of an attention or image stage, as --stages takes it."""
    return f"{stage[0]}.s{stage[1]}"


def _firsts(stages) -> list:
    """The first stage of each model family."""
    seen = {}
    for stage in stages:
        seen.setdefault(stage[0], stage)
    return list(seen.values())


def _cpu_plan(size: str) -> BenchPlan:
    if size == "quick":
        return BenchPlan([torch.float32], 4, 5, benchmark.SWIN_STAGES[:1], benchmark.ATTENTION_STAGES[:1],
                         benchmark.IMAGE_STAGES[:1], [benchmark.TINY_MODEL], 2, 3)
    if size == "default":
        return BenchPlan([torch.float32], 8, 5, benchmark.SWIN_STAGES[:4], _firsts(benchmark.ATTENTION_STAGES),
                         _firsts(benchmark.IMAGE_STAGES), [(benchmark.MODELS_GPU[0], {})], 8, 3)
    return BenchPlan([torch.float32], 32, 20, benchmark.SWIN_STAGES, benchmark.ATTENTION_STAGES,
                     benchmark.IMAGE_STAGES, [benchmark.TINY_MODEL], 2, 10)


# A GPU's stages: every Swin stage, the video Swin's 3D windows (image layout) and the large
# windows (benchmark.LARGE_WINDOW_STAGES).
GPU_ATTENTION_STAGES = benchmark.ATTENTION_STAGES + benchmark.LARGE_WINDOW_STAGES
GPU_IMAGE_STAGES = benchmark.IMAGE_STAGES + benchmark.VIDEO_IMAGE_STAGES + benchmark.LARGE_IMAGE_STAGES


def _cuda_plan(size: str) -> BenchPlan:
    everything = GPU_ATTENTION_STAGES + GPU_IMAGE_STAGES
    if size == "quick":
        return BenchPlan([torch.float16, torch.bfloat16], 128, 5, benchmark.SWIN_STAGES[:1],
                         benchmark.ATTENTION_STAGES[:1], benchmark.IMAGE_STAGES[:1],
                         [(benchmark.MODELS_GPU[0], {})], 128, 3)
    if size == "default":
        return BenchPlan([torch.bfloat16], 128, 20, benchmark.SWIN_STAGES, GPU_ATTENTION_STAGES, GPU_IMAGE_STAGES,
                         [(name, {}) for name in benchmark.MODELS_GPU[::3]], 128, 10, compile_stages={"swin_t.s1"})
    return BenchPlan([torch.float16, torch.bfloat16], 128, 20, benchmark.SWIN_STAGES, GPU_ATTENTION_STAGES,
                     GPU_IMAGE_STAGES, [(name, {}) for name in benchmark.MODELS_GPU], 128, 10,
                     compile_stages={stage_name(stage) for stage in everything})


def _named(stages, names: Set[str]) -> list:
    return [stage for stage in stages if stage_name(stage) in names]


def make_plan(device: torch.device, size: str = "default", *, dtypes=None, batch=None, stages=None,
              models=None, mode=None) -> BenchPlan:
    """The plan for `device` at `size` (SIZES), with the command line's overrides."""
    plan = (_cuda_plan if device.type == "cuda" else _cpu_plan)(size)
    if dtypes:
        plan.dtypes = list(dtypes)
    if batch:
        plan.batch = plan.model_batch = batch
    if stages:
        wanted = set(stages)
        plan.attention_stages = _named(GPU_ATTENTION_STAGES, wanted)
        plan.image_stages = _named(GPU_IMAGE_STAGES, wanted)
    if models:
        plan.models = [(name, {}) for name in models]
    if mode:
        plan.modes = (mode,)
    return plan
