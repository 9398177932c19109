"""fastswin bench's plan (sizes per device, overrides), its progress, its summary, and
what it still writes when an optional dependency is missing."""
import json
import sys

import pytest
import torch

from fastswin import benchmark, bench_run, cli
from fastswin.bench_plan import make_plan, stage_name
from fastswin.benchmark import Row

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def names(stages):
    return [stage_name(stage) for stage in stages]


def test_default_plan_is_sized_for_the_device():
    quick, default, full = (make_plan(CPU, size) for size in ("quick", "default", "full"))
    assert names(quick.attention_stages) == ["swin_t.s1"] and quick.batch < default.batch < full.batch
    # the default: the first (largest) stage of every family, Swin-T as a model, no compiled baselines
    assert names(default.attention_stages) == ["swin_t.s1", "swin_b.s1", "swinv2_t.s1", "swinv2_t_w16.s1"]
    assert default.models == [("swin_tiny_patch4_window7_224", {})] and not default.compile_stages
    assert names(full.attention_stages) == names(benchmark.ATTENTION_STAGES)
    gpu, gpu_full = make_plan(CUDA, "default"), make_plan(CUDA, "full")
    assert gpu.dtypes == [torch.bfloat16] and gpu.compile_stages == {"swin_t.s1"}
    # the large windows on a GPU only (their eager baseline takes seconds on a CPU)
    assert names(gpu.attention_stages)[-1] == names(gpu.image_stages)[-1] == "swinv2_b_384.s1"
    assert "swin3d_t.s1" in names(gpu.image_stages) and "swin3d_t.s1" not in names(full.image_stages)
    assert "swinv2_b_384.s1" not in names(full.attention_stages + full.image_stages)
    assert gpu_full.dtypes == [torch.float16, torch.bfloat16]
    assert gpu_full.compile_stages == set(names(benchmark.ATTENTION_STAGES + benchmark.IMAGE_STAGES
                                                + benchmark.VIDEO_IMAGE_STAGES + benchmark.LARGE_WINDOW_STAGES))


def test_plan_overrides():
    plan = make_plan(CUDA, "default", dtypes=[torch.float16], batch=4, stages=["swin_t.s1", "swinv2_t_w16.s2"],
                     models=["swin_small_patch4_window7_224"], mode="train")
    assert plan.dtypes == [torch.float16] and plan.batch == plan.model_batch == 4
    assert names(plan.attention_stages) == names(plan.image_stages) == ["swin_t.s1", "swinv2_t_w16.s2"]
    assert plan.models == [("swin_small_patch4_window7_224", {})] and plan.modes == ("train",)
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["bench", "--quick", "--full"])


def test_cases_are_one_stage_dtype_or_model_mode_each():
    plan = make_plan(CUDA, "quick")
    cases = bench_run.plan_cases(plan, CUDA, 1.0)
    assert [case.label for case in cases] == [
        "partition/reverse swin_t.s1 float16", "window attention swin_t.s1 float16",
        "shifted-window attention swin_t.s1 float16", "partition/reverse swin_t.s1 bfloat16",
        "window attention swin_t.s1 bfloat16", "shifted-window attention swin_t.s1 bfloat16",
        "model swin_tiny_patch4_window7_224 infer", "model swin_tiny_patch4_window7_224 train"]
    assert [case.section for case in bench_run.plan_cases(plan, CUDA, 1.0, ["models"])] == ["models", "models"]


def row(op, case, mode, baseline, base_ms, fast_ms):
    return Row(op, case, mode, "float32", baseline, base_ms, fast_ms, base_ms / fast_ms)


def test_summary_takes_the_fastest_baseline_of_each_case():
    rows = [row("window_attention", "a", "fwd", "eager", 8.0, 2.0), row("window_attention", "a", "fwd", "sdpa", 1.0, 2.0),
            row("window_attention", "b", "fwd", "eager", 8.0, 1.0), row("window_attention", "b", "fwd+bwd", "eager", 3.0, 1.0),
            row("model", "m", "infer", "timm", 1.0, 2.0)]
    lines = bench_run.best_baseline_lines(rows)
    # case a: 1/2 against sdpa, case b: 8 against eager -> geomean 2
    assert lines == ["  window_attention  fwd 2.00x (best: eager, sdpa); fwd+bwd 3.00x (best: eager)",
                     "  model             infer 0.50x (best: timm)"]


def test_progress_falls_back_to_lines_without_tqdm(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    cases = [bench_run.Case("process", "one", lambda: []), bench_run.Case("process", "two", lambda: [])]
    assert bench_run.run_cases(cases, None, {}, CPU, 1.0) == []
    out = capsys.readouterr().out
    assert "no progress bar: the progress bar needs tqdm: pip install 'fastswin[bench]'" in out
    assert "[1/2] one ..." in out and "[2/2] two ..." in out


def test_bench_without_timm_still_writes_the_op_results(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    assert cli.main(["bench", "--quick", "--batch", "1", "--only", "process,models", "--no-progress",
                     "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "models skipped: the model benchmark needs timm: pip install 'fastswin[bench]'" in out
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert rows and {r["op"] for r in rows} == {"window_partition", "window_reverse"}
