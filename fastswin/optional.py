"""Optional dependencies: imported where a feature needs one, and when one is missing a
one-line error that names the extra bringing it."""
import importlib
from types import ModuleType

# The pip extra (pyproject.toml) that installs each optional module.
EXTRAS = {"timm": "bench", "matplotlib": "bench", "tqdm": "bench", "torchvision": "models",
          "transformers": "models"}


class MissingDependency(ModuleNotFoundError):
    """An optional dependency is not installed; the message says which extra brings it."""


def require(module: str, purpose: str) -> ModuleType:
    """Import `module` for `purpose` (e.g. "plotting"), or raise MissingDependency naming the extra."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        top = module.split(".")[0]
        if error.name != top:  # the module is there but something it imports is broken
            raise
        raise MissingDependency(f"{purpose} needs {top}: pip install 'fastswin[{EXTRAS[top]}]'",
                                name=top) from None
