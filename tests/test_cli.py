"""The fastswin command: each subcommand runs here and its output has content."""
import json
import os
import subprocess
import sys

import pytest
import torch

from helpers import long, versions

from fastswin import cli, ops


def test_info_entry_point():
    out = subprocess.run([sys.executable, "-m", "fastswin", "info"], check=True, capture_output=True,
                         text=True).stdout
    assert f"torch          {torch.__version__}" in out
    assert "backends" in out and "reference      ok" in out


@versions
def test_bench_host_times_every_op_on_the_stand_in_driver():
    """fastswin bench --host --quick in a process of its own (the kernels compiled, not
    interpreted): a row of host time per op, stage and mode."""
    if torch.cuda.is_available():
        pytest.skip("measured on machines without a GPU (the stand-in driver replaces the real one)")
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-m", "fastswin", "bench", "--host", "--quick"], capture_output=True,
                            text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith(("shifted_", "window_"))]
    assert [(row[0], row[1], row[2]) for row in rows] == [
        (op, f"swin_t.s{stage}", mode) for stage in (1, 2, 3, 4)
        for op in ("shifted_window_attention", "window_attention") for mode in ("fwd", "fwd+bwd")]
    assert all(0 < float(row[3]) < 10_000 for row in rows)  # microseconds


def test_bench_quick_writes_results(tmp_path, capsys):
    assert cli.main(["bench", "--quick", "--batch", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "window_partition" in out and "speedup" in out
    summary = out[out.index("fastswin against the fastest baseline"):].splitlines()[1:6]
    assert [line.split()[0] for line in summary] == ["window_partition", "window_reverse", "window_attention",
                                                     "shifted_window_attention", "model"]
    for plot in ("speedup.png", "throughput.png"):
        assert (tmp_path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["environment"]["torch"] == torch.__version__
    assert results["copy_bandwidth_gbps"] > 0
    rows = results["rows"]
    assert {r["op"] for r in rows} == {"window_partition", "window_reverse", "window_attention",
                                       "shifted_window_attention", "model"}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtypes = {r["dtype"] for r in rows if r["op"] != "model"}
    assert dtypes == ({"float16", "bfloat16"} if device.type == "cuda" else {"float32"})
    # --quick: no compiled baselines (FlexAttention, torch.compile)
    assert {r["baseline"] for r in rows if r["op"] == "window_attention"} == {"eager", "sdpa"}
    image_baselines = {"eager", "composed"} if device.type == "cuda" else {"eager"}  # no CPU composition
    assert {r["baseline"] for r in rows if r["op"] == "shifted_window_attention"} == image_baselines
    assert {r["mode"] for r in rows if r["op"] != "model"} == {"fwd", "fwd+bwd"}
    assert {r["mode"] for r in rows if r["op"] == "model"} == {"infer", "train"}
    for row in rows:
        assert row["fastswin_ms"] > 0 and row["baseline_ms"] > 0
        assert abs(row["speedup"] - row["baseline_ms"] / row["fastswin_ms"]) < 1e-9
        if row["op"] == "model":
            assert row["images_per_s"] > 0
        else:
            assert row["gbps"] > 0 and 0 < row["roofline"]
    assert all(r["tflops"] > 0 for r in rows if r["op"] == "window_attention")


def test_bench_dtypes():
    parser = cli.build_parser()
    assert parser.parse_args(["bench", "--dtype", "fp16,bf16"]).dtype == [torch.float16, torch.bfloat16]
    assert parser.parse_args(["bench"]).dtype is None  # the device's default: fp16 and bf16 on CUDA, fp32 on CPU
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "--dtype", "fp8"])


def test_bench_one_model(tmp_path, capsys):
    assert cli.main(["bench", "--model", "swin_tiny_patch4_window7_224", "--batch", "1", "--mode", "infer",
                     "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "[1/1] model swin_tiny_patch4_window7_224 infer ..." in out
    assert "swin_tiny_patch4_window7_224 b1" in out and "infer" in out


@pytest.fixture
def without_the_interpreter(monkeypatch):
    """`fastswin check` on CPU as a user runs it: the Triton backend skipped, not interpreted
    (the kernel tests check that backend in the interpreter, where the check took four minutes)."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def test_check_passes(capsys, without_the_interpreter):
    assert cli.main(["check", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "window_partition           cpu        ok" in out
    assert "window_attention           triton     skipped: " in out
    assert " 0 failed" in out


def test_check_names_a_wrong_kernel(monkeypatch, capsys, without_the_interpreter):
    real = ops.window_partition
    monkeypatch.setattr(ops, "window_partition", lambda x, *a, backend=None: real(x, *a, backend=backend) * 1.001
                        if backend == "cpu" else real(x, *a, backend=backend))
    assert cli.main(["check", "--device", "cpu"]) == 1
    out = capsys.readouterr().out
    assert "FAIL window_partition backend=cpu dtype=float32: output differs" in out


def test_profile_writes_a_trace(tmp_path, capsys):
    from fastswin import profile

    assert profile.categorize("aten::addmm") == "gemm"
    assert profile.categorize("fastswin::window_attention_triton") == "fastswin attention"
    assert profile.categorize("void gather_rows_kernel<true, Unit<16>, int>") == "fastswin partition"
    assert cli.main(["profile", "--no-patch", "--model", "swin_tiny_patch4_window7_224", "--img-size", "64",
                     "--batch", "1", "--steps", "1", "--mode", "infer", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "aten::" in out and "gemm" in out
    trace = json.loads((tmp_path / "trace.json").read_text())
    assert any(e.get("name", "").startswith("aten::") for e in trace["traceEvents"])


@long
def test_compile_report_quick():
    """Ahead-of-time compilation needs the real Triton JIT: run without the interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-m", "fastswin", "compile-report", "--arch", "sm_90", "--quick"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    triton_rows = [line for line in lines if line.startswith("triton ")]
    assert any("window_attention_fwd_kernel" in line and "N=49" in line for line in triton_rows)
    assert any("window_attention_bwd_kernel" in line for line in triton_rows)
    assert all("yes" in line.split() for line in triton_rows)  # tensor-core instructions
    if any(line.startswith("cuda-ext") for line in lines):
        assert any("gather_rows_kernel" in line for line in lines)
    assert " 0 spilling" in lines[-1]
    assert all("SPILLS" not in line for line in lines)


def test_bench_only_runs_the_sections_asked_for(tmp_path, capsys):
    assert cli.main(["bench", "--quick", "--batch", "2", "--only", "process", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert rows and {r["op"] for r in rows} <= {"window_partition", "window_reverse"}
    with pytest.raises(SystemExit, match="--only takes"):
        cli.main(["bench", "--only", "kernels"])


def test_bench_without_matplotlib_still_writes_results(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ModuleNotFoundError
    assert cli.main(["bench", "--quick", "--batch", "1", "--only", "process", "--out", str(tmp_path)]) == 0
    assert "no plots: plotting needs matplotlib: pip install 'fastswin[bench]'" in capsys.readouterr().out
    assert json.loads((tmp_path / "results.json").read_text())["rows"]
    assert not (tmp_path / "speedup.png").exists()
