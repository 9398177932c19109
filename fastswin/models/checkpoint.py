"""Loading local checkpoints into fastswin models: timm's format as is, and the
official microsoft/Swin-Transformer format converted.

The official layout differs from timm's in three ways: stage i's patch merging
sits at the end of stage i (timm: start of stage i + 1), the classifier is
``head`` (timm: ``head.fc``), and derived buffers (``relative_position_index``,
``relative_coords_table``, ``attn_mask``) are saved. The 2x2 merge order and
every other name are the same.
"""
import os
import re
from typing import Dict, Union

import torch
import torch.nn as nn

_DERIVED_BUFFERS = ("relative_position_index", "relative_coords_table", "attn_mask")


def is_official_format(state_dict: Dict[str, torch.Tensor]) -> bool:
    """Official checkpoints merge patches at the end of stage 0; timm's stage 0 never merges."""
    return any(key.startswith("layers.0.downsample.") for key in state_dict)


def convert_official_state_dict(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """microsoft/Swin-Transformer (v1 or v2) state dict -> timm / fastswin state dict."""
    converted = {}
    for key, value in state_dict.items():
        if key.rsplit(".", 1)[-1] in _DERIVED_BUFFERS:
            continue
        key = re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) + 1}.downsample", key)
        key = re.sub(r"^head\.(weight|bias)$", r"head.fc.\1", key)
        converted[key] = value
    return converted


def read_state_dict(path: Union[str, os.PathLike]) -> Dict[str, torch.Tensor]:
    """The state dict in a .pth / .pt / .bin (torch.load, weights only) or .safetensors file,
    unwrapped from a {"model": ...} or {"state_dict": ...} training checkpoint."""
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    return state


def load_checkpoint(model: nn.Module, path: Union[str, os.PathLike]) -> None:
    """Load a timm-format or official-format checkpoint file into `model` (strict)."""
    state_dict = read_state_dict(path)
    if is_official_format(state_dict):
        state_dict = convert_official_state_dict(state_dict)
    model.load_state_dict(state_dict, strict=True)
