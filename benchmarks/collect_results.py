"""Merge one GPU validation run into a single results file.

    python benchmarks/collect_results.py OUT_DIR

Reads OUT_DIR/tests.xml (pytest junit), OUT_DIR/check.log (`fastswin check` on
the GPU), OUT_DIR/pytest-benchmark.json and OUT_DIR/bench/results.json; writes
OUT_DIR/gpu-validation.json with the environment (GPU, versions, date), the test
and check summaries and every figure.
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


def main(out: Path) -> None:
    bench = out / "bench" / "results.json"
    results = {
        "environment": info.environment(),
        "compiled": info.compiled_parts(),
        "tests": test_summary(out / "tests.xml"),
        "check": check_summary(out / "check.log"),
        "fastswin_bench": json.loads(bench.read_text()) if bench.exists() else None,
        "pytest_benchmark": pytest_benchmarks(out / "pytest-benchmark.json"),
    }
    (out / "gpu-validation.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {out / 'gpu-validation.json'}: tests {results['tests']}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
