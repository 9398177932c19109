"""The eager path of the fused attention ops: a call object per call signature (the
shapes, strides, dtypes and device of the tensors, the static arguments), holding its
launch plans, behind a plain `torch.autograd.Function`.

The registered ops (custom_ops.py) serve torch.compile, torch.export and torch.library
users; in eager mode their dispatch and `register_autograd` cost ~3x a plain
autograd.Function and materialize a zero gradient for lse on every backward. Both run the
same launchers (launch.py) and the same CPU kernels, so they compute the same thing.
functions.py makes a call once per signature and keeps it.
"""
from typing import Dict, Optional, Tuple

import torch

from fastswin.ops.attention.cpu_ops import (cpu_image_attention_backward_op, cpu_image_attention_op,
                                            cpu_window_attention_backward_op, cpu_window_attention_op)
from fastswin.ops.attention.launch import (BackwardPlan, ForwardPlan, bshd_empty, plan_backward, plan_forward,
                                           run_backward, run_forward)
from fastswin.ops.attention.maps import folds, head_scale, heads_view, image_layout, qkv_views
from fastswin.ops.attention.policy import reads_tf32, tf32_matmuls
from fastswin.ops.launcher import Address

_META = torch.device("meta")


def _unit_last_stride(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _parts(qkv: torch.Tensor, C: int, views: bool):
    """The addresses of a (B, *S, 3C) map's q, k and v views (the plans hold their
    strides): the map and its k and v channels, as views where the kernels are
    interpreted, else as Addresses (a view costs ~1.7 us of host time)."""
    if views:
        return qkv, qkv.narrow(-1, C, C), qkv.narrow(-1, 2 * C, C)
    offset = C * qkv.element_size()
    return qkv, Address(qkv, offset), Address(qkv, 2 * offset)


def _in_place(x: torch.Tensor, fold: bool) -> bool:
    """Whether the kernels can read a (B, [T,] H, W, C) map in place: unit last stride,
    and its spatial dims (and, folded, batch and time) merge into views."""
    if x.stride(-1) != 1:
        return False
    try:
        x.view(x.shape[0] * x.shape[1] if fold else x.shape[0], -1, x.shape[-1])
    except RuntimeError:
        return False
    return True


def _empty_like_meta(x: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """A tensor of x's presence only, for a plan that holds no caller's tensor."""
    return None if x is None else torch.empty(0, device=_META, dtype=x.dtype)


# ----------------------------------------------------------------------------- image layout


class ImageCall:
    """shifted_window_attention on the fused kernels for one call signature:
    call(qkv, bias, logit_scale, qkv_bias) -> (B, [T,] H, W, C). backend: "triton" or
    "cpu"; training: gradients flow back through the call (else no autograd node)."""

    def __init__(self, backend: str, qkv: torch.Tensor, bias, logit_scale, qkv_bias, num_heads: int,
                 window_size, shift_size, timm_order: bool, training: bool):
        self.backend, self.training, self.tf32 = backend, training, reads_tf32(qkv)
        self.num_heads, self.timm_order = num_heads, timm_order
        self.window, self.shift = list(window_size), list(shift_size)
        self.out_shape = (*qkv.shape[:-1], qkv.shape[-1] // 3)
        self.fold = folds(window_size)
        if backend == "triton":
            # The kernels read qkv in place where its dims merge into views (a cropped map's
            # do not), else a contiguous copy; the signature's strides decide it once.
            self.copy = not _in_place(qkv, self.fold)
            qkv = qkv.contiguous() if self.copy else qkv
            flat = qkv.flatten(0, 1) if self.fold else qkv
            window, shift = (window_size[1:], shift_size[1:]) if self.fold else (window_size, shift_size)
            self.layout = image_layout(flat, tuple(window), tuple(shift), timm_order, _empty_like_meta(qkv_bias))
            self.scale = head_scale(qkv, num_heads)
            q, k, v = qkv_views(flat, num_heads)
            self.forward_plan: ForwardPlan = plan_forward(q, k, v, bias, None, self.scale, logit_scale, self.layout)
            self.backward_plans: Dict[tuple, Tuple[BackwardPlan, bool]] = {}  # (plan, grad_out copied)

    def __call__(self, qkv, bias, logit_scale, qkv_bias) -> torch.Tensor:
        if self.backend == "triton" and self.copy:
            qkv = qkv.contiguous()  # (a copy autograd sees)
        if self.training:
            return _ImageAttention.apply(self, qkv, bias, logit_scale, qkv_bias)
        return self.forward(qkv, bias, logit_scale, qkv_bias)[0]

    def forward(self, qkv, bias, logit_scale, qkv_bias) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.backend == "cpu":
            return cpu_image_attention_op(qkv, bias, logit_scale, qkv_bias, self.num_heads, self.window, self.shift,
                                          self.timm_order)
        out = qkv.new_empty(self.out_shape)
        plan = self.forward_plan
        lse = run_forward(plan, *_parts(qkv, self.out_shape[-1], plan.launch.interpreted), out, bias, None,
                          logit_scale, qkv_bias)
        return out, lse

    def backward(self, grad_out, qkv, out, lse, bias, logit_scale, qkv_bias, bias_grad: bool, scale_grad: bool,
                 fill_grad: bool):
        """(d qkv, d bias, d logit_scale, d qkv_bias), None where not asked for."""
        if self.backend == "cpu":
            grads = cpu_image_attention_backward_op(
                grad_out, qkv, out, lse, bias, logit_scale, qkv_bias, self.num_heads, self.window, self.shift,
                self.timm_order, bias_grad, scale_grad, fill_grad)
            return tuple(g if wanted else None for g, wanted in zip(grads, (True, bias_grad, scale_grad, fill_grad)))
        dqkv = torch.empty(qkv.shape, dtype=qkv.dtype, device=qkv.device)
        key = (bias_grad, scale_grad, fill_grad, torch.are_deterministic_algorithms_enabled(),
               self.tf32 and tf32_matmuls(), grad_out.stride())
        planned = self.backward_plans.get(key)
        if planned is None:
            copy = not _in_place(grad_out, self.fold)
            plan = self._plan_backward(key, grad_out.contiguous() if copy else grad_out, qkv, out, dqkv, bias,
                                       logit_scale)
            planned = self.backward_plans[key] = (plan, copy)
        plan, copy = planned
        if copy:
            grad_out = grad_out.contiguous()
        C, views = self.out_shape[-1], self.forward_plan.launch.interpreted
        dbias, dscale, dfill = run_backward(plan, grad_out, *_parts(qkv, C, views), out, lse, *_parts(dqkv, C, views),
                                            bias, None, logit_scale, qkv_bias)
        return dqkv, dbias, dscale, dfill

    def _plan_backward(self, key, grad_out, qkv, out, dqkv, bias, logit_scale) -> BackwardPlan:
        bias_grad, scale_grad, fill_grad, deterministic, _, _ = key
        if self.fold:
            qkv, grad_out, out, dqkv = (x.flatten(0, 1) for x in (qkv, grad_out, out, dqkv))
        q, k, v = qkv_views(qkv, self.num_heads)
        return plan_backward(heads_view(grad_out, self.num_heads), q, heads_view(out, self.num_heads), bias, None,
                             self.scale, bias_grad, deterministic, None, logit_scale, scale_grad, self.layout,
                             fill_grad, k, v, tuple(qkv_views(dqkv, self.num_heads)))


class _ImageAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, call: ImageCall, qkv, bias, logit_scale, qkv_bias):
        out, lse = call.forward(qkv, bias, logit_scale, qkv_bias)
        ctx.call = call
        ctx.save_for_backward(qkv, bias, logit_scale, qkv_bias, out, lse)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable  # (no double backward: an error, not a detached gradient)
    def backward(ctx, grad_out):
        qkv, bias, logit_scale, qkv_bias, out, lse = ctx.saved_tensors
        _, _, *wanted = ctx.needs_input_grad
        wanted = [w and t is not None for w, t in zip(wanted, (bias, logit_scale, qkv_bias))]
        return (None,) + tuple(ctx.call.backward(grad_out, qkv, out, lse, bias, logit_scale, qkv_bias, *wanted))


# ----------------------------------------------------------------------------- window layout


class WindowCall:
    """window_attention / cosine_window_attention on the fused kernels for one call
    signature: call(q, k, v, bias, mask, logit_scale) -> (B_, heads, N, d)."""

    def __init__(self, backend: str, q, k, v, bias, mask, logit_scale, scale: float, training: bool):
        self.backend, self.scale, self.training, self.tf32 = backend, scale, training, reads_tf32(q)
        if backend == "triton":
            q, k, v = _unit_last_stride(q), _unit_last_stride(k), _unit_last_stride(v)
            self.forward_plan = plan_forward(q, k, v, bias, mask, scale, logit_scale)
            self.backward_plans: Dict[tuple, BackwardPlan] = {}

    def __call__(self, q, k, v, bias, mask, logit_scale) -> torch.Tensor:
        if self.training:
            return _WindowAttention.apply(self, q, k, v, bias, mask, logit_scale)
        return self.forward(q, k, v, bias, mask, logit_scale)[0]

    def forward(self, q, k, v, bias, mask, logit_scale) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.backend == "cpu":
            return cpu_window_attention_op(q, k, v, bias, mask, logit_scale, self.scale)
        q, k, v = _unit_last_stride(q), _unit_last_stride(k), _unit_last_stride(v)
        out = bshd_empty(q)
        return out, run_forward(self.forward_plan, q, k, v, out, bias, mask, logit_scale, None)

    def backward(self, grad_out, q, k, v, out, lse, bias, mask, logit_scale, bias_grad: bool, scale_grad: bool):
        """(d q, d k, d v, d bias, d logit_scale), None where not asked for."""
        if self.backend == "cpu":
            dq, dk, dv, dbias, dscale = cpu_window_attention_backward_op(
                grad_out, q, k, v, out, lse, bias, mask, logit_scale, self.scale, bias_grad, scale_grad)
            return dq, dk, dv, dbias if bias_grad else None, dscale if scale_grad else None
        q, k, v = _unit_last_stride(q), _unit_last_stride(k), _unit_last_stride(v)
        grad_out = _unit_last_stride(grad_out)
        deterministic = torch.are_deterministic_algorithms_enabled()
        key = (bias_grad, scale_grad, deterministic, self.tf32 and tf32_matmuls(), grad_out.stride())
        plan = self.backward_plans.get(key)
        if plan is None:
            plan = self.backward_plans[key] = plan_backward(grad_out, q, out, bias, mask, self.scale, bias_grad,
                                                            deterministic, None, logit_scale, scale_grad, k=k, v=v)
        dq, dk, dv = bshd_empty(q), bshd_empty(q), bshd_empty(q)
        dbias, dscale, _ = run_backward(plan, grad_out, q, k, v, out, lse, dq, dk, dv, bias, mask, logit_scale, None)
        return dq, dk, dv, dbias, dscale


class _WindowAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, call: WindowCall, q, k, v, bias, mask, logit_scale):
        out, lse = call.forward(q, k, v, bias, mask, logit_scale)
        ctx.call = call
        ctx.save_for_backward(q, k, v, bias, mask, logit_scale, out, lse)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        q, k, v, bias, mask, logit_scale, out, lse = ctx.saved_tensors
        bias_grad = bias is not None and ctx.needs_input_grad[4]
        scale_grad = logit_scale is not None and ctx.needs_input_grad[6]
        dq, dk, dv, dbias, dscale = ctx.call.backward(grad_out, q, k, v, out, lse, bias, mask, logit_scale,
                                                      bias_grad, scale_grad)
        return None, dq, dk, dv, dbias, None, dscale
