"""A `fastswin bench` run: the plan's cases one by one with a progress bar, results.json
rewritten after every case (a run cut short keeps what it measured), then the table,
the plots and one line per op with fastswin's ratio against the best baseline."""
import json
import math
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

import torch

from fastswin import benchmark, info
from fastswin.bench_plan import BenchPlan, stage_name
from fastswin.optional import MissingDependency, require

SECTIONS = ("process", "attention", "image", "models")


@dataclass
class Case:
    section: str                     # one of SECTIONS
    label: str                       # shown in the progress bar
    run: Callable[[], list]          # returns benchmark.Row's


def plan_cases(plan: BenchPlan, device: torch.device, bandwidth: float, sections=SECTIONS) -> List[Case]:
    """The plan as cases, the unit of progress: one stage of one op in one dtype, or one
    model in one mode."""
    cases = []
    for dtype in plan.dtypes:
        name = benchmark.dtype_name(dtype)
        for stage in plan.process_stages:
            cases.append(Case("process", f"partition/reverse {stage[0]}.s{stage[1] + 1} {name}",
                              lambda d=dtype, s=stage: benchmark.window_process_rows(
                                  device, d, plan.batch, bandwidth, [s], plan.repeats)))
        for stage in plan.attention_stages:
            cases.append(Case("attention", f"window attention {stage_name(stage)} {name}",
                              lambda d=dtype, s=stage: benchmark.window_attention_rows(
                                  device, d, plan.batch, bandwidth, [s], plan.repeats,
                                  with_compile=stage_name(s) in plan.compile_stages)))
        for stage in plan.image_stages:
            cases.append(Case("image", f"shifted-window attention {stage_name(stage)} {name}",
                              lambda d=dtype, s=stage: benchmark.shifted_window_attention_rows(
                                  device, d, plan.batch, bandwidth, [s], plan.repeats,
                                  with_compile=stage_name(s) in plan.compile_stages)))
    for model in plan.models:
        for mode in plan.modes:
            cases.append(Case("models", f"model {model[0]} {mode}",
                              lambda m=model, mo=mode: benchmark.model_rows(
                                  device, [m], plan.model_batch, [mo], plan.model_repeats)))
    return [case for case in cases if case.section in sections]


class _Lines:
    """Progress without tqdm: a line per case."""

    def __init__(self, total: int):
        self.total, self.done = total, 0

    def start(self, label: str) -> None:
        print(f"[{self.done + 1}/{self.total}] {label} ...", end="", flush=True)
        self.started = time.perf_counter()

    def finish(self) -> None:
        self.done += 1
        print(f" {time.perf_counter() - self.started:.1f} s", flush=True)

    def close(self) -> None:
        pass


class _Bar:
    """A tqdm bar: the case being measured, cases done, time left at the pace so far."""

    def __init__(self, total: int, tqdm):
        self.bar = tqdm(total=total, unit="case", file=sys.stderr, dynamic_ncols=True,
                        bar_format="{l_bar}{bar}| {n}/{total} cases [{elapsed}<{remaining}]")

    def start(self, label: str) -> None:
        self.bar.set_description(label)

    def finish(self) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _progress(total: int, bar: bool):
    if bar:
        try:
            return _Bar(total, require("tqdm", "the progress bar").tqdm)
        except MissingDependency as missing:
            print(f"no progress bar: {missing}")
    return _Lines(total)


def run_cases(cases: List[Case], out: Optional[Path], env: dict, device: torch.device, bandwidth: float,
              bar: bool = True) -> list:
    """Measure every case; a case that needs a missing optional dependency is skipped with
    one line saying which extra brings it."""
    rows, skipped = [], set()
    progress = _progress(len(cases), bar)
    for case in cases:
        progress.start(case.label)
        try:
            rows += case.run()
        except MissingDependency as missing:
            skipped.add(f"{case.section} skipped: {missing}")
        progress.finish()
        if out:
            write_results(out, rows, env, device, bandwidth)
    progress.close()
    for line in sorted(skipped):
        print(line)
    return rows


def write_results(out: Path, rows, env, device: torch.device, bandwidth: float) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    results = {"environment": env, "compiled": info.compiled_parts(), "device": device.type,
               "copy_bandwidth_gbps": bandwidth, "rows": [r.as_dict() for r in rows]}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return results


def best_baseline_lines(rows) -> List[str]:
    """Per op and mode: fastswin's time against the fastest baseline of each case, as a
    geometric mean over the cases (>1: fastswin is faster than every baseline measured)."""
    best = defaultdict(dict)   # (op, mode) -> case -> (ratio, baseline)
    for r in rows:
        key, case, ratio = (r.op, r.mode), (r.case, r.dtype), r.baseline_ms / r.fastswin_ms
        if case not in best[key] or ratio < best[key][case][0]:
            best[key][case] = (ratio, r.baseline)
    by_op = defaultdict(list)
    for (op, mode), cases in best.items():
        ratios = [ratio for ratio, _ in cases.values()]
        geomean = math.exp(sum(map(math.log, ratios)) / len(ratios))
        names = ", ".join(sorted({name for _, name in cases.values()}))
        by_op[op].append(f"{mode} {geomean:.2f}x (best: {names})")
    width = max(map(len, by_op), default=0)
    return [f"  {op:{width}}  " + "; ".join(parts) for op, parts in by_op.items()]


def write_plots(out: Path, results: dict, env, dtypes: str) -> None:
    from fastswin.plots import speedup_plot, throughput_plot

    title = f"fastswin {env['fastswin']} on {env['gpu'] or 'CPU'}, torch {env['torch']}, {dtypes}"
    written = [out / "results.json"]
    op_rows = [r for r in results["rows"] if r["op"] != "model"]
    model_rows = [r for r in results["rows"] if r["op"] == "model"]
    try:
        if op_rows:
            written.append(speedup_plot(op_rows, out / "speedup.png", title))
        if model_rows:
            written.append(throughput_plot(model_rows, out / "throughput.png", title))
    except MissingDependency as missing:
        print(f"no plots: {missing}")
    print("wrote " + ", ".join(str(p) for p in written))
