"""Ahead-of-time compilation of Triton kernels, without a GPU, and what the result costs.

`compile_kernel` compiles one `@triton.jit` kernel for one NVIDIA architecture
and reads the cubin back with the `cuobjdump` that ships in the Triton wheel:
registers, shared memory, local memory and stack frame (either > 0 means
register spills: recent ptxas reports spill space as STACK) and whether
tensor-core instructions were emitted. It backs `fastswin compile-report`.

Works with Triton 3.6 and 3.8: both take a signature {arg name: type} that
names constexpr arguments "constexpr", with their values in `constexprs`.

`compile_kernels` compiles a batch in child processes, one per core, each on every
n-th job (ptxas and cuobjdump run one thread each): a child is started without the
interpreter and imports the kernels by module and name (`python -m fastswin.aot`
reads its jobs pickled on stdin). So under TRITON_INTERPRET=1 (the test suite
without a GPU), where `@triton.jit` makes interpreter functions that cannot be
compiled, even one job runs in a child.
"""
import importlib
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import triton

# Tensor-core (matrix multiply-accumulate) SASS opcodes: HMMA (fp16/bf16/tf32 on
# sm_80+), HGMMA (sm_90 warpgroup MMA), IMMA (int8), DMMA (fp64).
TENSOR_CORE_OPCODES = ("HGMMA", "HMMA", "IMMA", "DMMA")


@dataclass(frozen=True)
class KernelReport:
    """Resources of one compiled kernel; shared memory in bytes (static + Triton's dynamic)."""
    name: str
    arch: int
    num_warps: int
    num_stages: int
    registers: int
    shared: int
    local: int
    stack: int
    tensor_core_ops: Tuple[str, ...]

    @property
    def spills(self) -> bool:
        """ptxas spills to the stack frame (STACK) or to local memory (LOCAL)."""
        return self.local > 0 or self.stack > 0

    @property
    def tensor_cores(self) -> bool:
        return bool(self.tensor_core_ops)


def signature(fn, pointers: Mapping[str, str], constexprs: Mapping[str, object],
              floats: Iterable[str] = ()) -> Dict[str, str]:
    """A signature for `fn`: pointers {name: "*fp16", ...}, float scalars "fp32", the
    constexprs "constexpr", every other argument an "i32" scalar (as the JIT types
    strides and sizes below 2**31)."""
    floats = set(floats)
    types = {}
    for name in fn.arg_names:
        if name in constexprs:
            types[name] = "constexpr"
        elif name in pointers:
            types[name] = pointers[name]
        else:
            types[name] = "fp32" if name in floats else "i32"
    return types


def cuda_tool(name: str) -> Optional[str]:
    """Path of a CUDA binary tool: the one shipped with Triton, else one on PATH."""
    shipped = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    return shipped if os.access(shipped, os.X_OK) else shutil.which(name)


@dataclass(frozen=True)
class CompileJob:
    """One kernel to compile: `fn` specialised by `signature` and `constexprs` for sm_<arch>.

    aligned: arguments to treat as divisible by 16 (pointers and strides), as the
    JIT does at run time for 16-byte aligned tensors and strides; without it loads
    are not vectorized and the report is pessimistic. maxnreg: the register budget
    given to ptxas (None: its own).
    """
    fn: object
    signature: Mapping[str, str]
    constexprs: Mapping[str, object]
    arch: int = 90
    num_warps: int = 4
    num_stages: int = 2
    aligned: Tuple[str, ...] = ()
    maxnreg: Optional[int] = None


def compile_kernel(fn, signature: Mapping[str, str], constexprs: Mapping[str, object], arch: int = 90,
                   num_warps: int = 4, num_stages: int = 2, aligned: Iterable[str] = (),
                   maxnreg: Optional[int] = None) -> KernelReport:
    """Compile one kernel for sm_<arch> and report its resources (see CompileJob)."""
    return compile_kernels([CompileJob(fn, signature, constexprs, arch, num_warps, num_stages, tuple(aligned),
                                       maxnreg)])[0]


def compile_kernels(jobs: Sequence[CompileJob], processes: Optional[int] = None) -> List[KernelReport]:
    """Compile every job and report its resources, in order; in `processes` children
    (default: one per core, at most one per job), or here for one compilable job."""
    processes = processes or max(1, min(len(jobs), os.cpu_count() or 1))
    if processes == 1 and all(isinstance(job.fn, triton.runtime.JITFunction) for job in jobs):
        return [_compile(job) for job in jobs]
    shares = [jobs[i::processes] for i in range(processes)]
    with ThreadPoolExecutor(processes) as pool:
        reports = list(pool.map(_compile_in_child, shares))
    return [reports[i % processes][i // processes] for i in range(len(jobs))]


def _compile(job: CompileJob) -> KernelReport:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    attrs = {(job.fn.arg_names.index(name),): [["tt.divisibility", 16]] for name in job.aligned}
    source = ASTSource(fn=job.fn, signature=dict(job.signature), constexprs=dict(job.constexprs), attrs=attrs)
    compiled = triton.compile(source, target=GPUTarget("cuda", job.arch, 32),
                              options={"num_warps": job.num_warps, "num_stages": job.num_stages,
                                       **({"maxnreg": job.maxnreg} if job.maxnreg else {})})
    cubin = compiled.asm["cubin"]
    usage = resource_usage(cubin)
    return KernelReport(name=compiled.metadata.name, arch=job.arch, num_warps=job.num_warps,
                        num_stages=job.num_stages, registers=usage["REG"],
                        shared=usage["SHARED"] + compiled.metadata.shared, local=usage["LOCAL"],
                        stack=usage.get("STACK", 0), tensor_core_ops=tensor_core_opcodes(cubin))


def _compile_in_child(jobs: Sequence[CompileJob]) -> List[KernelReport]:
    named = [(job.fn.fn.__module__, job.fn.fn.__qualname__,
              {key: value for key, value in vars(job).items() if key != "fn"}) for job in jobs]
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-m", "fastswin.aot"], input=pickle.dumps(named), env=env,
                          capture_output=True)
    if done.returncode:
        raise RuntimeError(f"compiling in a child process failed:\n{done.stderr.decode(errors='replace')}")
    return pickle.loads(done.stdout)


def _compile_named(named) -> List[KernelReport]:
    return [_compile(CompileJob(getattr(importlib.import_module(module), name), **fields))
            for module, name, fields in named]


def _cuobjdump(cubin: bytes, *flags: str) -> str:
    tool = cuda_tool("cuobjdump")
    if tool is None:
        raise FileNotFoundError("cuobjdump not found (neither in the Triton wheel nor on PATH)")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([tool, *flags, f.name], check=True, capture_output=True, text=True).stdout


def resource_usage(cubin: bytes) -> Dict[str, int]:
    """REG, SHARED (static), LOCAL, STACK... of the (single) kernel in a cubin."""
    text = _cuobjdump(cubin, "--dump-resource-usage")
    match = re.search(r"REG:\d+.*", text)
    if match is None:
        raise RuntimeError(f"no resource usage in cuobjdump's output:\n{text}")
    return {key: int(value) for key, value in re.findall(r"(\w+):(\d+)", match.group(0))}


def tensor_core_opcodes(cubin: bytes) -> Tuple[str, ...]:
    """Tensor-core opcodes (TENSOR_CORE_OPCODES) found in the cubin's SASS, sorted."""
    sass = _cuobjdump(cubin, "-sass")
    found = set(re.findall(r"\b(" + "|".join(TENSOR_CORE_OPCODES) + r")\b", sass))
    return tuple(sorted(found))


if __name__ == "__main__":
    # Reports must pickle as fastswin.aot.KernelReport, not __main__.KernelReport.
    from fastswin import aot

    sys.stdout.buffer.write(pickle.dumps(aot._compile_named(pickle.loads(sys.stdin.buffer.read()))))
