"""The layers of ARCHITECTURE.md hold: every fastswin module imports (at module level
or inside a function) only modules of its own layer or below, and the Triton kernel
modules import nothing of fastswin but each other and ops._triton."""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "fastswin"

# Module-name prefixes, most specific first match wins: (prefix, layer).
KERNELS = ("fastswin.ops.attention." + name for name in
           ("tiles", "image_index", "cosine", "tokens", "scores", "sums", "forward_kernel",
            "backward_kernel", "query_grad_kernel"))
LAYERS = [
    *((name, 0) for name in ("fastswin.reference", "fastswin.backends", "fastswin._extension", "fastswin._C",
                             "fastswin.aot", "fastswin.ops._triton", "fastswin.ops.arguments",
                             "fastswin.optional")),
    *((name, 1) for name in KERNELS),
    *((name, 2) for name in ("fastswin.ops.attention.policy", "fastswin.ops.attention.launch",
                             "fastswin.ops.attention.aot_specs", "fastswin.ops.attention.maps",
                             "fastswin.ops.launcher")),
    *((name, 3) for name in ("fastswin.ops.attention.custom_ops", "fastswin.ops.attention.cpu_ops",
                             "fastswin.ops.attention.eager", "fastswin.ops.window_process")),
    ("fastswin.ops.attention.checks", 4), ("fastswin.ops.attention.functions", 4), ("fastswin.ops.attention", 4),
    ("fastswin.ops", 4),
    ("fastswin.nn", 5),
    ("fastswin.models", 6), ("fastswin.integrations", 6),
    *((name, 7) for name in ("fastswin.cli", "fastswin.__main__", "fastswin.benchmark", "fastswin.bench_baselines",
                             "fastswin.bench_plan", "fastswin.bench_run", "fastswin.selfcheck", "fastswin.profile",
                             "fastswin.info", "fastswin.plots", "fastswin.compile_report",
                             "fastswin.bench_host", "fastswin.stand_in_driver")),
    ("fastswin", 7),  # the package itself: its top-level API, for the tools
]


def layer(module: str) -> int:
    for prefix, number in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return number
    raise KeyError(f"{module} is in no layer of tests/test_architecture.py (add it, and to ARCHITECTURE.md)")


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def fastswin_imports(path: pathlib.Path):
    """(line, module) of every import of a fastswin module in the file; `from fastswin
    import x` counts as importing fastswin.x."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module + "." + alias.name if node.module == "fastswin" else node.module
                     for alias in node.names]
        else:
            continue
        yield from ((node.lineno, name) for name in names if name.split(".")[0] == "fastswin")


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_only_its_layer_or_below(path):
    importer = module_name(path)
    for line, imported in fastswin_imports(path):
        assert layer(imported) <= layer(importer), (
            f"{importer} (layer {layer(importer)}) imports {imported} (layer {layer(imported)}) at line {line}")
        if layer(importer) == 1:
            assert layer(imported) == 1 or imported == "fastswin.ops._triton", (
                f"kernel module {importer} imports {imported} at line {line}")


def test_layer_check_can_fail(tmp_path):
    """The check sees a kernel that reaches up into the launchers."""
    bad = tmp_path / "fastswin" / "ops" / "attention" / "tiles.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("def f():\n    from fastswin.ops.attention.launch import bshd_empty\n")
    imports = list(fastswin_imports(bad))
    assert imports == [(2, "fastswin.ops.attention.launch")]
    assert layer(imports[0][1]) > layer("fastswin.ops.attention.tiles")


def test_no_module_is_shadowed_by_a_function():
    """`fastswin.ops.<name>` is never both a module and a re-exported function."""
    import fastswin.ops as ops

    modules = {p.stem for p in (PACKAGE / "ops").iterdir() if p.suffix == ".py" or p.is_dir()}
    assert not modules & set(ops.__all__)
