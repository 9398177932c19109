"""fastswin: fused Swin Transformer kernels for PyTorch.

The fast path in five lines::

    import fastswin
    windows = fastswin.ops.window_partition(x, window_size=7, shift_size=3)  # (B*nW, 7, 7, C)
    x_back = fastswin.ops.window_reverse(windows, 7, H, W, shift_size=3)     # (B, H, W, C)

Whole models: ``fastswin.models.create_model(name)`` (timm names and state
dicts), or ``fastswin.patch(model)`` on a timm, torchvision or Hugging Face Swin
model in place (``fastswin.unpatch(model)`` undoes it).

`fastswin info` tells which backends can run on this machine.
"""
__version__ = "0.1.0"

from fastswin import ops, reference  # noqa: E402
from fastswin.backends import BackendError  # noqa: E402
from fastswin import nn, models  # noqa: E402
# The integrations import timm / torchvision / transformers only when patching a model of theirs.
from fastswin.integrations import PatchReport, patch, unpatch  # noqa: E402

__all__ = ["ops", "reference", "nn", "models", "patch", "unpatch", "PatchReport", "BackendError", "__version__"]
