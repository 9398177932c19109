"""Swin Transformer v1 / v2 models on fastswin's fused attention, under timm's
model names and state-dict layout.

    model = fastswin.models.create_model("swin_tiny_patch4_window7_224", pretrained="swin_tiny.pth")
"""
from fastswin.models.checkpoint import convert_official_state_dict, load_checkpoint
from fastswin.models.registry import MODEL_CONFIGS, create_model, list_models
from fastswin.models.swin import SwinTransformer, SwinTransformerV2

__all__ = ["SwinTransformer", "SwinTransformerV2", "create_model", "list_models", "MODEL_CONFIGS",
           "load_checkpoint", "convert_official_state_dict"]
