"""Hugging Face transformers: SwinModel / Swinv2Model and the models built on
them (*ForImageClassification, *ForMaskedImageModeling, *Backbone), and the
models whose layers copy Swin's (FAMILY): Donut / Nougat (DonutSwinLayer),
MaskFormer (MaskFormerSwinLayer), CLAP's audio encoder (ClapAudioLayer) and
Swin2SR (Swin2SRLayer, a copy of Swinv2Layer).

The attention module receives already-partitioned windows, so the patch
replaces the layer's forward (SwinLayer, Swinv2Layer). HF pads to multiples
of the window and then rolls (``maybe_pad`` before ``torch.roll``), with the
shift mask of the padded map: torchvision's order. The layer's own
``set_shift_and_window_size`` (v1) still runs, so windows and shifts evolve
exactly as HF's.

Both module layouts are read:
- transformers 5.x v1: ``attention.{q,k,v,o}_proj``, ``attention.relative_position_bias()``,
  ``layer.dropout`` and ``layer.mlp``; the layer returns (hidden, attn_weights);
- transformers 4.x v1 and v2 (both versions): ``attention.self.{query,key,value}``,
  ``attention.self.relative_position_bias_table`` (v1) or
  ``continuous_position_bias_mlp`` / ``logit_scale`` (v2), ``attention.output``,
  ``layer.intermediate`` / ``layer.output``; the layer returns a 1-tuple.

MaskFormer's layer never clamps its window to a small map and always shifts
(it has no ``set_shift_and_window_size``): patched, it behaves as SwinLayer with
``always_partition=True``.

Falls back to HF's forward when attention probabilities are asked for
(``output_attentions``, argument or config), with ``head_mask``, or in training
with ``attention_probs_dropout_prob`` > 0.
"""
import inspect
import sys
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import torch
import torch.nn as nn

from fastswin.integrations._core import (BACKEND_ATTR, PREFIX, Target, class_override_problem, library_is_faster,
                                         original, warn_if_unpredicted)
from fastswin.nn.functional import continuous_position_bias, table_position_bias, window_attention_map

FALLBACKS = ["transformers: output_attentions (argument or config), head_mask, or training with "
             "attention_probs_dropout_prob > 0"]
_ARG_NAMES = PREFIX + "arg_names"  # the original forward's parameters after (hidden_states, input_dimensions)
_LAYOUT = PREFIX + "layout"  # the layer's _Layout
_CLAMPS = PREFIX + "clamps"  # the layer shrinks its window to small maps (set_shift_and_window_size)


class _Member(NamedTuple):
    """A transformers layer class fastswin patches."""
    module: str       # its modeling module; consulted only when imported (a model of it exists only then)
    cls: str
    v2: bool          # Swinv2's layer and attention (else Swin's)
    clamps: bool      # calls set_shift_and_window_size before attending


FAMILY = [
    _Member("transformers.models.swin.modeling_swin", "SwinLayer", False, True),
    _Member("transformers.models.swinv2.modeling_swinv2", "Swinv2Layer", True, False),
    _Member("transformers.models.donut.modeling_donut_swin", "DonutSwinLayer", False, True),
    _Member("transformers.models.clap.modeling_clap", "ClapAudioLayer", False, True),
    _Member("transformers.models.maskformer.modeling_maskformer_swin", "MaskFormerSwinLayer", False, False),
    _Member("transformers.models.swin2sr.modeling_swin2sr", "Swin2SRLayer", True, False),
]


def _qkv_projection(linears: List[nn.Linear]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Separate q, k, v Linears -> one (3C, C) weight and (3C,) bias (zeros for a Linear without one)."""
    weight = torch.cat([linear.weight for linear in linears])
    if all(linear.bias is None for linear in linears):
        return weight, None
    bias = torch.cat([linear.bias if linear.bias is not None else linear.weight.new_zeros(linear.out_features)
                      for linear in linears])
    return weight, bias


class _Layout:
    """Where one layout keeps the attention's pieces; every method takes the layer."""

    def __init__(self, name: str, qkv: Callable, bias: Callable, logit_scale: Callable, project: Callable,
                 num_heads: Callable, returns_weights: bool):
        self.name, self.qkv, self.bias, self.logit_scale = name, qkv, bias, logit_scale
        self.project, self.num_heads, self.returns_weights = project, num_heads, returns_weights


def _self_attn(layer):
    return layer.attention.self


_V1_5X = _Layout(
    "transformers 5.x SwinLayer",
    qkv=lambda layer: [layer.attention.q_proj, layer.attention.k_proj, layer.attention.v_proj],
    bias=lambda layer: layer.attention.relative_position_bias()[0],
    logit_scale=lambda layer: None,
    project=lambda layer, out: layer.dropout(layer.attention.o_proj(out)),
    num_heads=lambda layer: layer.attention.num_attention_heads,
    returns_weights=True)
_V1_4X = _Layout(
    "transformers 4.x SwinLayer",
    qkv=lambda layer: [_self_attn(layer).query, _self_attn(layer).key, _self_attn(layer).value],
    bias=lambda layer: table_position_bias(_self_attn(layer).relative_position_bias_table,
                                           _self_attn(layer).relative_position_index),
    logit_scale=lambda layer: None,
    project=lambda layer, out: layer.attention.output(out, None),
    num_heads=lambda layer: _self_attn(layer).num_attention_heads,
    returns_weights=False)
_V2 = _Layout(
    "transformers Swinv2Layer",
    qkv=_V1_4X.qkv,
    bias=lambda layer: continuous_position_bias(
        _self_attn(layer).continuous_position_bias_mlp, _self_attn(layer).relative_coords_table,
        _self_attn(layer).relative_position_index, _self_attn(layer).num_attention_heads),
    logit_scale=lambda layer: _self_attn(layer).logit_scale,
    project=_V1_4X.project,
    num_heads=_V1_4X.num_heads,
    returns_weights=False)


def _v1_layout(layer: nn.Module, clamps: bool) -> Optional[_Layout]:
    if clamps and not hasattr(layer, "set_shift_and_window_size"):  # its window rule is reproduced by calling it
        return None
    attention = layer.attention
    if all(hasattr(attention, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj", "relative_position_bias")) \
            and hasattr(layer, "mlp") and hasattr(layer, "dropout"):
        return _V1_5X
    if hasattr(attention, "self") and hasattr(attention.self, "relative_position_bias_table") \
            and hasattr(layer, "intermediate"):
        return _V1_4X
    return None


def _v2_layout(layer: nn.Module, clamps: bool) -> Optional[_Layout]:
    attention = getattr(layer.attention, "self", None)
    if attention is not None and hasattr(attention, "continuous_position_bias_mlp") and hasattr(layer, "intermediate"):
        return _V2
    return None


def _dropout_p(layer: nn.Module) -> float:
    config = getattr(layer.attention, "config", None)
    if config is not None:
        return config.attention_probs_dropout_prob
    return _self_attn(layer).dropout.p  # 4.x: the attention probabilities' nn.Dropout


def _needs_original(layer: nn.Module, hidden_states: torch.Tensor, input_dimensions, named: Dict) -> bool:
    config = getattr(layer.attention, "config", None)  # 5.x: outputs may be recorded from the config flag
    wants_weights = named.get("output_attentions") or getattr(config, "output_attentions", False)
    window, shift = int(layer.window_size), int(layer.shift_size)
    attended = (tuple(input_dimensions), (window, window), (shift, shift))
    return bool(wants_weights or named.get("head_mask") is not None
                or (layer.training and _dropout_p(layer) > 0) or library_is_faster(layer, hidden_states, attended))


def _attention(layer: nn.Module, layout: _Layout, x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) map (after any pre-norm) -> (B, H, W, C) attention output after HF's projection."""
    weight, qkv_bias = _qkv_projection(layout.qkv(layer))
    qkv = torch.nn.functional.linear(x, weight, qkv_bias)
    window, shift = int(layer.window_size), int(layer.shift_size)
    warn_if_unpredicted(layer, qkv, layout.num_heads(layer), (window, window))
    out = window_attention_map(qkv, layout.num_heads(layer), (window, window), (shift, shift),
                               bias=layout.bias(layer), logit_scale=layout.logit_scale(layer), qkv_bias=qkv_bias,
                               order="torchvision", backend=getattr(layer, BACKEND_ATTR))
    return layout.project(layer, out)


def _layer_output(layout: _Layout, hidden: torch.Tensor):
    return (hidden, None) if layout.returns_weights else (hidden,)


def _fused_v1_forward(layer: nn.Module, hidden_states: torch.Tensor, input_dimensions, *args, **kwargs):
    """Replaces SwinLayer.forward: (B, H*W, C) tokens -> (B, H*W, C) (in HF's output tuple)."""
    named = {**dict(zip(getattr(layer, _ARG_NAMES), args)), **kwargs}
    if getattr(layer, _CLAMPS) and not named.get("always_partition", False):  # as the original forward does
        layer.set_shift_and_window_size(input_dimensions)
    if _needs_original(layer, hidden_states, input_dimensions, named):
        return original(layer, "forward")(hidden_states, input_dimensions, *args, **kwargs)
    layout = getattr(layer, _LAYOUT)
    (H, W), (B, _, C) = input_dimensions, hidden_states.shape
    x = layer.layernorm_before(hidden_states).view(B, H, W, C)
    hidden = hidden_states + layer.drop_path(_attention(layer, layout, x).reshape(B, H * W, C))
    if layout is _V1_5X:
        hidden = hidden + layer.dropout(layer.mlp(layer.layernorm_after(hidden)))
    else:
        hidden = hidden + layer.output(layer.intermediate(layer.layernorm_after(hidden)))
    return _layer_output(layout, hidden)


def _fused_v2_forward(layer: nn.Module, hidden_states: torch.Tensor, input_dimensions, *args, **kwargs):
    """Replaces Swinv2Layer.forward (res-post-norm): (B, H*W, C) -> (B, H*W, C) (in a 1-tuple)."""
    named = {**dict(zip(getattr(layer, _ARG_NAMES), args)), **kwargs}
    if _needs_original(layer, hidden_states, input_dimensions, named):
        return original(layer, "forward")(hidden_states, input_dimensions, *args, **kwargs)
    (H, W), (B, _, C) = input_dimensions, hidden_states.shape
    attended = _attention(layer, _V2, hidden_states.view(B, H, W, C)).reshape(B, H * W, C)
    hidden = hidden_states + layer.drop_path(layer.layernorm_before(attended))
    hidden = hidden + layer.drop_path(layer.layernorm_after(layer.output(layer.intermediate(hidden))))
    return _layer_output(_V2, hidden)


def _prepare(layer: nn.Module, layout: _Layout, clamps: bool) -> None:
    names = list(inspect.signature(type(layer).forward).parameters)[3:]  # after self, hidden_states, input_dimensions
    layer.__dict__[_ARG_NAMES] = tuple(names)
    layer.__dict__[_LAYOUT] = layout
    layer.__dict__[_CLAMPS] = clamps


def _geometry(layer: nn.Module, layout: Optional[_Layout]):
    heads, window = layout.num_heads(layer), int(layer.window_size)
    return heads, layout.qkv(layer)[0].weight.shape[0] // heads, (window, window)


def match(module: nn.Module) -> Optional[Target]:
    """A Target for the layers of FAMILY, None for any other module."""
    import transformers
    for member in FAMILY:
        layer_cls = getattr(sys.modules.get(member.module), member.cls, None)
        if layer_cls is None or not isinstance(module, layer_cls):
            continue
        layout = (_v2_layout if member.v2 else _v1_layout)(module, member.clamps)
        problem = class_override_problem(module, "forward", layer_cls) or (
            None if layout else f"unrecognized {member.cls} layout (transformers {transformers.__version__}); "
                                f"fastswin reads the 4.x and 5.x layouts")
        kind = f"transformers {member.cls}"
        if layout and member.cls not in ("SwinLayer", "Swinv2Layer"):
            kind += f" (as {layout.name.removeprefix('transformers ')})"
        elif layout:
            kind = layout.name
        return Target(kind=kind, attr="forward", fused=_fused_v2_forward if member.v2 else _fused_v1_forward,
                      geometry=lambda layer, layout=layout: _geometry(layer, layout), problem=problem, prepare=lambda layer, layout=layout, clamps=member.clamps:
                      _prepare(layer, layout, clamps))
    return None
