"""benchmarks/results_table.py: the README table shows the newest run per GPU."""
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("results_table", ROOT / "benchmarks" / "results_table.py")
results_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(results_table)


def write_run(folder: Path, gpu: str, date: str, speedup: float) -> None:
    folder.mkdir(parents=True)
    row = {"op": "window_partition", "case": "swin_t.s1 128x56x56x96", "mode": "fwd", "dtype": "bfloat16",
           "baseline": "eager", "baseline_ms": speedup * 0.1, "fastswin_ms": 0.1, "speedup": speedup,
           "gbps": 2500.0, "roofline": 0.83}
    run = {"environment": {"gpu": gpu, "date": date, "torch": "2.11.0", "triton": "3.6.0", "torch_cuda": "13.0"},
           "tests": {"tests": 10, "failures": 0, "errors": 0}, "fastswin_bench": {"rows": [row]}}
    (folder / "gpu-validation.json").write_text(json.dumps(run))


def test_newest_run_per_gpu(tmp_path, monkeypatch):
    monkeypatch.setattr(results_table, "RESULTS", tmp_path)
    write_run(tmp_path / "old", "NVIDIA H100 80GB HBM3", "2026-11-01T00:00:00", 2.0)
    write_run(tmp_path / "new", "NVIDIA H100 80GB HBM3", "2026-11-20T00:00:00", 3.5)
    text = results_table.table()
    assert "3.50x" in text and "2.00x" not in text
    assert "83%" in text and "2026-11-20" in text


def test_no_results(tmp_path, monkeypatch):
    monkeypatch.setattr(results_table, "RESULTS", tmp_path)
    assert "No GPU results" in results_table.table()
