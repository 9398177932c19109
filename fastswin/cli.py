"""The `fastswin` command (also `python -m fastswin`).

  fastswin info                 versions, devices, compiled parts, backends
  fastswin bench [--quick|--full] op and model benchmarks against eager PyTorch, SDPA, FlexAttention,
                                torch.compile, timm
  fastswin bench --host         host time of the fused calls and of a patched Swin-T step (no GPU needed)
  fastswin check                correctness self-test of every backend; non-zero exit on a mismatch
  fastswin profile --out DIR    torch.profiler run of a patched model; top kernels and a trace
  fastswin compile-report       per-kernel resources for sm_80/sm_90 without a GPU; non-zero exit on spills
"""
import argparse
import sys
import time
from pathlib import Path

import torch

from fastswin import benchmark, info
from fastswin.optional import MissingDependency

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def dtype_list(text: str):
    """--dtype: one or more of DTYPES, comma-separated."""
    names = text.split(",")
    unknown = [name for name in names if name not in DTYPES]
    if unknown:
        raise argparse.ArgumentTypeError(f"takes {', '.join(DTYPES)} (comma-separated), got {text!r}")
    return [DTYPES[name] for name in dict.fromkeys(names)]


def _dtype_names(dtypes) -> str:
    return ", ".join(benchmark.dtype_name(dtype) for dtype in dtypes)


def cmd_info(args) -> int:
    print(info.report())
    return 0


def cmd_check(args) -> int:
    from fastswin import selfcheck

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    results = selfcheck.run_checks(device)
    dtypes = list(dict.fromkeys(r.dtype for r in results))
    print(f"fastswin check on {device}: every backend against the reference, forward and backward")
    print(f"{'op':26} {'backend':10} " + " ".join(f"{d:9}" for d in dtypes))
    by_pair = {}
    for r in results:
        by_pair.setdefault((r.op, r.backend), []).append(r)
    for (op, backend), group in by_pair.items():
        if all(r.status == "skipped" for r in group):
            print(f"{op:26} {backend:10} skipped: {group[0].detail}")
        else:
            print(f"{op:26} {backend:10} " + " ".join(f"{r.status:9}" for r in group))
    failures = [r for r in results if r.status == "FAIL"]
    for r in failures:
        print(f"FAIL {r.op} backend={r.backend} dtype={r.dtype}: {r.detail}")
    print(f"{sum(r.status == 'ok' for r in results)} ok, {len(failures)} failed, "
          f"{sum(r.status == 'skipped' for r in results)} skipped")
    return 1 if failures else 0


def cmd_compile_report(args) -> int:
    from fastswin import compile_report

    archs = compile_report.parse_archs(args.arch)
    rows = compile_report.extension_rows(archs) + compile_report.triton_rows(archs,
                                                                             compile_report.report_cases(args.quick))
    print(compile_report.format_rows(rows))
    spilled = [r for r in rows if r.new_spill]
    known = [r for r in rows if r.spills and not r.new_spill]
    missing_tc = [r for r in rows if r.tensor_cores is False]
    for r in spilled:
        print(f"SPILL {r.kernel} [{r.config}] sm_{r.arch}: local {r.local} B, stack {r.stack} B")
    for r in known:
        print(f"known spill {r.kernel} [{r.config}] sm_{r.arch}: stack {r.stack} B (bound {r.known_spill} B)")
    for r in missing_tc:
        print(f"NO TENSOR CORES {r.kernel} [{r.config}] sm_{r.arch}")
    print(f"{len(rows)} kernels, {len(spilled)} spilling, {len(known)} known spills, "
          f"{len(missing_tc)} without tensor-core instructions")
    return 1 if spilled or missing_tc else 0


def cmd_profile(args) -> int:
    from fastswin import profile

    rows, shares, trace = profile.run_profile(args.model, args.batch, args.steps, args.mode, Path(args.out),
                                              nvtx=args.nvtx, img_size=args.img_size, patch=not args.no_patch,
                                              backend=args.backend)
    print(profile.format_report(rows, shares))
    print(f"wrote {trace}")
    return 0


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _format_table(rows) -> str:
    header = (f"{'op':24} {'case':32} {'mode':8} {'dtype':13} {'baseline':9} {'base ms':>9} {'fastswin':>9} "
              f"{'speedup':>8} {'TFLOP/s':>8} {'GB/s':>8} {'roofline':>8} {'img/s':>8}")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r.op[:24]:24} {r.case[:32]:32} {r.mode:8} {r.dtype[:13]:13} {r.baseline:9} "
                     f"{r.baseline_ms:9.3f} {r.fastswin_ms:9.3f} {r.speedup:7.2f}x {_fmt(r.tflops, '8.2f'):>8} "
                     f"{_fmt(r.gbps, '8.1f'):>8} {_fmt(r.roofline, '8.0%'):>8} {_fmt(r.images_per_s, '8.1f'):>8}")
    return "\n".join(lines)


def cmd_bench_host(args) -> int:
    from fastswin import bench_host

    print("fastswin bench --host: host time per call, kernels stubbed (Triton's launch path on a stand-in "
          "driver; see fastswin/bench_host.py)", flush=True)
    print(bench_host.format_rows(bench_host.run(models=not args.quick)))
    return 0


def cmd_bench(args) -> int:
    if args.host:
        return cmd_bench_host(args)
    from fastswin import bench_run
    from fastswin.bench_plan import make_plan

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    size = "quick" if args.quick else "full" if args.full else "default"
    plan = make_plan(device, size, dtypes=args.dtype, batch=args.batch,
                     stages=args.stages.split(",") if args.stages else None,
                     models=args.model.split(",") if args.model else None, mode=args.mode)
    # --model asks for the model benchmark alone unless --only says otherwise.
    sections = args.only.split(",") if args.only else ["models"] if args.model else bench_run.SECTIONS
    unknown = set(sections) - set(bench_run.SECTIONS)
    if unknown:
        raise SystemExit(f"fastswin bench: --only takes {', '.join(bench_run.SECTIONS)}; "
                         f"got {', '.join(sorted(unknown))}")
    bandwidth = benchmark.copy_bandwidth(device, megabytes=64 if size == "quick" else 256)
    env = info.environment()
    cases = bench_run.plan_cases(plan, device, bandwidth, sections)
    print(f"fastswin bench ({size}) on {env['gpu'] or 'CPU'}: {len(cases)} cases, ops in "
          f"{_dtype_names(plan.dtypes)}, copy bandwidth {bandwidth:.1f} GB/s", flush=True)
    out = Path(args.out) if args.out else None
    start = time.perf_counter()
    rows = bench_run.run_cases(cases, out, env, device, bandwidth, bar=not args.no_progress)
    print(_format_table(rows))
    print(f"fastswin against the fastest baseline of each case (geometric mean; {time.perf_counter() - start:.0f} s "
          f"in all):")
    print("\n".join(bench_run.best_baseline_lines(rows)))
    if out:
        results = bench_run.write_results(out, rows, env, device, bandwidth)
        bench_run.write_plots(out, results, env, _dtype_names(plan.dtypes))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastswin", description="Fused Swin Transformer kernels")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, devices, compiled parts and backends").set_defaults(run=cmd_info)
    bench = sub.add_parser("bench", help="op micro-benchmarks on the present device")
    size = bench.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="one shape per op and one model, few repeats (seconds)")
    size.add_argument("--full", action="store_true", help="every stage, model and dtype, the compiled baselines "
                                                          "everywhere (tens of minutes)")
    bench.add_argument("--batch", type=int, help="batch size of ops and models (default: chosen for the device)")
    bench.add_argument("--dtype", type=dtype_list, help="op dtype(s), comma-separated: fp32, fp16, bf16 "
                                                        "(default bf16 on CUDA, fp16,bf16 with --quick and --full; "
                                                        "fp32 on CPU)")
    bench.add_argument("--model", help="timm model name(s), comma-separated: benchmark only these models")
    bench.add_argument("--mode", choices=("infer", "train"), help="model benchmark mode (default both)")
    bench.add_argument("--stages", help="attention stages to run, comma-separated model.sN names, e.g. "
                                        "swin_t.s1,swinv2_t_w16.s1 (default: chosen for the device)")
    bench.add_argument("--only", help="sections to run, comma-separated: process, attention, image, models")
    bench.add_argument("--out", help="directory for results.json, speedup.png and throughput.png")
    bench.add_argument("--no-progress", action="store_true", help="a line per case instead of a progress bar")
    bench.add_argument("--host", action="store_true", help="host time of each call with the kernels stubbed: "
                                                           "Triton's launch path on a stand-in driver, no GPU needed "
                                                           "(--quick: the ops only)")
    bench.set_defaults(run=cmd_bench)
    check = sub.add_parser("check", help="correctness self-test of every backend against the reference")
    check.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    check.set_defaults(run=cmd_check)
    prof = sub.add_parser("profile", help="torch.profiler run of a patched timm Swin model")
    prof.add_argument("--model", default="swin_tiny_patch4_window7_224", help="a timm Swin model name")
    prof.add_argument("--batch", type=int, default=8)
    prof.add_argument("--steps", type=int, default=3)
    prof.add_argument("--mode", choices=("train", "infer"), default="train")
    prof.add_argument("--img-size", type=int, help="input size (default: the model's)")
    prof.add_argument("--nvtx", action="store_true", help="NVTX ranges around every op, fastswin's included")
    prof.add_argument("--no-patch", action="store_true", help="profile the unpatched model")
    prof.add_argument("--backend", help="fastswin backend for the patched model")
    prof.add_argument("--out", required=True, help="directory for trace.json")
    prof.set_defaults(run=cmd_profile)
    report = sub.add_parser("compile-report", help="per-kernel registers, shared memory, spills, tensor cores "
                                                   "(compiled ahead of time, no GPU needed)")
    report.add_argument("--arch", default="sm_80,sm_90", help="target architectures (default sm_80,sm_90)")
    report.add_argument("--quick", action="store_true", help="only the N=49 attention shape")
    report.set_defaults(run=cmd_compile_report)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except MissingDependency as missing:
        print(f"fastswin {args.command}: {missing}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
