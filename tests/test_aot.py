"""fastswin.aot: window-attention kernels compile ahead of time, without a GPU, for
sm_80 and sm_90, without spills and on tensor cores.

Spills show as LOCAL or, with recent ptxas, as a STACK frame: both must be 0.
Compiles are cached by Triton (~/.triton/cache): about 30 s cold, seconds warm.
"""
import pytest
import torch

from helpers import long

from fastswin import aot
from fastswin.compile_report import KNOWN_SPILLS, LAYOUTS
from fastswin.ops.attention.aot_specs import kernel_specs

pytestmark = [long, pytest.mark.skipif(aot.cuda_tool("cuobjdump") is None,
                                      reason="cuobjdump is neither in the Triton wheel nor on PATH")]


ARCHS = (80, 90)
TOKENS = (49, 64, 144)   # Swin's 7x7, SwinV2's 8x8 and 12x12 windows
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
VARIANTS = {"v1": False, "v2": True}  # v2: the cosine kernels (COSINE on, dlogit_scale by atomics)


def test_attention_kernels_compile_without_spills_on_tensor_cores():
    """Every (arch, N, dtype, variant, layout), compiled in one batch (one test, so that
    pytest-xdist's workers do not each compile it): no spills but the known ones
    (compile_report.KNOWN_SPILLS, held to their bound), tensor cores, registers and shared
    memory within the GPU's limits. Every failing kernel is named."""
    keys = [(arch, n, name, variant, layout) for arch in ARCHS for n in TOKENS for name in DTYPES
            for variant in VARIANTS for layout in LAYOUTS]
    specs = {key: kernel_specs(key[1], 32, DTYPES[key[2]], cosine=VARIANTS[key[3]], arch=key[0], **LAYOUTS[key[4]])
             for key in keys}
    jobs = [aot.CompileJob(spec.fn, spec.signature, spec.constexprs, key[0], aligned=spec.aligned, **spec.launch)
            for key in keys for spec in specs[key]]
    reports = iter(aot.compile_kernels(jobs))
    failures = []
    for key in keys:
        arch, n, _, _, layout = key
        known = KNOWN_SPILLS.get((layout, arch, n), 0)
        for report in (next(reports) for _ in specs[key]):
            problems = [text for text, bad in (
                ("another arch", report.arch != arch), ("registers", not 0 < report.registers <= 255),
                ("spills", report.local > 0 or report.stack > known), ("no tensor cores", not report.tensor_cores),
                ("shared memory", report.shared > 227 * 1024)) if bad]
            if problems:
                failures.append(f"{key} {report.name}: {', '.join(problems)}: {report}")
    assert not failures, "\n".join(failures)


def test_cosine_specs_differ_from_v1_only_by_the_switch():
    v1 = kernel_specs(64, 32, torch.float16)
    v2 = kernel_specs(64, 32, torch.float16, cosine=True)
    for a, b in zip(v1, v2):
        assert a.fn is b.fn and a.launch == b.launch
        assert a.constexprs["COSINE"] is False and b.constexprs["COSINE"] is True
        assert b.signature["LOGIT_SCALE"] == "*fp32"
    assert v2[1].constexprs["SCALE_GRAD"] and v2[1].signature["DLOGIT_SCALE"] == "*fp32"


def test_signature_types_every_argument():
    fwd = kernel_specs(49, 32, torch.bfloat16)[0]
    sig = fwd.signature
    assert list(sig) == fwd.fn.arg_names
    assert sig["Q"] == "*bf16" and sig["LSE"] == "*fp32"
    assert sig["scale"] == "fp32" and sig["heads"] == "i32"
    assert sig["N_CTX"] == "constexpr" and fwd.constexprs["N_CTX"] == 49


def test_resource_usage_parses_cuobjdump(monkeypatch):
    text = ("\nResource usage:\n Common:\n  GLOBAL:0\n Function k:\n"
            "  REG:96 STACK:0 SHARED:0 LOCAL:8 CONSTANT[0]:632 TEXTURE:0 SURFACE:0 SAMPLER:0\n")
    monkeypatch.setattr(aot, "_cuobjdump", lambda cubin, *flags: text)
    usage = aot.resource_usage(b"")
    assert usage["REG"] == 96 and usage["LOCAL"] == 8 and usage["STACK"] == 0
