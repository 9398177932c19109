// Shifted-window attention on the image layout, CPU backward. Each task (one window of
// one image) gathers its tokens' q, k, v rows as the forward does, recomputes P as the
// forward does (max, exponentials, sum; not exp(S - lse): an fp32 lse of v2's logits,
// up to 100, is off by an ulp of them, a row-wide error in P of 1e-6 that made the
// gradients several times less accurate than eager PyTorch's), and writes d(qkv) rows
// to its real tokens' pixels (every pixel belongs to one window: no two tasks write the
// same row). The reductions over windows (d bias, d logit_scale, and d qkv_bias from
// the padding tokens) go to per-chunk partials summed in chunk order: deterministic for
// a given thread count. The per-head math: window_attention_heads.h.
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "window_attention_cpu.h"
#include "window_attention_heads.h"

namespace fastswin {
namespace {

struct BackwardCall {
  AttentionCall c;
  at::Tensor grad_out, dqkv;
  MapStrides grad_strides;
  bool bias_grad, scale_grad, fill_grad;
  std::vector<bool> scale_passes;  // per head: logit_scale <= log 100 (the clamp passes its gradient)
};

// Element offset of pixel `pixel`'s row (as token_sources numbers them) in a map of
// these strides.
inline int64_t pixel_offset(const WindowGeometry& g, const MapStrides& strides, int64_t pixel) {
  const int64_t w = pixel % g.width, h = (pixel / g.width) % g.height;
  const int64_t t = (pixel / (g.width * g.height)) % g.depth, b = pixel / reverse_rows_per_image(g);
  return strides.pixel(b, t, h, w);
}

template <typename scalar_t, bool kVideo>
void backward_task(const BackwardCall& k, int64_t task, int64_t next_task, const at::opmath_type<scalar_t>* logit_init,
                   Tiles<at::opmath_type<scalar_t>>& t, GradTiles<at::opmath_type<scalar_t>>& gt,
                   Partials<at::opmath_type<scalar_t>>& part) {
  using acc_t = at::opmath_type<scalar_t>;
  const AttentionCall& c = k.c;
  const int64_t N = c.tokens, C = c.channels, width = 3 * C;
  const scalar_t* qkv = c.qkv.const_data_ptr<scalar_t>();
  const scalar_t* grad_out = k.grad_out.const_data_ptr<scalar_t>();
  scalar_t* dqkv = k.dqkv.mutable_data_ptr<scalar_t>();

  load_window<kVideo>(c, qkv, c.qkv_fill.const_data_ptr<acc_t>(), task, t);
  for (int64_t n = 0; n < N; ++n) {  // dO, zero for padding tokens (their output is cropped)
    acc_t* row = gt.dout.data() + n * C;
    const int64_t pixel = t.src.pixels[n];
    if (pixel < 0) {
      std::fill(row, row + C, static_cast<acc_t>(0));
    } else {
      convert_row(grad_out + pixel_offset(c.geom, k.grad_strides, pixel), k.grad_strides.channel, C, row);
    }
  }
  if (next_task >= 0) {  // the next window's qkv rows, then its dO rows
    prefetch_window<kVideo>(c, qkv, next_task, t);
    for (const int64_t pixel : t.ahead.pixels) {
      if (pixel >= 0) prefetch_row(grad_out + pixel_offset(c.geom, k.grad_strides, pixel), C, k.grad_strides.channel);
    }
  }
  const acc_t* mask = window_mask(t);
  for (int64_t head = 0; head < c.heads; ++head) {
    backward_head(c, t, gt, head, logit_init, mask, k.scale_passes[head], part);
  }
  for (int64_t n = 0; n < N; ++n) {
    const acc_t* drow = gt.drows.data() + n * width;
    if (t.src.pixels[n] >= 0) {  // dqkv: contiguous (B, [T,] H, W, 3C), whole rows at once
      store_row(drow, width, dqkv + t.src.pixels[n] * width);
    } else if (k.fill_grad) {  // a padding token reads qkv_bias
      for (int64_t e = 0; e < width; ++e) part.fill[e] += drow[e];
    }
  }
}

template <typename scalar_t, bool kVideo>
std::vector<Partials<at::opmath_type<scalar_t>>> backward_cpu(const BackwardCall& k) {
  using acc_t = at::opmath_type<scalar_t>;
  const AttentionCall& c = k.c;
  const std::vector<acc_t> logit_init = logit_inits<acc_t>(c);
  return backward_chunks<acc_t>(c, c.geom.batch * windows_per_image(c.geom), k.bias_grad,
                                k.fill_grad ? 3 * c.channels : 0,
                                [&](int64_t task, int64_t next, Tiles<acc_t>& t, GradTiles<acc_t>& gt,
                                    Partials<acc_t>& part) {
                                  backward_task<scalar_t, kVideo>(k, task, next, logit_init.data(), t, gt, part);
                                });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> shifted_window_attention_cpu_backward(
    const at::Tensor& grad_out, const at::Tensor& qkv, const at::Tensor& out, const at::Tensor& lse,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& logit_scale,
    const std::optional<at::Tensor>& qkv_bias, int64_t num_heads, at::IntArrayRef window_size,
    at::IntArrayRef shift_size, bool timm_order, bool bias_grad, bool scale_grad, bool fill_grad) {
  // out and lse: in the signature that every backend's backward shares; unused here (above).
  BackwardCall k;
  k.c = plan_attention(qkv, bias, logit_scale, qkv_bias, num_heads, window_size, shift_size, timm_order);
  const std::vector<int64_t> out_sizes = output_sizes(qkv);
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef(out_sizes) && out.sizes() == at::IntArrayRef(out_sizes) &&
                  grad_out.scalar_type() == qkv.scalar_type() && out.scalar_type() == qkv.scalar_type(),
              "fastswin.shifted_window_attention backward: grad_out and out must be ", out_sizes, " of ",
              qkv.scalar_type());
  k.grad_out = grad_out;
  k.grad_strides = MapStrides(grad_out);
  k.dqkv = at::empty(qkv.sizes(), qkv.options());
  k.bias_grad = bias_grad && bias.has_value();
  k.scale_grad = scale_grad && logit_scale.has_value();
  k.fill_grad = fill_grad && qkv_bias.has_value();
  k.scale_passes = clamp_passes(logit_scale, num_heads);
  at::Tensor dbias = qkv.new_empty({0}), dscale = qkv.new_empty({0}), dfill = qkv.new_empty({0});
  if (qkv.numel() == 0) return {k.dqkv, dbias, dscale, dfill};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, qkv.scalar_type(), "shifted_window_attention_cpu_backward",
                                  [&] {
                                    using acc_t = at::opmath_type<scalar_t>;
                                    const auto parts = is_video(k.c.geom) ? backward_cpu<scalar_t, true>(k)
                                                                          : backward_cpu<scalar_t, false>(k);
                                    if (k.bias_grad) dbias = summed(parts, &Partials<acc_t>::bias, *bias);
                                    if (k.scale_grad) dscale = summed(parts, &Partials<acc_t>::scale, *logit_scale);
                                    if (k.fill_grad) dfill = summed(parts, &Partials<acc_t>::fill, *qkv_bias);
                                  });
  return {k.dqkv, dbias, dscale, dfill};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastswin, m) {
  m.def(
      "shifted_window_attention_cpu_backward(Tensor grad_out, Tensor qkv, Tensor out, Tensor lse, Tensor? bias, "
      "Tensor? logit_scale, Tensor? qkv_bias, int num_heads, int[] window_size, int[] shift_size, bool timm_order, "
      "bool bias_grad, bool scale_grad, bool fill_grad) -> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(fastswin, CPU, m) {
  m.impl("shifted_window_attention_cpu_backward", &shifted_window_attention_cpu_backward);
}

}  // namespace fastswin
