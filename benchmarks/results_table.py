"""Regenerate the README's table of GPU results from benchmarks/results/.

    python benchmarks/results_table.py           # rewrite README.md between the markers
    python benchmarks/results_table.py --print   # print the table only

Takes the newest gpu-validation.json per GPU name under benchmarks/results/.
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BEGIN, END = "<!-- results-table:begin -->", "<!-- results-table:end -->"


def latest_per_gpu() -> dict:
    latest = {}
    for path in RESULTS.glob("**/gpu-validation.json"):
        run = json.loads(path.read_text())
        env = run["environment"]
        if env["gpu"] and (env["gpu"] not in latest or env["date"] > latest[env["gpu"]]["environment"]["date"]):
            latest[env["gpu"]] = run
    return latest


def table() -> str:
    runs = latest_per_gpu()
    if not runs:
        return "No GPU results committed yet: run `benchmarks/gpu_validate.sh` on a GPU machine."
    lines = ["| GPU | op | case | mode | dtype | baseline | baseline ms | fastswin ms | speedup | % of copy bandwidth |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for gpu, run in sorted(runs.items()):
        env, bench = run["environment"], run["fastswin_bench"] or {"rows": []}
        notes.append(f"{gpu}: torch {env['torch']}, triton {env['triton']}, CUDA {env['torch_cuda']}, "
                     f"{env['date'][:10]}; tests: {run['tests'].get('tests')} run, "
                     f"{run['tests'].get('failures', 0) + run['tests'].get('errors', 0)} failed")
        for r in bench["rows"]:
            roof = f"{r['roofline']:.0%}" if r["roofline"] is not None else "-"
            lines.append(f"| {gpu} | {r['op']} | {r['case']} | {r['mode']} | {r['dtype']} | {r['baseline']} "
                         f"| {r['baseline_ms']:.3f} | {r['fastswin_ms']:.3f} | {r['speedup']:.2f}x | {roof} |")
    return "\n".join(lines + [""] + [f"- {n}" for n in notes])


def main(argv) -> None:
    text = table()
    if "--print" in argv:
        print(text)
        return
    readme = ROOT / "README.md"
    content = readme.read_text()
    head, rest = content.split(BEGIN)
    _, tail = rest.split(END)
    readme.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


if __name__ == "__main__":
    main(sys.argv[1:])
