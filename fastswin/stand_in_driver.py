"""Triton's real launch path without a GPU, for measuring host time: a stand-in
`libcuda.so.1` whose driver calls return success at once, and a stand-in active driver
(device 0, stream 0, sm_90) that Triton compiles and launches through.

With it installed, `kernel[grid](...)` on CPU tensors runs everything Triton does on
the host per launch (its argument binder, its cache lookup, its C launcher, which
calls the stand-in `cuLaunchKernelEx`), compiling each kernel for sm_90 once; the
kernels never run, so what a call costs is its host time alone. fastswin's Triton
backend takes CPU tensors while it is installed (backends.triton_reason).

Install it in a process whose kernels are not interpreted (TRITON_INTERPRET unset)
and before anything asks Triton for its driver: `install()` returns False where
it cannot. `fastswin bench --host` and benchmarks/test_bench_host_time.py use it.
"""
import ctypes
import hashlib
import os
import subprocess
import tempfile
import warnings
from typing import Optional

from fastswin import backends

# Every driver call the launchers and Triton's utilities make (Triton 3.6 and 3.8),
# with the values a Hopper device would give where they write one.
_LIBCUDA_SOURCE = r"""
#include <stddef.h>
#include <stdint.h>
#define OK return 0
static char handle;
int cuInit(unsigned flags) { OK; }
int cuDriverGetVersion(int *v) { *v = 13000; OK; }
int cuDeviceGetCount(int *n) { *n = 1; OK; }
int cuDeviceGet(int *d, int ordinal) { *d = ordinal; OK; }
int cuDeviceGetAttribute(int *v, int attribute, int device) {
  switch (attribute) {
    case 75: *v = 9; break;               /* compute capability major */
    case 76: *v = 0; break;               /* minor */
    case 16: *v = 132; break;             /* multiprocessors */
    case 10: *v = 32; break;              /* warp size */
    case 97: case 8: case 81: *v = 232448; break;  /* shared memory */
    case 12: case 82: *v = 65536; break;  /* registers */
    default: *v = 1024;
  }
  OK;
}
int cuGetErrorString(int error, const char **s) { *s = "stand-in driver"; OK; }
int cuGetErrorName(int error, const char **s) { *s = "stand-in driver"; OK; }
int cuCtxGetCurrent(void **ctx) { *ctx = &handle; OK; }
int cuCtxSetCurrent(void *ctx) { OK; }
int cuCtxGetDevice(int *d) { *d = 0; OK; }
int cuCtxSynchronize(void) { OK; }
int cuCtxGetLimit(size_t *v, int limit) { *v = 0; OK; }
int cuCtxSetLimit(int limit, size_t v) { OK; }
int cuDevicePrimaryCtxRetain(void **ctx, int device) { *ctx = &handle; OK; }
int cuModuleLoadData(void **module, const void *image) { *module = &handle; OK; }
int cuModuleUnload(void *module) { OK; }
int cuModuleGetFunction(void **f, void *module, const char *name) { *f = &handle; OK; }
int cuFuncGetAttribute(int *v, int attribute, void *f) { *v = attribute == 0 ? 1024 : 0; OK; }
int cuFuncSetAttribute(void *f, int attribute, int v) { OK; }
int cuFuncSetCacheConfig(void *f, int config) { OK; }
int cuOccupancyMaxActiveClusters(int *n, void *f, const void *config) { *n = 1; OK; }
int cuPointerGetAttribute(void *v, int attribute, uint64_t ptr) { *(uint64_t *)v = ptr; OK; }
int cuPointerGetAttributes(unsigned n, int *attributes, void **v, uint64_t ptr) { OK; }
int cuLaunchKernel() { OK; }
int cuLaunchKernelEx() { OK; }
int cuTensorMapEncodeTiled() { OK; }
int cuTensorMapEncodeIm2col() { OK; }
int cuStreamSynchronize(void *stream) { OK; }
"""

_installed = False


def installed() -> bool:
    """Whether this process launches through the stand-in driver."""
    return _installed


def install() -> bool:
    """Make this process's Triton launch through the stand-in driver; False where it
    cannot (Triton missing, kernels interpreted, or no C compiler to build the library)."""
    global _installed
    if _installed:
        return True
    if os.environ.get("TRITON_INTERPRET") == "1":
        return False
    try:
        import triton  # noqa: F401
        from triton.backends.nvidia.driver import CudaDriver
        from triton.runtime.driver import driver
    except ImportError:
        return False
    library = _build_libcuda()
    if library is None:
        return False
    # Loaded first and globally: Triton's modules, linked against libcuda.so.1, bind to it.
    ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL)
    os.environ["TRITON_LIBCUDA_PATH"] = os.path.dirname(library)
    driver.set_active(_stand_in(CudaDriver)())
    # torch asks the CUDA runtime for devices (autograd does): the stand-in has none to give.
    warnings.filterwarnings("ignore", message="CUDA initialization")
    _installed = backends.STAND_IN_DRIVER = True
    return True


def _stand_in(cuda_driver: type) -> type:
    class StandInDriver(cuda_driver):
        """Triton's CUDA driver on device 0, stream 0, an sm_90 target."""

        def __init__(self):
            super().__init__()
            self.get_current_device = lambda: 0
            self.set_current_device = lambda device: None
            self.get_current_stream = lambda device=None: 0
            self.get_device_capability = lambda device=None: (9, 0)

        def get_active_torch_device(self):
            import torch
            return torch.device("cpu")

        @staticmethod
        def is_active():
            return True

    return StandInDriver


def _build_libcuda() -> Optional[str]:
    """The stand-in libcuda.so.1, built once per source in a cache directory."""
    digest = hashlib.sha256(_LIBCUDA_SOURCE.encode()).hexdigest()[:16]
    folder = os.path.join(tempfile.gettempdir(), f"fastswin-stand-in-libcuda-{digest}")
    library = os.path.join(folder, "libcuda.so.1")
    if os.path.exists(library):
        return library
    os.makedirs(folder, exist_ok=True)
    source = os.path.join(folder, "libcuda.c")
    with open(source, "w") as f:
        f.write(_LIBCUDA_SOURCE)
    partial = library + f".{os.getpid()}"
    try:
        subprocess.run([os.environ.get("CC", "cc"), "-shared", "-fPIC", "-O2", "-Wl,-soname,libcuda.so.1", source,
                        "-o", partial], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    os.replace(partial, library)
    return library
