"""What this installation is and can do: versions, devices, compiled parts, backends."""
import datetime
import os
import platform
from typing import Dict, Optional

import torch

import fastswin
from fastswin._extension import HAS_C, HAS_CUDA_KERNELS, LOAD_ERROR, compiled_reason
from fastswin.backends import ENV_VAR, triton_reason


def _triton_version() -> Optional[str]:
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


def environment() -> Dict[str, object]:
    """Versions, devices and date: recorded with every benchmark figure."""
    cuda = torch.cuda.is_available()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "fastswin": fastswin.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": _triton_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if cuda else None,
        "gpu_capability": ".".join(map(str, torch.cuda.get_device_capability())) if cuda else None,
    }


def compiled_parts() -> Dict[str, object]:
    return {"extension": HAS_C, "cpu_kernels": HAS_C, "cuda_kernels": HAS_CUDA_KERNELS,
            "load_error": LOAD_ERROR}


def backend_status() -> Dict[str, str]:
    """Each backend: "ok" or why it cannot run on this machine's default device."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    reasons = {
        "reference": None,
        "cpu": compiled_reason(torch.device("cpu")),
        "cuda": "no CUDA device" if not torch.cuda.is_available() else compiled_reason(device),
        "triton": triton_reason(device, forced=True),
    }
    return {name: reason or "ok" for name, reason in reasons.items()}


def report() -> str:
    lines = ["fastswin " + fastswin.__version__, ""]
    lines += [f"  {k:14} {v}" for k, v in environment().items()]
    lines += ["", "compiled:"] + [f"  {k:14} {v}" for k, v in compiled_parts().items()]
    lines += ["", f"backends (${ENV_VAR}={os.environ.get(ENV_VAR, 'auto')}):"]
    lines += [f"  {k:14} {v}" for k, v in backend_status().items()]
    return "\n".join(lines)
