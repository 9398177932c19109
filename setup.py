"""The build of fastswin's one extension, fastswin._C (the metadata is in pyproject.toml).

Build against the torch it will run with: install torch, then
`pip install --no-build-isolation .`.

Environment switches:
  FASTSWIN_CUDA=auto|1|0        build the CUDA sources when possible (auto, default),
                                always (1: fail if CUDA is missing) or never (0).
  FASTSWIN_CUDA_ARCHS="8.0;9.0" target architectures (TORCH_CUDA_ARCH_LIST wins if set).
  FASTSWIN_REQUIRE_EXTENSION=1  fail the install when the extension does not build. By
                                default a failed build warns, leaves the reason in
                                fastswin/_C_build_error.txt (`import fastswin` and
                                `fastswin info` report it) and installs a package that runs
                                on its reference and Triton backends.
  MAX_JOBS                      parallel compile jobs; derived from cores and memory when unset.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import setuptools
from setuptools import setup

if int(setuptools.__version__.split(".")[0]) < 77:  # pyproject.toml's SPDX license needs it
    sys.exit(f"fastswin: the build needs setuptools>=77, this environment has {setuptools.__version__}: "
             "pip install -U setuptools")

# A wrapper nvcc on PATH would make torch guess CUDA_HOME wrongly.
if "CUDA_HOME" not in os.environ and Path("/usr/local/cuda/bin/nvcc").exists():
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError:
    sys.exit("fastswin: the build compiles against the installed torch, and this environment has none. "
             "Install torch first, then: pip install --no-build-isolation .")

BUILD_ERROR = "_C_build_error.txt"  # beside the extension; fastswin/_extension.py reads it


def required():
    return os.environ.get("FASTSWIN_REQUIRE_EXTENSION", "0") == "1"


def want_cuda():
    mode = os.environ.get("FASTSWIN_CUDA", "auto").lower()
    have = torch.version.cuda is not None and CUDA_HOME is not None and shutil.which(
        os.path.join(CUDA_HOME, "bin", "nvcc"))
    if mode in ("1", "true", "yes"):
        if not have:
            raise RuntimeError(
                f"FASTSWIN_CUDA=1 but CUDA cannot be built: torch CUDA {torch.version.cuda}, "
                f"CUDA_HOME {CUDA_HOME}")
        return True
    if mode in ("0", "false", "no"):
        return False
    return bool(have)


def derive_max_jobs():
    if "MAX_JOBS" not in os.environ:
        cores = os.cpu_count() or 1
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        # nvcc with torch headers peaks near 3 GiB per job.
        os.environ["MAX_JOBS"] = str(max(1, min(cores, int(mem_gib // 3))))
    print(f"fastswin: MAX_JOBS={os.environ['MAX_JOBS']}")


def extension():
    cpu_sources = ["csrc/module.cpp", "csrc/window_process.cpp", "csrc/window_attention_cpu.cpp",
                   "csrc/window_attention_cpu_backward.cpp", "csrc/window_layout_attention_cpu.cpp"]
    cuda_sources = ["csrc/window_process_cuda.cu"]
    cxx = ["-O3"]
    if not want_cuda():
        print("fastswin: building the CPU kernels only")
        return CppExtension("fastswin._C", cpu_sources, extra_compile_args={"cxx": cxx})
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", os.environ.get("FASTSWIN_CUDA_ARCHS", "8.0;9.0"))
    print(f"fastswin: building CPU and CUDA kernels for {os.environ['TORCH_CUDA_ARCH_LIST']}")
    nvcc = ["-O3", "--use_fast_math",
            # A kernel that spills to local memory is a build error.
            "-Xptxas=-warn-spills,-warn-lmem-usage,-Werror"]
    return CUDAExtension("fastswin._C", cpu_sources + cuda_sources, extra_compile_args={"cxx": cxx, "nvcc": nvcc})


def error_gist(error: Exception, build_temp: str) -> str:
    """The compiler's error lines when ninja failed (ninja printed them to the log and
    torch's exception does not carry them: build once more, capturing), else the exception."""
    text = f"{type(error).__name__}: {error}"
    if Path(build_temp, "build.ninja").exists() and shutil.which("ninja"):
        rerun = subprocess.run(["ninja", "-k", "0"], cwd=build_temp, capture_output=True, text=True)
        lines = (rerun.stdout + rerun.stderr).splitlines()
        errors = [line.strip() for line in lines if "error" in line.lower() and not line.startswith("[")]
        text += "\n" + "\n".join(errors[:8] or lines[-8:])
    return text


class Build(BuildExtension):
    """BuildExtension whose failure, unless FASTSWIN_REQUIRE_EXTENSION=1, is a loud
    warning and a note beside the missing extension rather than a failed install."""

    def build_extension(self, ext):
        note = Path(self.get_ext_fullpath(ext.name)).parent / BUILD_ERROR
        note.unlink(missing_ok=True)
        try:
            super().build_extension(ext)
        except Exception as error:
            if required():
                raise
            gist = error_gist(error, self.build_temp)
            note.parent.mkdir(parents=True, exist_ok=True)
            note.write_text(gist + "\n")
            rule = "=" * 78
            print(f"\n{rule}\nWARNING fastswin: the extension fastswin._C did not build; the package will run on "
                  f"its reference and Triton backends only (no compiled partition/reverse kernels).\n{gist}\n"
                  f"Full log: pip install -v --no-build-isolation . (FASTSWIN_REQUIRE_EXTENSION=1 makes this "
                  f"an error)\n{rule}\n", file=sys.stderr, flush=True)


derive_max_jobs()
setup(ext_modules=[extension()], cmdclass={"build_ext": Build.with_options(use_ninja=True)})
