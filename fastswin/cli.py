"""The `fastswin` command (also `python -m fastswin`).

  fastswin info                 versions, devices, compiled parts, backends
  fastswin bench [--quick] ...  op and model benchmarks against eager PyTorch, SDPA, FlexAttention,
                                torch.compile, timm
  fastswin check                correctness self-test of every backend; non-zero exit on a mismatch
  fastswin profile --out DIR    torch.profiler run of a patched model; top kernels and a trace
  fastswin compile-report       per-kernel resources for sm_80/sm_90 without a GPU; non-zero exit on spills
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

from fastswin import benchmark, info

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def dtype_list(text: str):
    """--dtype: one or more of DTYPES, comma-separated."""
    names = text.split(",")
    unknown = [name for name in names if name not in DTYPES]
    if unknown:
        raise argparse.ArgumentTypeError(f"takes {', '.join(DTYPES)} (comma-separated), got {text!r}")
    return [DTYPES[name] for name in dict.fromkeys(names)]


def _dtype_names(dtypes) -> str:
    return ", ".join(str(dtype).replace("torch.", "") for dtype in dtypes)


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
    shapes = compile_report.SWIN_ATTENTION_SHAPES[:1] if args.quick else compile_report.SWIN_ATTENTION_SHAPES
    rows = compile_report.extension_rows(archs) + compile_report.triton_rows(archs, shapes)
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


def _per_dtype(key: str, title: str, rows_of, dtypes):
    """An op section a dtype, so that each is written out as soon as it is measured."""
    return [(key, f"{title}, {_dtype_names([dtype])}", lambda dtype=dtype: rows_of(dtype)) for dtype in dtypes]


def _stages(stages, args):
    """The attention stages asked for: --stages by name (model.sN), else the first with
    --quick, else all."""
    if args.stages:
        wanted = set(args.stages.split(","))
        return [stage for stage in stages if f"{stage[0]}.s{stage[1]}" in wanted]
    return stages[:1] if args.quick else stages


def _bench_sections(args, device: torch.device, dtypes, bandwidth: float):
    """(title, thunk returning rows) for each part of the benchmark; the op sections once
    for every dtype of `dtypes`."""
    cuda = device.type == "cuda"
    batch = args.batch or (128 if cuda else 4 if args.quick else 32)
    repeats = 5 if args.quick else 20
    process_stages = benchmark.SWIN_STAGES[:1] if args.quick else benchmark.SWIN_STAGES
    attention_stages = _stages(benchmark.ATTENTION_STAGES, args)
    image_stages = _stages(benchmark.IMAGE_STAGES, args)
    if args.model:
        models = [(name, {}) for name in args.model.split(",")]
    else:
        models = [(name, {}) for name in benchmark.MODELS_GPU[:1 if args.quick else None]] if cuda \
            else [benchmark.TINY_MODEL]
    model_batch = args.batch or (128 if cuda else 2)
    modes = [args.mode] if args.mode else ["infer", "train"]
    with_compile = cuda and not args.quick
    sections = [
        *_per_dtype("process", f"window partition / reverse, batch {batch}", lambda dtype: benchmark.window_process_rows(
            device, dtype, batch, bandwidth, process_stages, repeats), dtypes),
        *_per_dtype("attention", f"window attention, batch {batch}", lambda dtype: benchmark.window_attention_rows(
            device, dtype, batch, bandwidth, attention_stages, repeats, with_compile=with_compile), dtypes),
        *_per_dtype("image", f"shifted-window attention (image layout), batch {batch}",
                    lambda dtype: benchmark.shifted_window_attention_rows(
                        device, dtype, batch, bandwidth, image_stages, repeats, with_compile=with_compile), dtypes),
        ("models", f"models, batch {model_batch}",
         lambda: benchmark.model_rows(device, models, model_batch, modes, repeats=3 if args.quick else 10)),
    ]
    # --model asks for the model benchmark alone unless --only says otherwise.
    keys = list(dict.fromkeys(key for key, _, _ in sections))
    only = args.only.split(",") if args.only else ["models"] if args.model else keys
    unknown = set(only) - set(keys)
    if unknown:
        raise SystemExit(f"fastswin bench: --only takes {', '.join(keys)}; "
                         f"got {', '.join(sorted(unknown))}")
    return [(title, run) for key, title, run in sections if key in only]


def cmd_bench(args) -> int:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtypes = args.dtype or ([torch.float16, torch.bfloat16] if device.type == "cuda" else [torch.float32])
    bandwidth = benchmark.copy_bandwidth(device, megabytes=64 if args.quick else 256)
    env = info.environment()
    print(f"fastswin bench on {env['gpu'] or 'CPU'}: ops in {_dtype_names(dtypes)}, "
          f"copy bandwidth {bandwidth:.1f} GB/s", flush=True)
    rows = []
    sections = _bench_sections(args, device, dtypes, bandwidth)
    for i, (title, run) in enumerate(sections, 1):
        start = time.perf_counter()
        print(f"[{i}/{len(sections)}] {title} ...", end="", flush=True)
        rows += run()
        print(f" {time.perf_counter() - start:.1f} s", flush=True)
        if args.out:  # after every section, so that a run cut short keeps what it measured
            results = _write_bench_results(Path(args.out), rows, env, device, bandwidth)
    print(_format_table(rows))
    if args.out:
        try:
            _write_bench_plots(Path(args.out), results, env, _dtype_names(dtypes))
        except ModuleNotFoundError as error:
            if error.name != "matplotlib":
                raise
            print(f"no plots: they need matplotlib (pip install matplotlib); every figure is in "
                  f"{Path(args.out) / 'results.json'}")
    return 0


def _write_bench_results(out: Path, rows, env, device: torch.device, bandwidth: float) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    results = {"environment": env, "compiled": info.compiled_parts(), "device": device.type,
               "copy_bandwidth_gbps": bandwidth, "rows": [r.as_dict() for r in rows]}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return results


def _write_bench_plots(out: Path, results: dict, env, dtype: str) -> None:
    from fastswin.plots import speedup_plot, throughput_plot

    title = f"fastswin {env['fastswin']} on {env['gpu'] or 'CPU'}, torch {env['torch']}, {dtype}"
    written = [out / "results.json"]
    op_rows = [r for r in results["rows"] if r["op"] != "model"]
    model_rows = [r for r in results["rows"] if r["op"] == "model"]
    if op_rows:
        written.append(speedup_plot(op_rows, out / "speedup.png", title))
    if model_rows:
        written.append(throughput_plot(model_rows, out / "throughput.png", title))
    print("wrote " + ", ".join(str(p) for p in written))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastswin", description="Fused Swin Transformer kernels")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, devices, compiled parts and backends").set_defaults(run=cmd_info)
    bench = sub.add_parser("bench", help="op micro-benchmarks on the present device")
    bench.add_argument("--quick", action="store_true", help="one shape per op and one model, few repeats")
    bench.add_argument("--batch", type=int, help="batch size (default 128 on CUDA; 32 for ops, 2 for models on CPU)")
    bench.add_argument("--dtype", type=dtype_list, help="op dtype(s), comma-separated: fp32, fp16, bf16 "
                                                        "(default fp16,bf16 on CUDA, fp32 on CPU)")
    bench.add_argument("--model", help="timm model name(s), comma-separated: benchmark only these models")
    bench.add_argument("--mode", choices=("infer", "train"), help="model benchmark mode (default both)")
    bench.add_argument("--stages", help="attention stages to run, comma-separated model.sN names, e.g. "
                                        "swin_t.s1,swinv2_t_w16.s1 (default all; the first with --quick)")
    bench.add_argument("--only", help="sections to run, comma-separated: process, attention, image, models")
    bench.add_argument("--out", help="directory for results.json, speedup.png and throughput.png")
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
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
