// Shifted-window attention straight on the image layout, CPU forward: each task (one
// window of one image) gathers its tokens' q, k, v rows from the (B, [T,] H, W, 3C) map
// (wrap-around, padding tokens reading qkv_bias, both orders: window_index.h), attends
// head by head in cache-resident buffers (Swin v1, or v2's cosine attention), and
// writes its real tokens' output rows to their pixels. No rolled, padded or
// partitioned copy and no mask tensor. Also returns the log-sum-exp of every row's
// logits, (B * nW, heads, N) in the accumulation type, for a backward to recompute P.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "denormals.h"
#include "window_attention_cpu.h"
#include "window_attention_heads.h"

namespace fastswin {
namespace {

template <typename scalar_t, bool kVideo>
void forward_cpu(const AttentionCall& c, const at::Tensor& out_map, const at::Tensor& lse_rows) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t N = c.tokens, C = c.channels;
  const scalar_t* qkv = c.qkv.const_data_ptr<scalar_t>();
  const acc_t* fill = c.qkv_fill.const_data_ptr<acc_t>();
  scalar_t* out = out_map.mutable_data_ptr<scalar_t>();
  acc_t* lse = lse_rows.mutable_data_ptr<acc_t>();
  const int64_t tasks = c.geom.batch * windows_per_image(c.geom);
  const std::vector<acc_t> logit_init = logit_inits<acc_t>(c);

  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    const FlushDenormals flush;  // denormals.h says why
    Tiles<acc_t> t(N, c.head_dim, 3 * C, /*backward=*/false);
    std::vector<acc_t> out_rows(N * C);  // the window's output rows, stored whole
    for (int64_t task = begin; task < end; ++task) {
      load_window<kVideo>(c, qkv, fill, task, t);
      if (task + 1 < end) prefetch_window<kVideo>(c, qkv, task + 1, t);
      const acc_t* mask = window_mask(t);
      for (int64_t head = 0; head < c.heads; ++head) {
        forward_head(c, t, head, logit_init.data(), mask, out_rows.data(), lse + (task * c.heads + head) * N);
      }
      for (int64_t i = 0; i < N; ++i) {  // out: contiguous (B, [T,] H, W, C); padding tokens' rows are cropped
        if (t.src.pixels[i] >= 0) store_row(out_rows.data() + i * C, C, out + t.src.pixels[i] * C);
      }
    }
  });
}

}  // namespace

void plan_heads(AttentionHeads& c, const std::optional<at::Tensor>& bias,
                const std::optional<at::Tensor>& logit_scale, at::ScalarType acc, const char* op) {
  const int64_t heads = c.heads, tokens = c.tokens;
  if (bias.has_value()) {
    TORCH_CHECK(bias->sizes() == at::IntArrayRef({heads, tokens, tokens}), op, ": bias must be (heads, N, N) = (",
                heads, ", ", tokens, ", ", tokens, "), got ", bias->sizes());
    c.bias = small(*bias, acc);
  }
  if (logit_scale.has_value()) {
    TORCH_CHECK(logit_scale->numel() == heads, op, ": logit_scale must have ", heads, " entries, got ",
                logit_scale->numel());
    c.logit_mul = small(*logit_scale, at::kDouble).clamp_max(kLogitScaleMax).exp().to(acc).reshape({heads});
  }
}

AttentionCall plan_attention(const at::Tensor& qkv, const std::optional<at::Tensor>& bias,
                             const std::optional<at::Tensor>& logit_scale, const std::optional<at::Tensor>& qkv_bias,
                             int64_t num_heads, at::IntArrayRef window_size, at::IntArrayRef shift_size,
                             bool timm_order) {
  const int64_t dims = static_cast<int64_t>(window_size.size());
  TORCH_CHECK(dims == 2 || dims == 3, "fastswin.shifted_window_attention: window_size must have 2 or 3 entries");
  TORCH_CHECK(qkv.dim() == dims + 2 && static_cast<int64_t>(shift_size.size()) == dims,
              "fastswin.shifted_window_attention: a ", dims, "D window needs a (B, ", dims == 3 ? "T, " : "",
              "H, W, 3C) qkv map and ", dims, " shifts, got qkv of ", qkv.dim(), " dims");
  TORCH_CHECK(num_heads > 0 && qkv.size(-1) % (3 * num_heads) == 0, "fastswin.shifted_window_attention: ",
              qkv.size(-1), " qkv channels do not split into q, k, v of ", num_heads, " heads");
  int64_t tokens = 1;
  for (int64_t i = 0; i < dims; ++i) {
    TORCH_CHECK(window_size[i] >= 1 && shift_size[i] >= 0 && shift_size[i] < window_size[i],
                "fastswin.shifted_window_attention: needs 0 <= shift < window, got window ", window_size,
                " and shift ", shift_size);
    tokens *= window_size[i];
  }
  const at::ScalarType acc = at::toOpMathType(qkv.scalar_type());
  AttentionCall c;
  const auto sizes = qkv.sizes();
  const int64_t depth = dims == 3 ? sizes[1] : 1;
  const int64_t win_d = dims == 3 ? window_size[0] : 1;
  c.shift_d = dims == 3 ? shift_size[0] : 0;
  c.shift_h = shift_size[dims - 2];
  c.shift_w = shift_size[dims - 1];
  c.geom = make_geometry(sizes[0], depth, sizes[dims - 1], sizes[dims], win_d, window_size[dims - 2],
                         window_size[dims - 1], c.shift_d, c.shift_h, c.shift_w);
  c.timm_order = timm_order;
  c.heads = num_heads;
  c.channels = qkv.size(-1) / 3;
  c.head_dim = c.channels / num_heads;
  c.tokens = tokens;
  c.scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  c.qkv_strides = MapStrides(qkv);
  c.qkv = qkv;
  plan_heads(c, bias, logit_scale, acc, "fastswin.shifted_window_attention");
  if (qkv_bias.has_value()) {
    TORCH_CHECK(qkv_bias->numel() == 3 * c.channels, "fastswin.shifted_window_attention: qkv_bias must have ",
                3 * c.channels, " entries, got ", qkv_bias->numel());
    c.qkv_fill = small(*qkv_bias, acc).reshape({3 * c.channels});
  } else {
    c.qkv_fill = at::zeros({3 * c.channels}, qkv.options().dtype(acc));
  }
  return c;
}

std::vector<int64_t> output_sizes(const at::Tensor& qkv) {
  std::vector<int64_t> sizes(qkv.sizes().begin(), qkv.sizes().end());
  sizes.back() /= 3;
  return sizes;
}

namespace {

std::tuple<at::Tensor, at::Tensor> shifted_window_attention_cpu(
    const at::Tensor& qkv, const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& logit_scale,
    const std::optional<at::Tensor>& qkv_bias, int64_t num_heads, at::IntArrayRef window_size,
    at::IntArrayRef shift_size, bool timm_order) {
  const AttentionCall c = plan_attention(qkv, bias, logit_scale, qkv_bias, num_heads, window_size, shift_size,
                                       timm_order);
  const at::Tensor out = at::empty(output_sizes(qkv), qkv.options());
  const at::Tensor lse = at::empty({c.geom.batch * windows_per_image(c.geom), num_heads, c.tokens},
                                   qkv.options().dtype(at::toOpMathType(qkv.scalar_type())));
  if (out.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, qkv.scalar_type(), "shifted_window_attention_cpu",
                                    [&] {
                                      is_video(c.geom) ? forward_cpu<scalar_t, true>(c, out, lse)
                                                       : forward_cpu<scalar_t, false>(c, out, lse);
                                    });
  }
  return {out, lse};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastswin, m) {
  m.def(
      "shifted_window_attention_cpu(Tensor qkv, Tensor? bias, Tensor? logit_scale, Tensor? qkv_bias, "
      "int num_heads, int[] window_size, int[] shift_size, bool timm_order) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(fastswin, CPU, m) { m.impl("shifted_window_attention_cpu", &shifted_window_attention_cpu); }

}  // namespace fastswin
