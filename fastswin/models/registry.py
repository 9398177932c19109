"""Every timm Swin v1 / v2 model name, its configuration (from timm 1.0's
registrations and default pretrained configs: image size and classes), and
create_model."""
import os
from typing import Dict, Optional, Tuple, Type, Union

import torch.nn as nn

from fastswin.models.checkpoint import load_checkpoint
from fastswin.models.swin import SwinTransformer, SwinTransformerV2

# (heads per stage, embed_dim) of the T / S, B and L widths
_W96, _W128, _W192 = ((3, 6, 12, 24), 96), ((4, 8, 16, 32), 128), ((6, 12, 24, 48), 192)
_SHORT, _LONG = (2, 2, 6, 2), (2, 2, 18, 2)
_PRE_12 = (12, 12, 12, 6)  # pretrained window sizes of the 192 -> 256 / 384 fine-tuned v2 models


def _v1(heads_dim, depths, window_size, img_size: int) -> Tuple[Type[nn.Module], Dict]:
    heads, dim = heads_dim
    return SwinTransformer, dict(img_size=img_size, patch_size=4, window_size=window_size, embed_dim=dim,
                                 depths=depths, num_heads=heads)


def _v2(heads_dim, depths, window_size, img_size: int, num_classes: int = 1000,
        pretrained_window_sizes=(0, 0, 0, 0)) -> Tuple[Type[nn.Module], Dict]:
    heads, dim = heads_dim
    return SwinTransformerV2, dict(img_size=img_size, window_size=window_size, embed_dim=dim, depths=depths,
                                   num_heads=heads, num_classes=num_classes,
                                   pretrained_window_sizes=pretrained_window_sizes)


MODEL_CONFIGS: Dict[str, Tuple[Type[nn.Module], Dict]] = {
    "swin_tiny_patch4_window7_224": _v1(_W96, _SHORT, 7, 224),
    "swin_small_patch4_window7_224": _v1(_W96, _LONG, 7, 224),
    "swin_base_patch4_window7_224": _v1(_W128, _LONG, 7, 224),
    "swin_base_patch4_window12_384": _v1(_W128, _LONG, 12, 384),
    "swin_large_patch4_window7_224": _v1(_W192, _LONG, 7, 224),
    "swin_large_patch4_window12_384": _v1(_W192, _LONG, 12, 384),
    "swin_s3_tiny_224": _v1(_W96, _SHORT, (7, 7, 14, 7), 224),
    "swin_s3_small_224": _v1(_W96, _LONG, (14, 14, 14, 7), 224),
    "swin_s3_base_224": _v1(_W96, (2, 2, 30, 2), (7, 7, 14, 7), 224),
    "swinv2_tiny_window16_256": _v2(_W96, _SHORT, 16, 256),
    "swinv2_tiny_window8_256": _v2(_W96, _SHORT, 8, 256),
    "swinv2_small_window16_256": _v2(_W96, _LONG, 16, 256),
    "swinv2_small_window8_256": _v2(_W96, _LONG, 8, 256),
    "swinv2_base_window16_256": _v2(_W128, _LONG, 16, 256),
    "swinv2_base_window8_256": _v2(_W128, _LONG, 8, 256),
    "swinv2_base_window12_192": _v2(_W128, _LONG, 12, 192, num_classes=21841),
    "swinv2_base_window12to16_192to256": _v2(_W128, _LONG, 16, 256, pretrained_window_sizes=_PRE_12),
    "swinv2_base_window12to24_192to384": _v2(_W128, _LONG, 24, 384, pretrained_window_sizes=_PRE_12),
    "swinv2_large_window12_192": _v2(_W192, _LONG, 12, 192, num_classes=21841),
    "swinv2_large_window12to16_192to256": _v2(_W192, _LONG, 16, 256, pretrained_window_sizes=_PRE_12),
    "swinv2_large_window12to24_192to384": _v2(_W192, _LONG, 24, 384, pretrained_window_sizes=_PRE_12),
}


def list_models():
    """The model names create_model knows (timm's Swin v1 / v2 names)."""
    return sorted(MODEL_CONFIGS)


def create_model(name: str, pretrained: Optional[Union[str, os.PathLike]] = None,
                 **kwargs) -> Union[SwinTransformer, SwinTransformerV2]:
    """A fastswin Swin model under a timm model name.

    Args:
        name: a timm Swin v1 / v2 name (see list_models()); a ".tag" suffix
            (e.g. ".ms_in1k") is ignored.
        pretrained: a local checkpoint file: timm's format or the official
            microsoft/Swin-Transformer one (converted on load), loaded strictly.
            Nothing is downloaded.
        **kwargs: override any constructor argument (embed_dim, depths, img_size,
            num_classes, device, dtype, ...).
    """
    arch = name.split(".")[0]
    if arch not in MODEL_CONFIGS:
        raise ValueError(f"fastswin.models: unknown model {name!r}; known: {', '.join(list_models())}")
    if pretrained is True:
        raise ValueError("fastswin.models: pretrained=True would need a download; pass the path of a local "
                         "checkpoint (timm or official format) instead")
    model_cls, config = MODEL_CONFIGS[arch]
    model = model_cls(**{**config, **kwargs})
    if pretrained:
        load_checkpoint(model, pretrained)
    return model
