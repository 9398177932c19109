"""Merge one GPU validation run into a single results file.

    python benchmarks/collect_results.py WORK_DIR [RESULTS_FILE]

Reads, where present (a step cut short leaves some out), WORK_DIR/tests.xml (pytest
junit), WORK_DIR/check.log (`fastswin check` on the GPU), WORK_DIR/steps.log (each
step's exit status and seconds), WORK_DIR/pytest-benchmark.json, every
WORK_DIR/bench*/results.json (`fastswin bench --out`) and the last lines of every
WORK_DIR/*.log; writes RESULTS_FILE (default WORK_DIR/gpu-validation.json) with the
environment (GPU, versions, date), the test and check summaries and every figure.
"""
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from fastswin import info


def test_summary(path: Path) -> dict:
    if not path.exists():
        return {"error": f"{path.name} missing"}
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    failed = [case.get("classname", "") + "::" + case.get("name", "")
              for case in suite.iter("testcase") if case.find("failure") is not None or case.find("error") is not None]
    return {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")} | {"failed": failed}


def check_summary(path: Path) -> dict:
    """`fastswin check`'s verdict: its summary line and every FAIL line."""
    if not path.exists():
        return {"error": f"{path.name} missing"}
    lines = path.read_text().splitlines()
    return {"summary": lines[-1] if lines else "", "failures": [line for line in lines if line.startswith("FAIL")]}


def pytest_benchmarks(path: Path) -> list:
    if not path.exists():
        return []
    return [{"name": b["name"], "median_s": b["stats"]["median"], "iqr_s": b["stats"]["iqr"],
             "rounds": b["stats"]["rounds"], **b["extra_info"]}
            for b in json.loads(path.read_text())["benchmarks"]]


def bench_rows(out: Path):
    """The rows of every `fastswin bench` results file under out, or None if there is none."""
    files = sorted(out.glob("bench*/results.json"))
    if not files:
        return None
    runs = [json.loads(f.read_text()) for f in files]
    return {**runs[0], "rows": [row for run in runs for row in run["rows"]]}


def log_tails(out: Path, lines: int = 40) -> dict:
    return {f.stem: f.read_text(errors="replace").splitlines()[-lines:] for f in sorted(out.glob("*.log"))}


def main(out: Path, dest: Path) -> None:
    steps = out / "steps.log"
    results = {
        "environment": info.environment(),
        "compiled": info.compiled_parts(),
        "tests": test_summary(out / "tests.xml"),
        "check": check_summary(out / "check.log"),
        "steps": steps.read_text().splitlines() if steps.exists() else [],
        "fastswin_bench": bench_rows(out),
        "pytest_benchmark": pytest_benchmarks(out / "pytest-benchmark.json"),
        "logs": log_tails(out),
    }
    dest.write_text(json.dumps(results, indent=2))
    print(f"wrote {dest}: tests {results['tests']}")


if __name__ == "__main__":
    work = Path(sys.argv[1])
    main(work, Path(sys.argv[2]) if len(sys.argv) > 2 else work / "gpu-validation.json")
