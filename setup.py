"""Build of fastswin and its one extension, fastswin._C.

Environment switches:
  FASTSWIN_CUDA=auto|1|0        build the CUDA sources when possible (auto, default),
                                always (1: fail if CUDA is missing) or never (0).
  FASTSWIN_CUDA_ARCHS="8.0;9.0" target architectures (TORCH_CUDA_ARCH_LIST wins if set).
  FASTSWIN_REQUIRE_EXTENSION=1  fail the install when the extension does not build;
                                by default a failed build leaves a package that runs
                                on its reference and Triton backends.
  MAX_JOBS                      parallel compile jobs; derived from cores and memory when unset.
"""
import os
import re
import shutil
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
# A wrapper nvcc on PATH would make torch guess CUDA_HOME wrongly.
if "CUDA_HOME" not in os.environ and Path("/usr/local/cuda/bin/nvcc").exists():
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

import torch  # noqa: E402  (after CUDA_HOME is settled)
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def read_version():
    text = (ROOT / "fastswin" / "__init__.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"', text, re.M).group(1)


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
    cpu_sources = ["csrc/module.cpp", "csrc/window_process.cpp"]
    cuda_sources = ["csrc/window_process_cuda.cu"]
    cxx = ["-O3"]
    if not want_cuda():
        print("fastswin: building the CPU kernels only")
        return CppExtension("fastswin._C", cpu_sources, extra_compile_args={"cxx": cxx},
                            optional=not required())
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", os.environ.get("FASTSWIN_CUDA_ARCHS", "8.0;9.0"))
    print(f"fastswin: building CPU and CUDA kernels for {os.environ['TORCH_CUDA_ARCH_LIST']}")
    nvcc = ["-O3", "--use_fast_math",
            # A kernel that spills to local memory is a build error.
            "-Xptxas=-warn-spills,-warn-lmem-usage,-Werror"]
    return CUDAExtension("fastswin._C", cpu_sources + cuda_sources,
                         extra_compile_args={"cxx": cxx, "nvcc": nvcc}, optional=not required())


def required():
    return os.environ.get("FASTSWIN_REQUIRE_EXTENSION", "0") == "1"


derive_max_jobs()
setup(
    name="fastswin",
    version=read_version(),
    description="Fused Swin Transformer kernels for PyTorch",
    packages=find_packages(include=["fastswin", "fastswin.*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.4"],
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    entry_points={"console_scripts": ["fastswin = fastswin.cli:main"]},
)
