"""Drop-in Swin layers (timm 1.0's constructor arguments and state-dict names)
running fastswin's fused image-layout window attention.

Blocks take and return (B, H, W, C) maps; their attention runs the qkv Linear
on the whole map and fastswin.ops.shifted_window_attention (timm's roll-then-pad
order), with no partition / reverse copies around it.
"""
from fastswin.nn.attention import WindowAttention, WindowAttentionV2
from fastswin.nn.blocks import SwinTransformerBlock, SwinTransformerBlockV2
from fastswin.nn.layers import ClassifierHead, DropPath, Mlp, PatchEmbed, PatchMerging, PatchMergingV2

__all__ = ["WindowAttention", "WindowAttentionV2", "SwinTransformerBlock", "SwinTransformerBlockV2",
           "PatchMerging", "PatchMergingV2", "PatchEmbed", "Mlp", "DropPath", "ClassifierHead"]
